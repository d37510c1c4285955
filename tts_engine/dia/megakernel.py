"""All decoder layers of one request's decode step (two rows: conditional and unconditional) in one persistent
kernel: the megakernel that issue 3's last 0.21 ms a step asks for, opt-in until an H100 run says it wins.

Why: every kernel that streams a weight costs about 3.5 us beyond its bytes at decode shapes whatever its design,
and split attention about 6 us a launch for under one of bytes (docs/benchmarks.md, 0244d69); a step launches
about 150 of them. Here one block or two per SM stay resident through all layers and take each phase's work in
turn (the bands of a projection, the splits of an attention), with a grid barrier between phases that depend on
each other, so memory idles only at the barriers, not at every launch's ramp and tail (Hazy Research's "no
bubbles" Llama-1B megakernel, 2025; Mirage's persistent kernels). `bench/persistent.py` measures the same
structure on the projections alone.

A layer is eight phases, each the device function of the kernel it replaces, so the arithmetic is theirs:
1. q/k/v: rms_norm(x + delta), the projection, RoPE and the cache write (skinny_kernel.skinny_band, ROPE);
2. self-attention over the cache, split and merged (kernels.attention_split);
3. its output projection, into delta;
4. the cross queries: rms_norm(x + delta) and the projection;
5. cross-attention over the text;
6. its output projection, into delta;
7. gate/up: rms_norm(x + delta), the projection and silu_mul (SILU);
8. the down projection, into delta.
The residual stream ping-pongs between two buffers (each norm phase reads one and its band 0 writes x + delta to
the other), so no phase writes what another block of the same phase still reads. The kernel returns the last x
and delta; the final norm, the logits and sampling stay with the step (kernel_step.logits).

The grid barrier is bench/persistent.py's (Inductor's x_grid_barrier pattern): one release add an arrival, an
acquire spin until the whole grid has arrived, a count of departures that zeroes both at the end. Every block
must be resident at once or the first to wait never sees the last arrive: persistent_layers.py, which launches
the kernel, asks for a fixed number of blocks an SM and refuses a build whose registers or shared memory would
not let them all fit. With ONLY set to a phase, the same kernel runs that one phase of one layer and no barrier:
Triton's interpreter runs blocks one after another, so the CPU tests run every phase that way with many blocks,
and the whole kernel, barriers included, as one block. At load on the GPU, `persistent_layers.check` runs the
kernel twice and wants the same bits (a barrier that did not hold would read what another block had not yet
written, which varies from run to run), and compares it with the phases launched one by one.

Weights, norms and caches are reached from one base pointer by per-layer element offsets (every tensor of the
model's dtype lives in the one address space), so nothing is copied or re-laid out.
"""

from __future__ import annotations

import triton
import triton.language as tl

from tts_engine.dia.dependent import prefetch_l2
from tts_engine.dia.kernels import attention_split
from tts_engine.dia.skinny_kernel import row_scales, skinny_band

PHASES = 8  # a layer's: q/k/v, self-attention, its output, cross queries, cross-attention, its output, gate/up, down
# Offsets a layer in the table (decoder_layers reads them by these positions, 16 apart): the q/k/v, output, cross
# query, cross output, gate/up and down weights, the three norms, the caches' keys and values, the cross keys and
# values; the rest unused.
FIELDS = 16


