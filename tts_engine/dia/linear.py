"""Skinny matmuls for decode steps: y = x @ W^T where x has a few rows (two per request slot), in Triton, used
for a shape only where it measured faster than cuBLAS on this GPU.

Why (bench/profile_step.py on an H100, 2026-11-22): for the 2048-wide projections at two rows, cuBLAS chose
a kernel with 64-column tiles, 32 thread blocks for 132 SMs, and took 6.3 us where the weights' bytes need
about 2.8; those matmuls cost 0.45 ms of a 2.57 ms step. Here every block streams a narrow band of W's rows
(BLOCK_N of them) for all of x's rows at once, so the weights are read exactly once and N / BLOCK_N blocks
share the bandwidth. Which block shape wins depends on the GPU, so `SkinnyLinear.tune` (linear_tuning.py)
times each candidate against cuBLAS for every (rows, N, K) a decoder will run and keeps the fastest, cuBLAS
included: a wrong guess here can never make a step slower. Each candidate is first checked against the path
it would replace, so a kernel this GPU miscompiles can never make a step wrong either. Candidates are timed as
replays of a captured CUDA graph, as a step runs them (timing.graph_timer). The kernel body is a plain function
so the CPU tests can run it in Triton's interpreter (see kernels.py).

Fused forms: the projections after a norm (q/k/v, cross queries, gate/up, logits) can take the residual sum and
RMSNorm before them into the kernel's prologue, the gate/up projection the gated SiLU after it into its
epilogue, and the q/k/v projection RoPE and the cache write after it: each saves a small kernel a layer (each
costs a few microseconds inside a graph however little it does). A NORM block reads its rows twice, once for
their scale and once for the product, which costs more L2 traffic as rows grow; so the tuner races each fused
form against the kernels it replaces and keeps it only where it wins. The kernel itself is in skinny_kernel.py.

Split-K (H100, 2026-11-22, commit d2fc5fe): with one block per band, ours lost to cuBLAS on every projection
of 2048 or 3072 outputs at 2 rows (128 or 192 blocks, one per SM, too few loads in flight), while it beat
cuBLAS where the bands are many (gate/up 24.6 us against 25.5, the logits 13.5 against 15.7). Split-K
candidates give those projections several blocks per band, each over a slice of K; the last to finish adds
the parts in a fixed order. Whether they win is again for the tuner to measure.

Programmatic dependent launch (Hopper on; `Config.pdl`): the launch may begin while the kernel before it runs,
asking L2 for its weights meanwhile, and waits for it before reading anything it wrote (skinny_kernel.py). The
tuner times the fastest block shape of each projection also this way and keeps it where it is faster.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import triton
from torch import Tensor

from tts_engine.dia import dependent, fused
from tts_engine.dia.kernels import interpreting
from tts_engine.dia.kernels import pdl_capable as pdl_capable  # re-exported: the tuner asks linear
from tts_engine.dia.skinny_kernel import NORM as NORM  # re-exported: callers name the forms through linear
from tts_engine.dia.skinny_kernel import PLAIN as PLAIN
from tts_engine.dia.skinny_kernel import ROPE, SILU, STORE, skinny_matmul
from tts_engine.dia.timing import Timer, graph_timer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Config:
    """One block shape of the kernel: output columns per block, K per loop step, warps, pipeline stages."""

    block_n: int
    block_k: int
    warps: int = 4
    stages: int = 4
    splits: int = 1  # split-K: blocks per band, each summing a slice of K (see skinny_kernel.py)
    pdl: bool = False  # launched as a programmatic dependent launch, its weights asked of L2 first (Hopper on)

    def shared_bytes(self, block_m: int, itemsize: int, form: int = PLAIN) -> int:
        """Shared memory the pipelined loads of `form` (a FORMS key) need at most: `stages` buffers of the
        x-sized tiles (x; with a NORM prologue also delta and the norm's weights) and of the W tiles (two with
        the SILU epilogue: the gate's and the up projection's). Triton uses one buffer fewer where it pipelines
        with mma.sync; tests/engine/test_kernel_build.py checks the bound against compiled kernels."""
        x_tiles = 3 if form in NORMED else 1
        w_tiles = 2 if form in GATED_FORMS else 1
        return self.stages * (x_tiles * block_m + w_tiles * self.block_n) * self.block_k * itemsize


# Narrow bands for the 2048-wide projections (128 blocks), wider ones for gate/up's 16384 and the logits. Split-K
# for the 2048- and 3072-wide ones: at one block per band they left an H100's SMs one block each, too few
# loads in flight to stream the weights (ours lost to cuBLAS's 6.5 us there, where the bytes need 2.5).
CANDIDATES = (
    Config(16, 256), Config(16, 512, 8, 3), Config(32, 128), Config(32, 256, 4, 3), Config(64, 128, 4, 3),
    Config(16, 128, 4, 4, splits=4), Config(16, 256, 4, 3, splits=8),
)  # fmt: skip
MAX_SPLIT_BANDS = 512  # split-K only for projections of fewer bands (more fill the GPU by themselves)
# Row counts vary by bucket; not specialising on them keeps one compilation per block shape.
DO_NOT_SPECIALIZE = ("rows",)
MAX_ROWS = 64  # x's rows share one block; past this the weights would be re-read, and cuBLAS is efficient
# The kernel's forms, the tuner's keys (with rows, N, K): each fused form is timed against the kernels it
# replaces, so its verdict is its own, never taken for another form's. PLAIN and NORM have no epilogue; GATED
# (the SILU epilogue) and NORM_GATED are the gate/up projection's, ROPED (NORM with the RoPE epilogue) the q/k/v
# projection's.
GATED, ROPED, NORM_GATED = 2, 3, 4
FORMS = {
    PLAIN: "matmul", NORM: "norm + matmul", GATED: "matmul + silu", ROPED: "norm + matmul + rope",
    NORM_GATED: "norm + matmul + silu",
}  # fmt: skip
NORMED = frozenset({NORM, ROPED, NORM_GATED})  # the forms with the NORM prologue
GATED_FORMS = frozenset({GATED, NORM_GATED})  # the forms with the SILU epilogue
NORM_ELEMENTS = 4096  # a NORM first-pass chunk: 32 values a thread on 4 warps, for x and again for delta


PREFETCH_LINES = 32  # a PDL block asks L2 for at most 4 KiB of each of its weight rows (a 2048-wide bf16 row)
# and a PDL launch for at most this much in all: what the few microseconds of the kernel before it can bring in
# at 3 TB/s, and well inside an H100's 50 MB L2. Asking all of the gate/up projection's 67 MB would evict the
# first lines before they are read, and fetch them twice.
PREFETCH_BYTES = 8 * 2**20


@dataclass(frozen=True)
class RopeShape:
    """What the tuner needs to race a q/k/v group's `roped` form against the three kernels it replaces: the
    model's cos and sin table (2, positions, E), as decode steps pass it, and the attention's heads."""

    table: Tensor
    heads: int
    kv_heads: int


@dataclass(frozen=True)
class Group:
    """The weights of one role in a decode step (one per layer, all one shape) and how the step makes their
    input: PLAIN (as given) or NORM (rms_norm(x + delta) with `norms[i]` for `weights[i]`, and `eps`). `rope`:
    the q/k/v projection, whose NORM form can also take RoPE and the cache write (`roped`). `gated`: the gate/up
    projection, whose output goes through silu_mul (the GATED forms take it; the NORM form alone is not tried)."""

    weights: Sequence[Tensor]
    prologue: int = PLAIN
    norms: Sequence[Tensor] = ()
    eps: float = 1e-5
    rope: RopeShape | None = None
    gated: bool = False


@dataclass(frozen=True)
class RopeWrite:
    """Where a ROPE epilogue puts the q/k/v projection, as kernels.DecodeKernels.rope_write takes it: the cos
    and sin table (2, positions, E), each row's position, the caches (rows, K, S, E) and the query heads."""

    table: Tensor
    pos_R: Tensor
    k_cache: Tensor
    v_cache: Tensor
    heads: int


