"""The decode loop on the device: slot buffers, per-request prefill, one step for every slot, CUDA graphs.

The loop is gpt-fast's prefill / decode_one_token split with Dia's rules from transformers' generation_dia.py
and nari-labs/dia's generate: the delayed grid starts with BOS and the voice prompt, cells the prefill knows
are never resampled (transformers' apply_delay_mask), channel 0's EOS (or the length cap) starts a countdown
that forces EOS on channel c delay[c] steps later and PAD after it, and a slot is done once its last channel
has ended. One step is a pure function of static buffers, so on CUDA it is captured once per (width, span)
bucket as a CUDA graph and replayed; the host looks at the results only between chunks of steps.

A step runs the first `width` slots only (gpt-fast / vLLM style batch-size buckets): the cache rows are
slot-major (slot b owns rows 2b, its conditional pass, and 2b + 1, its unconditional one), so the rows of the
first `width` slots are a prefix of every buffer, a view rather than a copy. A scheduler that fills the lowest
free slot first keeps the busy slots in that prefix.

Shapes: B slots, W slots in a step, R = 2B rows (slot-major), P grid positions, C channels, V vocab,
N noise steps, S slots read at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tts_engine.dia import sampling
from tts_engine.dia.cache import CrossCache, SelfCache
from tts_engine.dia.delay import FREE, prefill_grid
from tts_engine.dia.ending import NOT_ENDED, Rules
from tts_engine.dia.model import DiaModel


@dataclass(frozen=True)
class _Prefix:
    """Views of the first `width` slots' rows: a step over them reads and writes the full buffers in place."""

    width: int
    cache: SelfCache
    cross: CrossCache
    params: sampling.SamplingParams


@dataclass(frozen=True)
class Request:
    """What a slot needs to start: text ids (with any prompt transcript), prompt codes and sampling settings."""

    text_ids: Sequence[int]
    prompt_TxC: np.ndarray | None
    cfg_scale: float
    temperature: float  # 0 means greedy
    top_k: int
    top_p: float
    max_tokens: int  # grid positions including BOS and the prompt; channel 0 ends by max_tokens - 1
    generator: torch.Generator | None  # None for greedy


def widths_up_to(slots: int) -> tuple[int, ...]:
    """Batch-size buckets 1, 2, 4, ... below `slots`, then `slots` itself."""
    sizes, size = [], 1
    while size < slots:
        sizes.append(size)
        size *= 2
    return (*sizes, slots)


def spans(limit: int, step: int, first: int) -> tuple[int, ...]:
    """Bucket sizes first, 2*first, ... by doubling up to `step`, then every `step`, ending exactly at `limit`."""
    sizes, size = [], first
    while size < limit:
        sizes.append(size)
        size = size * 2 if size < step else size + step
    return (*sizes, limit)


