"""Would one persistent kernel a decode step beat a launch per projection? A probe for what issue 3 still lacks
(0.21 ms a step at 0244d69), not a benchmark of record (bench/engine.py is).

    python bench/persistent.py [--rows 2] [--layers 18] [--budget 240]   # CUDA
    python bench/persistent.py --check                                  # CPU, Triton's interpreter

Every kernel that streams a weight costs about 3.5 us beyond its bytes at decode shapes, whatever its block
shape or design (docs/benchmarks.md, the skinny sweep at 5722529), and programmatic dependent launches with an
L2 prefetch did not remove it (0244d69). A step launches 109 of them, each with a ramp and a tail while memory
idles. The way around that is structural: a megakernel keeps one or two blocks per SM resident for the whole
step, puts grid barriers between the phases that depend on each other, and has each block ask L2 for its next
weights before it waits (Hazy Research's "no bubbles" Llama-1B megakernel, 2025; Mirage's persistent kernels).
Building that for a whole decoder layer (norms, RoPE and the cache write, two attentions, the SiLU) blind would
be a long gamble, so this measures its core first: the layer's six projections chained as a step chains them,
each one's input the output of the one before (q/k/v 3072x2048, the three 2048x2048, gate/up 16384x2048, down
2048x8192 reading the first 8192 of gate/up's outputs), through all layers, as a captured graph's replay:

- `cublas`: F.linear a projection;
- `launches`: the GEMV below, one launch a projection (a band of BLOCK_N rows of W a block, over all of K, products
  summed in float32 registers: bench/skinny_sweep.py's `gemv`, which matched cuBLAS at these shapes);
- `persistent`: the same GEMV body in one launch of blocks_per_sm blocks an SM, which take the bands of each
  projection in turn and meet at a grid barrier between projections;
- `persistent + prefetch`: the same, each block asking L2 for the whole band it multiplies next, between
  arriving at the barrier and waiting there.

What to read from it: `launches` against `persistent + prefetch` is what the barrier structure saves on the
layer's projections (the other 36 kernels a step, attention's, would be phases too). If it saves less than a
few microseconds a layer, a megakernel is not worth its complexity either.

The grid barrier: a count of arrivals, each block adding one with release semantics after its stores (a block
barrier orders its threads' stores before the one atomic) and spinning on an acquire read until every block of
the grid has arrived for this projection; reads of what other blocks wrote go past L1 (.cg). The counts return
to zero at the end, by the last block to leave (a count of departures), so a replay starts from zero: Inductor's
grid barrier (torch/_inductor/runtime/triton_helpers.py, x_grid_barrier) is the pattern followed. Every block
must be resident at once, or the first to wait never sees the last arrive: the launch is sized from the compiled
kernel's registers and shared memory, and never past the SMs times what fits on one.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

from bench.common import under_triton_interpreter
from tts_engine.dia.dependent import lines, prefetch_l2
from tts_engine.dia.linear_tuning import agrees
from tts_engine.dia.timing import graph_timer

# A decoder layer's projections as (outputs, inputs) in the order a step runs them; each reads the first
# `inputs` values of the output before it (down: the SiLU's 8192 of gate/up's 16384, as a stand-in).
LAYER = ((3072, 2048), (2048, 2048), (2048, 2048), (2048, 2048), (16384, 2048), (2048, 8192))
HBM_TBS = 3.35  # the H100 SXM's memory bandwidth, TB/s: the floor the table compares against


@triton.jit
def _band(x_ptr, w_ptr, y_ptr, band, rows, n, k, stride_x, stride_y,
          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
    """y[:, band] = x @ W[band]^T for BLOCK_N rows of the (n, k) weight W (rows contiguous), over all of K."""
    m = tl.arange(0, BLOCK_M)
    cols = band * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok, n_ok = m < rows, cols < n
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for start in range(0, k, BLOCK_K):
        ks = start + tl.arange(0, BLOCK_K)
        k_ok = ks < k
        w = tl.load(w_ptr + cols[:, None] * k + ks[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
        # past L1: in the persistent kernel, other blocks wrote x since this SM last read these addresses
        x_at = x_ptr + m[:, None] * stride_x + ks[None, :]
        x = tl.load(x_at, mask=m_ok[:, None] & k_ok[None, :], other=0.0, cache_modifier=".cg")
        acc += tl.sum(x.to(tl.float32)[:, None, :] * w.to(tl.float32)[None, :, :], 2)
    y = y_ptr + m[:, None] * stride_y + cols[None, :]
    tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def _one_launch(x_ptr, w_ptr, y_ptr, rows, n, k, stride_x, stride_y,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
    """One projection, one block a band."""
    _band(x_ptr, w_ptr, y_ptr, tl.program_id(0), rows, n, k, stride_x, stride_y, BLOCK_M, BLOCK_N, BLOCK_K)


@triton.jit
def _persistent(buf_ptr, w_ptr, meta_ptr, count_ptr, steps, rows, width, programs,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PREFETCH: tl.constexpr,
                LINES: tl.constexpr, LINE: tl.constexpr):  # fmt: skip
    """Every projection of the chain in turn: projection s reads slot s % 2 of buf (2, rows, width) and writes the
    other; meta holds (outputs, inputs, offset into w) a projection. count_ptr: two int32 zeros (arrivals,
    departures), zero again when the kernel ends."""
    pid = tl.program_id(0)
    for s in range(steps):
        n = tl.load(meta_ptr + 3 * s).to(tl.int32)
        k = tl.multiple_of(tl.load(meta_ptr + 3 * s + 1).to(tl.int32), 16)  # a loaded stride: vector loads need it
        w_s = w_ptr + tl.multiple_of(tl.load(meta_ptr + 3 * s + 2), 16)
        x_s = buf_ptr + (s % 2) * rows * width
        y_s = buf_ptr + ((s + 1) % 2) * rows * width
        for band in range(pid, tl.cdiv(n, BLOCK_N), programs):
            _band(x_s, w_s, y_s, band, rows, n, k, width, width, BLOCK_M, BLOCK_N, BLOCK_K)
        if s + 1 < steps:
            # Arrive: every thread's stores above come before the one release (the block barrier orders them).
            tl.debug_barrier()
            tl.atomic_add(count_ptr, 1, sem="release", scope="gpu")
            if PREFETCH:  # this block's next band, asked of L2 while memory would otherwise idle at the barrier
                n_next = tl.load(meta_ptr + 3 * s + 3).to(tl.int32)
                k_next = tl.load(meta_ptr + 3 * s + 4).to(tl.int32)
                w_next = w_ptr + tl.load(meta_ptr + 3 * s + 5)
                cols = pid * BLOCK_N + tl.arange(0, BLOCK_N)
                for k_lo in range(0, k_next, LINES * LINE):
                    prefetch_l2(w_next, cols, cols < n_next, k_lo, k_next, k_next, LINES, LINE)
            # Wait as Inductor's barrier does: Triton builds the acquire "add 0" as an acquire load (sm_90 machine
            # code: LDG.E.STRONG.GPU, then CCTL.IVALL, which drops this SM's L1), so the grid spins on plain loads.
            target = (s + 1) * programs
            seen = tl.atomic_add(count_ptr, 0, sem="acquire", scope="gpu")
            while seen < target:
                seen = tl.atomic_add(count_ptr, 0, sem="acquire", scope="gpu")
            tl.debug_barrier()
    # The last block to leave zeroes both counts: every other block has left its last wait by then.
    left = tl.atomic_add(count_ptr + 1, 1, sem="acq_rel", scope="gpu")
    if left == programs - 1:
        tl.store(count_ptr, 0)
        tl.store(count_ptr + 1, 0)


@dataclass(frozen=True)
class Body:
    """The GEMV's block shape, shared by every variant."""

    block_n: int
    block_k: int
    warps: int
    stages: int

    def __str__(self) -> str:
        return f"n{self.block_n} k{self.block_k} w{self.warps} s{self.stages}"


