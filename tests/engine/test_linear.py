"""Skinny decode matmuls (tts_engine/dia/linear.py): the kernel against F.linear for every block shape, the
choice `tune` makes from timings, and a decode step through them. Without a GPU in Triton's interpreter."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, cast

import pytest
import torch
import torch.nn.functional as F

from tests.engine.conftest import Checkpoint
from tests.engine.stand_ins import Plainly, counting_timer
from tts_engine.dia import fused, kernel_step
from tts_engine.dia.attention import pair_heads
from tts_engine.dia.model import rope_table
from tts_engine.engine import Engine, GenerationParams

linear = pytest.importorskip("tts_engine.dia.linear", reason="triton is not installed")
linear_tuning = pytest.importorskip("tts_engine.dia.linear_tuning", reason="triton is not installed")
kernels = pytest.importorskip("tts_engine.dia.kernels", reason="triton is not installed")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# Block shapes that fit a GPU's shared memory in float32 with every prologue at 16-row blocks (and plain at 64):
# the tuner tests below run in float32, where the engine's own candidates (sized for bfloat16) would partly
# be left out on a real GPU and shift which candidate the scripted timings pick.
FLOAT32_CANDIDATES = (
    linear.Config(16, 64), linear.Config(16, 128, 8, 3), linear.Config(32, 64), linear.Config(32, 128, 4, 3),
    linear.Config(32, 64, 4, 3, splits=4),
)  # fmt: skip


@pytest.fixture
def plain_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tuner times FLOAT32_CANDIDATES and no programmatic dependent launch, on a Hopper GPU too: the scripted
    timings below count one timing per plain candidate (on an H100, 2026-11-24, the extra dependent launch's
    timing shifted every one of them). test_the_tuner_tries_a_dependent_launch_only_where_allowed covers it."""
    monkeypatch.setattr(linear, "CANDIDATES", FLOAT32_CANDIDATES)
    monkeypatch.setattr(linear, "pdl_capable", lambda device: False)


def _skip_unless_fits(config: linear.Config, rows: int, form: int = linear.PLAIN) -> None:
    """A float32 block shape past this GPU's shared memory cannot launch (the tuner never tries it)."""
    limit = linear.shared_limit(DEVICE)
    if limit is not None and config.shared_bytes(linear.block_rows(rows), 4, form) > limit:
        pytest.skip(f"{config} at {rows} rows needs more shared memory in float32 than this GPU has")


@pytest.mark.parametrize("config", linear.CANDIDATES, ids=str)
@pytest.mark.parametrize(("rows", "n", "k"), [(1, 40, 48), (2, 72, 300), (5, 16, 16), (33, 20, 24)])
def test_every_block_shape_computes_the_projection(config: linear.Config, rows: int, n: int, k: int) -> None:
    """Ragged N and K (masked tails), 1 to 33 rows, a non-contiguous batch of rows read by stride."""
    _skip_unless_fits(config, rows)
    gen = torch.Generator(device=DEVICE).manual_seed(rows * n + k)
    x = torch.randn(rows, 2 * k, device=DEVICE, generator=gen)[:, :k]
    weight = torch.randn(n, k, device=DEVICE, generator=gen)
    skinny = linear.SkinnyLinear()
    y = skinny.run(x, weight, config=config)
    torch.testing.assert_close(y, F.linear(x, weight), rtol=1e-5, atol=1e-4)
    # Split-K: the last split of each band zeroes its count again, so a second launch merges as the first did.
    assert not any(counts.any() for counts in skinny._split_counts.values())
    assert torch.equal(skinny.run(x, weight, config=config), y)


@pytest.mark.usefixtures("plain_candidates")
def test_split_k_that_leaves_its_counts_set_is_left_out(caplog: pytest.LogCaptureFixture) -> None:
    """Counts that never reach the last split (stale ones here, as a broken atomic would leave them) mean no
    block merges: the tuner's check sees the counts still set and never times that candidate."""
    split = linear.CANDIDATES[-1]
    assert split.splits > 1
    timings = iter([2.0] + [1.0] * len(linear.CANDIDATES))  # cuBLAS, then every candidate timed faster
    skinny = linear.SkinnyLinear(timer=lambda fn: next(timings))
    stale = torch.full((linear.MAX_SPLIT_BANDS,), 100, dtype=torch.int32, device=DEVICE)
    skinny._split_counts[stale.device] = stale
    skinny.tune([linear.Group([torch.randn(24, 32, device=DEVICE)])], rows=[2])
    assert "gives wrong results" in caplog.text and str(split) in caplog.text
    assert skinny.choices == {(2, 24, 32): linear.CANDIDATES[0]} and next(timings) == 1.0, "one timing unused"


