"""A job in, batches of Opus packets out: the engine side of the worker.

Each segment renders with its voices as the prompt (their transcripts and codes joined in order), segments
and pauses flow into one audio pipeline, and packets leave in batches: the first as soon as there is one,
then about 200 ms at a time. Segment i renders with seed `render_seed + i`, so a retried job reproduces the
audio of a dead attempt. Mistakes in the job itself (text Dia cannot read, a voice that does not fit) raise
`RenderInputError`, which the worker reports instead of retrying.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping

import numpy as np

from tts_engine.audio.opus import DEFAULT_BITRATE
from tts_engine.engine import Engine, GenerationParams, VoicePrompt
from tts_engine.jobs import MAX_SEED, RenderJob, Segment, VoiceRecord
from tts_engine.rendering import RenderInputError, RenderResult

BATCH_PACKETS = 10  # 200 ms of audio per audio event after the first


class EngineRenderer:
    def __init__(self, engine: Engine, *, bitrate: int = DEFAULT_BITRATE, batch_packets: int = BATCH_PACKETS) -> None:
        self.engine = engine
        self.bitrate = bitrate
        self.batch_packets = batch_packets
        self.revision = f"{engine.revision}:opus{bitrate}"

    def render(self, job: RenderJob, voices: Mapping[str, VoiceRecord], result: RenderResult) -> Iterator[list[bytes]]:
        """Batches of packets for `job`; closing the iterator stops the engine at once."""
        try:
            pipeline = self.engine.audio_pipeline(speed=job.params.speed, bitrate=self.bitrate)
        except ValueError as exc:
            raise RenderInputError(str(exc)) from exc
        pending: list[bytes] = []
        sent_any = False
        for index, segment in enumerate(job.segments):
            codes = self._codes(job, index, segment, voices)
            try:
                for frames in codes:
                    pending += pipeline.push_codes(frames).packets
                    if pending and (not sent_any or len(pending) >= self.batch_packets):
                        yield pending
                        pending, sent_any = [], True
            finally:
                codes.close()
            if segment.pause_after:
                pending += pipeline.pause(segment.pause_after).packets
        pending += pipeline.finish().packets
        if pending:
            yield pending
        result.samples, result.pre_skip = pipeline.samples, pipeline.pre_skip

    def _codes(
        self, job: RenderJob, index: int, segment: Segment, voices: Mapping[str, VoiceRecord]
    ) -> Generator[np.ndarray, None, None]:
        p = job.params
        try:
            prompt = voice_prompt([voices[v] for v in segment.voices]) if segment.voices else None
            # The job's budget is for new audio: the engine counts the prompt's frames too. And the bot does
            # not know the worker's model, so a line runs at most as long as this model reaches.
            prompt_frames = 0 if prompt is None else len(prompt.codes)
            max_tokens = min(p.max_tokens + prompt_frames, self.engine.config.decoder.max_positions)
            params = GenerationParams(
                cfg_scale=p.cfg_scale,
                temperature=p.temperature,
                top_p=p.top_p,
                top_k=p.top_k,
                max_tokens=max_tokens,
                seed=(job.render_seed + index) % MAX_SEED,
            )
            return self.engine.stream_codes(segment.text, params, prompt)
        except ValueError as exc:  # TextError included: the engine refused this input before any work
            raise RenderInputError(str(exc)) from exc


def voice_prompt(records: list[VoiceRecord]) -> VoicePrompt:
    """One prompt from stored voices, in order: their transcripts joined, their codes one after another."""
    codes = [np.frombuffer(r.codes, dtype="<i2").reshape(r.frames, r.channels).astype(np.int64) for r in records]
    return VoicePrompt(" ".join(r.transcript for r in records), np.concatenate(codes))
