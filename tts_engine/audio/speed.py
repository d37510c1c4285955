"""Pitch-preserving speed change, in chunks: WSOLA (waveform-similarity overlap-add).

Verhelst & Roelands' WSOLA: output frames of 20 ms overlap by half under a Hann window; frame k is read from
the input near k * hop * speed, shifted within +-5 ms to the position whose waveform best continues the
previous frame (cross-correlation), so periods line up and pitch is kept. Dia's own app only resamples, which
shifts pitch. Decisions depend only on input samples, never on how the input was chunked, so streaming and
whole-signal output are identical.
"""

from __future__ import annotations

import numpy as np

MIN_SPEED, MAX_SPEED = 0.75, 1.5


class SpeedChanger:
    """`process` mono float32 chunks at `rate`; `flush` at the end of a continuous piece."""

    def __init__(self, speed: float, rate: int = 48000) -> None:
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise ValueError(f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {speed}")
        self.speed = speed
        self.frame = int(0.020 * rate) // 2 * 2
        self.hop = self.frame // 2
        self.tolerance = int(0.005 * rate)
        # A periodic Hann window: frames overlapping by half sum to exactly one.
        self.window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(self.frame) / self.frame)).astype(np.float32)
        self._reset()

    def _reset(self) -> None:
        self._input = np.zeros(0, dtype=np.float32)
        self._input_start = 0  # absolute index of _input[0]
        self._consumed = 0  # total input samples received
        self._k = 0  # next output frame
        self._previous: int | None = None  # input position of the previous frame
        self._ola = np.zeros(self.frame, dtype=np.float32)  # overlap-add tail from output index k * hop
        self._emitted = 0

    def process(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self.speed == 1.0:
            return x
        self._input = np.concatenate((self._input, x))
        self._consumed += len(x)
        return self._run(final=False)

    def flush(self) -> np.ndarray:
        if self.speed == 1.0:
            return np.zeros(0, dtype=np.float32)
        owed = round(self._consumed / self.speed) - self._emitted  # the output length is input / speed
        self._input = np.concatenate((self._input, np.zeros(self.frame + 2 * self.tolerance, dtype=np.float32)))
        out = [self._run(final=True, limit=self._consumed)]
        out.append(self._ola[: self.frame - self.hop])  # the last frame's tail
        tail = np.concatenate(out)[: max(0, owed)]
        self._reset()
        return tail

    def _run(self, *, final: bool, limit: int | None = None) -> np.ndarray:
        out = []
        end = self._input_start + len(self._input)
        while True:
            nominal = round(self._k * self.hop * self.speed)
            if final and limit is not None and nominal >= limit:
                break
            need = max(nominal + self.tolerance, (self._previous or 0) + self.hop) + self.frame
            if need > end:
                break
            start = self._best_start(nominal)
            segment = self._input[start - self._input_start : start - self._input_start + self.frame]
            self._ola += self.window * segment
            out.append(self._ola[: self.hop].copy())
            self._ola = np.concatenate((self._ola[self.hop :], np.zeros(self.hop, dtype=np.float32)))
            self._previous = start
            self._k += 1
            drop = max(0, min(nominal, self._previous) - self.tolerance - self._input_start)
            self._input, self._input_start = self._input[drop:], self._input_start + drop
        result = np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
        self._emitted += len(result)
        return result

    def _best_start(self, nominal: int) -> int:
        if self._previous is None:
            return nominal
        lo = max(0, nominal - self.tolerance)
        hi = nominal + self.tolerance
        template_at = self._previous + self.hop - self._input_start  # the natural continuation
        template = self._input[template_at : template_at + self.frame]
        region = self._input[lo - self._input_start : hi - self._input_start + self.frame]
        scores = np.correlate(region, template, mode="valid")
        return lo + int(np.argmax(scores))
