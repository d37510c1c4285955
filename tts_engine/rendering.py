"""What the worker asks of a renderer, kept apart from the engine so the worker loop imports no torch."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from tts_engine.jobs import RenderJob, VoiceRecord


class RenderInputError(ValueError):
    """The job cannot be rendered as asked; `str()` is for the user."""


@dataclass
class RenderResult:
    """Filled in when a rendering finishes: 48 kHz samples of audio and the Opus pre-skip, for files."""

    samples: int = 0
    pre_skip: int = 0
    voice: VoiceRecord | None = None  # the voice a `keep_voice` job made, for the worker to store


class Renderer(Protocol):
    revision: str  # identifies what renders (model, codec, settings) for the cache

    def render(self, job: RenderJob, voices: Mapping[str, VoiceRecord], result: RenderResult) -> Iterator[list[bytes]]:
        """Batches of 20 ms Opus packets for `job`; fills `result` at the end.

        A job with a `clip` yields nothing and makes `result.voice` from the clip; a job with `keep_voice` also
        sets `result.voice` to the codes it rendered (one segment, no pauses) with the segment's words.
        """
        ...  # fmt: skip