@triton.jit
def _project(pid, programs, x_ptr, w_ptr, y_ptr, delta_ptr, gamma_ptr, sum_ptr, rows, n, k, stride_x, stride_y,
             stride_d, eps, rope_ptr, pos_ptr, k_ptr, v_ptr, stride_rp, stride_rs, stride_kr, stride_kh, stride_ks,
             heads, kv_heads, head_dim,
             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DOT_F32: tl.constexpr,
             PRECISION: tl.constexpr, PROLOGUE: tl.constexpr, EPILOGUE: tl.constexpr, NORM_M: tl.constexpr,
             NORM_K: tl.constexpr):  # fmt: skip
    """This block's bands of one projection (n outputs; the weight's rows are contiguous, k apart). With the NORM
    prologue the rows' scales are found once, not once a band, and block 0 writes the sum x + delta."""
    scale = tl.zeros((BLOCK_M,), tl.float32)
    if PROLOGUE == 1:  # skinny_kernel.NORM
        scale = row_scales(
            x_ptr, delta_ptr, sum_ptr, rows, k, stride_x, stride_d, stride_d, eps, pid, BLOCK_M, NORM_M, NORM_K, True
        )  # fmt: skip
    for band in range(pid, tl.cdiv(n, BLOCK_N), programs):
        skinny_band(
            band, 0, scale, x_ptr, w_ptr, y_ptr, delta_ptr, gamma_ptr, sum_ptr, rows, n, k, stride_x, k, stride_y,
            stride_d, stride_d, eps, y_ptr, y_ptr, k, rope_ptr, pos_ptr, k_ptr, v_ptr, stride_rp, stride_rs,
            stride_kr, stride_kh, stride_ks, stride_kr, stride_kh, stride_ks, heads, kv_heads, head_dim,
            BLOCK_M, BLOCK_N, BLOCK_K, DOT_F32, PRECISION, 2 * PROLOGUE, True, EPILOGUE, 1, NORM_M, NORM_K,  # SCALED
        )  # fmt: skip


