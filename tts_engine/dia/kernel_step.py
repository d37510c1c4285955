"""A decode step through the decode kernels (kernels.py) and the skinny projections (linear.py): one query
position per row, every row at its own position, the norms fused with the projections after them.

Each norm goes with the projection after it, and the residual sum before it with the norm: `normed` runs the
three as one kernel where the projections fuse them (linear.SkinnyLinear.normed), and so the gate/up projection
with the activation after it (`_activated`) and the q/k/v projection with RoPE and the cache write (`_queries`).
Where a projection has no fused form (cuBLAS won its tuning, or a CPU test), the same steps run as separate
kernels. The semantics are model.py's general path, which the tests compare this with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from tts_engine.dia import fused
from tts_engine.dia.cache import CrossCache, SelfCache

if TYPE_CHECKING:
    from tts_engine.dia.model import DecoderLayer, DiaModel


def normed(
    ops: fused.Ops, x: Tensor, delta: Tensor | None, gamma: Tensor, eps: float, weight: Tensor
) -> tuple[Tensor, Tensor]:
    """(rms_norm(t, gamma, eps) @ weight^T, t) with t = x + delta (x where delta is None): one kernel where the
    projections fuse them (linear.SkinnyLinear.normed), else the norm's kernel and then the projection. (The
    matmul tuner times the roped form against this.)"""
    together = getattr(ops.linear, "normed", None)
    out = None if together is None else together(x, delta, gamma, eps, weight)
    if out is not None:
        return out
    h, x = _norm(ops, x, delta, gamma, eps)
    return ops.linear(h, weight), x


def _norm(ops: fused.Ops, x: Tensor, delta: Tensor | None, gamma: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """(rms_norm(t, gamma, eps), t) with t = x + delta (x where delta is None), the norm's kernel."""
    if delta is None:
        return ops.rms_norm(x, gamma, eps), x
    x, h = ops.add_rms_norm(x, delta, gamma, eps)
    return h, x


def _queries(
    ops: fused.Ops, x: Tensor, delta: Tensor | None, layer: DecoderLayer, rope_2xPxE: Tensor, pos_R: Tensor,
    k_cache: Tensor, v_cache: Tensor,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """A decode step's rotated queries (R, H, E) from the residual stream x + delta, its keys and values written
    into the caches at pos_R, and x + delta: norm, q/k/v projection, RoPE and the cache write in one kernel
    where the projections fuse them (linear.SkinnyLinear.roped), else in three (or four)."""
    attention = layer.self_attention
    assert attention.qkv_proj is not None and ops.kernels is not None, "decode kernels, fused q/k/v (fuse())"
    weight, norm = attention.qkv_proj.weight, layer.pre_sa_norm
    together = getattr(ops.linear, "roped", None)
    if together is not None:
        out = together(x, delta, norm.weight, norm.eps, weight, rope_2xPxE, pos_R, k_cache, v_cache, attention.heads)
        if out is not None:
            return out
    qkv, x = normed(ops, x, delta, norm.weight, norm.eps, weight)
    r = qkv.shape[0]
    return ops.kernels.rope_write(qkv.view(r, -1), rope_2xPxE, pos_R, k_cache, v_cache, attention.heads), x


def _activated(
    ops: fused.Ops, x: Tensor, delta: Tensor | None, gamma: Tensor, eps: float, weight: Tensor
) -> tuple[Tensor, Tensor]:
    """(silu_mul(rms_norm(t, gamma, eps) @ weight^T), t) with t = x + delta: the MLP's input to its down
    projection. One kernel where the projections fuse all three (linear.SkinnyLinear.normed_gated), the norm's
    kernel and one where they fuse the projection and the activation (`gated`), else three kernels."""
    together = getattr(ops.linear, "normed_gated", None)
    out = None if together is None else together(x, delta, gamma, eps, weight)
    if out is not None:
        return out
    h, x = _norm(ops, x, delta, gamma, eps)
    gated = getattr(ops.linear, "gated", None)
    act = None if gated is None else gated(h, weight)
    return (ops.silu_mul(ops.linear(h, weight)) if act is None else act), x


def logits(
    model: DiaModel, x_Rx1xD: Tensor, pos_R: Tensor, cache: SelfCache, cross: CrossCache, self_span: int,
    cross_span: int,
) -> Tensor:  # fmt: skip
    """A decode step's padded logits (R, 1, C * V') from the embedded tokens x, every row at its position;
    writes the step's keys and values into the cache. Every decoder layer runs as one persistent kernel where
    the ops have one for these rows (megakernel.py), else layer by layer (`residual`)."""
    assert model.rope is not None, "setup_rope() first"
    ops, decoder = model.ops, model.decoder()
    if ops.persistent is not None and ops.persistent.serves(x_Rx1xD.shape[0]):
        x, delta = ops.persistent(x_Rx1xD, pos_R, cache, cross, self_span, cross_span, model.rope)
    else:
        x, delta = residual(model, x_Rx1xD, pos_R, cache, cross, self_span, cross_span)
    return normed(ops, x, delta, decoder.norm.weight, decoder.norm.eps, model.logits_dense.weight)[0]


def residual(
    model: DiaModel, x_Rx1xD: Tensor, pos_R: Tensor, cache: SelfCache, cross: CrossCache, self_span: int,
    cross_span: int,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """The residual stream after every decoder layer, as (x, delta) with the stream x + delta (summed by the
    final norm), layer by layer through the decode kernels; writes the step's keys and values into the cache."""
    assert model.rope is not None, "setup_rope() first"
    ops, decoder = model.ops, model.decoder()
    lengths_R = pos_R + 1  # a row attends to positions 0..pos
    delta: Tensor | None = None  # the residual stream is x + delta, summed by the next norm
    for i, layer in enumerate(decoder.typed_layers()):
        attention, crossing = layer.self_attention, layer.cross_attention
        q, x_Rx1xD = _queries(ops, x_Rx1xD, delta, layer, model.rope, pos_R, cache.k[i], cache.v[i])
        delta = attention.step(q, cache.k[i], cache.v[i], lengths_R, self_span, ops)
        ca_norm = layer.pre_ca_norm
        q, x_Rx1xD = normed(ops, x_Rx1xD, delta, ca_norm.weight, ca_norm.eps, crossing.q_proj.weight)
        k_cross, v_cross = cross.k[i][:, :, :cross_span], cross.v[i][:, :, :cross_span]
        delta = crossing.step(q, k_cross, v_cross, cross.lengths, ops)
        mlp_norm = layer.pre_mlp_norm
        act, x_Rx1xD = _activated(ops, x_Rx1xD, delta, mlp_norm.weight, mlp_norm.eps, layer.mlp.gate_up_proj.weight)
        delta = ops.linear(act, layer.mlp.down_proj.weight)
    assert delta is not None, "a decoder has layers"
    return x_Rx1xD, delta
