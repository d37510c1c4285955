"""The skinny-matmul kernel of decode steps (linear.py chooses and launches it): y = x @ W^T for a few rows of x,
one band of W's rows per thread block, with an optional prologue that makes x from the norm before a projection
and epilogues for the elementwise work after one: RoPE and the attention cache write after the q/k/v
projection, the gated SiLU after the gate/up projection.

A plain function, jitted by linear.py: Triton compiles it for CUDA, and its interpreter runs the same code on
the CPU for the tests. The prologue and the SiLU round where fused.py's functions round; the RoPE epilogue
computes what kernels._rope_write computes.
"""

from __future__ import annotations

import triton
import triton.language as tl

from tts_engine.dia.dependent import prefetch_l2

PLAIN, NORM = 0, 1  # the kernel's prologues: x as given, rms_norm(x + delta)
SCALED = 2  # skinny_band's NORM with each row's scale given (megakernel.py finds it once for many bands)
STORE, ROPE, SILU = 0, 1, 2  # its epilogues: y as computed, RoPE and the cache write, silu_mul(y)


def skinny_matmul(
    x_ptr, w_ptr, y_ptr, delta_ptr, gamma_ptr, sum_ptr, rows, n, k, stride_xm, stride_wn, stride_ym, stride_dm,
    stride_sm, eps, part_ptr, count_ptr, k_split,
    rope_ptr, pos_ptr, k_ptr, v_ptr, stride_rp, stride_rs, stride_kr, stride_kh, stride_ks, stride_vr, stride_vh,
    stride_vs, heads, kv_heads, head_dim,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DOT_F32: tl.constexpr,
    PRECISION: tl.constexpr, PROLOGUE: tl.constexpr = 0, DELTA: tl.constexpr = False, EPILOGUE: tl.constexpr = 0,
    SPLITS: tl.constexpr = 1, NORM_M: tl.constexpr = 2, NORM_K: tl.constexpr = 16, PDL: tl.constexpr = False,
    LINES: tl.constexpr = 1, LINE: tl.constexpr = 64,
):  # fmt: skip
    """One band of BLOCK_N output columns for all `rows` (<= BLOCK_M) rows of x, float32 accumulation; float32
    inputs multiply in full precision (PRECISION "ieee"), never TF32, as cuBLAS does by default in PyTorch.

    The prologue makes the kernel's left-hand side from x on the fly, rounded where fused.py's functions round,
    so the kernel replaces their elementwise kernel as well as the matmul. NORM: rms_norm(t) with weights gamma,
    where t = x + delta with DELTA (else x); a first pass over each row (NORM_M rows, NORM_K columns at a time)
    finds its scale, and band 0 writes t to sum_ptr (the residual stream's next value).

    The epilogue does the same for the work after the projection:
    - ROPE, after the fused q/k/v projection (its heads in attention.pair_heads order, so a band holds whole
      RoPE pairs): instead of y it writes what kernels.rope_write makes of y, the rotated queries to y_ptr as
      (rows, heads, head_dim) and the rotated keys and the values into the caches at pos.
    - SILU, after the gate/up projection (W holds the gate's n rows and then the up projection's n): each
      block multiplies by the gate's band and the up projection's same band, and writes silu_mul of the two,
      n columns. Once per output value, where a prologue on the down projection recomputed the SiLU of a
      16-row tile in every band (H100, 2026-11-23: 56.8 us against 17.1 for the two kernels apart).

    With SPLITS > 1 (split-K, for projections with too few bands to fill the GPU), program (band, split) sums
    K columns [split * k_split, (split + 1) * k_split), k_split a multiple of BLOCK_K, and stores its float32
    part at part_ptr (SPLITS * BLOCK_M rows of n; of 2n with SILU, the gate's part and then the up projection's).
    The last of a band's splits to finish, found by an atomic count as kernels._split_attention's merge finds
    it, adds the parts in split order (so the sum does not depend on which finished last) and runs the
    epilogue; the other blocks' epilogue stores are masked off.

    With PDL (launched as a programmatic dependent launch, Hopper on), the block may start while the kernel
    before it is still running: it first asks L2 for the start of its weights (up to LINES lines of LINE values
    a row, its K slice), which no kernel writes, then waits for the kernel before it to finish (gdc_wait) before
    it reads or writes anything else, and lets the kernel after it start early too. Each kernel costs about
    3.5 us beyond its bytes at 2 rows, whatever its design (bench/skinny_sweep.py, H100, 2026-11-23): the ramp
    up and the tail, when memory idles. Fetching the next weights then keeps it busy.
    """
    band = tl.program_id(0)
    split = tl.program_id(1)
    if PDL:
        cols = band * BLOCK_N + tl.arange(0, BLOCK_N)
        k_lo = split * k_split
        k_hi = tl.minimum(k_lo + k_split, k)  # this block's K slice
        prefetch_l2(w_ptr, cols, cols < n, k_lo, k_hi, stride_wn, LINES, LINE)
        if EPILOGUE == 2:
            prefetch_l2(w_ptr, cols + n, cols < n, k_lo, k_hi, stride_wn, LINES, LINE)
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()  # before the first read of what the kernel before wrote
    skinny_band(
        band, split, 0.0, x_ptr, w_ptr, y_ptr, delta_ptr, gamma_ptr, sum_ptr, rows, n, k, stride_xm, stride_wn,
        stride_ym, stride_dm, stride_sm, eps, part_ptr, count_ptr, k_split,
        rope_ptr, pos_ptr, k_ptr, v_ptr, stride_rp, stride_rs, stride_kr, stride_kh, stride_ks, stride_vr, stride_vh,
        stride_vs, heads, kv_heads, head_dim,
        BLOCK_M, BLOCK_N, BLOCK_K, DOT_F32, PRECISION, PROLOGUE, DELTA, EPILOGUE, SPLITS, NORM_M, NORM_K,
    )  # fmt: skip


