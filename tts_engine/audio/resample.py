"""44.1 kHz -> 48 kHz (Discord's rate), band-limited, in chunks: soxr's streaming resampler (libsoxr, HQ).

Chunked output equals resampling the whole signal at once (soxr keeps the filter state between chunks).
"""

from __future__ import annotations

import numpy as np
import soxr

DISCORD_RATE = 48000


class Resampler:
    """`process` chunks of mono float32, `flush` at the end of a continuous piece; then it starts afresh."""

    def __init__(self, in_rate: int, out_rate: int = DISCORD_RATE, quality: str = "HQ") -> None:
        self.in_rate, self.out_rate, self.quality = in_rate, out_rate, quality
        self._stream: soxr.ResampleStream | None = None

    def process(self, x: np.ndarray) -> np.ndarray:
        if self.in_rate == self.out_rate:
            return np.asarray(x, dtype=np.float32)
        if self._stream is None:
            self._stream = soxr.ResampleStream(self.in_rate, self.out_rate, 1, dtype="float32", quality=self.quality)
        out: np.ndarray = self._stream.resample_chunk(np.asarray(x, dtype=np.float32), last=False)
        return out

    def flush(self) -> np.ndarray:
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        out: np.ndarray = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        self._stream = None
        return out
