"""The delay pattern against transformers' DiaProcessor.build_indices / apply_audio_delay."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.models.dia.processing_dia import DiaProcessor

from tests.engine import tiny
from tts_engine.dia.delay import FREE, prefill_grid, undelay

DELAYS = (0, 8, 9, 10, 11, 12, 13, 14, 15)


@pytest.mark.parametrize("frames", [0, 1, 20])
@pytest.mark.parametrize("delays", [DELAYS, (0, 2, 2, 5)])
def test_prefill_matches_the_processor(frames: int, delays: tuple[int, ...]) -> None:
    prompt = np.random.default_rng(frames).integers(0, 1024, size=(frames, len(delays))) if frames else None
    expected = tiny.delayed_prefill(prompt, delays)[0].numpy()
    ours = prefill_grid(prompt, delays, tiny.BOS)
    assert ours.shape == expected.shape
    np.testing.assert_array_equal(np.where(ours == FREE, tiny.PAD, ours), expected)  # transformers marks free cells PAD


def test_undelay_inverts_the_delay() -> None:
    frames = np.random.default_rng(0).integers(0, 1024, size=(40, 9))
    padded = np.concatenate((frames, np.full((15, 9), tiny.PAD)))
    index = DiaProcessor.build_indices(bsz=1, seq_len=55, num_channels=9, delay_pattern=list(DELAYS), revert=False)
    delayed = DiaProcessor.apply_audio_delay(torch.from_numpy(padded)[None], tiny.PAD, tiny.BOS, index)[0].numpy()
    np.testing.assert_array_equal(undelay(delayed, DELAYS, 0, 40), frames)
    np.testing.assert_array_equal(undelay(delayed, DELAYS, 5, 12), frames[5:12])
    assert undelay(delayed, DELAYS, 7, 7).shape == (0, 9)