def block_rows(rows: int) -> int:
    """BLOCK_M for `rows` rows of x: the next power of two, at least the 16 rows tl.dot needs."""
    return max(16, triton.next_power_of_2(rows))


def norm_chunk(rows: int, k: int) -> tuple[int, int]:
    """A NORM prologue's first pass: its rows (the next power of two, at least 2: Triton's interpreter mishandles
    one-element masks) and columns per chunk, NORM_ELEMENTS a chunk at most (all of a 2048-wide row at two rows)."""
    norm_m = max(2, triton.next_power_of_2(rows))
    return norm_m, min(triton.next_power_of_2(k), max(16, NORM_ELEMENTS // norm_m))


def split_width(k: int, config: Config) -> int:
    """K columns per split of a split-K launch: whole BLOCK_K steps, so no tile straddles two splits."""
    return triton.cdiv(triton.cdiv(k, config.splits), config.block_k) * config.block_k


def candidates(n: int, *, pdl: bool = False) -> tuple[Config, ...]:
    """The block shapes worth trying for n output columns: split-K ones only where the bands are few; with
    `pdl`, each also as a programmatic dependent launch."""
    shapes = tuple(c for c in CANDIDATES if c.splits == 1 or triton.cdiv(n, c.block_n) <= MAX_SPLIT_BANDS)
    return shapes + (tuple(dataclasses.replace(c, pdl=True) for c in shapes) if pdl else ())


def prefetch_lines(k_split: int, itemsize: int, rows: int = 1, splits: int = 1) -> tuple[int, int]:
    """A PDL block's prefetch: (lines a weight row, values a line), 128-byte lines over its K slice, at most
    PREFETCH_LINES, and so few that the launch asks at most PREFETCH_BYTES of the weight's `rows` rows, each in
    `splits` K slices (powers of two: the kernel's tile)."""
    lines, line = dependent.lines(k_split, itemsize, PREFETCH_LINES)
    budget = max(1, PREFETCH_BYTES // (rows * splits * dependent.LINE_BYTES))
    return min(lines, 1 << (budget.bit_length() - 1)), line


def shared_limit(device: torch.device) -> int | None:
    """The most shared memory one thread block may use on `device` (227 KiB on an H100); None off CUDA, or
    where PyTorch does not say (then a launch that asks too much fails, and the tuner leaves it out)."""
    if device.type != "cuda":
        return None
    limit = getattr(torch.cuda.get_device_properties(device), "shared_memory_per_block_optin", None)
    return None if limit is None else int(limit)


@dataclass
class SkinnyLinear:
    """`F.linear` without bias, through the Triton kernel for the (rows, N, K) shapes `tune` found it faster on;
    and the fused forms (`normed`, `roped`, `gated`, `normed_gated`), which fold the elementwise kernels before or
    after a projection into it where `tune` found that faster than the kernels apart."""

    kernel: object = field(default_factory=lambda: triton.jit(skinny_matmul, do_not_specialize=DO_NOT_SPECIALIZE))
    choices: dict[tuple[int, int, int], Config] = field(default_factory=dict)  # (rows, N, K): plain projections
    fusions: dict[tuple[int, int, int, int], Config] = field(default_factory=dict)  # (form, rows, N, K)
    tuned: set[tuple[int, int, int, int]] = field(default_factory=set)  # (form, rows, N, K): FORMS' keys
    timer: Timer = graph_timer  # seconds one call takes
    # Batch-invariant: every one-position call (a decode step) runs the kernel with one block shape per weight
    # shape and MAX_ROWS-row blocks, whatever the rows, so a row's sums never depend on the others; never
    # cuBLAS, which picks kernels by shape. Calls of several positions (a request's prefill) keep F.linear.
    # The norms and the activation stay unfused then (the fused forms decline).
    invariant: bool = False
    shapes: dict[tuple[int, int], Config] = field(default_factory=dict)  # invariant: the block shape per (N, K)
    dependent: bool = True  # the tuner may time programmatic dependent launches, where the GPU has them
    _split_counts: dict[torch.device, Tensor] = field(default_factory=dict, repr=False)  # see counters

    def __call__(self, x: Tensor, weight: Tensor) -> Tensor:
        n, k = weight.shape
        if self.invariant:
            return self._invariant_call(x, weight)
        rows = x.numel() // k
        config = self.choices.get((rows, n, k))
        if config is None:
            return F.linear(x, weight)
        return self.run(x, weight, config=config)

    def normed(
        self, x: Tensor, delta: Tensor | None, gamma: Tensor, eps: float, weight: Tensor
    ) -> tuple[Tensor, Tensor] | None:
        """(rms_norm(t, gamma, eps) @ weight^T, t) with t = x + delta (x where delta is None), as one kernel
        where `tune` chose it for this shape; None where the caller should run the two kernels."""
        config = self._fusion(NORM, x, weight)
        return None if config is None else self.run_normed(x, delta, gamma, eps, weight, config=config)

    def roped(
        self, x: Tensor, delta: Tensor | None, gamma: Tensor, eps: float, weight: Tensor, rope_2xPxE: Tensor,
        pos_R: Tensor, k_cache: Tensor, v_cache: Tensor, heads: int,
    ) -> tuple[Tensor, Tensor] | None:  # fmt: skip
        """`normed` for the fused q/k/v projection (attention.pair_heads order) with kernels.rope_write in its
        epilogue: (rotated queries (R, H, E), t), the keys and values written into the caches at pos_R. Where
        the tuner found this form faster than the norm, the projection and kernels.rope_write (what the epilogue
        adds is a few pairs' arithmetic in registers against a kernel of its own); else None."""
        config = self._fusion(ROPED, x, weight)
        if config is None:
            return None
        rope = RopeWrite(rope_2xPxE, pos_R, k_cache, v_cache, heads)
        return self.run_normed(x, delta, gamma, eps, weight, config=config, rope=rope)

    def gated(self, x: Tensor, weight: Tensor) -> Tensor | None:
        """silu_mul(x @ weight^T) (weight: the gate's rows, then the up projection's) as one kernel where `tune`
        chose it for this shape; else None."""
        config = self._fusion(GATED, x, weight)
        return None if config is None else self.run_gated(x, weight, config=config)

    def normed_gated(
        self, x: Tensor, delta: Tensor | None, gamma: Tensor, eps: float, weight: Tensor
    ) -> tuple[Tensor, Tensor] | None:
        """(silu_mul(rms_norm(t, gamma, eps) @ weight^T), t) with t = x + delta: the gate/up projection with the
        norm before it and the activation after it, one kernel where `tune` chose it; else None."""
        config = self._fusion(NORM_GATED, x, weight)
        return None if config is None else self.run_normed(x, delta, gamma, eps, weight, config=config, gated=True)

    def _fusion(self, form: int, x: Tensor, weight: Tensor) -> Config | None:
        """The block shape `tune` chose for this fused form at x's rows, or None (never when batch-invariant)."""
        n, k = weight.shape
        return None if self.invariant else self.fusions.get((form, x.numel() // k, n, k))

    def _invariant_call(self, x: Tensor, weight: Tensor) -> Tensor:
        n, k = weight.shape
        if x.dim() > 2 and x.shape[-2] != 1:
            return F.linear(x, weight)
        config = self.shapes.get((n, k), CANDIDATES[2])
        blocks = x.reshape(-1, k).split(MAX_ROWS)
        y = torch.cat([self.run(block, weight, config=config, block_m=MAX_ROWS) for block in blocks])
        return y.view(*x.shape[:-1], n)

    def run(self, x: Tensor, weight: Tensor, *, config: Config, block_m: int | None = None) -> Tensor:
        """The kernel with `config`, whatever was chosen; x (..., K) with at most MAX_ROWS rows, in blocks of
        `block_m` rows (default: the next power of two)."""
        x_2d = x.reshape(-1, weight.shape[1])
        return self._launch(x_2d, weight, config, block_m=block_m).view(*x.shape[:-1], weight.shape[0])

    def run_normed(
        self, x: Tensor, delta: Tensor | None, gamma: Tensor, eps: float, weight: Tensor, *, config: Config,
        rope: RopeWrite | None = None, gated: bool = False,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        """`normed` with `config`, whatever was chosen; with `rope`, `roped` (the first result is the queries);
        with `gated`, `normed_gated`."""
        k = weight.shape[1]
        assert gamma.dtype == x.dtype and gamma.shape == (k,) and gamma.stride(0) == 1
        x_2d = x.reshape(-1, k)
        delta_2d, total = None, x
        if delta is not None:
            delta_2d = delta.reshape(-1, k)
            assert delta_2d.shape == x_2d.shape and delta_2d.stride(1) == 1
            total = torch.empty_like(x_2d)
        out = None
        if rope is not None:
            out = torch.empty((x_2d.shape[0], rope.heads, rope.k_cache.shape[3]), dtype=x.dtype, device=x.device)
        y = self._launch(
            x_2d, weight, config, prologue=NORM, delta=delta_2d, gamma=gamma, eps=eps, total=total, rope=rope, out=out,
            gated=gated,
        )  # fmt: skip
        return (y if rope is not None else y.view(*x.shape[:-1], y.shape[-1])), total.view(x.shape)

    def run_gated(self, x: Tensor, weight: Tensor, *, config: Config) -> Tensor:
        """`gated` with `config`, whatever was chosen."""
        y = self._launch(x.reshape(-1, weight.shape[1]), weight, config, gated=True)
        return y.view(*x.shape[:-1], y.shape[-1])

    def _launch(
        self, x_RxK: Tensor, weight: Tensor, config: Config, *, block_m: int | None = None, prologue: int = PLAIN,
        delta: Tensor | None = None, gamma: Tensor | None = None, eps: float = 0.0, total: Tensor | None = None,
        rope: RopeWrite | None = None, out: Tensor | None = None, gated: bool = False,
    ) -> Tensor:  # fmt: skip
        rows_w, k = weight.shape
        rows = x_RxK.shape[0]
        assert rows <= MAX_ROWS and x_RxK.stride(1) == 1 and weight.stride(1) == 1
        assert not gated or (rows_w % 2 == 0 and rope is None)
        n = rows_w // 2 if gated else rows_w  # the kernel's outputs: the gate's rows with SILU
        y = torch.empty((rows, n), dtype=x_RxK.dtype, device=x_RxK.device) if out is None else out
        # Unused pointers point at y: the kernel never touches them (its constexprs leave them out).
        delta_, gamma_, total_ = (y if t is None else t for t in (delta, gamma, total))
        if rope is None:
            targets: tuple[object, ...] = (y, y, y, y, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        else:
            k_cache, v_cache = rope.k_cache, rope.v_cache
            assert rope.table.stride(2) == 1 and k_cache.stride(3) == 1 and v_cache.stride(3) == 1
            assert config.block_n % 2 == 0 and n == (rope.heads + 2 * k_cache.shape[1]) * k_cache.shape[3]
            targets = (
                rope.table, rope.pos_R, k_cache, v_cache, *rope.table.stride()[:2], *k_cache.stride()[:3],
                *v_cache.stride()[:3], rope.heads, k_cache.shape[1], k_cache.shape[3],
            )  # fmt: skip
        bands, block_m = triton.cdiv(n, config.block_n), block_m or block_rows(rows)
        parts, counters, k_split = y, y, k  # unused without split-K
        if config.splits > 1:
            if bands > MAX_SPLIT_BANDS:
                raise ValueError(f"split-K for {bands} bands: past the {MAX_SPLIT_BANDS} it counts")
            parts = torch.empty((config.splits * block_m, rows_w), dtype=torch.float32, device=y.device)
            counters = self.counters(y.device)
            k_split = split_width(k, config)
        norm_m, norm_k = norm_chunk(rows, k) if prologue == NORM else (2, 16)  # (unused but by NORM)
        lines, line = prefetch_lines(k_split, weight.element_size(), rows_w, config.splits)
        pdl = {"launch_pdl": True} if config.pdl else {}  # (the interpreter knows no such option)
        self.kernel[(bands, config.splits)](  # type: ignore[index]
            x_RxK, weight, y, delta_, gamma_, total_, rows, n, k, x_RxK.stride(0), weight.stride(0), y.stride(0),
            delta_.stride(0), total_.stride(0), eps, parts, counters, k_split, *targets,
            BLOCK_M=block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k, DOT_F32=interpreting(),
            PRECISION="ieee" if x_RxK.dtype == torch.float32 else "tf32", PROLOGUE=prologue, DELTA=delta is not None,
            EPILOGUE=ROPE if rope is not None else SILU if gated else STORE, SPLITS=config.splits, NORM_M=norm_m,
            NORM_K=norm_k, PDL=config.pdl, LINES=lines, LINE=line, num_warps=config.warps, num_stages=config.stages,
            **pdl,
        )  # fmt: skip
        return y

    def counters(self, device: torch.device) -> Tensor:
        """Split-K's arrival counts, one per band, zero between launches: made once per device, before any graph
        is captured (the tuner's eager check launches every candidate first), and kept, as graphs hold them."""
        counters = self._split_counts.get(device)
        if counters is None:
            if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
                raise RuntimeError("split-K counters must exist before graph capture: tune first")
            counters = self._split_counts[device] = torch.zeros(MAX_SPLIT_BANDS, dtype=torch.int32, device=device)
        return counters

    def tune(self, groups: Iterable[Group], rows: Iterable[int], ops: fused.Ops = fused.EAGER) -> None:
        """Time cuBLAS and every candidate for each group of same-shape weights (one per layer) at each row
        count, and keep the fastest (see linear_tuning.tune)."""
        from tts_engine.dia import linear_tuning

        linear_tuning.tune(self, groups, rows, ops)
