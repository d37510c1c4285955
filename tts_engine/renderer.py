"""A job in, batches of Opus packets out: the engine side of the worker.

Each segment renders with its voices as the prompt (their transcripts, tagged [S1]/[S2], and codes joined in
order), segments and pauses flow into one audio pipeline, and packets leave in batches: the first as soon as
there is one, then about 200 ms at a time. Segment i renders with seed `render_seed + i`. The codes of every
segment are reported as they come (`RenderResult.codes`, which the worker logs), and a retry replays those of
earlier attempts (`RenderResult.resume`) before the engine goes on from them, so its audio is what already
played. Mistakes in the job itself (text Dia cannot read, a voice that does not fit) raise `RenderInputError`,
which the worker reports instead of retrying. Jobs can also make voices: from a user's clip (cut to 5-10 s at
a sentence end, tts_engine/audio/prompt.py) or from the codes of a rendered line (voice design).
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Generator, Iterator, Mapping

import numpy as np

from tts_engine.audio.clip import ClipError, ClipLimits, decode_clip
from tts_engine.audio.opus import OpusSettings
from tts_engine.audio.prompt import trim_for_prompt
from tts_engine.batching import Scheduler
from tts_engine.engine import Engine, GenerationParams, VoicePrompt
from tts_engine.jobs import MAX_SEED, RenderJob, Segment, VoiceRecord
from tts_engine.rendering import CodesChunk, RenderInputError, RenderResult
from tts_engine.scene import prompt_transcript, untagged

log = logging.getLogger(__name__)

BATCH_PACKETS = 10  # 200 ms of audio per audio event after the first


class EngineRenderer:
    def __init__(
        self,
        engine: Engine,
        *,
        opus: OpusSettings | None = None,
        batch_packets: int = BATCH_PACKETS,
        clip_limits: ClipLimits | None = None,
        slots: int = 1,
    ) -> None:
        self.engine = engine
        self.clip_limits = clip_limits or ClipLimits()
        # With several slots, every job's segments decode in one shared scheduler (continuous batching); the
        # worker advances its jobs in turn and whichever needs frames first steps them all.
        self.shared = SharedSteps(engine.scheduler(slots=slots)) if slots > 1 else None
        self.opus = opus or OpusSettings()
        self.batch_packets = batch_packets
        # What makes the packets: a line resumed or cached under another revision would not match bit for bit.
        self.revision = f"{engine.revision}:{self.opus.revision}"

    def render(self, job: RenderJob, voices: Mapping[str, VoiceRecord], result: RenderResult) -> Iterator[list[bytes]]:
        """Batches of packets for `job`; closing the iterator stops the engine at once."""
        if job.clip is not None:
            result.voice = self._voice_from_clip(job.clip, job.segments[0].text)
            return
        try:
            pipeline = self.engine.audio_pipeline(speed=job.params.speed, opus=self.opus)
        except ValueError as exc:
            raise RenderInputError(str(exc)) from exc
        pending: list[bytes] = []
        sent_any = False
        kept: list[np.ndarray] = []  # the first segment's codes, when the job keeps its voice
        channels = self.engine.config.decoder.num_channels
        for index, segment in enumerate(job.segments):
            logged = result.resume.get(index, [])
            replay = self._replay(logged, channels)  # the frames an earlier attempt rendered
            before = np.concatenate(replay) if replay else None
            codes = self._codes(job, index, segment, voices, before, ended=bool(replay) and logged[-1].last)
            start = 0
            try:
                for pushed, frames in enumerate(itertools.chain(replay, codes)):
                    if pushed >= len(replay):  # new frames: logged for a retry
                        result.codes.append(_chunk(index, start, frames))
                    start += len(frames)
                    if job.keep_voice is not None and index == 0:
                        kept.append(frames)
                    pending += pipeline.push_codes(frames).packets
                    if pending and (not sent_any or len(pending) >= self.batch_packets):
                        yield pending
                        pending, sent_any = [], True
            finally:
                codes.close()
            result.codes.append(CodesChunk(index, start, 0, channels, b"", last=True))  # the segment ended
            if segment.pause_after:
                pending += pipeline.pause(segment.pause_after).packets
        pending += pipeline.finish().packets
        if pending:
            yield pending
        result.samples, result.pre_skip = pipeline.samples, pipeline.pre_skip
        if kept:
            result.voice = voice_record(untagged(job.segments[0].text), np.concatenate(kept))

    def _voice_from_clip(self, clip: bytes, transcript: str) -> VoiceRecord:
        """The clip cut to its best 5-10 s at a sentence end, with the matching words, as DAC codes."""
        codec = self.engine.codec
        if codec is None:
            raise RuntimeError("the worker has no codec loaded, so it cannot encode voice clips")
        try:
            audio = decode_clip(clip, self.clip_limits)
            audio, words = trim_for_prompt(audio, untagged(transcript))
        except ClipError as exc:
            raise RenderInputError(str(exc)) from exc
        return voice_record(words, codec.encode(audio))

    @staticmethod
    def _replay(chunks: list[CodesChunk], channels: int) -> list[np.ndarray]:
        """The frames of an earlier attempt's chunks, as it pushed them; none for a log of another shape."""
        if any(c.channels != channels or len(c.codes) != c.frames * channels * 2 for c in chunks):
            log.warning("ignoring a codes log of another shape (%d channels here)", channels)
            return []
        frames = (np.frombuffer(c.codes, dtype="<i2").reshape(c.frames, channels) for c in chunks if c.frames)
        return [f.astype(np.int64) for f in frames]

    def _codes(
        self,
        job: RenderJob,
        index: int,
        segment: Segment,
        voices: Mapping[str, VoiceRecord],
        before: np.ndarray | None = None,
        *,
        ended: bool = False,
    ) -> Generator[np.ndarray, None, None]:
        """The segment's new frames: those after `before` (what an earlier attempt rendered), unless it `ended`."""
        p = job.params
        try:
            prompt = voice_prompt([voices[v] for v in segment.voices]) if segment.voices else None
            # The job's budget is for new audio: the engine counts the prompt's frames too. And the bot does
            # not know the worker's model, so a line runs at most as long as this model reaches.
            prompt_frames = 0 if prompt is None else len(prompt.codes)
            max_tokens = min(p.max_tokens + prompt_frames, self.engine.config.decoder.max_positions)
            done = 0 if before is None else len(before)
            if ended or (done and prompt_frames + done + 2 > max_tokens):  # nothing left to render
                return _nothing()
            params = GenerationParams(
                cfg_scale=p.cfg_scale,
                temperature=p.temperature,
                top_p=p.top_p,
                top_k=p.top_k,
                max_tokens=max_tokens,
                seed=(job.render_seed + index) % MAX_SEED,
            )
            if self.shared is None:
                return self.engine.stream_codes(segment.text, params, prompt, resume_from=before)
            request_id = f"{job.job_id}:{index}"
            self.shared.submit(request_id, segment.text, params, prompt, resume_from=before)
            return self.shared.frames(request_id)
        except ValueError as exc:  # TextError included: the engine refused this input before any work
            raise RenderInputError(str(exc)) from exc