class Decoder:
    """Device state for `slots` concurrent requests and the step that advances all of them at once."""

    def __init__(
        self,
        model: DiaModel,
        *,
        slots: int,
        noise_steps: int,
        use_graphs: bool,
        widths: Sequence[int] | None = None,
    ) -> None:
        cfg = model.cfg
        dec = cfg.decoder
        param = next(model.parameters())
        self.model, self.cfg, self.slots = model, cfg, slots
        self.device, self.dtype = param.device, param.dtype
        self.positions = cfg.decode_positions  # the cap plus the EOS countdown's tail, rounded to 64
        if model.rope is None or model.rope.shape[1] < self.positions or model.rope.device != self.device:
            model.setup_rope(self.positions, self.device)
        # Captured graphs read the table by address: a second decoder on the same model (a scheduler beside the
        # engine's own) reuses it rather than replacing it, and this reference keeps it alive regardless.
        self.rope = model.rope
        dev = self.device
        self.cache = SelfCache.allocate(cfg, rows=2 * slots, length=self.positions, device=dev, dtype=self.dtype)
        self.cross = CrossCache.allocate(
            cfg, rows=2 * slots, max_text=cfg.encoder.max_positions, device=dev, dtype=self.dtype
        )
        shape_BxPxC = (slots, self.positions, dec.num_channels)
        self.grid = torch.zeros(shape_BxPxC, dtype=torch.long, device=dev)
        self.forced = torch.full(shape_BxPxC, FREE, dtype=torch.long, device=dev)
        self.pos = torch.zeros(slots, dtype=torch.long, device=dev)
        self.eos = torch.full((slots,), NOT_ENDED, dtype=torch.long, device=dev)
        self.last = torch.zeros(slots, dtype=torch.long, device=dev)
        self.live = torch.zeros(slots, dtype=torch.bool, device=dev)
        self.params = sampling.SamplingParams(
            cfg_scale=torch.ones(slots, device=dev),
            temperature=torch.ones(slots, device=dev),
            top_k=torch.ones(slots, dtype=torch.long, device=dev),
            top_p=torch.ones(slots, device=dev),
            greedy=torch.ones(slots, dtype=torch.bool, device=dev),
        )
        self.noise = torch.ones((noise_steps, slots, dec.num_channels, dec.vocab_size), device=dev)
        self.noise_step = torch.zeros(1, dtype=torch.long, device=dev)
        self.delays = torch.tensor(cfg.delay_pattern, dtype=torch.long, device=dev)
        self.slot_index = torch.arange(slots, device=dev)
        self.rules = Rules(cfg.max_delay, dec.eos_id, dec.pad_id)
        self.text_len = [0] * slots
        self.host_pos = [0] * slots  # positions as last read, so choosing spans needs no sync
        # Captured graphs need few span buckets; eager steps take fine ones and read no more cache than needed.
        # Masked keys add exact zeros, so the bucket never changes a result.
        self.self_spans = spans(self.positions, 512, 256) if use_graphs else spans(self.positions, 32, 32)
        self.cross_spans = spans(self.cross.max_text, 1024, 128) if use_graphs else spans(self.cross.max_text, 32, 32)
        self.generators: list[torch.Generator | None] = [None] * slots
        # Batch-size buckets a step may run at; by default every step runs all slots.
        self.widths = tuple(sorted(set(widths))) if widths else (slots,)
        if self.widths[0] < 1 or self.widths[-1] != slots:
            raise ValueError(f"widths must lie in 1..{slots} and include {slots}, got {self.widths}")
        self.prefixes = {width: self._prefix(width) for width in self.widths}
        self.graphs: dict[tuple[int, int, int], torch.cuda.CUDAGraph] = {}
        if use_graphs:
            model.tune_decode(2 * width for width in self.widths)  # the matmuls' kernels, before capture
            self._tune_attention()
            if model.ops.sampler is not None:
                model.ops.sampler.tune(self.widths, dec, model.ops, self.device)
            self._capture()

    @torch.inference_mode()
    def start(self, slot: int, request: Request) -> int:
        """Encode, prefill and arm `slot` for `request`; returns the prompt length in frames."""
        dec = self.cfg.decoder
        dev = self.device
        ids_1xL = torch.tensor([list(request.text_ids)], dtype=torch.long, device=dev)
        rows = torch.tensor([2 * slot, 2 * slot + 1], device=dev)
        # The unconditional row reads as many zero bytes as the text has (transformers' CFG input).
        enc_2xLxD = self.model.encode(torch.cat((ids_1xL, torch.zeros_like(ids_1xL))))
        self.cross.fill(rows, self.model.cross_kv(enc_2xLxD))
        self.text_len[slot] = ids_1xL.shape[1]

        forced_PxC = torch.from_numpy(prefill_grid(request.prompt_TxC, self.cfg.delay_pattern, dec.bos_id))
        known = 1 + (0 if request.prompt_TxC is None else request.prompt_TxC.shape[0])
        self.forced[slot].fill_(FREE)
        self.forced[slot, : forced_PxC.shape[0]] = forced_PxC.to(dev)
        self.grid[slot].zero_()
        self.grid[slot, :known] = forced_PxC[:known].to(dev)
        if known > 1:  # positions 0..T-1 of the prompt go through the decoder in one causal pass
            tokens_2xTxC = self.grid[slot, : known - 1].unsqueeze(0).expand(2, -1, -1)
            pos_2xT = torch.arange(known - 1, device=dev).unsqueeze(0).expand(2, -1)
            self.model.decode(tokens_2xTxC, pos_2xT, self.cache, self.cross, rows, cross_span=self.text_len[slot])

        self.pos[slot] = known - 1
        self.host_pos[slot] = known - 1
        self.eos[slot] = NOT_ENDED
        self.last[slot] = request.max_tokens - 1
        greedy = request.temperature == 0
        self.params.cfg_scale[slot] = request.cfg_scale
        self.params.temperature[slot] = 1.0 if greedy else request.temperature
        self.params.top_k[slot] = request.top_k
        self.params.top_p[slot] = request.top_p
        self.params.greedy[slot] = greedy
        self.generators[slot] = request.generator
        self.live[slot] = True
        return known - 1

    def stop(self, slot: int) -> None:
        """Free `slot`: its rows keep being computed but nothing is written for it any more."""
        self.live[slot] = False
        self.generators[slot] = None
        self.text_len[slot] = 0

    def _prefix(self, width: int) -> _Prefix:
        rows = 2 * width
        params, cache, cross = self.params, self.cache, self.cross
        return _Prefix(
            width=width,
            cache=SelfCache([k[:rows] for k in cache.k], [v[:rows] for v in cache.v], cache.length),
            cross=CrossCache([k[:rows] for k in cross.k], [v[:rows] for v in cross.v], cross.lengths[:rows]),
            params=sampling.SamplingParams(
                cfg_scale=params.cfg_scale[:width],
                temperature=params.temperature[:width],
                top_k=params.top_k[:width],
                top_p=params.top_p[:width],
                greedy=params.greedy[:width],
            ),
        )

    def _step(self, width: int, self_span: int, cross_span: int) -> None:
        """Advance slots 0..width-1 by one step; every tensor below is a view of the first `width` slots."""
        cfg = self.cfg
        dec = cfg.decoder
        prefix = self.prefixes[width]
        at = self.slot_index[:width]
        pos_W, eos_W, live_W = self.pos[:width], self.eos[:width], self.live[:width]
        ops, table = self.model.ops, self.model.decoder().embeddings.embed.weight
        x_Rx1xD, pos_Rx1 = ops.step_inputs(self.grid, at, pos_W, table, dec.vocab_size)
        logits_Rx1xCxV = self.model.decode_embedded(
            x_Rx1xD, pos_Rx1, prefix.cache, prefix.cross, self_span=self_span, cross_span=cross_span
        )
        cond_WxCxV, uncond_WxCxV = logits_Rx1xCxV[:, 0].unflatten(0, (width, 2)).unbind(1)
        if ops.sampler is not None and ops.sampler.serves(width):
            next_WxC = ops.sampler(cond_WxCxV, uncond_WxCxV, prefix.params, dec.eos_id, self.noise, self.noise_step)
        else:
            scores_WxCxV = ops.process(cond_WxCxV, uncond_WxCxV, prefix.params, dec.eos_id)
            noise_WxCxV = self.noise[:, :width].index_select(0, self.noise_step).squeeze(0)
            next_WxC = ops.draw(scores_WxCxV, noise_WxCxV, prefix.params.greedy)
        ops.step_outputs(
            next_WxC, self.grid, self.forced, at, pos_W, eos_W, self.last[:width], live_W, self.delays,
            self.noise_step, self.positions, self.rules,
        )  # fmt: skip

    def _spans_for(self, steps: int) -> tuple[int, int]:
        # No slot moves more than one position a step, so none passes its last-read position + steps here.
        live = (pos for pos, length in zip(self.host_pos, self.text_len, strict=True) if length)
        top = max(live, default=0) + steps + 1
        self_span = next(s for s in self.self_spans if s >= min(top, self.positions))
        longest = max(self.text_len)
        cross_span = next(s for s in self.cross_spans if s >= longest)
        return self_span, cross_span

    @torch.inference_mode()
    def run(self, steps: int, width: int | None = None) -> None:
        """Advance slots 0..width-1 (all by default) by `steps` steps, drawing each slot's noise.

        `steps` is at most the noise buffer's length; `width` is one of `widths` and covers every live slot.
        """
        width = self.slots if width is None else width
        if not 0 < steps <= self.noise.shape[0]:
            raise ValueError(f"steps must be 1..{self.noise.shape[0]}, got {steps}")
        if width not in self.prefixes:
            raise ValueError(f"width must be one of {self.widths}, got {width}")
        if any(self.text_len[width:]):
            raise ValueError(f"a live slot lies beyond width {width}")
        for slot, generator in enumerate(self.generators[:width]):
            if generator is None:
                self.noise[:steps, slot].fill_(1.0)  # greedy rows use argmax; ones keep idle rows finite
            else:
                for i in range(steps):  # one draw per step, so chunking never changes a seeded request's noise
                    self.noise[i, slot].exponential_(generator=generator)
        self.noise_step.zero_()
        key = (width, *self._spans_for(steps))
        graph = self.graphs.get(key)
        for _ in range(steps):
            if graph is not None:
                graph.replay()
            else:
                self._step(*key)

    def read(self, slot: int, start: int, stop: int) -> tuple[np.ndarray, int, int]:
        """Grid rows start..stop-1 of `slot`, its position and its eos position (NOT_ENDED if none); syncs."""
        state = torch.stack((self.pos[slot], self.eos[slot])).cpu()
        rows = self.grid[slot, start : min(stop, self.positions)].cpu().numpy()
        self.host_pos[slot] = int(state[0])
        return rows, self.host_pos[slot], int(state[1])

    def read_many(
        self, slots: Sequence[int], starts: Sequence[int], count: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Several slots at once, in one transfer: grid rows start..start+count-1 of each, int64 (S, count, C)
        (rows past the grid's end repeat its last row), their positions (S,) and eos positions (S,)."""
        dev = self.device
        slot_S = torch.tensor(list(slots), dtype=torch.long, device=dev)
        rows_SxN = torch.tensor(list(starts), dtype=torch.long, device=dev)[:, None] + torch.arange(count, device=dev)
        rows_SxNxC = self.grid[slot_S[:, None], rows_SxN.clamp(max=self.positions - 1)]
        # One flat int64 buffer, so a chunk costs the host a single synchronisation however many slots it read.
        flat = torch.cat((rows_SxNxC.flatten(), self.pos[slot_S], self.eos[slot_S])).cpu().numpy()
        n = len(slot_S)
        grid_part = flat[: rows_SxNxC.numel()].reshape(rows_SxNxC.shape)
        pos_S, eos_S = flat[rows_SxNxC.numel() :].reshape(2, n)
        for slot, pos in zip(slots, pos_S.tolist(), strict=True):
            self.host_pos[slot] = pos
        return grid_part, pos_S, eos_S

    def _tune_attention(self) -> None:
        """Where split attention runs as a programmatic dependent launch (attention_tuning.tune), timed over this
        decoder's caches at typical spans: a thousand cached keys, a few hundred text bytes."""
        if self.model.ops.kernels is None:
            return
        from tts_engine.dia import attention_tuning  # it imports triton, as the kernels do

        self_span = next((s for s in self.self_spans if s >= 1024), self.self_spans[-1])
        cross_span = next((s for s in self.cross_spans if s >= 256), self.cross_spans[-1])
        caches = {2 * width: (prefix.cache, prefix.cross) for width, prefix in self.prefixes.items()}
        attention_tuning.tune(self.model, caches, self_span, cross_span)

    @torch.inference_mode()
    def _capture(self) -> None:
        """Capture one CUDA graph per (width, self span, cross span) bucket, with every slot idle."""
        pool = torch.cuda.graph_pool_handle()
        keys = [(w, s, c) for w in self.widths for s in self.self_spans for c in self.cross_spans]
        warmup = torch.cuda.Stream(self.device)
        warmup.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(warmup):
            for key in keys:
                for _ in range(2):  # cuBLAS and the allocator settle before capture
                    self.noise_step.zero_()  # each step reads noise[noise_step]: keep it inside the buffer
                    self._step(*key)
        torch.cuda.current_stream(self.device).wait_stream(warmup)
        for key in keys:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self._step(*key)
            self.graphs[key] = graph
        self.noise_step.zero_()
