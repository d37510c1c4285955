"""Loudness normalisation while streaming: ITU-R BS.1770-4 gated loudness of the audio so far, and a gain that
glides toward the target level, so every voice plays equally loud without waiting for the line to end.

- Measurement: K-weighting (the standard's two biquads at 48 kHz), mean square over 400 ms blocks every
  100 ms, absolute gate -70 LUFS, relative gate -10 LU, as pyloudnorm computes integrated loudness.
- Gain: until the first block is measured, the prior (0 dB, or what the caller knows about this voice);
  then the target minus the loudness so far, within +-20 dB. The applied gain moves at most 6 dB a second,
  sample by sample, so it never clicks or pumps.
- Peaks: the gain never lets a sample pass -1 dBFS: it is capped by the ceiling over the loudest input
  sample seen so far, so nothing clips and no latency is added.
Everything depends on sample positions only, not on how the stream was chunked.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import sosfilt

RATE = 48000
# ITU-R BS.1770-4 K-weighting at 48 kHz: the head-related shelf, then the RLB high-pass.
K_WEIGHTING_SOS = np.array(
    [
        [1.53512485958697, -2.69169618940638, 1.19839281085285, 1.0, -1.69065929318241, 0.73248077421585],
        [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621],
    ]
)
STEP = RATE // 10  # 100 ms
BLOCK_STEPS = 4  # 400 ms blocks
ABSOLUTE_GATE = -70.0
RELATIVE_GATE = -10.0
DEFAULT_TARGET = -20.0


def _loudness(mean_square: float | np.ndarray) -> float | np.ndarray:
    return -0.691 + 10 * np.log10(np.maximum(mean_square, 1e-20))


class LoudnessNormalizer:
    """`process` mono float32 chunks at 48 kHz; returns them with the gain applied."""

    def __init__(
        self,
        target: float = DEFAULT_TARGET,
        *,
        prior_gain_db: float = 0.0,
        max_gain_db: float = 20.0,
        slew_db_per_s: float = 6.0,
        ceiling_db: float = -1.0,
    ) -> None:
        self.target, self.max_gain_db = target, max_gain_db
        self._slew = slew_db_per_s / RATE
        self._ceiling = 10 ** (ceiling_db / 20)
        self._zi = np.zeros((K_WEIGHTING_SOS.shape[0], 2))
        self._step_sum, self._step_fill = 0.0, 0
        self._steps: list[float] = []  # mean square of each complete 100 ms step
        self._blocks: list[float] = []  # mean square of each complete 400 ms block
        self._gain_db = prior_gain_db
        self._target_gain_db = prior_gain_db
        self._peak = 0.0

    @property
    def loudness(self) -> float | None:
        """Gated integrated loudness (LUFS) of the audio so far, or None before the first block."""
        blocks = np.array(self._blocks)
        loud = blocks[_loudness(blocks) > ABSOLUTE_GATE] if len(blocks) else blocks
        if not len(loud):
            return None
        gate = float(_loudness(loud.mean())) + RELATIVE_GATE
        kept = loud[_loudness(loud) > gate]
        return float(_loudness(kept.mean())) if len(kept) else None

    def process(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        out = np.empty_like(x)
        done = 0
        while done < len(x):
            piece = x[done : done + STEP - self._step_fill]  # never crosses a 100 ms step boundary
            out[done : done + len(piece)] = self._apply(piece)
            self._measure(piece)
            done += len(piece)
        return out

    def _apply(self, piece: np.ndarray) -> np.ndarray:
        ramp = np.arange(1, len(piece) + 1) * self._slew
        delta = self._target_gain_db - self._gain_db
        gains_db = self._gain_db + np.sign(delta) * np.minimum(abs(delta), ramp)
        self._gain_db = float(gains_db[-1]) if len(piece) else self._gain_db
        peaks = np.maximum.accumulate(np.maximum(np.abs(piece), self._peak))
        self._peak = float(peaks[-1]) if len(piece) else self._peak
        gains = np.minimum(10 ** (gains_db / 20), self._ceiling / np.maximum(peaks, 1e-9))
        return (piece * gains).astype(np.float32)

    def _measure(self, piece: np.ndarray) -> None:
        weighted, self._zi = sosfilt(K_WEIGHTING_SOS, piece.astype(np.float64), zi=self._zi)
        self._step_sum += float(np.square(weighted).sum())
        self._step_fill += len(piece)
        if self._step_fill < STEP:
            return
        self._steps.append(self._step_sum / STEP)
        self._step_sum, self._step_fill = 0.0, 0
        if len(self._steps) >= BLOCK_STEPS:
            self._blocks.append(float(np.mean(self._steps[-BLOCK_STEPS:])))
            measured = self.loudness
            if measured is not None:
                self._target_gain_db = float(np.clip(self.target - measured, -self.max_gain_db, self.max_gain_db))
