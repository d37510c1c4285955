"""Dia's attention modules: the encoder's, the decoder's self-attention over the static cache, and its
cross-attention over the text, each with a general path (SDPA with masks; prefill and CPU) and, for the
decoder, a `step` for one position per row through the decode kernels (kernels.py).

Semantics follow transformers' modeling_dia.py (0626): attention scale 1.0, half-split RoPE in self-attention
only, grouped-query attention. Shape letters as in model.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tts_engine.dia import fused
from tts_engine.dia.config import DecoderConfig, EncoderConfig


def pair_heads(x: Tensor, head_dim: int, dim: int = -1) -> Tensor:
    """Reorder each head of `dim` so that RoPE's pairs sit side by side: (h, 2i) <- (h, i), (h, 2i + 1) <-
    (h, i + E/2). Applied to the fused q/k/v weight's rows, it puts a pair's two outputs in adjacent columns, so
    the decode step's projection can rotate them and write the cache in its epilogue (linear.py)."""
    moved = x.movedim(dim, -1)
    heads = moved.shape[-1] // head_dim
    paired = moved.unflatten(-1, (heads, 2, head_dim // 2)).transpose(-1, -2).flatten(-3)
    return paired.movedim(-1, dim)


def unpair_heads(x: Tensor, head_dim: int) -> Tensor:
    """`pair_heads`' inverse along the last dimension (a copy)."""
    heads = x.shape[-1] // head_dim
    return x.unflatten(-1, (heads, head_dim // 2, 2)).transpose(-1, -2).flatten(-3)


def fold_mask(mask_Rx1xTxS: Tensor, group: int) -> Tensor:
    """The mask for `attend`'s folded queries, (R, 1, G * T, S): made once per step, shared by every layer."""
    r, _, t, s = mask_Rx1xTxS.shape
    return mask_Rx1xTxS.unsqueeze(2).expand(r, 1, group, t, s).reshape(r, 1, group * t, s)


def attend(q_RxHxTxE: Tensor, k_RxKxSxE: Tensor, v_RxKxSxE: Tensor, mask_Rx1xGTxS: Tensor | None) -> Tensor:
    """Scale-1.0 attention with H = K * G query heads sharing each key/value head.

    The G query heads of a group are folded into the query length, so every SDPA backend serves GQA without
    copying keys and values G times; the mask comes folded likewise (`fold_mask`). Returns (R, H, T, E).
    """
    r, h, t, e = q_RxHxTxE.shape
    kv = k_RxKxSxE.shape[1]
    q = q_RxHxTxE.reshape(r, kv, (h // kv) * t, e)
    out = F.scaled_dot_product_attention(q, k_RxKxSxE, v_RxKxSxE, attn_mask=mask_Rx1xGTxS, scale=1.0)
    return out.reshape(r, h, t, e)


class EncoderAttention(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.num_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.num_heads * cfg.head_dim, cfg.hidden_size, bias=False)

    def forward(self, x_RxLxD: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        r, length, _ = x_RxLxD.shape
        q = self.q_proj(x_RxLxD).view(r, length, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x_RxLxD).view(r, length, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x_RxLxD).view(r, length, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = fused.rope(q, cos, sin), fused.rope(k, cos, sin)
        out = attend(q, k, v, None)  # bidirectional; one request per call, so no padding to mask
        return self.o_proj(out.transpose(1, 2).reshape(r, length, -1))


class DecoderSelfAttention(nn.Module):
    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_proj: nn.Linear | None = nn.Linear(cfg.hidden_size, cfg.num_heads * cfg.head_dim, bias=False)
        self.k_proj: nn.Linear | None = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.v_proj: nn.Linear | None = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.qkv_proj: nn.Linear | None = None
        self.o_proj = nn.Linear(cfg.num_heads * cfg.head_dim, cfg.hidden_size, bias=False)

    def fuse(self) -> None:
        """Replace q/k/v with one projection: one matmul per step instead of three (gpt-fast's wqkv), its heads'
        rows in `pair_heads` order (the paths that read its output take that order)."""
        assert self.q_proj is not None and self.k_proj is not None and self.v_proj is not None
        weight = torch.cat((self.q_proj.weight, self.k_proj.weight, self.v_proj.weight))
        weight = pair_heads(weight, self.head_dim, dim=0).contiguous()
        self.qkv_proj = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
        self.qkv_proj.weight = nn.Parameter(weight, requires_grad=False)
        self.q_proj = self.k_proj = self.v_proj = None

    def forward(
        self, x_RxTxD: Tensor, cos: Tensor, sin: Tensor, pos_RxT: Tensor, k_cache: Tensor, v_cache: Tensor,
        rows_R: Tensor | None, mask_Rx1xGTxS: Tensor, span: int, ops: fused.Ops,
    ) -> Tensor:  # fmt: skip
        r, t, _ = x_RxTxD.shape
        if self.qkv_proj is not None:
            q_size, kv_size = self.heads * self.head_dim, self.kv_heads * self.head_dim
            qkv = unpair_heads(ops.linear(x_RxTxD, self.qkv_proj.weight), self.head_dim)
            q, k, v = qkv.split((q_size, kv_size, kv_size), dim=-1)
        else:
            assert self.q_proj is not None and self.k_proj is not None and self.v_proj is not None
            q, k, v = (ops.linear(x_RxTxD, proj.weight) for proj in (self.q_proj, self.k_proj, self.v_proj))
        q = ops.rope(q.view(r, t, self.heads, self.head_dim).transpose(1, 2), cos, sin)
        k = ops.rope(k.view(r, t, self.kv_heads, self.head_dim).transpose(1, 2), cos, sin)
        v = v.view(r, t, self.kv_heads, self.head_dim).transpose(1, 2)
        # Write this step's keys and values at their positions; index tensors keep it free of host syncs.
        cache_rows = torch.arange(r, device=x_RxTxD.device) if rows_R is None else rows_R
        k_cache[cache_rows[:, None], :, pos_RxT] = k.transpose(1, 2)
        v_cache[cache_rows[:, None], :, pos_RxT] = v.transpose(1, 2)
        keys, values = k_cache[:, :, :span], v_cache[:, :, :span]
        if rows_R is not None:
            keys, values = keys.index_select(0, rows_R), values.index_select(0, rows_R)
        out = attend(q, keys, values, mask_Rx1xGTxS)
        return ops.linear(out.transpose(1, 2).reshape(r, t, -1), self.o_proj.weight)

    def step(
        self, q_RxHxE: Tensor, k_cache: Tensor, v_cache: Tensor, lengths_R: Tensor, span: int, ops: fused.Ops
    ) -> Tensor:
        """`forward` after the rotated queries and the cache write (the model runs those with the projection
        and the norm before it), for one position per row and every cache row in order, through the decode
        kernels; a row attends to its first lengths_R[r] cache positions (its position + 1)."""
        assert ops.kernels is not None
        r = q_RxHxE.shape[0]
        out_RxHxE = ops.kernels.attend(q_RxHxE, k_cache[:, :, :span], v_cache[:, :, :span], lengths_R)
        return ops.linear(out_RxHxE.view(r, 1, -1), self.o_proj.weight)


class CrossAttention(nn.Module):
    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.cross_num_heads, cfg.cross_num_kv_heads, cfg.cross_head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.cross_num_heads * cfg.cross_head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.cross_hidden_size, cfg.cross_num_kv_heads * cfg.cross_head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.cross_hidden_size, cfg.cross_num_kv_heads * cfg.cross_head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.cross_num_heads * cfg.cross_head_dim, cfg.hidden_size, bias=False)

    def project(self, enc_RxLxD: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of the encoder output, once per request: (R, K, L, E) each, no RoPE (0626)."""
        r, length, _ = enc_RxLxD.shape
        k = self.k_proj(enc_RxLxD).view(r, length, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(enc_RxLxD).view(r, length, self.kv_heads, self.head_dim).transpose(1, 2)
        return k, v

    def forward(
        self, x_RxTxD: Tensor, k_RxKxLxE: Tensor, v_RxKxLxE: Tensor, mask_Rx1xGTxL: Tensor, ops: fused.Ops
    ) -> Tensor:
        r, t, _ = x_RxTxD.shape
        q = ops.linear(x_RxTxD, self.q_proj.weight).view(r, t, self.heads, self.head_dim).transpose(1, 2)
        out = attend(q, k_RxKxLxE, v_RxKxLxE, mask_Rx1xGTxL)
        return ops.linear(out.transpose(1, 2).reshape(r, t, -1), self.o_proj.weight)

    def step(self, q_Rx1xF: Tensor, k_RxKxLxE: Tensor, v_RxKxLxE: Tensor, lengths_R: Tensor, ops: fused.Ops) -> Tensor:
        """`forward` after the query projection, for one position per row, attending to each row's first
        lengths_R[r] text bytes."""
        r = q_Rx1xF.shape[0]
        assert ops.kernels is not None
        out_RxHxE = ops.kernels.attend(q_Rx1xF.view(r, self.heads, self.head_dim), k_RxKxLxE, v_RxKxLxE, lengths_R)
        return ops.linear(out_RxHxE.view(r, 1, -1), self.o_proj.weight)