class SharedSteps:
    """One scheduler serving many jobs' generators in one thread: frames of every request are kept until its
    own generator asks for them, and a generator that finds none steps the scheduler for everyone."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self._frames: dict[str, deque[np.ndarray]] = {}
        self._done: set[str] = set()
        self._failed: dict[str, BaseException] = {}

    def submit(
        self,
        request_id: str,
        text: str,
        params: GenerationParams,
        prompt: VoicePrompt | None,
        *,
        resume_from: np.ndarray | None = None,
    ) -> None:
        # ValueError for input the engine refuses
        self.scheduler.submit(request_id, text, params, prompt, resume_from=resume_from)
        self._frames[request_id] = deque()

    def frames(self, request_id: str) -> Generator[np.ndarray, None, None]:
        """The request's frames as they become final; closing it early cancels the request."""
        try:
            while True:
                waiting = self._frames[request_id]
                if waiting:
                    yield waiting.popleft()
                elif request_id in self._done:
                    return
                else:
                    self._step(request_id)
        finally:
            self._frames.pop(request_id, None)
            self._done.discard(request_id)
            self._failed.pop(request_id, None)
            self.scheduler.cancel(request_id)

    def _step(self, request_id: str) -> None:
        failed = self._failed.get(request_id)
        if failed is not None:
            raise RuntimeError("the batched decode step failed") from failed
        if request_id not in self.scheduler.active:
            raise RuntimeError(f"request {request_id} is not decoding")  # never expected: a bug, not input
        try:
            chunk = self.scheduler.step_chunk()
        except Exception as exc:
            # The step is shared: every request in it is lost. Each one's job fails (and is retried).
            for other in self.scheduler.active:
                self._failed[other] = exc
                self.scheduler.cancel(other)
            raise
        for other, frames_NxC in chunk.frames.items():
            if other in self._frames:
                self._frames[other].append(frames_NxC)
        self._done.update(chunk.finished)


def voice_prompt(records: list[VoiceRecord]) -> VoicePrompt:
    """One prompt from stored voices in tag order: "[S1] words of the first [S2] words of the second", and
    their codes one after another, so each voice speaks as the tag the segment gives it (research/dia.md §3)."""
    codes = [np.frombuffer(r.codes, dtype="<i2").reshape(r.frames, r.channels).astype(np.int64) for r in records]
    return VoicePrompt(prompt_transcript([r.transcript for r in records]), np.concatenate(codes))


def voice_record(transcript: str, codes_TxC: np.ndarray) -> VoiceRecord:
    frames, channels = codes_TxC.shape
    return VoiceRecord(transcript, codes_TxC.astype("<i2").tobytes(), frames, channels)


def _chunk(segment: int, start: int, frames_NxC: np.ndarray) -> CodesChunk:
    codes = frames_NxC.astype("<i2").tobytes()  # DAC codes are 0..1023
    return CodesChunk(segment, start, len(frames_NxC), frames_NxC.shape[1], codes)


def _nothing() -> Generator[np.ndarray, None, None]:
    yield from ()