@triton.jit
def skinny_band(
    band, split, scale_in, x_ptr, w_ptr, y_ptr, delta_ptr, gamma_ptr, sum_ptr, rows, n, k, stride_xm, stride_wn,
    stride_ym, stride_dm, stride_sm, eps, part_ptr, count_ptr, k_split,
    rope_ptr, pos_ptr, k_ptr, v_ptr, stride_rp, stride_rs, stride_kr, stride_kh, stride_ks, stride_vr, stride_vh,
    stride_vs, heads, kv_heads, head_dim,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DOT_F32: tl.constexpr,
    PRECISION: tl.constexpr, PROLOGUE: tl.constexpr, DELTA: tl.constexpr, EPILOGUE: tl.constexpr,
    SPLITS: tl.constexpr, NORM_M: tl.constexpr, NORM_K: tl.constexpr,
):  # fmt: skip
    """`skinny_matmul`'s work for one (band, split), after any PDL wait: a device function, which
    `skinny_matmul` runs once a block and megakernel.py for many bands in turn. PROLOGUE SCALED is NORM with the
    rows' scales given (`scale_in`, BLOCK_M values, as `row_scales` returns them) and the sum x + delta left to
    the caller."""
    m = tl.arange(0, BLOCK_M)
    cols = band * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = m < rows
    n_ok = cols < n
    dtype = x_ptr.dtype.element_ty
    k_lo = split * k_split
    k_hi = tl.minimum(k_lo + k_split, k)  # this block's K slice
    scale = scale_in
    if PROLOGUE == 1:
        scale = row_scales(
            x_ptr, delta_ptr, sum_ptr, rows, k, stride_xm, stride_dm, stride_sm, eps, band + split, BLOCK_M, NORM_M,
            NORM_K, DELTA,
        )  # fmt: skip
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    acc_up = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)  # SILU's (compiled away without it)
    for start in range(k_lo, k_hi, BLOCK_K):
        ks = start + tl.arange(0, BLOCK_K)
        k_ok = ks < k
        tile_ok = m_ok[:, None] & k_ok[None, :]
        x = tl.load(x_ptr + m[:, None] * stride_xm + ks[None, :], mask=tile_ok, other=0.0)
        if PROLOGUE >= 1:
            if DELTA:
                d = tl.load(delta_ptr + m[:, None] * stride_dm + ks[None, :], mask=tile_ok, other=0.0)
                x = (x.to(tl.float32) + d.to(tl.float32)).to(dtype)
            # The norm's weights as a tile like x's (each row the same): loaded per row they pipeline as 16-byte
            # copies with the tiles, where BLOCK_K values alone are one or two a thread, loaded synchronously.
            gamma = tl.load(gamma_ptr + (ks[None, :] + 0 * m[:, None]), mask=tile_ok, other=0.0)
            x = (x.to(tl.float32) * scale[:, None]).to(dtype)
            x = (x.to(tl.float32) * gamma.to(tl.float32)).to(dtype)
        w_ok = n_ok[:, None] & k_ok[None, :]
        w = tl.load(w_ptr + cols[:, None] * stride_wn + ks[None, :], mask=w_ok, other=0.0)
        acc = _dot(acc, x, w, DOT_F32, PRECISION)
        if EPILOGUE == 2:  # the up projection's rows of the same band, n rows further on
            w_up = tl.load(w_ptr + (cols + n)[:, None] * stride_wn + ks[None, :], mask=w_ok, other=0.0)
            acc_up = _dot(acc_up, x, w_up, DOT_F32, PRECISION)
    # The epilogue runs where arrived == SPLITS - 1: every block without split-K, the last split with it. Its
    # masks are whole blocks: Triton's interpreter mishandles a scalar in a mask.
    arrived = SPLITS - 1
    if SPLITS > 1:
        acc, acc_up, arrived = _merge(
            acc, acc_up, part_ptr, count_ptr, band, split, m, cols, m_ok[:, None] & n_ok[None, :], n, BLOCK_M,
            BLOCK_N, SPLITS, EPILOGUE == 2,
        )  # fmt: skip
    if EPILOGUE == 2:  # silu_mul of the rounded gate/up values, rounded where fused.silu_mul rounds
        gate = acc.to(dtype).to(tl.float32)
        # div.full (2 ulp in float32, far below a bf16 step): the IEEE-rounded division calls a slow-path
        # subroutine whose frame lives on the stack (tests/engine/test_kernel_build.py saw it spill).
        acc = tl.fdiv(gate, 1.0 + tl.exp(-gate), ieee_rounding=False).to(dtype).to(tl.float32)
        acc = acc_up.to(dtype).to(tl.float32) * acc
    if EPILOGUE == 1:
        _rope_store(
            acc.to(dtype), arrived, y_ptr, rope_ptr, pos_ptr, k_ptr, v_ptr, stride_rp, stride_rs, stride_kr,
            stride_kh, stride_ks, stride_vr, stride_vh, stride_vs, heads, kv_heads, head_dim, band, m, m_ok, n,
            BLOCK_M, BLOCK_N, SPLITS,
        )  # fmt: skip
    else:
        y = y_ptr + m[:, None] * stride_ym + cols[None, :]
        last_block = (arrived + tl.zeros((BLOCK_M, BLOCK_N), tl.int32)) == SPLITS - 1
        tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :] & last_block)


