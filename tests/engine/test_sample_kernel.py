"""The fused sampler (tts_engine/dia/sample_kernel.py) against sampling.process and sampling.draw, which
test_sampling.py checks against transformers' processors; and whole lines through it. Without a GPU it runs in
Triton's interpreter (tests/conftest.py), about 40 ms a (row, channel) at Dia's vocabulary, so these tests use
few channels."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from tests.engine.conftest import Checkpoint
from tests.engine.lines import assert_same_lines
from tests.engine.test_sampling import random_logits
from tts_engine.dia import sampling
from tts_engine.dia.config import DecoderConfig
from tts_engine.engine import Engine, GenerationParams

sample_kernel = pytest.importorskip("tts_engine.dia.sample_kernel", reason="triton is not installed")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
EOS, V, C = 1024, 1028, 3
TEXT = "[S1] Welcome, traveler! (laughs) [S2] Beware the woods."
SETTINGS = [
    dict(cfg=3.0, temp=1.2, top_k=45, top_p=0.95),  # nari-labs defaults
    dict(cfg=4.0, temp=1.8, top_k=50, top_p=0.9),  # their voice-clone example
    dict(cfg=1.0, temp=1.0, top_k=20, top_p=1.0),  # guidance off: the second top-k cuts
    dict(cfg=2.5, temp=0.7, top_k=1028, top_p=0.5),  # every token a candidate until top-p
    dict(cfg=3.0, temp=1.2, top_k=1, top_p=0.95),
    dict(cfg=3.0, temp=1.2, top_k=5000, top_p=1.0),  # past the vocabulary: clamped, as the chain clamps it
]


def _params(
    b: int, *, cfg: float, temp: float, top_k: int, top_p: float, greedy: bool = False
) -> sampling.SamplingParams:
    return sampling.SamplingParams(
        cfg_scale=torch.full((b,), cfg, device=DEVICE),
        temperature=torch.full((b,), temp, device=DEVICE),
        top_k=torch.full((b,), int(top_k), dtype=torch.long, device=DEVICE),
        top_p=torch.full((b,), top_p, device=DEVICE),
        greedy=torch.full((b,), greedy, device=DEVICE),
    )


def _logits(seed: int, b: int = 3, *, eos_on_top: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    cond, uncond = random_logits(seed, b, eos_on_top=eos_on_top, channels=C)
    return cond.to(DEVICE), uncond.to(DEVICE)


def _noise(b: int, seed: int = 0, steps: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.empty((steps, b, C, V)).exponential_(generator=gen).to(DEVICE)


def _fused(
    cond: torch.Tensor, uncond: torch.Tensor, params: sampling.SamplingParams, noise: torch.Tensor, step: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel's tokens and filtered logits."""
    scores = torch.empty(cond.shape, device=DEVICE)
    step_1 = torch.tensor([step], device=DEVICE)
    tokens = sample_kernel.for_device(DEVICE)(cond, uncond, params, EOS, noise, step_1, scores_out=scores)
    return tokens, scores


