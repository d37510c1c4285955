"""Continuous batching: many requests share each decode step, joining and leaving between chunks of steps.

    scheduler = engine.scheduler(slots=16)
    scheduler.submit("job-1", "[S1] Hello there.", GenerationParams(seed=1))   # encoder + prefill run now
    while scheduler.active:
        chunk = scheduler.step_chunk()            # one chunk of steps for every active request at once
        for request_id, frames_nx9 in chunk.frames.items(): ...   # undelayed, final frames
        for request_id in chunk.finished: ...     # its last frames are in this chunk's `frames`

Iteration-level scheduling as in Orca and vLLM's continuous batching: the batch is re-formed between chunks,
so a request starts as soon as a slot is free instead of waiting for the batch to drain. The device side is
tts_engine/dia/decode.py (gpt-fast's static caches and one captured step per batch-size bucket); each slot
keeps its own caches, sampling settings and generator and draws one noise tensor per step, so a request
decodes as it would alone (transformers' generation_dia.py semantics, as for a single stream). Its codes are
bit-equal to the single stream's when the engine is batch-invariant (Engine(batch_invariant=True): each row
its own matmul, as tests/engine/test_scheduler.py checks); otherwise a BLAS may give a row other low bits
at another batch width (cuBLAS, and MKL on many CPUs, pick kernels by shape), which can flip a sampled token.
Admission policy and fairness belong to the caller: the scheduler takes what it is given while a slot is free.

Not thread-safe: one thread (the worker's GPU thread) calls every method.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from tts_engine.dia.decode import Decoder, Request, widths_up_to
from tts_engine.dia.delay import undelay
from tts_engine.dia.ending import NOT_ENDED

if TYPE_CHECKING:
    from tts_engine.dia.model import DiaModel
    from tts_engine.params import GenerationParams, VoicePrompt

log = logging.getLogger(__name__)

Prepare = Callable[[str, "GenerationParams | None", "VoicePrompt | None", "np.ndarray | None"], Request]


class SchedulerFull(RuntimeError):
    """A request was submitted while every slot was busy; check `free_slots` first."""


@dataclass(frozen=True)
class Handle:
    """Where a submitted request runs: its slot and the voice prompt frames it continues."""

    request_id: str
    slot: int
    prompt_frames: int


@dataclass(frozen=True)
class Decoded:
    """What one `step_chunk` produced.

    `frames`: per request, the frames int64 (n, C) that became final in this chunk, undelayed, only for
    requests with new frames; `finished`: requests that ended in this chunk (their slots are free again);
    `steps`: decoder steps run (0 when nothing was active).
    """

    frames: dict[str, np.ndarray] = field(default_factory=dict)
    finished: list[str] = field(default_factory=list)
    steps: int = 0


class _Progress:
    """The host's view of one running request: the delayed grid read so far and the frames handed out."""

    def __init__(self, request_id: str, request: Request, written: int, positions: int, channels: int) -> None:
        self.request_id = request_id
        self.max_tokens = request.max_tokens
        # Rows up to `written` (BOS, prompt) are never read back: frames start after them.
        self.grid_PxC = np.zeros((positions, channels), dtype=np.int64)
        self.written = written  # grid rows 0..written are known
        self.next_frame = written + 1  # frame 0 is BOS, frames 1..T the prompt
        self.pos = written
        self.eos = NOT_ENDED

    def end(self, max_delay: int) -> int:
        """Position at which the last channel has ended: exact once channel 0 has ended, else the cap's."""
        return (self.eos if self.eos != NOT_ENDED else self.max_tokens - 1) + max_delay

    def take(self, rows_NxC: np.ndarray, pos: int, eos: int, delays: Sequence[int]) -> np.ndarray:
        """Store rows written+1..pos and return the frames that became final, int64 (n, C), maybe n = 0."""
        max_delay = max(delays)
        self.grid_PxC[self.written + 1 : pos + 1] = rows_NxC[: pos - self.written]
        self.written, self.pos, self.eos = pos, pos, eos
        # Frame f is final once its most delayed channel is written; nothing after channel 0's EOS is a frame.
        stop = pos - max_delay + 1 if eos == NOT_ENDED else min(pos - max_delay + 1, eos)
        if stop <= self.next_frame:
            return np.zeros((0, len(delays)), dtype=np.int64)
        frames_nxC = undelay(self.grid_PxC, delays, self.next_frame, stop)
        self.next_frame = stop
        return frames_nxC