@triton.jit
def row_scales(
    x_ptr, delta_ptr, sum_ptr, rows, k, stride_xm, stride_dm, stride_sm, eps, lead,
    BLOCK_M: tl.constexpr, NORM_M: tl.constexpr, NORM_K: tl.constexpr, DELTA: tl.constexpr,
):  # fmt: skip
    """NORM's first pass: each row's 1 / rms (BLOCK_M values), over NORM_M rows (the next power of two); the
    block whose `lead` (band + split) is 0 writes the sums x + delta.

    In NORM_K-column chunks, as wide as registers allow (all of K at two rows): each chunk's loads are in flight
    together, where BLOCK_K-wide steps made a chain of L2 round trips (H100, 2026-11-23: about 0.4 us each, 8 or
    16 of them, which made the fused form lose to the norm kernel and cuBLAS). Not software-pipelined: a
    pipeline would stage NORM_K-wide tiles in shared memory for one or two chunks."""
    dtype = x_ptr.dtype.element_ty
    rows_p = tl.arange(0, NORM_M)
    rows_ok = rows_p < rows
    sums = tl.zeros((NORM_M,), tl.float32)
    for start in tl.range(0, k, NORM_K, num_stages=1):
        ks = start + tl.arange(0, NORM_K)
        tile_ok = rows_ok[:, None] & (ks < k)[None, :]
        t = tl.load(x_ptr + rows_p[:, None] * stride_xm + ks[None, :], mask=tile_ok, other=0.0)
        if DELTA:
            d = tl.load(delta_ptr + rows_p[:, None] * stride_dm + ks[None, :], mask=tile_ok, other=0.0)
            t = (t.to(tl.float32) + d.to(tl.float32)).to(dtype)
            # One block writes the sum (every split of every band reads the whole rows).
            first = (lead + tl.zeros((NORM_M, NORM_K), tl.int32)) == 0
            tl.store(sum_ptr + rows_p[:, None] * stride_sm + ks[None, :], t, mask=tile_ok & first)
        t = t.to(tl.float32)
        sums += tl.sum(t * t, 1)
    # Row i's scale at position i of BLOCK_M (rows past NORM_M, never valid, get 0).
    scale_p = tl.rsqrt(sums / k + eps)
    m = tl.arange(0, BLOCK_M)
    return tl.sum(tl.where(m[:, None] == rows_p[None, :], scale_p[None, :], 0.0), 1)


@triton.jit
def _dot(acc, x, w, DOT_F32: tl.constexpr, PRECISION: tl.constexpr):
    """acc + x @ w^T."""
    if DOT_F32:  # the interpreter's bf16 dot is wrong; bf16 products are exact in float32
        acc += tl.dot(x.to(tl.float32), tl.trans(w.to(tl.float32)), input_precision="ieee")
    else:
        acc += tl.dot(x, tl.trans(w), input_precision=PRECISION)
    return acc


