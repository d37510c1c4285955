"""Skinny matmuls for decode steps: y = x @ W^T where x has a few rows (two per request slot), in Triton, used
for a shape only where it measured faster than cuBLAS on this GPU.

Why (bench/profile_step.py on an H100, 2026-11-22): for the 2048-wide projections at two rows, cuBLAS chose
a kernel with 64-column tiles, 32 thread blocks for 132 SMs, and took 6.3 us where the weights' bytes need
about 2.8; those matmuls cost 0.45 ms of a 2.57 ms step. Here every block streams a narrow band of W's rows
(BLOCK_N of them) for all of x's rows at once, so the weights are read exactly once and N / BLOCK_N blocks
share the bandwidth. Which block shape wins depends on the GPU, so `SkinnyLinear.tune` times each candidate
against cuBLAS for every (rows, N, K) a decoder will run and keeps the fastest, cuBLAS included: a wrong
guess here can never make a step slower. The kernel body is a plain function so the CPU tests can run it in
Triton's interpreter (see kernels.py).
"""

from __future__ import annotations

import functools
import logging
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

from tts_engine.dia.kernels import interpreting

log = logging.getLogger(__name__)


def _skinny_matmul(
    x_ptr, w_ptr, y_ptr, rows, n, k, stride_xm, stride_wn, stride_ym,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DOT_F32: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """One band of BLOCK_N output columns for all `rows` (<= BLOCK_M) rows of x, float32 accumulation; float32
    inputs multiply in full precision (PRECISION "ieee"), never TF32, as cuBLAS does by default in PyTorch."""
    band = tl.program_id(0)
    m = tl.arange(0, BLOCK_M)
    cols = band * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = m < rows
    n_ok = cols < n
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for start in range(0, k, BLOCK_K):
        ks = start + tl.arange(0, BLOCK_K)
        k_ok = ks < k
        x = tl.load(x_ptr + m[:, None] * stride_xm + ks[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_ptr + cols[:, None] * stride_wn + ks[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
        if DOT_F32:  # the interpreter's bf16 dot is wrong; bf16 products are exact in float32
            x, w = x.to(tl.float32), w.to(tl.float32)
            acc += tl.dot(x, tl.trans(w), input_precision="ieee")
        else:
            acc += tl.dot(x, tl.trans(w), input_precision=PRECISION)
    y = y_ptr + m[:, None] * stride_ym + cols[None, :]
    tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


@dataclass(frozen=True)
class Config:
    """One block shape of the kernel: output columns per block, K per loop step, warps, pipeline stages."""

    block_n: int
    block_k: int
    warps: int = 4
    stages: int = 4

    def shared_bytes(self, block_m: int, itemsize: int) -> int:
        """Shared memory the pipelined loads need at most: `stages` buffers of an x tile and a W tile (Triton
        uses one buffer fewer where it pipelines with mma.sync; tests/engine/test_kernel_build.py checks the
        bound against compiled kernels)."""
        return self.stages * (block_m + self.block_n) * self.block_k * itemsize


# Narrow bands for the 2048-wide projections (128 blocks), wider ones for gate/up's 16384 and the logits.
CANDIDATES = (Config(16, 256), Config(16, 512, 8, 3), Config(32, 128), Config(32, 256, 4, 3), Config(64, 128, 4, 3))
# Row counts vary by bucket; not specialising on them keeps one compilation per block shape.
DO_NOT_SPECIALIZE = ("rows",)
MAX_ROWS = 64  # x's rows share one block; past this the weights would be re-read, and cuBLAS is efficient


Timer = Callable[[Callable[[], object]], float]


def shared_limit(device: torch.device) -> int | None:
    """The most shared memory one thread block may use on `device` (227 KiB on an H100); None off CUDA, or
    where PyTorch does not say (then a launch that asks too much fails, and the tuner leaves it out)."""
    if device.type != "cuda":
        return None
    limit = getattr(torch.cuda.get_device_properties(device), "shared_memory_per_block_optin", None)
    return None if limit is None else int(limit)


def cuda_timer(fn: Callable[[], object], repeats: int = 30) -> float:
    """Median seconds of `fn` on the current CUDA stream, after a warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times)


def _through(matmul: Callable[[Tensor], Tensor], group: list[Tensor]) -> Callable[[], None]:
    """One call that multiplies by every weight of the group in turn."""

    def run() -> None:
        for weight in group:
            matmul(weight)

    return run


@dataclass
class SkinnyLinear:
    """`F.linear` without bias, through the Triton kernel for the (rows, N, K) shapes `tune` found it faster on."""

    kernel: object = field(default_factory=lambda: triton.jit(_skinny_matmul, do_not_specialize=DO_NOT_SPECIALIZE))
    choices: dict[tuple[int, int, int], Config] = field(default_factory=dict)
    tuned: set[tuple[int, int, int]] = field(default_factory=set)
    timer: Timer = cuda_timer  # seconds one call takes
    # Batch-invariant: every one-position call (a decode step) runs the kernel with one block shape per weight
    # shape and MAX_ROWS-row blocks, whatever the rows, so a row's sums never depend on the others; never
    # cuBLAS, which picks kernels by shape. Calls of several positions (a request's prefill) keep F.linear.
    invariant: bool = False
    shapes: dict[tuple[int, int], Config] = field(default_factory=dict)  # invariant: the block shape per (N, K)

    def __call__(self, x: Tensor, weight: Tensor) -> Tensor:
        n, k = weight.shape
        if self.invariant:
            return self._invariant_call(x, weight)
        rows = x.numel() // k
        config = self.choices.get((rows, n, k))
        if config is None:
            return F.linear(x, weight)
        return self.run(x, weight, config=config)

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
        n, k = weight.shape
        x_2d = x.reshape(-1, k)
        rows = x_2d.shape[0]
        assert rows <= MAX_ROWS and x_2d.stride(1) == 1 and weight.stride(1) == 1
        y = torch.empty((rows, n), dtype=x.dtype, device=x.device)
        self.kernel[(triton.cdiv(n, config.block_n),)](  # type: ignore[index]
            x_2d, weight, y, rows, n, k, x_2d.stride(0), weight.stride(0), y.stride(0),
            BLOCK_M=block_m or max(16, triton.next_power_of_2(rows)), BLOCK_N=config.block_n, BLOCK_K=config.block_k,
            DOT_F32=interpreting(), PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
            num_warps=config.warps, num_stages=config.stages,
        )  # fmt: skip
        return y.view(*x.shape[:-1], n)

    def tune(self, groups: Iterable[list[Tensor]], rows: Iterable[int]) -> None:
        """Time cuBLAS and every candidate for each group of same-shape weights (one per layer) at each row
        count, and keep the fastest. Each timing runs through the whole group, as a step does, so the weights
        come from memory rather than from L2."""
        if self.invariant:
            self._tune_shapes(groups)
            return
        row_counts = sorted({r for r in rows if r <= MAX_ROWS})
        for group in groups:
            n, k = group[0].shape
            for r in row_counts:
                if (r, n, k) in self.tuned:
                    continue
                x = torch.randn(r, k, device=group[0].device, dtype=group[0].dtype)
                cublas = self.timer(_through(functools.partial(F.linear, x), group))
                timings = self._time_candidates(x, group)
                best = min(timings, key=timings.__getitem__, default=None)
                if best is not None and timings[best] >= cublas:
                    best = None  # only where strictly faster than cuBLAS
                self.tuned.add((r, n, k))
                if best is not None:
                    self.choices[(r, n, k)] = best
                log.info(
                    "matmul %dx%d at %d rows: cuBLAS %.1f us, ours %s", n, k, r, cublas / len(group) * 1e6,
                    "slower" if best is None else f"{timings[best] / len(group) * 1e6:.1f} us with {best}",
                )  # fmt: skip

    def _tune_shapes(self, groups: Iterable[list[Tensor]]) -> None:
        """Invariant mode: the fastest block shape for each weight shape, timed at MAX_ROWS-row blocks (as
        every call runs), kept for every row count."""
        for group in groups:
            n, k = group[0].shape
            if (n, k) in self.shapes or (self.timer is cuda_timer and group[0].device.type != "cuda"):
                continue  # chosen already, or no GPU to time on (the interpreter's tests): the default serves
            x = torch.randn(2, k, device=group[0].device, dtype=group[0].dtype)
            timings = self._time_candidates(x, group, block_m=MAX_ROWS)
            if timings:
                self.shapes[(n, k)] = min(timings, key=timings.__getitem__)
                log.info("batch-invariant matmul %dx%d: %s", n, k, self.shapes[(n, k)])

    def _time_candidates(self, x: Tensor, group: list[Tensor], *, block_m: int | None = None) -> dict[Config, float]:
        """Seconds of each candidate block shape through the whole group; one that needs more shared memory than
        a block may have on this GPU, or fails to compile, is left out."""
        timings = {}
        limit = shared_limit(x.device)
        rows = block_m or max(16, triton.next_power_of_2(x.numel() // x.shape[-1]))
        for config in CANDIDATES:
            if limit is not None and config.shared_bytes(rows, x.element_size()) > limit:
                continue
            try:
                run = functools.partial(self.run, x, config=config, block_m=block_m)
                timings[config] = self.timer(_through(run, group))
            except Exception as exc:  # a block shape this GPU cannot compile is simply no candidate
                log.warning("matmul kernel %s failed for %dx%d: %s", config, *group[0].shape, exc)
        return timings