def test_split_k_is_tried_only_where_bands_are_few() -> None:
    """Projections whose bands fill the GPU by themselves (gate/up's 16384 columns, the logits) never split K;
    asked to, the launch refuses rather than overrun the counts."""
    split = next(c for c in linear.CANDIDATES if c.splits > 1)
    assert split in linear.candidates(2048) and split in linear.candidates(3072)
    wide = linear.MAX_SPLIT_BANDS * split.block_n + 1
    assert split not in linear.candidates(wide) and linear.candidates(wide)
    assert linear.split_width(2048, split) * split.splits >= 2048 and linear.split_width(24, split) == split.block_k
    x, weight = torch.randn(2, 16, device=DEVICE), torch.randn(wide, 16, device=DEVICE)
    with pytest.raises(ValueError, match="past the 512 it counts"):
        linear.SkinnyLinear().run(x, weight, config=split)


def test_programmatic_dependent_launches_are_candidates_only_where_the_gpu_has_them() -> None:
    """A block shape can also run as a PDL launch (asking L2 for its weights before it waits for the kernel
    before it), on Hopper only: never on the CPU, where Triton's interpreter has no such launch. Its prefetch
    covers the block's K slice in 128-byte lines, up to 4 KiB a row; test_kernel_build.py checks the machine
    code (the prefetches, and no read or write before the wait)."""
    plain = linear.candidates(2048)
    with_pdl = linear.candidates(2048, pdl=True)
    assert with_pdl == plain + tuple(dataclasses.replace(c, pdl=True) for c in plain)
    assert not any(c.pdl for c in plain) and not linear.pdl_capable(torch.device("cpu"))
    assert linear.prefetch_lines(2048, 2) == (32, 64) and linear.prefetch_lines(8192, 2) == (32, 64)
    assert linear.prefetch_lines(512, 2) == (8, 64) and linear.prefetch_lines(100, 4) == (4, 32)
    # A launch asks L2 for at most 8 MiB: all of a 2048x2048 weight, 512 bytes a row of the gate/up projection's
    # 16384 rows, 1 KiB of each of the down projection's four K slices a row, three quarters of the q/k/v weight.
    assert linear.prefetch_lines(2048, 2, rows=2048) == (32, 64)
    assert linear.prefetch_lines(2048, 2, rows=16384) == (4, 64)
    assert linear.prefetch_lines(2048, 2, rows=2048, splits=4) == (8, 64)
    assert linear.prefetch_lines(2048, 2, rows=3072) == (16, 64)
    assert linear.prefetch_lines(2048, 2, rows=10**6) == (1, 64), "always at least a line"


@pytest.mark.skipif(not linear.pdl_capable(DEVICE), reason="programmatic dependent launches need a Hopper GPU")
@pytest.mark.parametrize("config", linear.candidates(2048, pdl=True)[len(linear.CANDIDATES) :], ids=str)
def test_dependent_launches_wait_for_the_launch_before_them(config: linear.Config) -> None:
    """Captured in a graph as a step runs them, a chain of PDL launches where each multiplies what the one before
    it wrote (the residual stream's sum and norm, the activation) gives the bits the same chain gives without
    PDL: a launch that read before the one before it had finished would read stale values."""
    gen = torch.Generator(device=DEVICE).manual_seed(7)
    k = 256
    weights = [torch.randn(k, k, device=DEVICE, generator=gen).bfloat16() * k**-0.5 for _ in range(6)]
    gate_up = torch.randn(2 * k, k, device=DEVICE, generator=gen).bfloat16() * k**-0.5
    gamma = torch.rand(k, device=DEVICE, generator=gen).bfloat16() + 0.5
    x = torch.randn(2, k, device=DEVICE, generator=gen).bfloat16()
    skinny = linear.SkinnyLinear()

    def chain(c: linear.Config) -> torch.Tensor:
        h, delta = x, None
        for w in weights:
            h, total = skinny.run_normed(h, delta, gamma, 1e-5, w, config=c)
            delta = skinny.run_gated(h, gate_up, config=c)
            h = total
        return skinny.run(delta, weights[0], config=c)

    expected = chain(dataclasses.replace(config, pdl=False))
    graph = torch.cuda.CUDAGraph()
    chain(config)  # compiled outside the capture
    with torch.cuda.graph(graph):
        out = chain(config)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, expected)


@pytest.mark.parametrize("dependent", [True, False], ids=["allowed", "turned-off"])
def test_the_tuner_tries_a_dependent_launch_only_where_allowed(
    monkeypatch: pytest.MonkeyPatch, dependent: bool
) -> None:
    """On a GPU with dependent launches the fastest block shape is tried once more as one; never where they are
    turned off (DiaModel.use_decode_kernels(dependent_launches=False), DIA_DEPENDENT_LAUNCHES=false)."""
    monkeypatch.setattr(linear, "pdl_capable", lambda device: True)
    asked: list[bool] = []
    times = iter(float(t) for t in range(1, 100))
    skinny = linear.SkinnyLinear(dependent=dependent, timer=lambda fn: next(times))
    skinny.kernel = Plainly(skinny.kernel, "PDL", asked)
    skinny.tune([linear.Group([torch.randn(64, 32, device=DEVICE)])], rows=[2])
    assert asked.count(True) == (1 if dependent else 0) and asked.count(False) == len(linear.CANDIDATES)


