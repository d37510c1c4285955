"""Pitch-preserving speed: the pitch stays, the duration changes, chunks do not matter."""

from __future__ import annotations

import numpy as np
import pytest

from tests.audio.conftest import dominant_frequency, sine
from tts_engine.audio.speed import SpeedChanger


def _run(x: np.ndarray, speed: float, chunk: int) -> np.ndarray:
    changer = SpeedChanger(speed)
    parts = [changer.process(x[i : i + chunk]) for i in range(0, len(x), chunk)]
    return np.concatenate((*parts, changer.flush()))


@pytest.mark.parametrize("speed", [0.75, 1.25, 1.5])
def test_pitch_is_kept_and_duration_scaled(speed: float) -> None:
    x = sine(220, 2.0, 48000)
    out = _run(x, speed, 4800)
    assert len(out) == round(len(x) / speed)
    assert abs(dominant_frequency(out[2000:-2000], 48000) - 220) < 3
    level_in, level_out = np.sqrt(np.mean(x**2)), np.sqrt(np.mean(out[2000:-2000] ** 2))
    assert abs(20 * np.log10(level_out / level_in)) < 1.0


@pytest.mark.parametrize("chunk", [1, 333, 960, 20_000])
def test_chunking_does_not_change_the_output(chunk: int) -> None:
    x = (sine(200, 1.0, 48000) + sine(310, 1.0, 48000, 0.2)) * np.linspace(0.2, 1, 48000).astype(np.float32)
    np.testing.assert_array_equal(_run(x, 1.3, chunk), _run(x, 1.3, len(x)))


def test_normal_speed_passes_through() -> None:
    x = sine(300, 0.3, 48000)
    changer = SpeedChanger(1.0)
    np.testing.assert_array_equal(changer.process(x), x)
    assert len(changer.flush()) == 0


@pytest.mark.parametrize("speed", [0.5, 2.0])
def test_out_of_range_speed_is_refused(speed: float) -> None:
    with pytest.raises(ValueError, match=r"speed must be between 0\.75 and 1\.5"):
        SpeedChanger(speed)
