"""The tiny random 44.1 kHz DAC (tests/models.py) loaded through our codec loader; signal helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tts_engine.audio.codec import Codec


@pytest.fixture(scope="session")
def dac_folder(tiny_dac: Path) -> Path:
    return tiny_dac


@pytest.fixture(scope="session")
def codec(dac_folder: Path) -> Codec:
    return Codec.load(dac_folder, "cpu")


def sine(frequency: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def dominant_frequency(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


def thd_n_db(x: np.ndarray, frequency: float, rate: int) -> float:
    """Everything that is not the fitted sine, relative to the sine, in dB."""
    t = np.arange(len(x)) / rate
    basis = np.stack((np.sin(2 * np.pi * frequency * t), np.cos(2 * np.pi * frequency * t), np.ones_like(t)), axis=1)
    coef, *_ = np.linalg.lstsq(basis, x.astype(np.float64), rcond=None)
    fit = basis @ coef
    return float(10 * np.log10(np.sum((x - fit) ** 2) / np.sum(fit**2)))