@triton.jit
def _plain(pid, programs, x_ptr, w_ptr, y_ptr, rows, n, k, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
           BLOCK_K: tl.constexpr, DOT_F32: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
    """`_project` without prologue or epilogue: y = x @ W^T, x and y contiguous rows of k and n values (the
    norm's and RoPE's pointers are never read then, so y stands in for them)."""
    _project(
        pid, programs, x_ptr, w_ptr, y_ptr, y_ptr, y_ptr, y_ptr, rows, n, k, k, n, n, 0.0, y_ptr, y_ptr, y_ptr, y_ptr,
        0, 0, 0, 0, 0, 0, 0, 0, BLOCK_M, BLOCK_N, BLOCK_K, DOT_F32, PRECISION, 0, 0, 2, 16,
    )  # fmt: skip


@triton.jit
def _normed(pid, programs, x_ptr, w_ptr, y_ptr, delta_ptr, gamma_ptr, sum_ptr, rows, n, k, eps,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DOT_F32: tl.constexpr,
            PRECISION: tl.constexpr, EPILOGUE: tl.constexpr, NORM_M: tl.constexpr, NORM_K: tl.constexpr):  # fmt: skip
    """`_project` of rms_norm(x + delta) without RoPE (EPILOGUE STORE or SILU): x, delta and the sum rows of k
    values, y rows of n (RoPE's pointers are never read then, so y stands in for them)."""
    _project(
        pid, programs, x_ptr, w_ptr, y_ptr, delta_ptr, gamma_ptr, sum_ptr, rows, n, k, k, n, k, eps, y_ptr, y_ptr,
        y_ptr, y_ptr, 0, 0, 0, 0, 0, 0, 0, 0,
        BLOCK_M, BLOCK_N, BLOCK_K, DOT_F32, PRECISION, 1, EPILOGUE, NORM_M, NORM_K,
    )  # fmt: skip


@triton.jit
def _attend(pid, programs, splits, rows, q_ptr, k_ptr, v_ptr, len_ptr, part_ptr, lse_ptr, out_ptr, count_ptr,
            stride_q, stride_kr, stride_kh, stride_ks, kv_heads, heads, head_dim, span, chunk,
            BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr, FINAL: tl.constexpr,
            PRECISION: tl.constexpr, DOT_F32: tl.constexpr, MERGE_G: tl.constexpr, BLOCK_S: tl.constexpr):  # fmt: skip
    """This block's (row, kv head, split) items of one attention; queries (rows, heads, head_dim) `stride_q`
    apart, output (rows, heads, head_dim) contiguous."""
    for item in range(pid, rows * kv_heads * splits, programs):
        attention_split(
            item // splits, item % splits, q_ptr, k_ptr, v_ptr, len_ptr, part_ptr, lse_ptr, out_ptr, count_ptr,
            stride_q, head_dim, stride_kr, stride_kh, stride_ks, stride_kr, stride_kh, stride_ks,
            kv_heads, heads // kv_heads, head_dim, span, chunk, splits, 1.0,
            BLOCK_G, BLOCK_N, BLOCK_E, FINAL, PRECISION, DOT_F32, MERGE_G, BLOCK_S,
        )  # fmt: skip


@triton.jit
def _field(base_ptr, at, field):
    """The tensor at offset `field` of a layer's row of the table: 16-value aligned (checked where it is built), so
    loads from it can be 16-byte vectors."""
    return base_ptr + tl.multiple_of(tl.load(at + field), 16)


@triton.jit
def _barrier(sync_ptr, target, w_ptr, pid, n, k, PREFETCH: tl.constexpr, GATED: tl.constexpr,
             BLOCK_N: tl.constexpr, LINES: tl.constexpr, LINE: tl.constexpr):  # fmt: skip
    """The grid barrier: arrive (every thread's stores before one release), then spin on acquire loads until
    `target` arrivals (Triton builds the acquire "add 0" as a strong load and an L1 invalidation on sm_90). With
    PREFETCH, between the two this block asks L2 for its first band of the next projection (w, n outputs of k;
    GATED: the up projection's rows n further on too), which no block writes, while memory would idle."""
    tl.debug_barrier()
    tl.atomic_add(sync_ptr, 1, sem="release", scope="gpu")
    if PREFETCH:
        cols = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        for k_lo in range(0, k, LINES * LINE):
            prefetch_l2(w_ptr, cols, cols < n, k_lo, k, k, LINES, LINE)
            if GATED:
                prefetch_l2(w_ptr, cols + n, cols < n, k_lo, k, k, LINES, LINE)
    seen = tl.atomic_add(sync_ptr, 0, sem="acquire", scope="gpu")
    while seen < target:
        seen = tl.atomic_add(sync_ptr, 0, sem="acquire", scope="gpu")
    tl.debug_barrier()


@triton.jit
def _stream(layer, x_ptr, delta_ptr, x_in_ptr, zero_ptr):
    """(x, delta) as a layer's first norm reads them: layer 0 the step's embedded tokens and zeros (read in place,
    not copied into the stream's buffers by kernels of their own), the others the stream."""
    if layer == 0:
        x_ptr, delta_ptr = x_in_ptr, zero_ptr
    return x_ptr, delta_ptr


@triton.jit
def _then(ONLY: tl.constexpr, sync_ptr, done, programs, w_ptr, pid, n, k, PREFETCH: tl.constexpr,
          GATED: tl.constexpr, BLOCK_N: tl.constexpr, LINES: tl.constexpr, LINE: tl.constexpr):  # fmt: skip
    """The barrier after a phase, the next projection's first band asked of L2 meanwhile (see `_barrier`), when
    the kernel runs every phase (ONLY < 0); the count of barriers passed."""
    if ONLY < 0:
        done += 1
        _barrier(sync_ptr, done * programs, w_ptr, pid, n, k, PREFETCH, GATED, BLOCK_N, LINES, LINE)
    return done


# Spans, splits and layer ranges vary from step to step: not specialising on them (Triton would on a value of 1 or
# one divisible by 16) keeps one build for every span bucket.
DO_NOT_SPECIALIZE = (
    "layer_lo", "layer_hi", "self_span", "self_chunk", "self_splits", "cross_span", "cross_chunk", "cross_splits",
)  # fmt: skip


@triton.jit(do_not_specialize=DO_NOT_SPECIALIZE)
def decoder_layers(
    base_ptr, table_ptr, x_in_ptr, zero_ptr, xs_ptr, delta_ptr, q_ptr, attn_ptr, act_ptr, rope_ptr, pos_ptr,
    self_len_ptr,
    cross_len_ptr, part_ptr, lse_ptr, att_count_ptr, sync_ptr,
    rows, layer_lo, layer_hi, programs, eps, hidden, heads, kv_heads, head_dim, cross_heads, cross_kv_heads,
    cross_dim, inter, stride_kr, stride_kh, stride_ks, stride_cr, stride_ch, stride_cs, stride_rp, stride_rs,
    self_span, self_chunk, self_splits, cross_span, cross_chunk, cross_splits,
    BLOCK_M: tl.constexpr, NORM_M: tl.constexpr, NORM_K: tl.constexpr, BN_QKV: tl.constexpr,
    BK_QKV: tl.constexpr, BN_D: tl.constexpr, BK_D: tl.constexpr, BN_GU: tl.constexpr, BK_GU: tl.constexpr,
    BN_DOWN: tl.constexpr, BK_DOWN: tl.constexpr, DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
    SG: tl.constexpr, SN: tl.constexpr, SE: tl.constexpr, S_FINAL: tl.constexpr, SMG: tl.constexpr,
    SS: tl.constexpr, CG: tl.constexpr, CN: tl.constexpr, CE: tl.constexpr, C_FINAL: tl.constexpr,
    CMG: tl.constexpr, CS: tl.constexpr, ONLY: tl.constexpr, PREFETCH: tl.constexpr, LINES: tl.constexpr,
    LINE: tl.constexpr,
):  # fmt: skip
    """Layers layer_lo..layer_hi-1 (see the module docstring); with ONLY >= 0 just that phase, no barrier. Layer 0
    reads the step's input x_in (rows, hidden), and zeros (zero_ptr, never written) for its delta. A
    layer's row of the table: its q/k/v, output, cross query, cross output, gate/up and down weights, its three
    norms, its key and value caches and its cross keys and values (PersistentLayers._table)."""
    pid = tl.program_id(0)
    done = 0  # barriers passed
    q_width = heads * head_dim
    qkv_width = (heads + 2 * kv_heads) * head_dim
    cq_width = cross_heads * cross_dim
    for layer in range(layer_lo, layer_hi):
        at = table_ptr + layer * 16
        x_a = xs_ptr + (layer % 2) * rows * hidden  # the stream as the layer finds it; x_b the other buffer
        x_b = xs_ptr + ((layer + 1) % 2) * rows * hidden
        k_cache, v_cache = _field(base_ptr, at, 9), _field(base_ptr, at, 10)
        w_o, w_cq, w_co = _field(base_ptr, at, 1), _field(base_ptr, at, 2), _field(base_ptr, at, 3)
        w_gu, w_down = _field(base_ptr, at, 4), _field(base_ptr, at, 5)
        x_first, delta_first = _stream(layer, x_a, delta_ptr, x_in_ptr, zero_ptr)
        if ONLY < 0 or ONLY == 0:
            _project(
                pid, programs, x_first, _field(base_ptr, at, 0), q_ptr, delta_first, _field(base_ptr, at, 6), x_b,
                rows, qkv_width, hidden, hidden, 0, hidden, eps, rope_ptr, pos_ptr, k_cache, v_cache, stride_rp,
                stride_rs, stride_kr, stride_kh, stride_ks, heads, kv_heads, head_dim,
                BLOCK_M, BN_QKV, BK_QKV, DOT_F32, PRECISION, 1, 1, NORM_M, NORM_K,
            )  # fmt: skip
        done = _then(ONLY, sync_ptr, done, programs, q_ptr, pid, 0, 0, False, False, BN_D, LINES, LINE)
        if ONLY < 0 or ONLY == 1:
            _attend(
                pid, programs, self_splits, rows, q_ptr, k_cache, v_cache, self_len_ptr, part_ptr, lse_ptr, attn_ptr,
                att_count_ptr, q_width, stride_kr, stride_kh, stride_ks, kv_heads, heads, head_dim, self_span,
                self_chunk, SG, SN, SE, S_FINAL, PRECISION, DOT_F32, SMG, SS,
            )  # fmt: skip
        done = _then(ONLY, sync_ptr, done, programs, w_o, pid, hidden, q_width, PREFETCH, False, BN_D, LINES, LINE)
        if ONLY < 0 or ONLY == 2:
            _plain(pid, programs, attn_ptr, w_o, delta_ptr, rows, hidden, q_width, BLOCK_M, BN_D, BK_D, DOT_F32,
                   PRECISION)  # fmt: skip
        done = _then(ONLY, sync_ptr, done, programs, w_cq, pid, cq_width, hidden, PREFETCH, False, BN_D, LINES, LINE)
        if ONLY < 0 or ONLY == 3:
            _normed(
                pid, programs, x_b, w_cq, q_ptr, delta_ptr, _field(base_ptr, at, 7), x_a, rows, cq_width, hidden, eps,
                BLOCK_M, BN_D, BK_D, DOT_F32, PRECISION, 0, NORM_M, NORM_K,
            )  # fmt: skip
        done = _then(ONLY, sync_ptr, done, programs, q_ptr, pid, 0, 0, False, False, BN_D, LINES, LINE)
        if ONLY < 0 or ONLY == 4:
            _attend(
                pid, programs, cross_splits, rows, q_ptr, _field(base_ptr, at, 11), _field(base_ptr, at, 12),
                cross_len_ptr, part_ptr, lse_ptr, attn_ptr, att_count_ptr, cq_width, stride_cr, stride_ch,
                stride_cs, cross_kv_heads, cross_heads, cross_dim, cross_span, cross_chunk,
                CG, CN, CE, C_FINAL, PRECISION, DOT_F32, CMG, CS,
            )  # fmt: skip
        done = _then(ONLY, sync_ptr, done, programs, w_co, pid, hidden, cq_width, PREFETCH, False, BN_D, LINES, LINE)
        if ONLY < 0 or ONLY == 5:
            _plain(pid, programs, attn_ptr, w_co, delta_ptr, rows, hidden, cq_width, BLOCK_M, BN_D, BK_D, DOT_F32,
                   PRECISION)  # fmt: skip
        done = _then(ONLY, sync_ptr, done, programs, w_gu, pid, inter, hidden, PREFETCH, True, BN_GU, LINES, LINE)
        if ONLY < 0 or ONLY == 6:
            _normed(
                pid, programs, x_a, w_gu, act_ptr, delta_ptr, _field(base_ptr, at, 8), x_b, rows, inter, hidden, eps,
                BLOCK_M, BN_GU, BK_GU, DOT_F32, PRECISION, 2, NORM_M, NORM_K,
            )  # fmt: skip
        done = _then(ONLY, sync_ptr, done, programs, w_down, pid, hidden, inter, PREFETCH, False, BN_DOWN, LINES, LINE)
        if ONLY < 0 or ONLY == 7:
            _plain(pid, programs, act_ptr, w_down, delta_ptr, rows, hidden, inter, BLOCK_M, BN_DOWN, BK_DOWN, DOT_F32,
                   PRECISION)  # fmt: skip
        if layer + 1 < layer_hi:  # the kernel's end is the last phase's barrier
            w_next = _field(base_ptr, at + 16, 0)  # the next layer's q/k/v projection
            done = _then(ONLY, sync_ptr, done, programs, w_next, pid, qkv_width, hidden, PREFETCH, False, BN_QKV,
                         LINES, LINE)  # fmt: skip
    if ONLY < 0:  # the last block to leave zeroes both counts: every other block has left its last wait by then
        left = tl.atomic_add(sync_ptr + 1, 1, sem="acq_rel", scope="gpu")
        if left == programs - 1:
            tl.store(sync_ptr, 0)
            tl.store(sync_ptr + 1, 0)
