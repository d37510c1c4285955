"""Loudness: our streaming BS.1770 meter agrees with pyloudnorm; every voice ends at the same level."""

from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest

from tts_engine.audio.loudness import LoudnessNormalizer


def speechlike(seconds: float, level_db: float, seed: int) -> np.ndarray:
    """Noise bursts shaped like syllables, with pauses: enough to exercise the gates."""
    rng = np.random.default_rng(seed)
    n = round(seconds * 48000)
    envelope = np.repeat(rng.uniform(0, 1, n // 4800 + 1) > 0.3, 4800)[:n] * np.abs(np.sin(np.arange(n) / 1500))
    noise = rng.standard_normal(n) * envelope
    return (noise / np.sqrt(np.mean(noise**2)) * 10 ** (level_db / 20)).astype(np.float32)


def test_meter_matches_pyloudnorm() -> None:
    x = speechlike(8.0, -25.0, 0)
    normalizer = LoudnessNormalizer()
    normalizer.process(x)
    assert normalizer.loudness == pytest.approx(
        pyloudnorm.Meter(48000).integrated_loudness(x.astype(np.float64)), abs=0.05
    )


@pytest.mark.parametrize("level", [-38.0, -28.0, -12.0])
def test_every_level_ends_near_the_target(level: float) -> None:
    x = speechlike(20.0, level, 1)
    out = LoudnessNormalizer(target=-20.0).process(x)
    final = pyloudnorm.Meter(48000).integrated_loudness(out[-10 * 48000 :].astype(np.float64))
    assert final == pytest.approx(-20.0, abs=1.0)
    assert np.abs(out).max() <= 10 ** (-1 / 20) + 1e-6, "never above -1 dBFS"


def test_gain_glides_instead_of_jumping() -> None:
    x = (np.random.default_rng(2).standard_normal(6 * 48000) * 0.01).astype(np.float32)  # -40 dBFS, no pauses
    out = LoudnessNormalizer(target=-20.0).process(x)
    gain_db = 20 * np.log10(np.abs(out / x))
    assert np.max(np.abs(np.diff(gain_db))) < 0.001  # 6 dB/s is 0.000125 dB per sample
    assert gain_db[-1] > 15  # and it got there: about +20 dB


@pytest.mark.parametrize("chunk", [1, 480, 4801, 100_000])
def test_chunking_does_not_change_the_output(chunk: int) -> None:
    x = speechlike(3.0, -30.0, 3)
    whole = LoudnessNormalizer().process(x)
    normalizer = LoudnessNormalizer()
    parts = np.concatenate([normalizer.process(x[i : i + chunk]) for i in range(0, len(x), chunk)])
    np.testing.assert_array_equal(parts, whole)


def test_prior_gain_applies_before_the_first_block() -> None:
    x = speechlike(0.3, -30.0, 4)
    out = LoudnessNormalizer(prior_gain_db=6.0).process(x)
    np.testing.assert_allclose(out[x != 0] / x[x != 0], 10 ** (6 / 20), rtol=1e-5)