def _chain(
    cond: torch.Tensor, uncond: torch.Tensor, params: sampling.SamplingParams, noise: torch.Tensor, step: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    scores = sampling.process(cond, uncond, params, EOS)
    return sampling.draw(scores, noise[step, : cond.shape[0]], params.greedy), scores


def _assert_same(fused: tuple[torch.Tensor, torch.Tensor], chain: tuple[torch.Tensor, torch.Tensor]) -> None:
    (tokens, scores), (expected_tokens, expected_scores) = fused, chain
    assert torch.equal(scores > float("-inf"), expected_scores > float("-inf")), "the same candidates"
    kept = expected_scores > float("-inf")
    torch.testing.assert_close(scores[kept], expected_scores[kept], rtol=1e-6, atol=1e-6)
    assert torch.equal(tokens, expected_tokens)


@pytest.mark.parametrize("settings", SETTINGS, ids=str)
@pytest.mark.parametrize("eos_on_top", [False, True])
def test_tokens_and_candidates_match_the_chain(settings: dict[str, float], eos_on_top: bool) -> None:
    cond, uncond = _logits(11, eos_on_top=eos_on_top)
    params = _params(
        3, cfg=settings["cfg"], temp=settings["temp"], top_k=int(settings["top_k"]), top_p=settings["top_p"]
    )
    noise = _noise(3)
    fused = _fused(cond, uncond, params, noise)
    _assert_same(fused, _chain(cond, uncond, params, noise))
    if eos_on_top:
        assert fused[0][0, 0] == EOS, "EOS on top is the only candidate"
    assert torch.all(fused[0][:, 1:] < EOS), "no special id on channels past the first"


def test_rows_mix_settings_greedy_included() -> None:
    """Per-row settings in one launch, as slots of a batch have them: each row as the chain gives it."""
    cond, uncond = _logits(3, b=4, eos_on_top=True)
    rows = [SETTINGS[0], SETTINGS[2], SETTINGS[3], SETTINGS[0]]
    params = sampling.SamplingParams(
        cfg_scale=torch.tensor([row["cfg"] for row in rows], device=DEVICE),
        temperature=torch.tensor([row["temp"] for row in rows], device=DEVICE),
        top_k=torch.tensor([row["top_k"] for row in rows], dtype=torch.long, device=DEVICE),
        top_p=torch.tensor([row["top_p"] for row in rows], device=DEVICE),
        greedy=torch.tensor([False, True, False, True], device=DEVICE),
    )
    noise = _noise(4, seed=5)
    fused = _fused(cond, uncond, params, noise)
    _assert_same(fused, _chain(cond, uncond, params, noise))
    assert torch.equal(fused[0][1], fused[1][1].argmax(-1)), "a greedy row takes the argmax"


def test_reads_the_noise_of_its_step_and_its_slots() -> None:
    """Noise (steps, slots, C, V): a launch of W rows reads noise[step, :W], wherever the step counter points."""
    cond, uncond = _logits(7, b=2)
    params = _params(2, cfg=3.0, temp=1.2, top_k=45, top_p=0.95)
    noise = _noise(5, seed=9, steps=3)  # five slots, two of them stepping
    draws = [_fused(cond, uncond, params, noise, step)[0] for step in range(3)]
    for step, tokens in enumerate(draws):
        assert torch.equal(tokens, _chain(cond, uncond, params, noise, step)[0])
    assert not torch.equal(draws[0], draws[1]), "another step's noise draws other tokens"


def test_logits_of_a_decode_step_are_read_through_their_strides() -> None:
    """A step's logits (2W, 1, C, V), conditional and unconditional rows interleaved: views, not copies; and
    rows that do not start 16-byte aligned."""
    cond, uncond = _logits(13, b=2)
    logits = torch.stack((cond, uncond), dim=1).flatten(0, 1)[:, None]
    cond_view, uncond_view = logits[:, 0].view(2, 2, C, V).unbind(1)
    assert cond_view.stride(0) == 2 * C * V
    params = _params(2, cfg=3.0, temp=1.2, top_k=45, top_p=0.95)
    noise = _noise(2)
    _assert_same(_fused(cond_view, uncond_view, params, noise), _chain(cond, uncond, params, noise))
    assert sample_kernel._vector(V, (*cond_view.stride()[:2], *noise.stride()[:3]), cond_view, noise) == 4
    # Rows one float apart from 16-byte alignment: read a float at a time, to the same result.
    odd = torch.zeros((2, 2, C, V + 1), device=DEVICE)
    odd[..., 1:] = torch.stack((cond, uncond), dim=1)
    cond_odd, uncond_odd = odd[..., 1:].unbind(1)
    assert sample_kernel._vector(V, (*cond_odd.stride()[:2],), cond_odd) == 1
    _assert_same(_fused(cond_odd, uncond_odd, params, noise), _chain(cond, uncond, params, noise))


def test_a_tie_at_the_top_p_cut_keeps_every_tied_token() -> None:
    """The one place the kernel may differ from the chain: its cuts are values, so a tie across top-p's cut
    keeps all the tied tokens, where torch.sort's order keeps one of them."""
    cond = torch.full((1, C, V), -30.0)
    cond[..., 10] = 2.0
    cond[..., 20] = cond[..., 30] = 1.0  # 0.58 and 0.21 each: top-p 0.7 cuts between the tied pair
    cond = cond.to(DEVICE)
    params = _params(1, cfg=1.0, temp=1.0, top_k=45, top_p=0.7)
    _, scores = _fused(cond, cond, params, _noise(1))
    _, chain_scores = _chain(cond, cond, params, _noise(1))
    for channel in range(C):
        assert (scores[0, channel] > float("-inf")).nonzero().flatten().tolist() == [10, 20, 30]
        kept = (chain_scores[0, channel] > float("-inf")).nonzero().flatten().tolist()
        assert kept in ([10, 20], [10, 30])


def test_a_sampler_that_fails_its_check_is_left_out(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A GPU where the kernel fails to build or disagrees gets a warning and the chain, not a failed start."""
    assert sample_kernel.check(sample_kernel.for_device(DEVICE), C, V, EOS, DEVICE) is None

    def broken(*args: object, **options: object) -> None:
        raise RuntimeError("no such instruction on this GPU")

    class Raising:
        def __getitem__(self, grid: object) -> object:
            return broken

    raising = sample_kernel.FusedSampler(Raising())
    assert sample_kernel.check(raising, C, V, EOS, DEVICE) == "RuntimeError: no such instruction on this GPU"
    monkeypatch.setattr(sample_kernel, "for_device", lambda device: raising)
    assert sample_kernel.checked(DecoderConfig(num_channels=C), DEVICE) is None
    assert "fused sampler unavailable, sampling through the chain" in caplog.text


def _with_sampler(engine: Engine, sampler: Any) -> Engine:
    engine.model.ops = dataclasses.replace(engine.model.ops, sampler=sampler)
    return engine


def test_lines_through_the_fused_sampler_equal_chain_lines(ending_checkpoint: Checkpoint) -> None:
    """Whole lines, greedy with a voice prompt and seeded: the same codes through the kernel as through the
    chain."""
    plain, fast = (Engine.load(ending_checkpoint.folder, DEVICE, "float32", use_cuda_graphs=False) for _ in range(2))
    _with_sampler(plain, None)  # on CUDA the decode kernels bring the sampler by default
    _with_sampler(fast, sample_kernel.for_device(DEVICE))
    assert_same_lines(plain, fast, TEXT, max_tokens=24)


def test_widths_where_the_chain_won_keep_the_chain(ending_checkpoint: Checkpoint) -> None:
    """`serves` follows the tuning: a width whose choice is None never launches the kernel (here one that
    would raise), and the line is the chain's."""

    class Raising:
        def __getitem__(self, grid: object) -> object:
            raise AssertionError("the kernel ran at a width where the chain won")

    plain, fast = (Engine.load(ending_checkpoint.folder, DEVICE, "float32", use_cuda_graphs=False) for _ in range(2))
    _with_sampler(plain, None)
    _with_sampler(fast, sample_kernel.FusedSampler(Raising(), choices={1: None}))
    params = GenerationParams(max_tokens=16, seed=4)
    np.testing.assert_array_equal(fast.generate_codes(TEXT, params), plain.generate_codes(TEXT, params))
