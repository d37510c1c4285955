"""Sampling: our filtered distribution equals transformers' Dia processor chain; the draw samples it exactly."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import (
    DiaClassifierFreeGuidanceLogitsProcessor,
    DiaEOSChannelFilterLogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from tts_engine.dia.sampling import SamplingParams, draw, process

EOS, V, C = 1024, 1028, 9


def _params(b: int, *, cfg: float, temp: float, top_k: int, top_p: float, greedy: bool = False) -> SamplingParams:
    return SamplingParams(
        cfg_scale=torch.full((b,), cfg),
        temperature=torch.full((b,), temp),
        top_k=torch.full((b,), top_k, dtype=torch.long),
        top_p=torch.full((b,), top_p),
        greedy=torch.full((b,), greedy),
    )


def _reference(
    cond: torch.Tensor, uncond: torch.Tensor, *, cfg: float, temp: float, top_k: int, top_p: float
) -> torch.Tensor:
    """transformers' order for Dia sampling (generation_dia.py _get_logits_processor with do_sample=True)."""
    b = cond.shape[0]
    chain = LogitsProcessorList()
    if cfg != 1.0:
        chain.append(DiaClassifierFreeGuidanceLogitsProcessor(guidance_scale=cfg, guidance_top_k=top_k))
    if temp != 1.0:
        chain.append(TemperatureLogitsWarper(temp))
    chain.append(DiaEOSChannelFilterLogitsProcessor(num_channels=C, eos_token_id=EOS))
    chain.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        chain.append(TopPLogitsWarper(top_p))
    scores = torch.cat((cond.reshape(b * C, V), uncond.reshape(b * C, V))) if cfg != 1.0 else cond.reshape(b * C, V)
    input_ids = torch.zeros((b * C, 1), dtype=torch.long)
    return chain(input_ids, scores.clone()).view(b, C, V)


def random_logits(
    seed: int, b: int = 3, *, eos_on_top: bool = False, channels: int = C
) -> tuple[torch.Tensor, torch.Tensor]:
    """Conditional and unconditional logits (b, channels, V) as a step gives them, where the channel rules
    matter: special ids look attractive past channel 0, and with `eos_on_top` row 0's channel 0 wants EOS."""
    gen = torch.Generator().manual_seed(seed)
    cond = torch.randn((b, channels, V), generator=gen) * 3
    uncond = cond + torch.randn((b, channels, V), generator=gen)
    cond[:, 1:, EOS:] += 8  # special ids look attractive on every channel: the filter must still ban them
    if eos_on_top:
        cond[0, 0, EOS] = cond[0, 0].max() + 5
        uncond[0, 0, EOS] = cond[0, 0, EOS] - 1
    return cond, uncond


SETTINGS = [
    dict(cfg=3.0, temp=1.2, top_k=45, top_p=0.95),  # nari-labs defaults
    dict(cfg=4.0, temp=1.8, top_k=50, top_p=0.9),  # their voice-clone example
    dict(cfg=1.0, temp=1.0, top_k=20, top_p=1.0),  # guidance off, plain top-k
    dict(cfg=2.5, temp=0.7, top_k=1028, top_p=0.5),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=str)
@pytest.mark.parametrize("eos_on_top", [False, True])
def test_distribution_matches_transformers(settings: dict[str, float], eos_on_top: bool) -> None:
    cond, uncond = random_logits(11, eos_on_top=eos_on_top)
    top_k = int(settings["top_k"])
    ours = process(
        cond, uncond, _params(3, cfg=settings["cfg"], temp=settings["temp"], top_k=top_k, top_p=settings["top_p"]), EOS
    )
    expected = _reference(
        cond, uncond, cfg=settings["cfg"], temp=settings["temp"], top_k=top_k, top_p=settings["top_p"]
    )
    torch.testing.assert_close(ours.softmax(-1), expected.softmax(-1), rtol=0, atol=1e-6)
    assert torch.equal(torch.isinf(ours), torch.isinf(expected))


def test_channel_rules() -> None:
    cond, uncond = random_logits(5, eos_on_top=True)
    probs = process(cond, uncond, _params(3, cfg=3.0, temp=1.2, top_k=45, top_p=0.95), EOS).softmax(-1)
    assert torch.all(probs[:, 1:, EOS:] == 0), "only channel 0 may produce EOS, none any other special id"
    assert torch.all(probs[:, 0, EOS + 1 :] == 0)
    assert probs[0, 0, EOS] == 1.0, "EOS on top is the only candidate"
    assert torch.all(probs[1:, 0, EOS] == 0), "EOS not on top is no candidate"


def test_rows_are_independent() -> None:
    """One call with different settings per row equals separate calls, so slots never leak into each other."""
    cond, uncond = random_logits(3, b=2)
    a, b = SETTINGS[0], SETTINGS[2]
    mixed = SamplingParams(
        cfg_scale=torch.tensor([a["cfg"], b["cfg"]]),
        temperature=torch.tensor([a["temp"], b["temp"]]),
        top_k=torch.tensor([a["top_k"], b["top_k"]], dtype=torch.long),
        top_p=torch.tensor([a["top_p"], b["top_p"]]),
        greedy=torch.tensor([False, False]),
    )
    together = process(cond, uncond, mixed, EOS)
    first = process(cond[:1], uncond[:1], _params(1, **a), EOS)  # type: ignore[arg-type]
    second = process(cond[1:], uncond[1:], _params(1, **b), EOS)  # type: ignore[arg-type]
    torch.testing.assert_close(together, torch.cat((first, second)), rtol=0, atol=0)


def test_greedy_rows_take_the_argmax() -> None:
    cond, uncond = random_logits(8)
    scores = process(cond, uncond, _params(3, cfg=3.0, temp=1.0, top_k=45, top_p=1.0), EOS)
    noise = torch.empty_like(scores).exponential_(generator=torch.Generator().manual_seed(0))
    tokens = draw(scores, noise, torch.tensor([True, False, True]))
    assert torch.equal(tokens[0], scores[0].argmax(-1)) and torch.equal(tokens[2], scores[2].argmax(-1))


def test_draw_samples_the_distribution() -> None:
    """The exponential race reproduces the probabilities (50,000 draws, fixed seed, 4-sigma tolerance)."""
    logits = torch.tensor([[[2.0, 1.0, 0.5, float("-inf"), -1.0]]])
    probs = logits.softmax(-1)[0, 0]
    gen = torch.Generator().manual_seed(1)
    draws = 50_000
    noise = torch.empty((draws, 1, 5)).exponential_(generator=gen)
    tokens = draw(logits.expand(draws, 1, 5), noise, torch.zeros(draws, dtype=torch.bool))
    counts = torch.bincount(tokens.flatten(), minlength=5).float()
    sigma = (draws * probs * (1 - probs)).sqrt()
    assert counts[3] == 0, "a filtered token is never drawn"
    assert torch.all((counts - draws * probs).abs() <= 4 * sigma + 1)