def test_bfloat16_accumulates_in_float32() -> None:
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    x = torch.randn(2, 1, 256, device=DEVICE, generator=gen).bfloat16()
    weight = torch.randn(64, 256, device=DEVICE, generator=gen).bfloat16()
    y = linear.SkinnyLinear().run(x, weight, config=linear.CANDIDATES[0])
    assert y.shape == (2, 1, 64) and y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), (x.float() @ weight.float().T), rtol=1e-2, atol=5e-2)


@pytest.mark.parametrize("config", linear.CANDIDATES, ids=str)
@pytest.mark.parametrize(("rows", "n", "k"), [(2, 72, 300), (33, 20, 24), (17, 24, 150)])
@pytest.mark.parametrize("with_delta", [True, False], ids=["x+delta", "x"])
def test_a_normed_projection_is_the_norm_then_the_projection(
    config: linear.Config, rows: int, n: int, k: int, with_delta: bool
) -> None:
    """rms_norm(x + delta) @ W^T in one kernel, and x + delta (the residual stream's next value) beside it. At 17
    rows x 150 the first pass (the rows' scales) takes two chunks of 128 columns, the second ragged."""
    if (rows, k) == (17, 150):
        assert linear.norm_chunk(rows, k) == (32, 128)
    _skip_unless_fits(config, rows, linear.NORM)
    gen = torch.Generator(device=DEVICE).manual_seed(rows * n + k)
    x = torch.randn(rows, 2 * k, device=DEVICE, generator=gen)[:, :k]
    delta = torch.randn(rows, k, device=DEVICE, generator=gen) if with_delta else None
    gamma, weight = torch.randn(k, device=DEVICE, generator=gen), torch.randn(n, k, device=DEVICE, generator=gen)
    y, total = linear.SkinnyLinear().run_normed(x, delta, gamma, 1e-5, weight, config=config)
    expected_total = x if delta is None else x + delta
    assert torch.equal(total, expected_total)
    expected = F.linear(fused.rms_norm(expected_total, gamma, 1e-5), weight)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("config", linear.CANDIDATES, ids=str)
@pytest.mark.parametrize(("rows", "n", "k"), [(2, 40, 48), (5, 72, 300), (17, 24, 150)])
def test_a_gated_projection_is_the_projection_then_the_activation(
    config: linear.Config, rows: int, n: int, k: int
) -> None:
    """silu_mul(x @ W^T) for W holding the gate's n rows and then the up projection's, in one kernel: each band
    pairs the gate's columns with the up projection's, ragged and split-K alike; and with the norm before it."""
    _skip_unless_fits(config, rows, linear.NORM_GATED)
    gen = torch.Generator(device=DEVICE).manual_seed(rows * n + k)
    x, delta = (torch.randn(rows, k, device=DEVICE, generator=gen) for _ in "ab")
    gamma = torch.randn(k, device=DEVICE, generator=gen)
    weight = torch.randn(2 * n, k, device=DEVICE, generator=gen) * k**-0.5
    skinny = linear.SkinnyLinear()
    y = skinny.run_gated(x, weight, config=config)
    assert y.shape == (rows, n)
    torch.testing.assert_close(y, fused.silu_mul(F.linear(x, weight)), rtol=1e-5, atol=1e-5)
    y, total = skinny.run_normed(x, delta, gamma, 1e-5, weight, config=config, gated=True)
    expected_total, normed = fused.add_rms_norm(x, delta, gamma, 1e-5)
    assert torch.equal(total, expected_total)
    torch.testing.assert_close(y, fused.silu_mul(F.linear(normed, weight)), rtol=1e-5, atol=1e-5)
    assert not any(counts.any() for counts in skinny._split_counts.values())


