"""The decode kernels (tts_engine/dia/kernels.py) against SDPA and the eager cache write, and whole decodes
through them against the general path. Without a GPU they run in Triton's interpreter (tests/conftest.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.engine.conftest import Checkpoint
from tests.engine.lines import assert_same_lines
from tts_engine.dia import fused
from tts_engine.dia.attention import attend, fold_mask, pair_heads
from tts_engine.engine import Engine, GenerationParams, VoicePrompt

kernels = pytest.importorskip("tts_engine.dia.kernels", reason="triton is not installed")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
TEXT = "[S1] Welcome, traveler! (laughs) [S2] Beware the woods."


def _with_programs(programs: int) -> kernels.DecodeKernels:
    base = kernels.for_device(DEVICE)
    return dataclasses.replace(base, programs=programs)


def _reference(q_RxHxE: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths_R: torch.Tensor) -> torch.Tensor:
    span = k.shape[2]
    mask = (torch.arange(span, device=DEVICE)[None] < lengths_R[:, None])[:, None, None, :]
    group = q_RxHxE.shape[1] // k.shape[1]
    return attend(q_RxHxE[:, :, None], k, v, fold_mask(mask, group))[:, :, 0]


@pytest.mark.parametrize(
    ("rows", "heads", "kv_heads", "head_dim", "span"),
    [(2, 16, 4, 128, 300), (4, 3, 1, 6, 70), (6, 2, 2, 16, 17), (2, 16, 16, 128, 64), (3, 4, 2, 8, 1)],
)
@pytest.mark.parametrize("programs", [1, 8, 264])
def test_split_attention_matches_sdpa(
    rows: int, heads: int, kv_heads: int, head_dim: int, span: int, programs: int
) -> None:
    """One query per row over its first lengths[r] keys, with 1 to many splits (some past a row's length),
    reading a prefix of larger caches through their strides, as a batch-size bucket does."""
    gen = torch.Generator(device=DEVICE).manual_seed(rows * span + programs)
    q = torch.randn(rows, heads, head_dim, device=DEVICE, generator=gen)
    caches = torch.randn(2, rows + 2, kv_heads, span + 9, head_dim, device=DEVICE, generator=gen)
    k, v = caches[0, :rows, :, :span], caches[1, :rows, :, :span]
    lengths = torch.randint(1, span + 1, (rows,), device=DEVICE, generator=gen)
    lengths[0], lengths[-1] = span, 1
    attention = _with_programs(programs)
    out = attention.attend(q, k, v, lengths)
    assert out.shape == (rows, heads, head_dim) and out.dtype == q.dtype
    # Splits sum in another order than SDPA: a few float32 roundings apart (1.25e-5 seen on an H100).
    torch.testing.assert_close(out, _reference(q, k, v, lengths), rtol=1e-5, atol=3e-5)
    assert not attention.counters.any(), "the last split of each (row, kv head) zeroes its counter again"


def test_split_attention_refuses_more_rows_than_it_has_counters() -> None:
    attention = dataclasses.replace(_with_programs(8), counters=torch.zeros(7, dtype=torch.int32, device=DEVICE))
    q, k = torch.randn(4, 4, 16, device=DEVICE), torch.randn(4, 2, 32, 16, device=DEVICE)
    with pytest.raises(ValueError, match="4 rows of 2 key/value heads are past the 7 counters"):
        attention.attend(q, k, k, torch.full((4,), 32, device=DEVICE))


def test_split_attention_ignores_keys_past_the_length_and_the_span() -> None:
    """Keys beyond a row's length, and lengths beyond the span (stale rows), never change the result."""
    gen = torch.Generator(device=DEVICE).manual_seed(3)
    q = torch.randn(2, 4, 16, device=DEVICE, generator=gen)
    k, v = torch.randn(2, 2, 2, 90, 16, device=DEVICE, generator=gen)
    lengths = torch.tensor([50, 400], device=DEVICE)
    poisoned_k, poisoned_v = k.clone(), v.clone()
    poisoned_k[0, :, 50:], poisoned_v[0, :, 50:] = 1e4, float("nan")
    attention = _with_programs(16)
    expected = _reference(q, k, v, lengths.clamp(max=90))
    torch.testing.assert_close(attention.attend(q, poisoned_k, poisoned_v, lengths), expected, rtol=1e-5, atol=1e-5)


def test_split_attention_in_bfloat16() -> None:
    """bf16 inputs: float32 accumulation, within bf16 rounding of the float32 result."""
    gen = torch.Generator(device=DEVICE).manual_seed(5)
    q_RxHxE = torch.randn(2, 8, 32, device=DEVICE, generator=gen)
    k, v = torch.randn(2, 2, 2, 128, 32, device=DEVICE, generator=gen)
    lengths = torch.tensor([128, 77], device=DEVICE)
    out = _with_programs(8).attend(q_RxHxE.bfloat16(), k.bfloat16(), v.bfloat16(), lengths)
    assert out.dtype == torch.bfloat16
    expected = _reference(q_RxHxE.bfloat16().float(), k.bfloat16().float(), v.bfloat16().float(), lengths)
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(16, 4, 128), (3, 1, 6), (4, 2, 8)])
def test_rope_write_matches_the_eager_path(heads: int, kv_heads: int, head_dim: int) -> None:
    """Rotated queries come back; rotated keys and the values land in the cache at each row's position,
    and nothing else in the cache changes."""
    rows, positions = 4, 40
    gen = torch.Generator(device=DEVICE).manual_seed(heads)
    qkv = torch.randn(rows, (heads + 2 * kv_heads) * head_dim, device=DEVICE, generator=gen)
    theta = torch.arange(positions, device=DEVICE, dtype=torch.float32)[:, None] / (
        1 + torch.arange(head_dim // 2, device=DEVICE)
    )
    angles = torch.cat((theta, theta), dim=-1)
    rope = torch.stack((angles.cos(), angles.sin()))
    pos = torch.tensor([0, 7, 39, 7], device=DEVICE)
    k_cache, v_cache = torch.randn(2, rows + 1, kv_heads, positions, head_dim, device=DEVICE, generator=gen)
    k_before, v_before = k_cache.clone(), v_cache.clone()
    paired = pair_heads(qkv, head_dim)  # as the fused projection's weight makes it (attention.pair_heads)
    q = _with_programs(8).rope_write(paired, rope, pos, k_cache[:rows], v_cache[:rows], heads)

    q_ref, k_ref, v_ref = qkv.split((heads * head_dim, kv_heads * head_dim, kv_heads * head_dim), dim=-1)
    cos, sin = rope[0, pos][:, None], rope[1, pos][:, None]
    torch.testing.assert_close(q, fused.rope(q_ref.view(rows, heads, head_dim), cos, sin), rtol=1e-6, atol=1e-6)
    rotated_k = fused.rope(k_ref.view(rows, kv_heads, head_dim), cos, sin)
    for row in range(rows):
        k_before[row, :, pos[row]] = rotated_k[row]
        v_before[row, :, pos[row]] = v_ref.view(rows, kv_heads, head_dim)[row]
    torch.testing.assert_close(k_cache, k_before, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(v_cache, v_before, rtol=0, atol=0)


def test_a_decode_step_through_the_kernels_matches_sdpa(checkpoint: Checkpoint) -> None:
    """One step of a scheduler's state (slots at different positions, texts of different lengths, a voice
    prompt, an idle slot, spans narrower than the buffers): the same logits and cache writes as SDPA."""
    engine = Engine.load(checkpoint.folder, device=DEVICE, dtype="float32", use_cuda_graphs=False, decode_kernels=False)
    channels = len(checkpoint.shape.delays)
    prompt = VoicePrompt("[S2] Me.", np.random.default_rng(1).integers(0, 1024, size=(9, channels)))
    scheduler = engine.scheduler(slots=4, chunk_steps=3, use_cuda_graphs=False)
    scheduler.submit("a", TEXT, GenerationParams(max_tokens=60, seed=1))
    scheduler.submit("b", "[S2] Hm.", GenerationParams(max_tokens=60, temperature=0), prompt)
    scheduler.step_chunk()
    scheduler.submit("c", "[S1] The bridge is out.", GenerationParams(max_tokens=60, seed=2))
    scheduler.step_chunk()
    decoder, model = scheduler._decoder, engine.model
    pos_R = decoder.pos.repeat_interleave(2)
    assert len(set(pos_R.tolist())) >= 3, "the rows should sit at different positions"
    tokens_Rx1xC = decoder.grid[decoder.slot_index, decoder.pos].repeat_interleave(2, dim=0)[:, None]
    plain_ops = model.ops
    fast_ops = dataclasses.replace(plain_ops, kernels=kernels.for_device(DEVICE))
    for self_span, cross_span in ((None, None), (32, 64)):
        outputs = []
        for ops in (plain_ops, fast_ops):
            cache = decoder.cache.clone()
            model.ops = ops
            try:
                logits = model.decode(
                    tokens_Rx1xC, pos_R[:, None], cache, decoder.cross, self_span=self_span, cross_span=cross_span
                )
            finally:
                model.ops = plain_ops
            outputs.append((logits, cache))
        (plain, plain_cache), (fast, fast_cache) = outputs
        torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)
        for layer in range(len(plain_cache.k)):
            torch.testing.assert_close(fast_cache.k[layer], plain_cache.k[layer], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(fast_cache.v[layer], plain_cache.v[layer], rtol=1e-5, atol=1e-6)


def test_lines_through_the_kernels_equal_sdpa_lines(ending_checkpoint: Checkpoint) -> None:
    """Whole lines, greedy with a voice prompt (its prefill stays on SDPA) and sampled, come out the same."""
    plain, fast = (
        Engine.load(ending_checkpoint.folder, DEVICE, "float32", use_cuda_graphs=False, decode_kernels=kernels_on)
        for kernels_on in (False, True)
    )
    assert fast.model.ops.kernels is not None and plain.model.ops.kernels is None
    assert_same_lines(plain, fast, TEXT, max_tokens=30)


def test_kernels_that_fail_their_check_leave_steps_on_sdpa(
    ending_checkpoint: Checkpoint, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A GPU Triton cannot serve (here: a kernel that raises, or split counts that go wrong) gets a warning and
    SDPA, not a failed start."""
    # A model of its own, loaded without the kernels (a copy of a CUDA engine's model would have them already).
    folder = ending_checkpoint.folder
    model = Engine.load(folder, DEVICE, "float32", use_cuda_graphs=False, decode_kernels=False).model
    dec = model.cfg.decoder
    working = kernels.for_device(DEVICE)
    assert kernels.check(working, dec.num_heads, dec.num_kv_heads, dec.head_dim, torch.float32, DEVICE) is None

    def broken(*args: object, **options: object) -> None:
        raise RuntimeError("no bf16 dot on this GPU")

    class Raising:
        def __getitem__(self, grid: object) -> object:
            return broken

    # Counts that never reach the last split (here: stale ones) would leave outputs unmerged: the check sees it.
    stale = dataclasses.replace(working, counters=torch.full_like(working.counters, 100))
    problem = kernels.check(stale, dec.num_heads, dec.num_kv_heads, dec.head_dim, torch.float32, DEVICE)
    assert problem == "split attention left its split counters non-zero"

    broken_kernels = dataclasses.replace(working, split_attention=Raising())
    problem = kernels.check(broken_kernels, dec.num_heads, dec.num_kv_heads, dec.head_dim, torch.float32, DEVICE)
    assert problem == "RuntimeError: no bf16 dot on this GPU"
    monkeypatch.setattr(kernels, "for_device", lambda device, invariant_span=None: broken_kernels)
    assert model.use_decode_kernels() is False
    assert model.ops.kernels is None and "decode kernels unavailable, using SDPA" in caplog.text


def test_invariant_attention_gives_a_row_the_same_bits_whatever_shares_it() -> None:
    """Fixed splits and one merge shape: a row's output does not move with the span or the other rows."""
    fixed = dataclasses.replace(kernels.for_device(DEVICE), invariant_span=512)
    gen = torch.Generator(device=DEVICE).manual_seed(3)
    q = torch.randn(5, 4, 16, device=DEVICE, generator=gen)
    k, v = torch.randn(2, 5, 2, 400, 16, device=DEVICE, generator=gen)
    lengths = torch.tensor([30, 64, 65, 200, 400], device=DEVICE)
    wide = fixed.attend(q, k, v, lengths)
    torch.testing.assert_close(wide, _reference(q, k, v, lengths), rtol=1e-5, atol=1e-5)
    for rows, span in ((slice(0, 1), 64), (slice(0, 3), 96), (slice(1, 4), 200), (slice(3, 5), 400)):
        alone = fixed.attend(q[rows], k[rows, :, :span], v[rows, :, :span], lengths[rows])
        assert torch.equal(alone, wide[rows]), (rows, span)
    with pytest.raises(ValueError, match="past the 512 these kernels merge"):
        fixed.attend(q, torch.zeros(5, 2, 600, 16), torch.zeros(5, 2, 600, 16), lengths)
