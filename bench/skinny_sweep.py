"""A sweep of skinny-matmul designs at decode shapes, for choosing the tuner's candidates (linear.CANDIDATES):
not a benchmark of record (bench/engine.py is).

    python bench/skinny_sweep.py [--rows 2] [--budget 240] [--tuner]  # CUDA
    python bench/skinny_sweep.py --check                         # CPU, Triton's interpreter: correctness only

For each projection shape of a decode step (one weight per layer, 18 layers, as a step reads them, so the
weights come from memory), the median replay of a captured graph (timing.graph_timer, as the tuner times) of:
- cuBLAS (F.linear);
- the tuner's candidates (linear.CANDIDATES), first as they are and then as programmatic dependent launches
  (linear.Config.pdl: each block asks L2 for its weights, then waits for the launch before it), first in line
  so the budget never cuts them; `--tuner` runs only these;
- our kernel (skinny_kernel.py) over a grid of block shapes, split-K included, wider than the tuner's;
- `gemv` below: the same product without tensor cores (products and row sums in registers), one band of
  BLOCK_N rows of W per block over the whole of K, so narrow bands give many blocks without split-K's
  reduction; and the same with programmatic dependent launch (PDL: each launch may begin while the one before
  it finishes, its wait placed before it reads anything), to see what overlapping launches would give.
Configurations compile once each and serve every shape; the sweep stops at the time budget and prints, per
shape, cuBLAS and the fastest of each design.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import sys
import time
from collections import defaultdict
from collections.abc import Callable

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

from bench.common import under_triton_interpreter
from tts_engine.dia import linear
from tts_engine.dia.linear import Config, SkinnyLinear
from tts_engine.dia.linear_tuning import agrees, through
from tts_engine.dia.timing import graph_timer

SHAPES = ((2048, 2048), (3072, 2048), (2048, 8192), (16384, 2048), (9280, 2048))  # (N, K), the likeliest gains first
LAYERS = 18


@triton.jit
def gemv(
    x_ptr, w_ptr, y_ptr, rows, n, k, stride_xm, stride_wn, stride_ym,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    """y = x @ W^T for BLOCK_N rows of W over all of K: products in float32 registers, summed over K per step."""
    band = tl.program_id(0)
    m = tl.arange(0, BLOCK_M)
    cols = band * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok, n_ok = m < rows, cols < n
    if PDL:  # nothing read or written before the launch before this one has finished
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for start in range(0, k, BLOCK_K):
        ks = start + tl.arange(0, BLOCK_K)
        k_ok = ks < k
        w = tl.load(w_ptr + cols[:, None] * stride_wn + ks[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
        x = tl.load(x_ptr + m[:, None] * stride_xm + ks[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        acc += tl.sum(x.to(tl.float32)[:, None, :] * w.to(tl.float32)[None, :, :], 2)
    y = y_ptr + m[:, None] * stride_ym + cols[None, :]
    tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def run_gemv(x: Tensor, w: Tensor, block_n: int, block_k: int, warps: int, stages: int, pdl: bool) -> Tensor:
    rows, (n, k) = x.shape[0], w.shape
    y = torch.empty((rows, n), dtype=x.dtype, device=x.device)
    extra = {"launch_pdl": True} if pdl else {}
    gemv[(triton.cdiv(n, block_n),)](
        x, w, y, rows, n, k, x.stride(0), w.stride(0), y.stride(0), BLOCK_M=triton.next_power_of_2(rows),
        BLOCK_N=block_n, BLOCK_K=block_k, PDL=pdl, num_warps=warps, num_stages=stages, **extra,
    )  # fmt: skip
    return y


def ours_grid() -> list[Config]:
    plain = [Config(n, k, w, s) for n, k, w, s in itertools.product((16, 32, 64), (128, 256, 512), (4, 8), (3, 4))]
    split = [
        Config(n, k, 4, s, splits=p) for n, k, s, p in itertools.product((16, 32), (64, 128, 256), (2, 3, 4), (2, 4, 8))
    ]
    return split + plain  # split-K first: one block per band lost to cuBLAS at 2048 outputs (linear.py)


def gemv_grid() -> list[tuple[int, int, int, int, bool]]:
    grid = [(n, k, w, s, False) for n, k, w, s in itertools.product((4, 8, 16), (256, 512, 1024), (2, 4, 8), (1, 3))]
    return grid + [(n, k, w, 1, True) for n, k, w in itertools.product((4, 8, 16), (512, 1024), (4, 8))]


def sweep(rows: int, budget: float, tuner_only: bool) -> None:
    device, dtype = torch.device("cuda"), torch.bfloat16
    g = torch.Generator(device=device).manual_seed(0)
    groups = {
        (n, k): [torch.randn(n, k, device=device, dtype=dtype, generator=g) * k**-0.5 for _ in range(LAYERS)]
        for n, k in SHAPES
    }
    xs = {k: torch.randn(rows, k, device=device, dtype=dtype, generator=g) for k in {k for _, k in SHAPES}}
    results: dict[tuple[int, int], dict[str, float]] = defaultdict(dict)
    groups_of: dict[str, str] = {}  # each timed name's design
    for (n, k), weights in groups.items():
        results[(n, k)]["cublas"] = graph_timer(through(functools.partial(F.linear, xs[k]), weights))
        print(f"# {rows}x{n}x{k} cuBLAS {results[(n, k)]['cublas'] / LAYERS * 1e6:.2f} us", flush=True)
    skinny = SkinnyLinear()
    limit = linear.shared_limit(device)
    # (design, name, the product of x and one weight, block_n, splits: split-K's arrival counters cover so many)
    designs: list[tuple[str, str, Callable[[Tensor, Tensor], Tensor], int, int]] = []
    tuner = [*linear.CANDIDATES, *(dataclasses.replace(c, pdl=True) for c in linear.CANDIDATES)]
    wider = [] if tuner_only else [c for c in ours_grid() if c not in linear.CANDIDATES]
    for origin, configs in (("tuner", tuner), ("ours", wider)):
        for c in configs:
            if limit is not None and c.shared_bytes(linear.block_rows(rows), 2) > limit:
                continue
            design = f"{origin} pdl" if c.pdl else origin
            designs.append((design, f"{design} {c}", functools.partial(skinny.run, config=c), c.block_n, c.splits))
    for bn, bk, warps, stages, pdl in [] if tuner_only else gemv_grid():
        design = "gemv pdl" if pdl else "gemv"
        product = functools.partial(run_gemv, block_n=bn, block_k=bk, warps=warps, stages=stages, pdl=pdl)
        designs.append((design, f"{design} n{bn} k{bk} w{warps} s{stages}", product, bn, 1))
    deadline = time.monotonic() + budget
    for design, name, fn, block_n, splits in designs:
        if time.monotonic() > deadline:
            print("# time budget spent: stopping", flush=True)
            break
        for (n, k), weights in groups.items():
            if splits > 1 and triton.cdiv(n, block_n) > linear.MAX_SPLIT_BANDS:
                continue
            x = xs[k]
            try:
                if not agrees(fn(x, weights[0]), F.linear(x, weights[0])):
                    print(f"# {name} wrong at {n}x{k}", flush=True)
                    continue
                results[(n, k)][name] = graph_timer(through(functools.partial(fn, x), weights))
                groups_of[name] = design
            except Exception as exc:  # a design this GPU cannot build is no candidate
                print(f"# {name} failed at {n}x{k}: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
    report(rows, results, groups_of)


def report(rows: int, results: dict[tuple[int, int], dict[str, float]], groups_of: dict[str, str]) -> None:
    """Per shape: cuBLAS, then the fastest few of each design, in microseconds a projection and TB/s."""
    for (n, k), timings in results.items():
        cublas = timings.pop("cublas")
        rate = n * k * 2 / (cublas / LAYERS) / 1e12
        print(f"\n## {rows}x{n}x{k}: cuBLAS {cublas / LAYERS * 1e6:.2f} us ({rate:.2f} TB/s)")
        for design in ("tuner", "tuner pdl", "ours", "ours pdl", "gemv", "gemv pdl"):
            ranked = sorted((t, name) for name, t in timings.items() if groups_of[name] == design)[:6]
            for t, name in ranked:
                print(f"| {name} | {t / LAYERS * 1e6:.2f} us | {n * k * 2 / (t / LAYERS) / 1e12:.2f} TB/s |")


def check() -> None:
    """The gemv kernel against F.linear in Triton's interpreter (rows 1 to 5, ragged N and K)."""
    torch.manual_seed(0)
    for rows, n, k in ((2, 48, 96), (1, 20, 64), (5, 33, 200)):
        x, w = torch.randn(rows, k), torch.randn(n, k)
        for bn, bk in ((4, 32), (16, 64)):
            y = run_gemv(x, w, bn, bk, 4, 1, False)
            assert torch.allclose(y, F.linear(x, w), atol=1e-4, rtol=1e-4), (rows, n, k, bn, bk)
    print("gemv agrees with F.linear")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--budget", type=float, default=240.0, help="seconds for the designs (cuBLAS aside)")
    parser.add_argument("--check", action="store_true", help="check the gemv kernel on the CPU and stop")
    parser.add_argument("--tuner", action="store_true", help="only the tuner's candidates, with and without PDL")
    args = parser.parse_args()
    if args.check:
        under_triton_interpreter()
        check()
        return 0
    if not torch.cuda.is_available():
        print("needs a CUDA device (or --check)", file=sys.stderr)
        return 2
    print(f"# {torch.cuda.get_device_name()} torch {torch.__version__} triton {triton.__version__}", flush=True)
    with torch.inference_mode():
        sweep(args.rows, args.budget, args.tuner)
    return 0


if __name__ == "__main__":
    sys.exit(main())
