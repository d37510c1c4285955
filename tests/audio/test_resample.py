"""44.1 -> 48 kHz: frequency, purity, length, and no seams between chunks."""

from __future__ import annotations

import numpy as np
import pytest

from tests.audio.conftest import dominant_frequency, sine, thd_n_db
from tts_engine.audio.resample import Resampler


def _resample(x: np.ndarray, chunk: int | None) -> np.ndarray:
    resampler = Resampler(44100, 48000)
    if chunk is None:
        return np.concatenate((resampler.process(x), resampler.flush()))
    parts = [resampler.process(x[i : i + chunk]) for i in range(0, len(x), chunk)]
    return np.concatenate((*parts, resampler.flush()))


def test_a_1khz_sine_stays_pure_and_long_enough() -> None:
    out = _resample(sine(1000, 2.0, 44100), None)
    assert len(out) == 96000  # 2 s at 48 kHz
    middle = out[4800:-4800]  # leave out the filter's start and end
    assert abs(dominant_frequency(middle, 48000) - 1000) < 1
    assert thd_n_db(middle, 1000, 48000) < -60


@pytest.mark.parametrize("chunk", [1, 441, 512 * 3, 10_000])
def test_chunks_join_without_seams(chunk: int) -> None:
    x = sine(1000, 1.0, 44100)
    np.testing.assert_allclose(_resample(x, chunk), _resample(x, None), rtol=0, atol=1e-6)


def test_flush_starts_a_fresh_piece() -> None:
    resampler = Resampler(44100, 48000)
    first = np.concatenate((resampler.process(sine(440, 0.5, 44100)), resampler.flush()))
    second = np.concatenate((resampler.process(sine(440, 0.5, 44100)), resampler.flush()))
    np.testing.assert_array_equal(first, second)
