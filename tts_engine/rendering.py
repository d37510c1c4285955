"""What the worker asks of a renderer, kept apart from the engine so the worker loop imports no torch."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from tts_engine.jobs import RenderJob, VoiceRecord


class RenderInputError(ValueError):
    """The job cannot be rendered as asked; `str()` is for the user."""


@dataclass(frozen=True)
class CodesChunk:
    """Frames a rendering pushed into its audio pipeline at once, for one segment of a job, as the worker logs
    them so that a retry can go on from them: little-endian int16 codes (frames, channels), starting at the
    segment's frame `start`."""

    segment: int
    start: int
    frames: int
    channels: int
    codes: bytes
    last: bool = False  # the segment has no frames after these


@dataclass
class RenderResult:
    """What a rendering reports as it goes (`codes`) and when it finishes: 48 kHz samples of audio and the
    Opus pre-skip (for files), and a made voice. `resume` comes from the worker: on a retry, each segment's
    chunks that earlier attempts rendered (in order from frame 0), which the rendering plays before any new."""

    samples: int = 0
    pre_skip: int = 0
    voice: VoiceRecord | None = None  # the voice a `keep_voice` job made, for the worker to store
    codes: list[CodesChunk] = field(default_factory=list)  # rendered since the worker last took them
    resume: Mapping[int, list[CodesChunk]] = field(default_factory=dict)


class Renderer(Protocol):
    revision: str  # identifies what renders (model, codec, settings) for the cache

    def render(self, job: RenderJob, voices: Mapping[str, VoiceRecord], result: RenderResult) -> Iterator[list[bytes]]:
        """Batches of 20 ms Opus packets for `job`; fills `result` at the end.

        A job with a `clip` yields nothing and makes `result.voice` from the clip; a job with `keep_voice` also
        sets `result.voice` to the codes it rendered (one segment, no pauses) with the segment's words. A
        renderer that makes codes appends them to `result.codes` and honours `result.resume`; one that does
        not (a test tone) may ignore both.
        """
        ...  # fmt: skip
