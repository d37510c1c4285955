"""Our engine against transformers' Dia on the same tiny checkpoints: logits, greedy codes, EOS timing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.engine import tiny
from tests.engine.conftest import Checkpoint
from tts_engine.dia import text as dia_text
from tts_engine.dia.decode import Decoder
from tts_engine.dia.delay import prefill_grid
from tts_engine.engine import Engine, GenerationParams, VoicePrompt

TEXT = "[S1] Welcome, traveler! (laughs) [S2] Beware the woods."
TRANSCRIPT = "[S1] This is how I sound."


def _random_prompt(frames: int, channels: int, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1024, size=(frames, channels))


def _relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours - reference).abs().max() / reference.abs().max())


def test_logits_match_step_by_step(checkpoint: Checkpoint, engine: Engine) -> None:
    """Per-position logits of both CFG rows, from our cached one-step decode, equal transformers' full forward."""
    shape, reference = checkpoint.shape, checkpoint.reference
    channels = len(shape.delays)
    ids = dia_text.encode(TEXT)
    grid = prefill_grid(_random_prompt(20, channels), shape.delays, tiny.BOS)
    grid[grid < 0] = 5  # a full delayed grid: known cells, then arbitrary codes
    steps = grid.shape[0]
    text_2xL = torch.tensor([ids, [0] * len(ids)])
    with torch.no_grad():
        out = reference(
            input_ids=text_2xL,
            attention_mask=torch.ones_like(text_2xL),
            decoder_input_ids=torch.from_numpy(grid)[None].expand(2, -1, -1),
        )
    expected_2xTxCxV = out.logits.view(2, channels, steps, -1).transpose(1, 2)

    decoder = Decoder(engine.model, slots=1, noise_steps=1, use_graphs=False)
    rows = torch.tensor([0, 1])
    with torch.inference_mode():
        enc = engine.model.encode(text_2xL)
        decoder.cross.fill(rows, engine.model.cross_kv(enc))
        tokens = torch.from_numpy(grid)[None].expand(2, -1, -1)
        for t in range(steps):
            logits = engine.model.decode(
                tokens[:, t : t + 1], torch.full((2, 1), t), decoder.cache, decoder.cross, cross_span=len(ids)
            )
            assert _relative_error(logits[:, 0], expected_2xTxCxV[:, t]) <= 1e-4, f"position {t}"


def test_prefill_logits_match(checkpoint: Checkpoint, engine: Engine) -> None:
    """One causal pass over many positions (the voice-prompt prefill) gives the same logits as well."""
    shape, reference = checkpoint.shape, checkpoint.reference
    channels = len(shape.delays)
    ids = dia_text.encode(TEXT)
    grid = torch.from_numpy(_random_prompt(12, channels, seed=3))
    text_2xL = torch.tensor([ids, [0] * len(ids)])
    with torch.no_grad():
        out = reference(
            input_ids=text_2xL, attention_mask=torch.ones_like(text_2xL), decoder_input_ids=grid[None].expand(2, -1, -1)
        )
    expected = out.logits.view(2, channels, 12, -1).transpose(1, 2)
    decoder = Decoder(engine.model, slots=1, noise_steps=1, use_graphs=False)
    rows = torch.tensor([0, 1])
    with torch.inference_mode():
        decoder.cross.fill(rows, engine.model.cross_kv(engine.model.encode(text_2xL)))
        logits = engine.model.decode(
            grid[None].expand(2, -1, -1), torch.arange(12)[None].expand(2, -1), decoder.cache, decoder.cross, rows
        )
    assert _relative_error(logits, expected) <= 1e-4


@pytest.mark.parametrize("max_tokens", [48, 25])
def test_greedy_codes_match(checkpoint: Checkpoint, engine: Engine, max_tokens: int) -> None:
    expected = tiny.reference_generate(checkpoint.reference, dia_text.encode(TEXT), max_tokens=max_tokens)
    ours = engine.generate_codes(TEXT, GenerationParams(temperature=0, max_tokens=max_tokens))
    assert ours.shape == expected.shape == (max_tokens - 2, len(checkpoint.shape.delays))
    np.testing.assert_array_equal(ours, expected)


def test_greedy_codes_match_with_a_voice_prompt(checkpoint: Checkpoint, engine: Engine) -> None:
    channels = len(checkpoint.shape.delays)
    prompt = _random_prompt(9, channels)
    ids = dia_text.encode(TEXT, prefix=TRANSCRIPT)
    expected = tiny.reference_generate(checkpoint.reference, ids, prompt_TxC=prompt, max_tokens=50)
    ours = engine.generate_codes(TEXT, GenerationParams(temperature=0, max_tokens=50), VoicePrompt(TRANSCRIPT, prompt))
    assert ours.shape == expected.shape == (50 - 2 - 9, channels)
    np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize(("cfg_scale", "top_k"), [(1.0, 45), (4.5, 3), (2.0, 1024)])
def test_greedy_codes_match_across_guidance_settings(
    checkpoint: Checkpoint, engine: Engine, cfg_scale: float, top_k: int
) -> None:
    expected = tiny.reference_generate(
        checkpoint.reference, dia_text.encode(TEXT), max_tokens=30, cfg_scale=cfg_scale, top_k=top_k
    )
    params = GenerationParams(temperature=0, max_tokens=30, cfg_scale=cfg_scale, top_k=top_k)
    np.testing.assert_array_equal(engine.generate_codes(TEXT, params), expected)


def test_eos_timing_matches_when_the_model_ends(ending_checkpoint: Checkpoint) -> None:
    engine = Engine.load(ending_checkpoint.folder)
    ids = dia_text.encode(TEXT)
    expected = tiny.reference_generate(ending_checkpoint.reference, ids, max_tokens=100)
    assert 0 < len(expected) < 100 - 2, "the biased checkpoint should end on its own"
    ours = engine.generate_codes(TEXT, GenerationParams(temperature=0, max_tokens=100))
    np.testing.assert_array_equal(ours, expected)
    prompt = _random_prompt(6, 3)
    ids = dia_text.encode(TEXT, prefix=TRANSCRIPT)
    expected = tiny.reference_generate(ending_checkpoint.reference, ids, prompt_TxC=prompt, max_tokens=100)
    ours = engine.generate_codes(TEXT, GenerationParams(temperature=0, max_tokens=100), VoicePrompt(TRANSCRIPT, prompt))
    np.testing.assert_array_equal(ours, expected)
