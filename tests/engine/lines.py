"""Whole lines from two engines on one checkpoint, compared: what a faster path must keep exactly."""

from __future__ import annotations

import numpy as np

from tts_engine.engine import Engine, GenerationParams, VoicePrompt


def assert_same_lines(expected: Engine, actual: Engine, text: str, max_tokens: int) -> None:
    """`actual` renders the lines `expected` renders, greedy with a voice prompt (its prefill included) and
    seeded, and neither line is empty."""
    channels = expected.config.decoder.num_channels
    prompt = VoicePrompt("[S2] Me.", np.random.default_rng(2).integers(0, 1024, size=(6, channels)))
    for params, voice in (
        (GenerationParams(temperature=0, max_tokens=max_tokens), prompt),
        (GenerationParams(max_tokens=max_tokens, seed=3), None),
    ):
        codes = expected.generate_codes(text, params, voice)
        assert len(codes) > 0
        np.testing.assert_array_equal(actual.generate_codes(text, params, voice), codes)