class Scheduler:
    """A fixed number of decode slots; requests join between chunks of steps and leave when done or cancelled.

    Build it with `Engine.scheduler`. A chunk runs min(chunk_steps, steps the longest request still needs)
    steps over the smallest batch-size bucket covering every busy slot (new requests take the lowest free
    slot, so the busy ones stay packed at the front).
    """

    def __init__(
        self,
        model: DiaModel,
        prepare: Prepare,
        *,
        slots: int = 16,
        chunk_steps: int = 8,
        use_graphs: bool = False,
    ) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        if chunk_steps < 1:
            raise ValueError(f"chunk_steps must be at least 1, got {chunk_steps}")
        self._prepare = prepare
        self.capacity = slots
        self.chunk_steps = chunk_steps
        self._delays = model.cfg.delay_pattern
        self._max_delay = model.cfg.max_delay
        self._decoder = Decoder(
            model, slots=slots, noise_steps=chunk_steps, use_graphs=use_graphs, widths=widths_up_to(slots)
        )
        self._free = list(range(slots))  # a heap: the lowest free slot is taken first
        self._slot_of: dict[str, int] = {}
        self._progress: dict[int, _Progress] = {}
        log.info(
            "scheduler: %d slots, widths %s, %d captured graphs", slots, self._decoder.widths, len(self._decoder.graphs)
        )

    @property
    def active(self) -> tuple[str, ...]:
        """Ids of the requests in a slot, in slot order."""
        return tuple(self._progress[slot].request_id for slot in sorted(self._progress))

    @property
    def free_slots(self) -> int:
        return len(self._free)

    def submit(
        self,
        request_id: str,
        text: str,
        params: GenerationParams | None = None,
        prompt: VoicePrompt | None = None,
        *,
        resume_from: np.ndarray | None = None,
    ) -> Handle:
        """Start `text` in a free slot now: its encoder and prompt prefill run before this returns.
        `resume_from` continues a line from frames it already has, as `Engine.stream_codes` does.

        Raises what `Engine.stream_codes` raises for bad input (`dia.text.TextError`, `ValueError`), with the
        same messages and before any device work; `SchedulerFull` when no slot is free; `ValueError` for an
        id already running. A failed submit leaves the running requests untouched.
        """
        if request_id in self._slot_of:
            raise ValueError(f"request {request_id!r} is already running")
        request = self._prepare(text, params, prompt, resume_from)
        if not self._free:
            raise SchedulerFull(f"all {self.capacity} slots are busy")
        slot = heapq.heappop(self._free)
        try:
            written = self._decoder.start(slot, request)
        except BaseException:
            self._decoder.stop(slot)  # only this slot's rows were touched; the others never saw it
            heapq.heappush(self._free, slot)
            raise
        channels = self._decoder.cfg.decoder.num_channels
        self._progress[slot] = _Progress(request_id, request, written, self._decoder.positions, channels)
        self._slot_of[request_id] = slot
        log.debug("request %s joined slot %d (%d active)", request_id, slot, len(self._progress))
        return Handle(request_id, slot, prompt_frames=written)

    def cancel(self, request_id: str) -> bool:
        """Stop `request_id` and free its slot; False if it is not running (unknown or already finished)."""
        slot = self._slot_of.get(request_id)
        if slot is None:
            return False
        self._release(slot)
        log.debug("request %s cancelled in slot %d", request_id, slot)
        return True

    def step_chunk(self) -> Decoded:
        """Run one chunk of steps for every active request; return the frames that became final."""
        if not self._progress:
            return Decoded()
        busy = sorted(self._progress)
        width = next(w for w in self._decoder.widths if w > busy[-1])
        steps = min(self.chunk_steps, max(p.end(self._max_delay) - p.pos for p in self._progress.values()))
        self._decoder.run(steps, width)
        starts = [self._progress[slot].written + 1 for slot in busy]
        rows_SxNxC, pos_S, eos_S = self._decoder.read_many(busy, starts, steps)
        chunk = Decoded(steps=steps)
        for i, slot in enumerate(busy):
            progress = self._progress[slot]
            frames_nxC = progress.take(rows_SxNxC[i], int(pos_S[i]), int(eos_S[i]), self._delays)
            if len(frames_nxC):
                chunk.frames[progress.request_id] = frames_nxC
            if progress.pos >= progress.end(self._max_delay):
                chunk.finished.append(progress.request_id)
                self._release(slot)
        return chunk

    def _release(self, slot: int) -> None:
        progress = self._progress.pop(slot)
        del self._slot_of[progress.request_id]
        self._decoder.stop(slot)
        heapq.heappush(self._free, slot)