class Chain:
    """A chain of projections: the weights one flat tensor (so one kernel reaches them all), their shapes and
    offsets as `meta`, and the ping-pong buffer the persistent kernel reads and writes."""

    def __init__(self, shapes: list[tuple[int, int]], rows: int, dtype: torch.dtype, device: torch.device) -> None:
        g = torch.Generator(device=device).manual_seed(0)
        sizes = [n * k for n, k in shapes]
        offsets = list(itertools.accumulate([0, *sizes]))[:-1]
        assert all(o % 16 == 0 for o in offsets) and all(k % 16 == 0 for _, k in shapes)
        flat = torch.empty(sum(sizes), dtype=dtype, device=device)
        self.weights = [flat[o : o + s].view(n, k) for o, s, (n, k) in zip(offsets, sizes, shapes, strict=True)]
        for w in self.weights:  # kept in scale through the chain: each output about as large as its input
            w.copy_(torch.randn(w.shape, generator=g, device=device, dtype=torch.float32) * w.shape[1] ** -0.5)
        self.flat, self.shapes, self.rows = flat, shapes, rows
        self.meta = torch.tensor([[n, k, o] for (n, k), o in zip(shapes, offsets, strict=True)], dtype=torch.int64,
                                 device=device).flatten()  # fmt: skip
        self.width = max(max(n for n, _ in shapes), shapes[0][1])
        self.x = torch.randn(rows, shapes[0][1], generator=g, device=device, dtype=torch.float32).to(dtype)
        self.buf = torch.zeros(2, rows, self.width, dtype=dtype, device=device)
        self.counts = torch.zeros(2, dtype=torch.int32, device=device)

    @property
    def bytes(self) -> int:
        return self.flat.numel() * self.flat.element_size()

    def reference(self) -> Tensor:
        x = self.x
        for w in self.weights:
            x = F.linear(x[:, : w.shape[1]], w)
        return x

    def cublas(self) -> None:
        x = self.buf[0, :, : self.shapes[0][1]]
        for w in self.weights:
            x = F.linear(x[:, : w.shape[1]], w)

    def launches(self, body: Body) -> None:
        """One launch a projection, through the ping-pong buffer as the persistent kernel goes."""
        for s, (w, (n, k)) in enumerate(zip(self.weights, self.shapes, strict=True)):
            x, y = self.buf[s % 2], self.buf[(s + 1) % 2]
            _one_launch[(triton.cdiv(n, body.block_n),)](
                x, w, y, self.rows, n, k, x.stride(0), y.stride(0), BLOCK_M=triton.next_power_of_2(self.rows),
                BLOCK_N=body.block_n, BLOCK_K=body.block_k, num_warps=body.warps, num_stages=body.stages,
            )  # fmt: skip

    def persistent(self, body: Body, programs: int, prefetch: bool) -> None:
        line_count, line = lines(max(k for _, k in self.shapes), self.flat.element_size(), 16)
        _persistent[(programs,)](
            self.buf, self.flat, self.meta, self.counts, len(self.shapes), self.rows, self.width, programs,
            BLOCK_M=triton.next_power_of_2(self.rows), BLOCK_N=body.block_n, BLOCK_K=body.block_k,
            PREFETCH=prefetch, LINES=line_count, LINE=line, num_warps=body.warps, num_stages=body.stages,
        )  # fmt: skip

    def output(self) -> Tensor:
        n = self.shapes[-1][0]
        return self.buf[len(self.shapes) % 2, :, :n]

    def start(self) -> None:
        """Slot 0 holds the chain's input again."""
        self.buf.zero_()
        self.buf[0, :, : self.x.shape[1]] = self.x


