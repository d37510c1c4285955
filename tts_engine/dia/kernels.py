"""Triton kernels for the decode step, where each row has one query position: split-KV attention, and RoPE
fused with the self-attention cache write.

Why (bench/profile_step.py on an H100, 2026-11-22): cuDNN SDPA ran one thread block per (row, kv head), so a
width-1 step kept 8 of 132 SMs busy while it streamed a layer's cache: 30 us a layer where the bytes need
1.4 us. Splitting the keys across blocks and merging the partial softmaxes afterwards ("flash decoding",
Dao et al. 2023; the online softmax of Triton's fused-attention tutorial and FlashAttention-2) fills the GPU
at every batch width. The merge runs in the last block to finish, found by an atomic count (the release /
acquire pattern of Inductor's grid barrier in torch/_inductor/runtime/triton_helpers.py), not a kernel of
its own. Per-row lengths replace the boolean masks: a self-attention row reads keys 0..pos, a
cross-attention row its text bytes, and whole splits past a row's length read nothing. The second kernel
writes a step's rotated key and its value straight into the static cache and the rotated queries into a
fresh buffer: one kernel for what the eager path does in about ten (split, transposes, two RoPEs, two
index_put writes).

Layouts: queries (R, H, E) with unit stride in E; caches (rows, K, S, E) read through their strides, so
the views of the first rows that batch-size buckets use work as they are; H = K * G query heads share each
key/value head. `tl.dot` needs every side >= 16, so the G heads of a group and E are padded (masked) up to
16. The kernel bodies are plain functions: `triton.jit` compiles them for CUDA, and on the CPU Triton's
interpreter runs the same code, which is how the CPU tests check them against SDPA.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from tts_engine.dia.dependent import lines as prefetch_lines
from tts_engine.dia.dependent import prefetch_l2

KEYS_PER_TILE = 64  # one tile of keys per loop iteration (16-bit dtypes; see attention_tile)
INVARIANT_TILES = 4  # tiles per split when batch-invariant: a row's splits then depend only on its own keys
MAX_ROW_KV = 1 << 14  # (row, kv head) pairs one attention launch may have: 512 request slots of 16 heads


def _split_attention(
    q_ptr, k_ptr, v_ptr, len_ptr, part_ptr, lse_ptr, out_ptr, count_ptr,
    stride_qr, stride_qh, stride_kr, stride_kh, stride_ks, stride_vr, stride_vh, stride_vs,
    kv_heads, group, head_dim, span, chunk, splits, scale,
    BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr, FINAL: tl.constexpr,
    PRECISION: tl.constexpr, DOT_F32: tl.constexpr, MERGE_G: tl.constexpr, BLOCK_S: tl.constexpr,
    TRIGGER: tl.constexpr = False, DEPENDENT: tl.constexpr = False, LINES: tl.constexpr = 1,
    LINE: tl.constexpr = 64,
):  # fmt: skip
    """Program (row * kv_heads + kv head, split): `attention_split` of that split.

    TRIGGER (Hopper on) lets the kernel after it start at once where that one is a programmatic dependent launch
    (the output projection's skinny matmul: it asks L2 for its weights meanwhile, and waits for this kernel to
    finish before it reads anything this kernel writes). DEPENDENT (launched as one, Hopper on): the block may
    start while the kernel before it runs, and asks L2 for the first tile of its split's keys and values (LINES
    lines of LINE values a key, up to the span: the row's length is not read yet) before it waits for that kernel
    to finish; then it reads the queries, lengths and cache. One tile: for one request (two rows) each split is
    one tile, so that is the whole cache; for many, splits are longer, and all of them would be more than L2
    holds.
    """
    if TRIGGER:
        tl.extra.cuda.gdc_launch_dependents()
    row_kv = tl.program_id(0)
    split = tl.program_id(1)
    if DEPENDENT:
        lo = split * chunk
        k_base = k_ptr + (row_kv // kv_heads) * stride_kr + (row_kv % kv_heads) * stride_kh
        v_base = v_ptr + (row_kv // kv_heads) * stride_vr + (row_kv % kv_heads) * stride_vh
        _prefetch_keys(k_base, v_base, lo, tl.minimum(lo + chunk, span), stride_ks, stride_vs, BLOCK_N, LINES, LINE)
        tl.extra.cuda.gdc_wait()  # before the first read of what the kernel before wrote
    attention_split(
        row_kv, split, q_ptr, k_ptr, v_ptr, len_ptr, part_ptr, lse_ptr, out_ptr, count_ptr,
        stride_qr, stride_qh, stride_kr, stride_kh, stride_ks, stride_vr, stride_vh, stride_vs,
        kv_heads, group, head_dim, span, chunk, splits, scale,
        BLOCK_G, BLOCK_N, BLOCK_E, FINAL, PRECISION, DOT_F32, MERGE_G, BLOCK_S,
    )  # fmt: skip


@triton.jit
def attention_split(
    row_kv, split, q_ptr, k_ptr, v_ptr, len_ptr, part_ptr, lse_ptr, out_ptr, count_ptr,
    stride_qr, stride_qh, stride_kr, stride_kh, stride_ks, stride_vr, stride_vh, stride_vs,
    kv_heads, group, head_dim, span, chunk, splits, scale,
    BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr, FINAL: tl.constexpr,
    PRECISION: tl.constexpr, DOT_F32: tl.constexpr, MERGE_G: tl.constexpr, BLOCK_S: tl.constexpr,
):  # fmt: skip
    """One (row, kv head, split): the online softmax over keys [split * chunk, (split + 1) * chunk) of the row.

    With FINAL (one split) it writes the normalised output (R, H, E) in the output's dtype. Otherwise it writes
    the float32 part of its split (R, H, splits, E), normalised by its own sum, and the split's log-sum-exp,
    and the last of the (row, kv head)'s splits to finish merges them all. DOT_F32 upcasts dot
    inputs to float32 first: the same products (bf16 x bf16 is exact in float32) for Triton's interpreter,
    whose bf16 dot is wrong. A device function: `_split_attention` runs one a block, megakernel.py many.
    """
    row = row_kv // kv_heads
    kv = row_kv % kv_heads
    lo = split * chunk
    k_base = k_ptr + row * stride_kr + kv * stride_kh
    v_base = v_ptr + row * stride_vr + kv * stride_vh
    length = tl.minimum(tl.load(len_ptr + row).to(tl.int32), span)
    hi = tl.minimum(lo + chunk, length)

    g = tl.arange(0, BLOCK_G)
    e = tl.arange(0, BLOCK_E)
    n = tl.arange(0, BLOCK_N)
    heads = kv * group + g
    g_ok = g < group
    e_ok = e < head_dim
    q = tl.load(
        q_ptr + row * stride_qr + heads[:, None] * stride_qh + e[None, :],
        mask=g_ok[:, None] & e_ok[None, :],
        other=0.0,
    )
    if DOT_F32:
        q = q.to(tl.float32)
    top = tl.full((BLOCK_G,), float("-inf"), tl.float32)
    total = tl.zeros((BLOCK_G,), tl.float32)
    acc = tl.zeros((BLOCK_G, BLOCK_E), tl.float32)
    for start in range(lo, hi, BLOCK_N):
        keys = start + n
        k_ok = keys < hi
        tile_ok = k_ok[:, None] & e_ok[None, :]
        k = tl.load(k_base + keys[:, None] * stride_ks + e[None, :], mask=tile_ok, other=0.0)
        if DOT_F32:
            k = k.to(tl.float32)
        scores = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
        scores = tl.where(k_ok[None, :], scores, float("-inf"))
        new_top = tl.maximum(top, tl.max(scores, 1))
        rescale = tl.exp(top - new_top)
        p = tl.exp(scores - new_top[:, None])
        total = total * rescale + tl.sum(p, 1)
        v = tl.load(v_base + keys[:, None] * stride_vs + e[None, :], mask=tile_ok, other=0.0)
        p_v = p.to(v.dtype)  # rounded as FlashAttention rounds P before its second matmul
        if DOT_F32:
            p_v, v = p_v.to(tl.float32), v.to(tl.float32)
        acc = acc * rescale[:, None] + tl.dot(p_v, v, input_precision=PRECISION)
        top = new_top

    # A split past the row's length saw no key: its part is zero and its weight exp(-inf) = 0.
    seen = total > 0
    result = acc / tl.where(seen, total, 1.0)[:, None]
    out_mask = g_ok[:, None] & e_ok[None, :]
    heads_total = kv_heads * group
    if FINAL:
        offsets = (row * heads_total + heads)[:, None] * head_dim + e[None, :]
        tl.store(out_ptr + offsets, result.to(out_ptr.dtype.element_ty), mask=out_mask)
    else:
        part = (row * heads_total + heads) * splits + split
        tl.store(part_ptr + part[:, None] * head_dim + e[None, :], result, mask=out_mask)
        lse = tl.where(seen, top + tl.log(tl.where(seen, total, 1.0)), float("-inf"))
        tl.store(lse_ptr + part, lse, mask=g_ok)
        # Inductor's grid barrier does the same: every thread's stores above come before one thread's release
        # (the block barrier orders them), and the acquire that counts the last arrival sees every split's.
        tl.debug_barrier()
        arrived = tl.atomic_add(count_ptr + row_kv, 1, sem="acq_rel", scope="gpu")
        if arrived == splits - 1:
            # The last split to finish merges the G heads: each split's part weighted by exp(lse - max lse), the
            # softmax over all the row's keys. In a block of this kernel rather than a kernel of its own: a
            # merge launch per attention call (36 a step) cost a kernel's gap and ramp for a few kilobytes.
            # Every split's part at once, so the merge waits on memory once; read past L1 (.cg): other blocks
            # wrote them.
            mg = tl.arange(0, MERGE_G)
            s = tl.arange(0, BLOCK_S)
            m_heads = kv * group + mg
            ok = (mg < group)[:, None] & (s < splits)[None, :]
            parts_at = (row * heads_total + m_heads)[:, None] * splits + s[None, :]
            lse_all = tl.load(lse_ptr + parts_at, mask=ok, other=float("-inf"), cache_modifier=".cg")
            best = tl.max(lse_all, 1)
            weight = tl.exp(lse_all - tl.where(best == float("-inf"), 0.0, best)[:, None])  # padding heads: 0
            parts = tl.load(
                part_ptr + parts_at[:, :, None] * head_dim + e[None, None, :],
                mask=ok[:, :, None] & e_ok[None, None, :],
                other=0.0,
                cache_modifier=".cg",
            )
            weights = tl.sum(weight, 1)
            merged = tl.sum(parts * weight[:, :, None], 1) / tl.where(weights > 0, weights, 1.0)[:, None]
            offsets = (row * heads_total + m_heads)[:, None] * head_dim + e[None, :]
            merged_ok = (mg < group)[:, None] & e_ok[None, :]
            tl.store(out_ptr + offsets, merged.to(out_ptr.dtype.element_ty), mask=merged_ok)
            tl.store(count_ptr + row_kv, 0)  # zero again for the next launch (the next layer, the next replay)


@triton.jit
def _prefetch_keys(k_base, v_base, lo, hi, stride_ks, stride_vs, BLOCK_N: tl.constexpr, LINES: tl.constexpr,
                   LINE: tl.constexpr):  # fmt: skip
    """Asks L2 for the keys and values of the BLOCK_N positions from lo, short of hi: LINES lines of LINE values
    each (a head's)."""
    keys = lo + tl.arange(0, BLOCK_N)
    ok = keys < hi
    prefetch_l2(k_base, keys, ok, 0, LINES * LINE, stride_ks, LINES, LINE)
    prefetch_l2(v_base, keys, ok, 0, LINES * LINE, stride_vs, LINES, LINE)


def _rope_write(
    qkv_ptr, rope_ptr, pos_ptr, q_ptr, k_ptr, v_ptr,
    stride_xr, stride_rp, stride_rs, stride_kr, stride_kh, stride_ks, stride_vr, stride_vh, stride_vs,
    heads, kv_heads, head_dim, half,
    BLOCK_J: tl.constexpr, BLOCK_KV: tl.constexpr, BLOCK_HALF: tl.constexpr,
):  # fmt: skip
    """One row: rotates its H query heads into q (R, H, E) and its K key heads into the key cache, and copies
    its K value heads into the value cache, keys and values at the row's position.

    qkv (R, (H + 2K) * E) holds a row's query heads, then key heads, then value heads, each in
    attention.pair_heads order: RoPE's pair (i, i + E/2) at columns 2i and 2i + 1, read here as one [.., 2]
    tile and split. RoPE is half-split (transformers' rotate_half) with the table rounded to the
    activations' dtype, computed in float32.
    """
    row = tl.program_id(0)
    pos = tl.load(pos_ptr + row)
    i = tl.arange(0, BLOCK_HALF)
    i_ok = i < half
    dtype = qkv_ptr.dtype.element_ty
    table = rope_ptr + pos * stride_rs + i
    cos_lo = tl.load(table, mask=i_ok, other=0.0).to(dtype).to(tl.float32)[None, :]
    cos_hi = tl.load(table + half, mask=i_ok, other=0.0).to(dtype).to(tl.float32)[None, :]
    sin_lo = tl.load(table + stride_rp, mask=i_ok, other=0.0).to(dtype).to(tl.float32)[None, :]
    sin_hi = tl.load(table + stride_rp + half, mask=i_ok, other=0.0).to(dtype).to(tl.float32)[None, :]

    j = tl.arange(0, BLOCK_J)  # the rotated heads: queries, then keys
    two = tl.arange(0, 2)
    ok = (j < heads + kv_heads)[:, None] & i_ok[None, :]
    src = qkv_ptr + row * stride_xr + (j[:, None, None] * head_dim + 2 * i[None, :, None] + two[None, None, :])
    x_lo, x_hi = tl.split(tl.load(src, mask=ok[:, :, None], other=0.0).to(tl.float32))
    y_lo = x_lo * cos_lo - x_hi * sin_lo
    y_hi = x_hi * cos_hi + x_lo * sin_hi
    is_q = (j < heads)[:, None]
    q_dst = q_ptr + (row * heads + j)[:, None] * head_dim + i[None, :]
    tl.store(q_dst, y_lo.to(q_ptr.dtype.element_ty), mask=ok & is_q)
    tl.store(q_dst + half, y_hi.to(q_ptr.dtype.element_ty), mask=ok & is_q)
    k_dst = k_ptr + row * stride_kr + (j - heads)[:, None] * stride_kh + pos * stride_ks + i[None, :]
    tl.store(k_dst, y_lo.to(k_ptr.dtype.element_ty), mask=ok & ~is_q)
    tl.store(k_dst + half, y_hi.to(k_ptr.dtype.element_ty), mask=ok & ~is_q)

    kv = tl.arange(0, BLOCK_KV)
    v_ok = (kv < kv_heads)[:, None] & i_ok[None, :]
    v_src = (heads + kv_heads + kv)[:, None, None] * head_dim + 2 * i[None, :, None] + two[None, None, :]
    v_lo, v_hi = tl.split(tl.load(qkv_ptr + row * stride_xr + v_src, mask=v_ok[:, :, None]))
    v_dst = v_ptr + row * stride_vr + kv[:, None] * stride_vh + pos * stride_vs + i[None, :]
    tl.store(v_dst, v_lo, mask=v_ok)
    tl.store(v_dst + half, v_hi, mask=v_ok)


def attention_tile(head_dim: int, itemsize: int) -> tuple[int, int]:
    """(keys per loop step, warps) of the split-attention kernel: 64 keys of 128 bf16 values (16 KiB of keys,
    16 of values) on 4 warps; for float32, whose full-precision dot keeps more in registers, 32 keys on 8
    warps (64 keys spilled on sm_90, and 32 on 4 warps: tests/engine/test_kernel_build.py)."""
    if head_dim < 64:
        return 16, 4
    return (KEYS_PER_TILE, 4) if itemsize <= 2 else (KEYS_PER_TILE // 2, 8)


def pow2(n: int, floor: int = 16) -> int:
    return max(floor, triton.next_power_of_2(n))


def plan_splits(row_kv: int, span: int, block_n: int, programs: int) -> tuple[int, int]:
    """(splits, keys per split) so that about `programs` blocks share the work; every split but the last is
    a whole number of tiles, and no split is empty at the full span."""
    tiles = triton.cdiv(span, block_n)
    splits = max(1, min(tiles, triton.cdiv(programs, row_kv)))
    chunk = triton.cdiv(tiles, splits) * block_n
    return triton.cdiv(span, chunk), chunk


@dataclass(frozen=True)
class DecodeKernels:
    """The compiled (CUDA) or interpreted (CPU) kernels and how widely to split the keys."""

    split_attention: Any
    rope_write_kernel: Any
    programs: int  # thread blocks a split-KV launch aims for: about two per SM
    # int32 zeros, one per (row, kv head) a launch may have: the splits that have finished, so the last one
    # merges; each launch leaves them zero. Launches run one at a time, on the one thread that owns the GPU.
    counters: Tensor
    # Batch-invariant when set: every split holds INVARIANT_TILES tiles of keys and every launch merges with one
    # shape (for spans up to this), so a row's sums run in the same order whatever rows, and span, share the
    # step. Keys past a row's length add exact zeros. Otherwise splits are sized to fill the GPU.
    invariant_span: int | None = None
    # Split attention lets a programmatic dependent launch after it start early: where the GPU has them (Hopper
    # on) and they are not turned off (DiaModel.use_decode_kernels). attention_tuning.tune races only where set.
    trigger: bool = False
    # Row counts at which split attention is itself a programmatic dependent launch (Hopper on): its keys and
    # values asked of L2 while the kernel before it runs. attention_tuning.tune keeps it where it times faster.
    dependent: frozenset[int] = frozenset()

    def attend(self, q_RxHxE: Tensor, k_RxKxSxE: Tensor, v_RxKxSxE: Tensor, lengths_R: Tensor) -> Tensor:
        """Scale-1.0 attention of one query per row over its first lengths_R[r] keys (at least 1, at most S).

        Rows of the caches beyond R are never read. Returns (R, H, E) in the queries' dtype.
        """
        r, h, e = q_RxHxE.shape
        kv_heads, span = k_RxKxSxE.shape[1], k_RxKxSxE.shape[2]
        group = h // kv_heads
        assert q_RxHxE.stride(2) == 1 and k_RxKxSxE.stride(3) == 1 and v_RxKxSxE.stride(3) == 1
        block_n, warps = attention_tile(e, q_RxHxE.element_size())
        if self.invariant_span is None:
            splits, chunk = plan_splits(r * kv_heads, span, block_n, self.programs)
            final, block_s = splits == 1, pow2(splits, 2)
        else:
            if span > self.invariant_span:
                raise ValueError(f"a span of {span} keys is past the {self.invariant_span} these kernels merge")
            chunk = INVARIANT_TILES * block_n
            splits, final = triton.cdiv(span, chunk), False
            block_s = pow2(triton.cdiv(self.invariant_span, chunk), 2)
        if r * kv_heads > self.counters.numel():
            raise ValueError(f"{r} rows of {kv_heads} key/value heads are past the {self.counters.numel()} counters")
        out_RxHxE = torch.empty((r, h, e), dtype=q_RxHxE.dtype, device=q_RxHxE.device)
        if final:
            part, lse = out_RxHxE, out_RxHxE  # not touched: the kernel writes `out` directly
        else:
            part = torch.empty((r, h, splits, e), dtype=torch.float32, device=q_RxHxE.device)
            lse = torch.empty((r, h, splits), dtype=torch.float32, device=q_RxHxE.device)
        dot_f32 = interpreting()
        precision = "ieee" if dot_f32 or q_RxHxE.dtype == torch.float32 else "tf32"
        lines, line = prefetch_lines(e, k_RxKxSxE.element_size(), triton.next_power_of_2(e))
        as_dependent = r in self.dependent
        pdl = {"launch_pdl": True} if as_dependent else {}  # (the interpreter knows no such option)
        self.split_attention[(r * kv_heads, splits)](
            q_RxHxE, k_RxKxSxE, v_RxKxSxE, lengths_R, part, lse, out_RxHxE, self.counters,
            q_RxHxE.stride(0), q_RxHxE.stride(1), *k_RxKxSxE.stride()[:3], *v_RxKxSxE.stride()[:3],
            kv_heads, group, e, span, chunk, splits, 1.0,
            BLOCK_G=pow2(group), BLOCK_N=block_n, BLOCK_E=pow2(e), FINAL=final, PRECISION=precision,
            DOT_F32=dot_f32, MERGE_G=pow2(group, 1), BLOCK_S=block_s, TRIGGER=self.trigger, DEPENDENT=as_dependent,
            LINES=lines, LINE=line, num_warps=warps, **pdl,
        )  # fmt: skip
        return out_RxHxE

    def rope_write(
        self, qkv_RxF: Tensor, rope_2xPxE: Tensor, pos_R: Tensor, k_cache: Tensor, v_cache: Tensor, heads: int
    ) -> Tensor:
        """Rotated queries (R, H, E) of a fused q/k/v projection (R, (H + 2K) * E, its heads in
        attention.pair_heads order) at positions pos_R; the rotated keys and the values go into rows 0..R-1 of
        the caches (rows, K, S, E) at those positions."""
        r = qkv_RxF.shape[0]
        kv_heads, e = k_cache.shape[1], k_cache.shape[3]
        assert qkv_RxF.stride(1) == 1 and rope_2xPxE.stride(2) == 1 and e % 2 == 0
        assert k_cache.stride(3) == 1 and v_cache.stride(3) == 1 and qkv_RxF.shape[1] == (heads + 2 * kv_heads) * e
        q_RxHxE = torch.empty((r, heads, e), dtype=qkv_RxF.dtype, device=qkv_RxF.device)
        self.rope_write_kernel[(r,)](
            qkv_RxF, rope_2xPxE, pos_R, q_RxHxE, k_cache, v_cache,
            qkv_RxF.stride(0), rope_2xPxE.stride(0), rope_2xPxE.stride(1),
            *k_cache.stride()[:3], *v_cache.stride()[:3],
            heads, kv_heads, e, e // 2,
            BLOCK_J=pow2(heads + kv_heads, 1), BLOCK_KV=pow2(kv_heads, 1), BLOCK_HALF=pow2(e // 2, 1),
        )  # fmt: skip
        return q_RxHxE


def check(
    kernels: DecodeKernels, heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype, device: torch.device
) -> str | None:
    """Why the kernels cannot serve this model here (they fail to compile or disagree with SDPA), or None.

    Run once at load: a GPU that Triton cannot target for these shapes falls back to SDPA instead of failing.
    """
    from tts_engine.dia.attention import attend, fold_mask, unpair_heads  # the SDPA path these kernels replace
    from tts_engine.dia.model import rope_table

    gen = torch.Generator(device=device).manual_seed(0)
    keys = min(300, kernels.invariant_span or 300)  # several splits, within what invariant kernels merge
    q = torch.randn(2, heads, head_dim, device=device, generator=gen).to(dtype)
    k, v = torch.randn(2, 2, kv_heads, keys, head_dim, device=device, generator=gen).to(dtype)
    lengths = torch.tensor([keys, 37], device=device)
    rope = rope_table(10_000.0, head_dim, 8, device)
    qkv = torch.randn(2, (heads + 2 * kv_heads) * head_dim, device=device, generator=gen).to(dtype)
    caches = torch.zeros(2, 2, kv_heads, 8, head_dim, device=device, dtype=dtype)
    try:
        out = kernels.attend(q, k, v, lengths).float()
        kernels.rope_write(qkv, rope, torch.tensor([3, 5], device=device), caches[0], caches[1], heads)
    except Exception as exc:  # Triton's compile errors have no common type
        return f"{type(exc).__name__}: {exc}"
    if kernels.counters.any():  # each launch's last split must zero its count, or the next launch never merges
        return "split attention left its split counters non-zero"
    values = unpair_heads(qkv[:, (heads + kv_heads) * head_dim :], head_dim).view(2, kv_heads, head_dim)
    if not (torch.equal(caches[1, 0, :, 3], values[0]) and torch.equal(caches[1, 1, :, 5], values[1])):
        return "the cache write put values in the wrong place"
    mask = (torch.arange(keys, device=device)[None, :] < lengths[:, None])[:, None, None, :]
    expected = attend(q.float()[:, :, None], k.float(), v.float(), fold_mask(mask, heads // kv_heads))[:, :, 0]
    error = (out - expected).abs().max().item()
    tolerance = 1e-3 if dtype == torch.float32 else 5e-2
    return None if error <= tolerance else f"attention differs from the reference by {error:.3g}"


def interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter: TRITON_INTERPRET=1 before triton was first imported."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def pdl_capable(device: torch.device) -> bool:
    """Whether kernels on `device` can take part in programmatic dependent launches: Hopper or later (PTX's
    griddepcontrol is sm_90's), compiled (Triton's interpreter has no such launch)."""
    return device.type == "cuda" and not interpreting() and torch.cuda.get_device_capability(device) >= (9, 0)


@functools.cache
def for_device(device: torch.device, invariant_span: int | None = None) -> DecodeKernels:
    """The kernels for `device`: compiled by Triton for CUDA; on the CPU only under Triton's interpreter.
    With `invariant_span`, batch-invariant for spans up to it (see DecodeKernels)."""
    if device.type == "cuda" and not interpreting():
        programs = 2 * torch.cuda.get_device_properties(device).multi_processor_count
    elif interpreting():
        programs = 8  # small, so the CPU tests see several splits
    else:
        raise RuntimeError("the decode kernels run on CUDA, or on the CPU with TRITON_INTERPRET=1 (for tests)")
    counters = torch.zeros(MAX_ROW_KV, dtype=torch.int32, device=device)
    return DecodeKernels(
        triton.jit(_split_attention), triton.jit(_rope_write), programs, counters, invariant_span, pdl_capable(device)
    )