@triton.jit
def _merge(
    acc, acc_up, part_ptr, count_ptr, band, split, m, cols, out_ok, n,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLITS: tl.constexpr, GATED: tl.constexpr,
):  # fmt: skip
    """Split-K: stores this block's parts, counts its arrival, and returns the sums of every split's parts (for
    the last to arrive; zeros for the others) and the count before it."""
    width = n  # a part's row: n values; 2n with SILU (GATED), the gate's and then the up projection's
    if GATED:
        width = 2 * n
    part_at = part_ptr + (split * BLOCK_M + m)[:, None] * width + cols[None, :]
    tl.store(part_at, acc, mask=out_ok)
    if GATED:
        tl.store(part_at + n, acc_up, mask=out_ok)
    # Every thread's store before one thread's release; the acquire of the last arrival sees every part.
    tl.debug_barrier()
    arrived = tl.atomic_add(count_ptr + band, 1, sem="acq_rel", scope="gpu")
    last = (arrived + tl.zeros((BLOCK_M, BLOCK_N), tl.int32)) == SPLITS - 1
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    acc_up = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for s in tl.static_range(SPLITS):  # read past L1 (.cg): other blocks wrote them
        part_at = part_ptr + (s * BLOCK_M + m)[:, None] * width + cols[None, :]
        acc += tl.load(part_at, mask=out_ok & last, other=0.0, cache_modifier=".cg")
        if GATED:
            acc_up += tl.load(part_at + n, mask=out_ok & last, other=0.0, cache_modifier=".cg")
    if arrived == SPLITS - 1:
        tl.store(count_ptr + band, 0)  # zero again for the next launch
    return acc, acc_up, arrived


@triton.jit
def _rope_store(
    y, arrived, y_ptr, rope_ptr, pos_ptr, k_ptr, v_ptr, stride_rp, stride_rs, stride_kr, stride_kh, stride_ks,
    stride_vr, stride_vh, stride_vs, heads, kv_heads, head_dim, band, m, m_ok, n,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLITS: tl.constexpr,
):  # fmt: skip
    """The ROPE epilogue: kernels._rope_write's arithmetic on the rounded projection y, pair by pair."""
    dtype = y.dtype
    lo, hi = tl.split(tl.reshape(y, (BLOCK_M, BLOCK_N // 2, 2)))
    half = head_dim // 2
    col = band * BLOCK_N + 2 * tl.arange(0, BLOCK_N // 2)  # each pair's first column
    head = (col // head_dim)[None, :]
    i = ((col % head_dim) // 2)[None, :]
    last_pairs = (arrived + tl.zeros((BLOCK_M, BLOCK_N // 2), tl.int32)) == SPLITS - 1
    ok = m_ok[:, None] & (col < n)[None, :] & last_pairs
    pos = tl.load(pos_ptr + m, mask=m_ok, other=0)[:, None]
    table = rope_ptr + pos * stride_rs + i
    cos_lo = tl.load(table, mask=ok, other=0.0).to(dtype).to(tl.float32)
    cos_hi = tl.load(table + half, mask=ok, other=0.0).to(dtype).to(tl.float32)
    sin_lo = tl.load(table + stride_rp, mask=ok, other=0.0).to(dtype).to(tl.float32)
    sin_hi = tl.load(table + stride_rp + half, mask=ok, other=0.0).to(dtype).to(tl.float32)
    x_lo, x_hi = lo.to(tl.float32), hi.to(tl.float32)
    y_lo = (x_lo * cos_lo - x_hi * sin_lo).to(dtype)
    y_hi = (x_hi * cos_hi + x_lo * sin_hi).to(dtype)
    is_q, is_v = head < heads, head >= heads + kv_heads
    q_at = y_ptr + (m[:, None] * heads + head) * head_dim + i
    tl.store(q_at, y_lo, mask=ok & is_q)
    tl.store(q_at + half, y_hi, mask=ok & is_q)
    k_at = k_ptr + m[:, None] * stride_kr + (head - heads) * stride_kh + pos * stride_ks + i
    tl.store(k_at, y_lo, mask=ok & ~is_q & ~is_v)
    tl.store(k_at + half, y_hi, mask=ok & ~is_q & ~is_v)
    v_at = v_ptr + m[:, None] * stride_vr + (head - heads - kv_heads) * stride_vh + pos * stride_vs + i
    tl.store(v_at, lo, mask=ok & is_v)
    tl.store(v_at + half, hi, mask=ok & is_v)