def resident_blocks(chain: Chain, body: Body, prefetch: bool, device: torch.device) -> int:
    """How many blocks of the persistent kernel one SM holds at once, from the compiled kernel (compiled, not
    launched: a launch of more blocks than fit would wait for ever at its first barrier)."""
    line_count, line = lines(max(k for _, k in chain.shapes), chain.flat.element_size(), 16)
    compiled = _persistent.warmup(  # `programs` as a launch passes it (Triton specialises a 1 as a constant)
        chain.buf, chain.flat, chain.meta, chain.counts, len(chain.shapes), chain.rows, chain.width,
        torch.cuda.get_device_properties(device).multi_processor_count,
        BLOCK_M=triton.next_power_of_2(chain.rows), BLOCK_N=body.block_n, BLOCK_K=body.block_k, PREFETCH=prefetch,
        LINES=line_count, LINE=line, num_warps=body.warps, num_stages=body.stages, grid=(1,),
    )  # fmt: skip
    compiled._init_handles()  # loads the module, which reads its registers
    # Triton's own query (the driver's attributes): registers and opt-in shared memory, which on the GPUs this
    # runs on are what one SM has too (65536; 227 of the H100's 228 KiB). At most 2 blocks are asked for.
    limits = triton.runtime.driver.active.utils.get_device_properties(device.index or 0)
    by_regs = limits["max_num_regs"] // max(1, compiled.n_regs * 32 * body.warps)
    shared = compiled.metadata.shared
    return int(min(by_regs, limits["max_shared_mem"] // shared if shared else by_regs))


def probe(rows: int, layers: int, budget: float) -> None:
    device, dtype = torch.device("cuda"), torch.bfloat16
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    short = Chain(list(LAYER), rows, dtype, device)  # one layer, to check each variant against F.linear
    chain = Chain(list(LAYER) * layers, rows, dtype, device)
    floor = chain.bytes / (HBM_TBS * 1e12)
    print(f"# {layers} layers x {len(LAYER)} projections, {chain.bytes / 1e9:.2f} GB of weights, {rows} rows; "
          f"{sms} SMs; the bytes alone at {HBM_TBS} TB/s: {floor * 1e3:.3f} ms", flush=True)  # fmt: skip
    results: list[tuple[float, str, str]] = []  # (seconds, kind, name)

    def timed(kind: str, name: str, run: Callable[[Chain], object]) -> None:
        short.start()
        run(short)
        if not agrees(short.output(), short.reference()):
            print(f"# {name}: wrong, left out", flush=True)
            return
        chain.start()
        t = graph_timer(functools.partial(run, chain))
        results.append((t, kind, name))
        print(f"| {name} | {t * 1e3:.3f} ms | {t / layers * 1e6:.1f} us a layer | "
              f"{chain.bytes / t / 1e12:.2f} TB/s |", flush=True)  # fmt: skip

    timed("cublas", "cublas", Chain.cublas)
    deadline = time.monotonic() + budget
    # (the GEMV's loads are not software-pipelined, in either form: one stage)
    for bn, bk, warps in itertools.product((16, 8, 32), (512, 256), (4, 8)):
        if time.monotonic() > deadline:
            print("# time budget spent: stopping", flush=True)
            break
        body = Body(bn, bk, warps, 1)
        try:
            timed("launches", f"launches {body}", functools.partial(Chain.launches, body=body))
            for prefetch in (False, True):
                kind = "persistent + prefetch" if prefetch else "persistent"
                fits = resident_blocks(chain, body, prefetch, device)
                for per_sm in sorted({1, min(2, fits)}):
                    run = functools.partial(Chain.persistent, body=body, programs=per_sm * sms, prefetch=prefetch)
                    timed(kind, f"{kind} {body} {per_sm}/SM", run)
        except Exception as exc:  # a block shape this GPU cannot build is no candidate
            print(f"# {body} failed: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
    print("\n## the fastest of each")
    for kind in dict.fromkeys(k for _, k, _ in results):
        t, _, name = min(r for r in results if r[1] == kind)
        print(f"| {name} | {t * 1e3:.3f} ms | {t / layers * 1e6:.1f} us a layer | "
              f"{(t - floor) / (layers * len(LAYER)) * 1e6:.2f} us a projection past its bytes |")  # fmt: skip


def check() -> None:
    """Each variant against F.linear in Triton's interpreter, float32 (its programs run one after another, so the
    persistent kernel runs as one block: the barriers' arithmetic, the ping-pong and the counts' reset)."""
    torch.manual_seed(0)
    device = torch.device("cpu")
    shapes = [(48, 32), (32, 48), (80, 32), (16, 64), (32, 16)]
    for rows in (1, 2, 3):
        chain = Chain(shapes, rows, torch.float32, device)
        expected = chain.reference()
        for body in (Body(8, 16, 4, 1), Body(16, 32, 4, 1)):
            chain.start()
            chain.launches(body)
            assert torch.allclose(chain.output(), expected, atol=1e-4, rtol=1e-4), ("launches", rows, body)
            chain.start()  # (no prefetch: the interpreter runs no inline PTX; `probe` checks it on a GPU)
            chain.persistent(body, programs=1, prefetch=False)
            assert torch.allclose(chain.output(), expected, atol=1e-4, rtol=1e-4), ("persistent", rows, body)
            assert not chain.counts.any(), "the barrier's counts were left non-zero"
    print("the chained GEMVs agree with F.linear, and the barrier's counts return to zero")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2, help="rows a projection (2: one request with CFG)")
    parser.add_argument("--layers", type=int, default=18)
    parser.add_argument("--budget", type=float, default=240.0, help="seconds for the block shapes")
    parser.add_argument("--check", action="store_true", help="check the kernels on the CPU and stop")
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
        probe(args.rows, args.layers, args.budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