@pytest.mark.parametrize("config", linear.CANDIDATES, ids=str)
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(4, 2, 16), (3, 1, 8)])
def test_a_roped_projection_is_the_normed_one_then_the_rope_write(
    config: linear.Config, heads: int, kv_heads: int, head_dim: int
) -> None:
    """The q/k/v projection with RoPE and the cache write in its epilogue gives what the NORM kernel and
    kernels.rope_write give: the same queries, the same cache rows written (and no others), bands that span
    heads (8-wide heads) and a ragged last band (40 outputs)."""
    rows, k, positions = 3, 40, 20
    _skip_unless_fits(config, rows, linear.NORM)
    gen = torch.Generator(device=DEVICE).manual_seed(heads * head_dim)
    x, delta = (torch.randn(rows, k, device=DEVICE, generator=gen) for _ in range(2))
    gamma = torch.randn(k, device=DEVICE, generator=gen)
    outputs = (heads + 2 * kv_heads) * head_dim
    weight = pair_heads(torch.randn(outputs, k, device=DEVICE, generator=gen), head_dim, dim=0).contiguous()
    table, pos = rope_table(10_000.0, head_dim, positions, DEVICE), torch.tensor([0, 7, 19], device=DEVICE)
    caches = torch.randn(2, rows + 1, kv_heads, positions, head_dim, device=DEVICE, generator=gen)
    expected_caches = caches.clone()
    skinny = linear.SkinnyLinear()
    rope = linear.RopeWrite(table, pos, caches[0, :rows], caches[1, :rows], heads)
    q, total = skinny.run_normed(x, delta, gamma, 1e-5, weight, config=config, rope=rope)
    qkv, expected_total = skinny.run_normed(x, delta, gamma, 1e-5, weight, config=config)
    attention = kernels.for_device(DEVICE)
    expected_q = attention.rope_write(qkv, table, pos, expected_caches[0, :rows], expected_caches[1, :rows], heads)
    assert q.shape == (rows, heads, head_dim) and torch.equal(total, expected_total)
    torch.testing.assert_close(q, expected_q, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(caches, expected_caches, rtol=1e-6, atol=1e-6)


def _within_one_step(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """bfloat16 results that agree bit for bit but for rare ties, and there by one rounding step."""
    assert (actual == expected).float().mean() > 0.99
    torch.testing.assert_close(actual.float(), expected.float(), rtol=2**-7, atol=0)


@pytest.mark.skipif(
    kernels.interpreting(), reason="Triton's interpreter truncates float32 to bfloat16; compiled kernels round"
)
def test_bfloat16_prologues_round_where_the_separate_kernels_round() -> None:
    """Through an identity weight a projection returns its input as the prologue rounded it: the fused norm
    makes the bfloat16 values fused.rms_norm makes (x + delta rounded, then the normalised row rounded, then
    times the norm's weight rounded), and the activation epilogue those of fused.silu_mul (the gate and up
    values rounded, the SiLU rounded, the product rounded). A row's 1 / rms is summed in another order and may
    differ in its last float32 bit, which moves a value by one bfloat16 step at most."""
    gen = torch.Generator(device=DEVICE).manual_seed(2)
    k = 96
    x, delta = (torch.randn(3, k, device=DEVICE, generator=gen).bfloat16() for _ in range(2))
    gamma = torch.randn(k, device=DEVICE, generator=gen).bfloat16()
    eye = torch.eye(k, device=DEVICE).bfloat16()
    skinny = linear.SkinnyLinear()
    y, total = skinny.run_normed(x, delta, gamma, 1e-5, eye, config=linear.CANDIDATES[0])
    assert total.dtype == torch.bfloat16 and torch.equal(total, x + delta)
    _within_one_step(y, fused.rms_norm(x + delta, gamma, 1e-5))
    gate_then_up = torch.cat((eye, eye.flip(0)))  # the gate's rows pick x, the up projection's x reversed
    gated = skinny.run_gated(x, gate_then_up, config=linear.CANDIDATES[0])
    _within_one_step(gated, fused.silu_mul(torch.cat((x, x.flip(-1)), dim=-1)))


@pytest.mark.usefixtures("plain_candidates")
def test_fused_forms_are_kept_only_where_faster_than_the_kernels_they_replace() -> None:
    """Each fused form races the kernels it replaces, the projection as tuned among them: kept where a candidate
    wins (the norm here), declined where none does (the gate/up projection's two forms with the activation);
    each timing really runs."""
    gen = torch.Generator(device=DEVICE).manual_seed(3)
    weights = [torch.randn(24, 32, device=DEVICE, generator=gen) for _ in range(2)]
    norms = [torch.randn(32, device=DEVICE, generator=gen) for _ in range(2)]
    gate_up = [torch.randn(16, 32, device=DEVICE, generator=gen)]
    per_round = 1 + len(linear.CANDIDATES)  # the baseline, then each candidate
    timings = iter(
        [5.0] + [6.0] * 5  # the norm group's plain matmul: cuBLAS wins
        + [5.0, 9.0, 4.0, 9.0, 9.0, 9.0]  # norm + matmul apart 5; the second candidate fused 4
        + [5.0] + [6.0] * 5  # the gate/up projection's plain matmul: cuBLAS
        + ([3.0] + [4.0] * 5) * 2  # norm, matmul and activation apart 3: no candidate of either form beats it
    )  # fmt: skip
    ran: list[int] = []

    def timer(fn: Callable[[], object]) -> float:
        fn()
        ran.append(1)
        return next(timings)

    skinny = linear.SkinnyLinear(timer=timer)
    groups = [linear.Group(weights, linear.NORM, norms, 1e-5), linear.Group(gate_up, linear.NORM, norms, gated=True)]
    skinny.tune(groups, rows=[2], ops=fused.EAGER)
    assert len(ran) == 5 * per_round and not skinny.choices
    assert skinny.fusions == {(linear.NORM, 2, 24, 32): linear.CANDIDATES[1]}
    forms = [(linear.PLAIN, weights), (linear.NORM, weights), (linear.PLAIN, gate_up), (linear.NORM_GATED, gate_up),
             (linear.GATED, gate_up)]  # fmt: skip
    assert skinny.tuned == {(p, 2, *w[0].shape) for p, w in forms}

    x, delta = torch.randn(2, 32, device=DEVICE, generator=gen), torch.randn(2, 32, device=DEVICE, generator=gen)
    out = skinny.normed(x, delta, norms[1], 1e-5, weights[1])
    assert out is not None
    torch.testing.assert_close(out[0], F.linear(fused.rms_norm(x + delta, norms[1], 1e-5), weights[1]))
    assert skinny.normed(x[:1], delta[:1], norms[1], 1e-5, weights[1]) is None, "1 row was not tuned"
    assert skinny.gated(x, gate_up[0]) is None and skinny.normed_gated(x, delta, norms[0], 1e-5, gate_up[0]) is None
    assert (
        linear.SkinnyLinear(invariant=True, fusions=skinny.fusions).normed(x, delta, norms[1], 1e-5, weights[1]) is None
    )


@pytest.mark.usefixtures("plain_candidates")
@pytest.mark.parametrize("winner", [linear.GATED, linear.NORM_GATED], ids=["after the norm", "with the norm"])
def test_the_gated_forms_race_the_norm_the_projection_and_the_activation(winner: int) -> None:
    """The gate/up projection's forms with the activation in its epilogue, with the norm in the prologue and
    after the norm's kernel, each race the norm, the projection and silu_mul (which the baseline really runs,
    once a layer); only the fastest of the two is kept, and the step's `_activated` then gives what the three
    kernels give through it."""
    gen = torch.Generator(device=DEVICE).manual_seed(5)
    k, n = 32, 24
    weights = [torch.randn(2 * n, k, device=DEVICE, generator=gen) * k**-0.5 for _ in "ab"]
    norms = [torch.randn(k, device=DEVICE, generator=gen) for _ in "ab"]
    activations: list[int] = []

    def counting_silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
        activations.append(1)
        return fused.silu_mul(gate_up)

    ops = dataclasses.replace(fused.EAGER, silu_mul=counting_silu_mul)
    others = len(linear.CANDIDATES) - 2
    norm_gated, gated = ([5.0, 9.0, 3.0] + [9.0] * others, [5.0, 4.0, 9.0] + [9.0] * others)
    if winner == linear.GATED:
        norm_gated, gated = [5.0, 9.0, 4.0] + [9.0] * others, [5.0, 3.0, 9.0] + [9.0] * others
    timings = iter([5.0] + [6.0] * (others + 2) + norm_gated + gated)  # plain: cuBLAS wins
    per_timing: list[int] = []
    skinny = linear.SkinnyLinear(timer=counting_timer(timings, activations, per_timing))
    skinny.tune([linear.Group(weights, linear.NORM, norms, 1e-5, gated=True)], rows=[2], ops=ops)
    best = linear.CANDIDATES[1] if winner == linear.NORM_GATED else linear.CANDIDATES[0]
    assert skinny.fusions == {(winner, 2, 2 * n, k): best}
    baselines = [1 + len(linear.CANDIDATES), 2 * (1 + len(linear.CANDIDATES))]
    assert [per_timing[i] for i in baselines] == [2, 2] and sum(per_timing) == 4, "silu_mul a layer, in baselines"

    x, delta = (torch.randn(2, k, device=DEVICE, generator=gen) for _ in "ab")
    expected_total, normed = fused.add_rms_norm(x, delta, norms[1], 1e-5)
    served = (skinny.normed_gated(x, delta, norms[1], 1e-5, weights[1]), skinny.gated(normed, weights[1]))
    assert [form is not None for form in served] == [winner == linear.NORM_GATED, winner == linear.GATED]
    activations.clear()
    act, total = kernel_step._activated(dataclasses.replace(ops, linear=skinny), x, delta, norms[1], 1e-5, weights[1])
    assert not activations, "the step ran the kept form, not silu_mul"
    torch.testing.assert_close(act, fused.silu_mul(F.linear(normed, weights[1])), rtol=1e-5, atol=1e-5)
    assert torch.equal(total, expected_total)


@pytest.mark.usefixtures("plain_candidates")
def test_the_roped_form_races_the_norm_the_projection_and_the_rope_write() -> None:
    """The q/k/v group's form with RoPE and the cache write races all three kernels it replaces (its baseline
    really runs kernels.rope_write, once a layer), is kept under its own key where it wins, and then serves
    `roped` with what the three kernels give; `normed` keeps the NORM form's own verdict (apart won there)."""
    gen = torch.Generator(device=DEVICE).manual_seed(4)
    heads, kv_heads, head_dim, k = 2, 1, 8, 32
    n = (heads + 2 * kv_heads) * head_dim
    weights = [pair_heads(torch.randn(n, k, device=DEVICE, generator=gen), head_dim, dim=0).contiguous() for _ in "ab"]
    norms = [torch.randn(k, device=DEVICE, generator=gen) for _ in "ab"]
    table = rope_table(10_000.0, head_dim, 16, DEVICE)
    group = linear.Group(weights, linear.NORM, norms, 1e-5, linear.RopeShape(table, heads, kv_heads))
    real = kernels.for_device(DEVICE)
    rope_writes: list[int] = []

    class Counting:  # the decode kernels, counting rope_write's calls (all the tuner calls of them)
        def rope_write(self, *args: Any) -> torch.Tensor:
            rope_writes.append(1)
            return real.rope_write(*args)  # type: ignore[no-any-return]

    ops = dataclasses.replace(fused.EAGER, kernels=cast(Any, Counting()))
    others = len(linear.CANDIDATES) - 1
    timings = iter(
        [5.0] + [6.0] * (others + 1)  # plain: cuBLAS wins
        + [5.0] + [6.0] * (others + 1)  # norm + matmul: apart wins
        + [5.0, 9.0, 4.0] + [9.0] * (others - 1)  # norm + matmul + rope: the second candidate wins
    )  # fmt: skip
    writes_per_timing: list[int] = []
    skinny = linear.SkinnyLinear(timer=counting_timer(timings, rope_writes, writes_per_timing))
    skinny.tune([group], rows=[2], ops=ops)
    assert skinny.fusions == {(linear.ROPED, 2, n, k): linear.CANDIDATES[1]}
    assert linear.FORMS[linear.ROPED] == "norm + matmul + rope", "logs and bench/random_dia.matmul_choices name it"
    assert skinny.tuned == {(p, 2, n, k) for p in (linear.PLAIN, linear.NORM, linear.ROPED)}
    assert writes_per_timing[-len(linear.CANDIDATES) - 1 :] == [2] + [0] * len(linear.CANDIDATES)

    x, delta = (torch.randn(2, k, device=DEVICE, generator=gen) for _ in "ab")
    pos = torch.tensor([3, 9], device=DEVICE)
    caches = torch.zeros(2, 2, kv_heads, 16, head_dim, device=DEVICE)
    expected_caches = caches.clone()
    assert skinny.normed(x, delta, norms[1], 1e-5, weights[1]) is None
    out = skinny.roped(x, delta, norms[1], 1e-5, weights[1], table, pos, caches[0], caches[1], heads)
    assert out is not None
    total, normed = fused.add_rms_norm(x, delta, norms[1], 1e-5)
    expected_q = real.rope_write(F.linear(normed, weights[1]), table, pos, *expected_caches, heads)
    torch.testing.assert_close(out[0], expected_q, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(caches, expected_caches, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[1], total)


@pytest.mark.usefixtures("plain_candidates")
def test_tune_keeps_whatever_measured_fastest(monkeypatch: pytest.MonkeyPatch) -> None:
    """From the timer's numbers alone: a candidate where it beats cuBLAS, cuBLAS where nothing does; calls
    follow the choice, other shapes stay on F.linear, and a tuned shape is not timed again."""
    fast_for_wide = linear.CANDIDATES[2]
    wide = [torch.randn(64, 32, device=DEVICE) for _ in range(3)]
    narrow = [torch.randn(16, 32, device=DEVICE)]
    timings = iter([5.0, 6.0, 7.0, 1.0, 8.0, 9.0, 2.0, 3.0, 3.0, 3.0, 3.0, 3.0])  # wide: cuBLAS 5, #2 wins
    skinny = linear.SkinnyLinear(timer=lambda fn: next(timings))

    skinny.tune([linear.Group(wide), linear.Group(narrow)], rows=[2, 500])
    assert skinny.choices == {(2, 64, 32): fast_for_wide}, "rows over MAX_ROWS are never tuned"
    assert skinny.tuned == {(linear.PLAIN, 2, 64, 32), (linear.PLAIN, 2, 16, 32)} and not skinny.fusions
    skinny.tune([linear.Group(wide)], rows=[2])  # already tuned: no timing (the iterator would run dry)

    used: list[linear.Config] = []
    original = skinny.run
    monkeypatch.setattr(skinny, "run", lambda x, w, *, config: used.append(config) or original(x, w, config=config))
    x = torch.randn(2, 32, device=DEVICE)
    torch.testing.assert_close(skinny(x, wide[0]), F.linear(x, wide[0]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(skinny(x, narrow[0]), F.linear(x, narrow[0]))
    assert skinny(torch.randn(3, 32, device=DEVICE), wide[0]).shape == (3, 64)
    assert used == [fast_for_wide], "only the tuned shape goes through the kernel"


def _kernel_always_wins(fn: Callable[[], None], calls: list[int]) -> float:
    """A timer that really runs each candidate once and ranks the first candidate first, cuBLAS last."""
    fn()
    calls.append(1)
    position = (len(calls) - 1) % (1 + len(linear.CANDIDATES))  # cuBLAS, then each candidate in order
    return 10.0 if position == 0 else float(position)


# Every candidate of every race runs once in Triton's interpreter: 120 s for the nine-channel model's step on a
# development machine of 2 cores (2026-11-23), most of it the 9252-row logits projection in 16-row bands.
@pytest.mark.timeout(360)
@pytest.mark.usefixtures("plain_candidates")
def test_a_decode_step_through_skinny_matmuls_matches_cublas(checkpoint: Checkpoint) -> None:
    """tune_decode covers every projection of a decode step (q/k/v, outputs, cross queries, MLP, logits), the
    fused forms of the four that follow a norm, the q/k/v form with RoPE and the cache write and the gate/up
    forms with the activation, each candidate runs on the real weights, and a step through the chosen kernels
    (the fused ones wherever they can be) gives the same logits."""
    engine = Engine.load(checkpoint.folder, device=DEVICE, dtype="float32", use_cuda_graphs=False, decode_kernels=False)
    scheduler = engine.scheduler(slots=2, chunk_steps=2, use_cuda_graphs=False)
    scheduler.submit("a", "[S1] Hello there.", GenerationParams(max_tokens=30, seed=1))
    scheduler.submit("b", "[S2] And hello to you!", GenerationParams(max_tokens=30, temperature=0))
    scheduler.step_chunk()
    decoder, model = scheduler._decoder, engine.model
    calls: list[int] = []
    skinny = linear.SkinnyLinear(timer=lambda fn: _kernel_always_wins(fn, calls))
    plain_ops = dataclasses.replace(model.ops, kernels=kernels.for_device(DEVICE))
    model.ops = dataclasses.replace(plain_ops, linear=skinny)
    model.tune_decode([4])
    decoder_layer = model.decoder().typed_layers()[0]
    projections = [decoder_layer.self_attention.qkv_proj, decoder_layer.self_attention.o_proj,
                   decoder_layer.cross_attention.q_proj, decoder_layer.cross_attention.o_proj,
                   decoder_layer.mlp.gate_up_proj, decoder_layer.mlp.down_proj, model.logits_dense]  # fmt: skip
    expected = {(4, *p.weight.shape) for p in projections if p is not None}
    assert set(skinny.choices) == expected and set(skinny.choices.values()) == {linear.CANDIDATES[0]}
    after_norm = [decoder_layer.self_attention.qkv_proj, decoder_layer.cross_attention.q_proj,
                  decoder_layer.mlp.gate_up_proj, model.logits_dense]  # fmt: skip
    qkv, gate_up = decoder_layer.self_attention.qkv_proj, decoder_layer.mlp.gate_up_proj.weight
    assert qkv is not None
    fusions = {(linear.NORM, 4, *p.weight.shape) for p in after_norm if p is not None and p.weight is not gate_up}
    fusions |= {(linear.ROPED, 4, *qkv.weight.shape), (linear.NORM_GATED, 4, *gate_up.shape)}
    # The two gated forms tie; the first raced (all three kernels in one) is kept.
    assert set(skinny.fusions) == fusions and set(skinny.fusions.values()) == {linear.CANDIDATES[0]}
    races = {(linear.PLAIN, *key) for key in expected} | fusions | {(linear.GATED, 4, *gate_up.shape)}
    assert skinny.tuned == races and len(calls) == len(races) * (1 + len(linear.CANDIDATES))

    pos_R = decoder.pos.repeat_interleave(2)
    tokens_Rx1xC = decoder.grid[decoder.slot_index, decoder.pos].repeat_interleave(2, dim=0)[:, None]
    outputs = []
    for ops in (plain_ops, model.ops):
        cache = decoder.cache.clone()
        model.ops = ops
        outputs.append(model.decode(tokens_Rx1xC, pos_R[:, None], cache, decoder.cross))
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-5)


@pytest.mark.usefixtures("plain_candidates")
def test_a_candidate_that_fails_is_skipped() -> None:
    """A block shape that cannot run on this GPU (here: its timing raises) is no candidate; tuning goes on."""
    attempts: list[int] = []

    def timer(fn: Callable[[], None]) -> float:
        attempts.append(1)
        if len(attempts) == 2:
            raise RuntimeError("out of shared memory")
        return 5.0 if len(attempts) == 1 else 1.0

    skinny = linear.SkinnyLinear(timer=timer)
    skinny.tune([linear.Group([torch.randn(32, 16, device=DEVICE)])], rows=[2])
    assert len(attempts) == 1 + len(linear.CANDIDATES)
    assert skinny.choices == {(2, 32, 16): linear.CANDIDATES[1]}


@pytest.mark.usefixtures("plain_candidates")
def test_a_candidate_that_computes_something_else_is_never_chosen(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Each candidate is checked against the path it would replace before it is timed: one that would time
    fastest but gives other numbers (as a miscompiled kernel would) is left out, plain and fused alike."""
    weight = torch.randn(24, 32, device=DEVICE)
    skinny = linear.SkinnyLinear(timer=lambda fn: next(timings))
    broken, launch = linear.CANDIDATES[-1], skinny._launch

    def miscompiled(x: torch.Tensor, w: torch.Tensor, config: linear.Config, **options: object) -> torch.Tensor:
        y = launch(x, w, config, **options)  # type: ignore[arg-type]
        return y + 1.0 if config == broken else y

    monkeypatch.setattr(skinny, "_launch", miscompiled)
    # Per form: the path it replaces, then the four candidates left, each faster than the one before.
    timings = iter([10.0, 5.0, 4.0, 3.0, 2.0] * 3)
    skinny.tune([linear.Group([weight], linear.NORM, [torch.randn(32, device=DEVICE)], gated=True)], rows=[2])
    assert skinny.choices == {(2, 24, 32): linear.CANDIDATES[-2]}
    assert skinny.fusions == {(linear.NORM_GATED, 2, 24, 32): linear.CANDIDATES[-2]}, "of two tied forms, the first"
    assert caplog.text.count("gives wrong results") == 3


def test_candidates_past_the_gpus_shared_memory_are_not_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    """At 64-row blocks in bf16, the 512-deep candidate needs 240 KiB of shared memory, past an H100's 227:
    with that limit it is never timed (the Hopper build test checks shared_bytes against compiled kernels)."""
    monkeypatch.setattr(linear, "shared_limit", lambda device: 227 * 1024)
    weights = [torch.randn(64, 32, device=DEVICE).bfloat16()]
    x = torch.randn(2, 32, device=DEVICE).bfloat16()
    skinny = linear.SkinnyLinear(dependent=False, timer=lambda fn: 1.0)  # the plain candidates alone, on Hopper too
    too_big = {c for c in linear.CANDIDATES if c.shared_bytes(64, 2) > 227 * 1024}
    assert too_big == {linear.Config(16, 512, 8, 3)}
    assert set(linear_tuning.time_candidates(skinny, x, weights, block_m=64)) == set(linear.CANDIDATES) - too_big
    assert set(linear_tuning.time_candidates(skinny, x, weights)) == set(linear.CANDIDATES), "16-row blocks: all fit"


def test_a_second_engine_on_the_model_keeps_the_tuned_matmuls(ending_checkpoint: Checkpoint) -> None:
    """An Engine made on a model that already has its kernels (an eager engine beside a graphed one, say)
    keeps them and what tune_decode chose, through compile_ops too: graphs captured with them stay exact."""
    first = Engine.load(ending_checkpoint.folder, DEVICE, "float32", use_cuda_graphs=False, decode_kernels=True)
    skinny = linear.SkinnyLinear()
    skinny.choices[(2, 64, 32)] = linear.CANDIDATES[0]
    first.model.ops = dataclasses.replace(first.model.ops, linear=skinny)
    kernels_before = first.model.ops.kernels
    second = Engine(first.model, use_cuda_graphs=False, compile_ops=True, decode_kernels=True)
    assert second.model.ops.compiled
    assert second.model.ops.linear is skinny and second.model.ops.kernels is kernels_before


@pytest.mark.usefixtures("plain_candidates")
def test_invariant_matmuls_give_a_row_the_same_bits_whatever_shares_it() -> None:
    """One block shape and 64-row blocks whatever the rows (past 64 too); positions > 1 keep F.linear."""
    skinny = linear.SkinnyLinear(invariant=True)
    gen = torch.Generator(device=DEVICE).manual_seed(4)
    weight = torch.randn(40, 48, device=DEVICE, generator=gen)
    x_Rx1xK = torch.randn(70, 1, 48, device=DEVICE, generator=gen)
    every = skinny(x_Rx1xK, weight)
    torch.testing.assert_close(every, F.linear(x_Rx1xK, weight), rtol=1e-5, atol=1e-4)
    for rows in (1, 2, 5, 64):
        assert torch.equal(skinny(x_Rx1xK[:rows], weight), every[:rows]), f"{rows} rows"
    assert torch.equal(skinny(x_Rx1xK[66:], weight), every[66:])
    prefill = torch.randn(2, 3, 48, device=DEVICE, generator=gen)
    assert torch.equal(skinny(prefill, weight), F.linear(prefill, weight))
    timed: list[int] = []

    def timer(fn: Callable[[], object]) -> float:  # the second candidate is the fastest
        fn()
        timed.append(len(timed))
        return 1.0 if len(timed) != 2 else 0.5

    tuned = linear.SkinnyLinear(invariant=True, timer=timer)
    tuned.tune([linear.Group([weight])], rows=[2, 8])  # one block shape per weight shape, cuBLAS never a candidate
    assert tuned.shapes == {(40, 48): linear.CANDIDATES[1]} and not tuned.choices
    assert len(timed) == len(linear.CANDIDATES), "timed once per candidate, not per row count"
    torch.testing.assert_close(tuned(x_Rx1xK[:3], weight), every[:3], rtol=1e-5, atol=1e-4)
