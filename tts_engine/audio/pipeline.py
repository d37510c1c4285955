"""Codes in, what Discord plays out: streaming DAC decode -> 48 kHz -> speed -> loudness -> 20 ms Opus packets.

One pipeline serves one line, which may hold several rendered segments and pauses between them: the packet
stream and the loudness gain run on across them, while each segment's decode, resampling and speed change
end cleanly (`end_segment`) so silence can be placed exactly. Pauses are not stretched by the speed setting.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from tts_engine.audio.codec import Codec
from tts_engine.audio.lane import SerialLane
from tts_engine.audio.loudness import DEFAULT_TARGET, LoudnessNormalizer
from tts_engine.audio.opus import OpusFramer, OpusSettings
from tts_engine.audio.resample import DISCORD_RATE, Resampler
from tts_engine.audio.speed import SpeedChanger
from tts_engine.audio.stream import StreamingDecoder

MAX_PAUSE_SECONDS = 10.0


@dataclass
class Chunk:
    """Audio that became ready: 48 kHz mono float32 samples and the Opus packets made of them so far."""

    pcm: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    packets: list[bytes] = field(default_factory=list)

    def extend(self, other: Chunk) -> Chunk:
        return Chunk(np.concatenate((self.pcm, other.pcm)), self.packets + other.packets)


class AudioPipeline:
    """One line's audio. The codec runs on the caller's thread (the one that owns the GPU); with an `executor`,
    the stages after it run on that pool in a serial lane, so the caller goes back to decoding while they
    work. Until a line's first packet exists each call waits for them (the first packet is what a listener
    waits for); after that, a call returns what is ready and `finish` returns the rest. Either way the chunks
    of a line, joined, are the same.
    """

    def __init__(
        self,
        codec: Codec,
        *,
        speed: float = 1.0,
        opus: OpusSettings | None = None,
        loudness_target: float = DEFAULT_TARGET,
        prior_gain_db: float = 0.0,
        executor: Executor | None = None,
    ) -> None:
        self.codec = codec
        self._decoder: StreamingDecoder | None = None
        self._resampler = Resampler(codec.sample_rate, DISCORD_RATE)
        self._speed = SpeedChanger(speed, DISCORD_RATE)
        self._loudness = LoudnessNormalizer(loudness_target, prior_gain_db=prior_gain_db)
        self._framer = OpusFramer(opus)
        self._lane: SerialLane[Chunk] | None = None if executor is None else SerialLane(executor)
        self._first_out = False

    @property
    def samples(self) -> int:
        """48 kHz samples produced so far (the duration of the line times 48000); final after `finish`."""
        return self._framer.samples

    @property
    def pre_skip(self) -> int:
        return self._framer.encoder.lookahead

    def push_codes(self, frames_nxC: np.ndarray) -> Chunk:
        if self._decoder is None:
            self._decoder = StreamingDecoder(self.codec)
        pcm = self._decoder.push(frames_nxC)
        return self._then(lambda: self._downstream(self._resampler.process(pcm)))

    def end_segment(self) -> Chunk:
        """Flush the current segment's decode, resampling and speed change (nothing to do between segments)."""
        if self._decoder is None:
            return self._then(Chunk)
        pcm = self._decoder.flush()
        self._decoder = None
        return self._then(lambda: self._end_speech(pcm))

    def pause(self, seconds: float) -> Chunk:
        """End the current segment, then `seconds` of silence (exact, whatever the speed)."""
        if not 0 <= seconds <= MAX_PAUSE_SECONDS:
            raise ValueError(f"a pause is 0 to {MAX_PAUSE_SECONDS:g} s, got {seconds}")
        ended = self.end_segment()
        silence = np.zeros(round(seconds * DISCORD_RATE), dtype=np.float32)
        return ended.extend(self._then(lambda: self._level(silence)))

    def finish(self) -> Chunk:
        """The end of the line: everything left, the last packet padded with silence."""
        ended = self.end_segment()
        return ended.extend(self._then(lambda: Chunk(packets=self._framer.flush()), wait=True))

    def _then(self, work: Callable[[], Chunk], *, wait: bool = False) -> Chunk:
        """Run `work` after everything before it: now without a lane, else in the lane; what is ready."""
        if self._lane is None:
            return work()
        self._lane.submit(work)
        ready = Chunk()
        for chunk in self._lane.take(wait=wait or not self._first_out):
            ready = ready.extend(chunk)
        self._first_out = self._first_out or bool(ready.packets)
        return ready

    def _end_speech(self, pcm44: np.ndarray) -> Chunk:
        tail = np.concatenate((self._resampler.process(pcm44), self._resampler.flush()))
        return self._finish_speech(self._speed.process(tail))

    def _downstream(self, pcm48: np.ndarray) -> Chunk:
        return self._level(self._speed.process(pcm48))

    def _finish_speech(self, pcm48: np.ndarray) -> Chunk:
        return self._level(np.concatenate((pcm48, self._speed.flush())))

    def _level(self, pcm48: np.ndarray) -> Chunk:
        if not len(pcm48):
            return Chunk()
        leveled = self._loudness.process(pcm48)
        return Chunk(leveled, self._framer.process(leveled))
