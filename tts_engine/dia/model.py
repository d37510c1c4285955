"""Dia-1.6B-0626 as plain nn.Modules: a byte-level text encoder and an audio decoder over a static KV cache.

Semantics follow transformers' modeling_dia.py (the 0626 weights; nari-labs/dia since commit 65028e0):
attention scale 1.0, half-split RoPE (rotate_half) in self-attention only, grouped-query attention, RMSNorm
computed in float32, gated-SiLU MLPs, decoder input = the sum of one embedding per channel. Parameter names
equal the transformers checkpoint's so weights load by key (weights.py); the decoder's q/k/v projections are
fused after loading. Layout in the style of gpt-fast's model.py: modules and caches, no sampling, no I/O; the
attention modules live in attention.py.

Shape letters: R rows (2 per request: conditional and unconditional), T query positions, S cache positions,
L text bytes, C channels, V vocab, H heads, K key/value heads, D hidden, E head dim.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from tts_engine.dia import fused, kernel_step
from tts_engine.dia.attention import CrossAttention, DecoderSelfAttention, EncoderAttention, fold_mask
from tts_engine.dia.cache import CrossCache, SelfCache
from tts_engine.dia.config import DecoderConfig, DiaConfig, EncoderConfig

if TYPE_CHECKING:
    from tts_engine.dia.kernels import DecodeKernels

log = logging.getLogger(__name__)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return fused.rms_norm(x, self.weight, self.eps)


def rope_table(theta: float, head_dim: int, positions: int, device: torch.device | None = None) -> Tensor:
    """cos and sin of every position, stacked: float32 (2, positions, head_dim), halves repeated."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    freqs = torch.arange(positions, dtype=torch.float32, device=device)[:, None] * inv_freq[None, :]
    angles = torch.cat((freqs, freqs), dim=-1)
    return torch.stack((angles.cos(), angles.sin()))


@dataclass(frozen=True)
class _Masked:
    """What the general (SDPA) attention path shares across layers in one decode call."""

    cos: Tensor  # (R, 1, T, E), in the activations' dtype
    sin: Tensor
    self_mask: Tensor  # (R, 1, G * T, S), folded (fold_mask)
    cross_mask: Tensor  # (R, 1, G' * T, L)


class MLP(nn.Module):
    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.gate_up_proj = nn.Linear(hidden, 2 * intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: Tensor, ops: fused.Ops = fused.EAGER) -> Tensor:
        return ops.linear(ops.silu_mul(ops.linear(x, self.gate_up_proj.weight)), self.down_proj.weight)


class EncoderLayer(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.pre_sa_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.self_attention = EncoderAttention(cfg)
        self.post_sa_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.self_attention(self.pre_sa_norm(x), cos, sin)
        return x + self.mlp(self.post_sa_norm(x))


class Encoder(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)

    def forward(self, ids_RxL: Tensor) -> Tensor:
        x = self.embedding(ids_RxL)
        table = rope_table(self.cfg.rope_theta, self.cfg.head_dim, ids_RxL.shape[1], ids_RxL.device).to(x.dtype)
        cos, sin = table[0][None, None], table[1][None, None]
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.norm(x)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.pre_sa_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.self_attention = DecoderSelfAttention(cfg)
        self.pre_ca_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.cross_attention = CrossAttention(cfg)
        self.pre_mlp_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size)


class MultiChannelEmbedding(nn.Module):
    """One table of C * V rows; channel c's token v is row c * V + v (transformers' DiaMultiChannelEmbedding)."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab_size * cfg.num_channels, cfg.hidden_size)
        self.vocab_size = cfg.vocab_size

    def forward(self, tokens_RxTxC: Tensor) -> Tensor:
        offsets_C = torch.arange(tokens_RxTxC.shape[-1], device=tokens_RxTxC.device) * self.vocab_size
        return self.embed(tokens_RxTxC + offsets_C).sum(dim=2)


class Decoder(nn.Module):
    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.embeddings = MultiChannelEmbedding(cfg)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)

    def typed_layers(self) -> list[DecoderLayer]:
        return list(self.layers)  # type: ignore[arg-type]


class _Body(nn.Module):
    def __init__(self, cfg: DiaConfig) -> None:
        super().__init__()
        self.encoder = Encoder(cfg.encoder)
        self.decoder = Decoder(cfg.decoder)


class DiaModel(nn.Module):
    """The network. `encode` once per request, `cross_kv` once per request, then `decode` step by step."""

    def __init__(self, cfg: DiaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = _Body(cfg)
        dec = cfg.decoder
        self.logits_dense = nn.Linear(dec.hidden_size, dec.num_channels * dec.vocab_size, bias=False)
        self.rope: Tensor | None = None  # (2, positions, E) float32, built by setup_rope after loading
        self.ops = fused.EAGER  # the decode step's elementwise pieces; compiled ones by use_compiled_ops()

    def decoder(self) -> Decoder:
        decoder: Decoder = self.model.decoder
        return decoder

    def setup_rope(self, positions: int, device: torch.device) -> None:
        self.rope = rope_table(self.cfg.decoder.rope_theta, self.cfg.decoder.head_dim, positions, device)

    def fuse(self) -> None:
        """After loading: one q/k/v projection per decoder layer, and the logits projection padded to a multiple
        of 64 outputs. With 9 x 1028 = 9252 outputs (not a multiple of 8) cuBLAS fell back to a generic kernel
        on an H100: 25 us a step where the weights' bytes need about 11 (bench/profile_step.py)."""
        for layer in self.decoder().typed_layers():
            layer.self_attention.fuse()
        weight = self.logits_dense.weight
        padded = -(-weight.shape[0] // 64) * 64
        if padded != weight.shape[0]:
            zeros = torch.zeros(padded - weight.shape[0], weight.shape[1], dtype=weight.dtype, device=weight.device)
            self.logits_dense.weight = nn.Parameter(torch.cat((weight, zeros)), requires_grad=False)

    def use_compiled_ops(self) -> None:
        """Run the decode step's norms, RoPE, activation and sampling through torch.compile (see fused.py): on
        CUDA, a kernel or a few each instead of many. They compile at their first call (warm-up), in a few seconds."""
        # Keeps the decode kernels, projections and sampler chosen so far (and what tune_decode measured for them).
        ops = self.ops
        self.ops = dataclasses.replace(fused.compiled(), kernels=ops.kernels, linear=ops.linear, sampler=ops.sampler)

    def use_batch_invariant(self, *, kernels: bool = False) -> None:
        """Make a row's logits the same bits whatever rows share its step, so a seeded line renders the same
        beside others as alone (see Engine). Plainly: every projection a row at a time (fused.rowwise_linear)
        and attention on SDPA, whose CPU kernels work row by row. With `kernels` (CUDA, or the CPU under
        TRITON_INTERPRET=1): the decode kernels with fixed splits and the skinny matmuls with one block shape
        per weight shape, which read the weights once for all rows; if they fail their check, the plain way."""
        if kernels:
            from tts_engine.dia import linear

            chosen = self._checked_kernels(self.cfg.longest_span, fallback="projecting row by row")
            if chosen is not None:
                self.ops = dataclasses.replace(self.ops, kernels=chosen, linear=linear.SkinnyLinear(invariant=True))
                return
        self.ops = dataclasses.replace(self.ops, kernels=None, linear=fused.rowwise_linear)

    def use_decode_kernels(self, *, dependent_launches: bool = True, persistent_layers: bool = False) -> bool:
        """Run decode steps' attention and cache writes through the Triton kernels of kernels.py (CUDA, or the
        CPU under TRITON_INTERPRET=1), and on CUDA their projections through linear.SkinnyLinear wherever
        `tune_decode` finds it faster than cuBLAS, and their sampling through sample_kernel.py wherever the
        decoder's tuning finds it faster than the compiled chain; prefill keeps SDPA. Needs the fused q/k/v
        projection. False (and a warning) where the kernels fail their check on this device: steps stay on SDPA.
        Without `dependent_launches`, no kernel is a programmatic dependent launch, nor lets one in early, even
        where the GPU has them (Hopper on) and the tuners would find them faster. With `persistent_layers`, a
        one-request step runs every decoder layer as one persistent kernel (megakernel.py) where it passes its
        check here (opt-in: not yet measured faster)."""
        if self.ops.linear is fused.rowwise_linear or getattr(self.ops.linear, "invariant", False):
            raise ValueError("the decode kernels are not batch-invariant; this model runs use_batch_invariant()")
        if self.ops.kernels is not None:  # already on, with whatever tune_decode chose: a second Engine keeps it
            if persistent_layers and self.ops.persistent is None:
                self._use_persistent_layers()
            return True
        from tts_engine.dia import linear  # it imports triton, which a CPU-only install may lack

        chosen = self._checked_kernels(None, fallback="using SDPA")
        if chosen is None:
            return False
        if not dependent_launches:
            chosen = dataclasses.replace(chosen, trigger=False)
        device = next(self.parameters()).device
        if device.type == "cuda":  # in Triton's interpreter the skinny matmuls and sampler take too long for tests
            from tts_engine.dia import sample_kernel

            sampler = sample_kernel.checked(self.cfg.decoder, device)
            skinny = linear.SkinnyLinear(dependent=dependent_launches)
            self.ops = dataclasses.replace(self.ops, linear=skinny, sampler=sampler)
        self.ops = dataclasses.replace(self.ops, kernels=chosen)
        if persistent_layers:
            self._use_persistent_layers()
        return True

    def _use_persistent_layers(self) -> None:
        """One-request decode steps through persistent_layers.PersistentLayers, where they pass their check (else a
        warning, and steps stay layer by layer)."""
        from tts_engine.dia import persistent_layers

        try:
            layers = persistent_layers.PersistentLayers(self)
        except (ValueError, RuntimeError) as exc:
            log.warning("persistent layers unavailable, stepping layer by layer: %s", exc)
            return
        problem = persistent_layers.check(self, layers)
        if problem is not None:
            log.warning("persistent layers unavailable, stepping layer by layer: %s", problem)
            return
        log.info("one-request decode steps run every layer as one persistent kernel of %d blocks", layers.programs)
        self.ops = dataclasses.replace(self.ops, persistent=layers)

    def _checked_kernels(self, invariant_span: int | None, *, fallback: str) -> DecodeKernels | None:
        """The decode kernels for this model's device (see kernels.for_device), or None and a warning naming
        the `fallback` where they fail their check here."""
        from tts_engine.dia import kernels

        param = next(self.parameters())
        chosen = kernels.for_device(param.device, invariant_span=invariant_span)
        dec = self.cfg.decoder
        problem = kernels.check(chosen, dec.num_heads, dec.num_kv_heads, dec.head_dim, param.dtype, param.device)
        if problem is not None:
            kind = "decode kernels" if invariant_span is None else "batch-invariant decode kernels"
            log.warning("%s unavailable, %s: %s", kind, fallback, problem)
            return None
        return chosen

    def tune_decode(self, rows: Iterable[int]) -> None:
        """Let the decode step's projections pick their kernels for steps of these row counts (a no-op unless
        they can: linear.SkinnyLinear times itself against cuBLAS, and its fused forms against the norm,
        activation and RoPE kernels they replace). Done before graphs are captured."""
        tune = getattr(self.ops.linear, "tune", None)
        if tune is None:
            return
        from tts_engine.dia.linear import NORM, Group, RopeShape

        decoder = self.decoder()
        layers, eps = decoder.typed_layers(), self.cfg.decoder.norm_eps
        qkv = [layer.self_attention.qkv_proj for layer in layers]
        groups = [
            Group([layer.self_attention.o_proj.weight for layer in layers]),
            Group([layer.cross_attention.q_proj.weight for layer in layers], NORM,
                  [layer.pre_ca_norm.weight for layer in layers], eps),
            Group([layer.cross_attention.o_proj.weight for layer in layers]),
            Group([layer.mlp.gate_up_proj.weight for layer in layers], NORM,
                  [layer.pre_mlp_norm.weight for layer in layers], eps, gated=True),
            Group([layer.mlp.down_proj.weight for layer in layers]),
            Group([self.logits_dense.weight], NORM, [decoder.norm.weight], eps),
        ]  # fmt: skip
        if all(proj is not None for proj in qkv):
            norms = [layer.pre_sa_norm.weight for layer in layers]
            attention = layers[0].self_attention
            rope = None if self.rope is None else RopeShape(self.rope, attention.heads, attention.kv_heads)
            groups.insert(0, Group([proj.weight for proj in qkv if proj is not None], NORM, norms, eps, rope))
        tune(groups, list(rows), self.ops)

    def encode(self, ids_RxL: Tensor) -> Tensor:
        """Encoder output (R, L, D_enc) for unpadded byte ids."""
        out: Tensor = self.model.encoder(ids_RxL)
        return out

    def cross_kv(self, enc_RxLxD: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per decoder layer, cross-attention keys and values (R, K, L, E) of an encoder output."""
        return [layer.cross_attention.project(enc_RxLxD) for layer in self.decoder().typed_layers()]

    def decode(
        self,
        tokens_RxTxC: Tensor,
        pos_RxT: Tensor,
        cache: SelfCache,
        cross: CrossCache,
        rows_R: Tensor | None = None,
        *,
        self_span: int | None = None,
        cross_span: int | None = None,
    ) -> Tensor:
        """Logits float32 (R, T, C, V) for delayed tokens at positions `pos_RxT`; writes their keys and values.

        `rows_R` picks cache rows (a prefill of one request among several); None means every row, in order.
        A query at position p attends to cache positions 0..p of its row, so stale entries past p are ignored.
        Attention reads only the first `self_span` cache positions and `cross_span` text bytes (all when None):
        callers pick the smallest spans that cover every row, so a step never streams unused cache.
        A decode step (T = 1, every row) goes through the decode kernels when `ops` has them.
        """
        x = self.decoder().embeddings(tokens_RxTxC)
        return self.decode_embedded(x, pos_RxT, cache, cross, rows_R, self_span=self_span, cross_span=cross_span)

    def decode_embedded(
        self, x: Tensor, pos_RxT: Tensor, cache: SelfCache, cross: CrossCache, rows_R: Tensor | None = None, *,
        self_span: int | None = None, cross_span: int | None = None,
    ) -> Tensor:  # fmt: skip
        """`decode` from the tokens' embeddings x (R, T, D): a decoder's step embeds each slot's tokens once for
        both its rows (fused.step_inputs)."""
        assert self.rope is not None, "setup_rope() first"
        decoder = self.decoder()
        self_span = cache.length if self_span is None else self_span
        cross_span = cross.max_text if cross_span is None else cross_span
        r, t, _ = x.shape
        dec, ops, eps = self.cfg.decoder, self.ops, self.cfg.decoder.norm_eps
        layers = decoder.typed_layers()
        if ops.kernels is not None and t == 1 and rows_R is None:
            h = kernel_step.logits(self, x, pos_RxT[:, 0], cache, cross, self_span, cross_span)
        else:
            masked = self._masks(pos_RxT, cross, rows_R, self_span, cross_span, x.dtype)
            # Each residual sum is fused with the norm that follows it (the next layer's first, the final one last).
            norms_after = [layer.pre_sa_norm for layer in layers[1:]] + [decoder.norm]
            h = ops.rms_norm(x, layers[0].pre_sa_norm.weight, eps)
            for i, layer in enumerate(layers):
                k_cross, v_cross = cross.k[i][:, :, :cross_span], cross.v[i][:, :, :cross_span]
                if rows_R is not None:
                    k_cross, v_cross = k_cross.index_select(0, rows_R), v_cross.index_select(0, rows_R)
                attended = layer.self_attention(
                    h, masked.cos, masked.sin, pos_RxT, cache.k[i], cache.v[i], rows_R, masked.self_mask, self_span,
                    ops,
                )  # fmt: skip
                x, h = ops.add_rms_norm(x, attended, layer.pre_ca_norm.weight, eps)
                crossed = layer.cross_attention(h, k_cross, v_cross, masked.cross_mask, ops)
                x, h = ops.add_rms_norm(x, crossed, layer.pre_mlp_norm.weight, eps)
                x, h = ops.add_rms_norm(x, layer.mlp(h, ops), norms_after[i].weight, eps)
            h = ops.linear(h, self.logits_dense.weight)
        # Sliced back to C * V outputs: fuse() pads the projection.
        logits = h[..., : dec.num_channels * dec.vocab_size]
        return logits.float().reshape(r, t, dec.num_channels, dec.vocab_size)

    def _masks(
        self, pos_RxT: Tensor, cross: CrossCache, rows_R: Tensor | None, self_span: int, cross_span: int,
        dtype: torch.dtype,
    ) -> _Masked:  # fmt: skip
        """RoPE and the folded attention masks of a general decode call, made once for every layer."""
        assert self.rope is not None
        dec = self.cfg.decoder
        rope = self.rope[:, pos_RxT].to(dtype)  # (2, R, T, E)
        r, t = pos_RxT.shape
        span_S = torch.arange(self_span, device=pos_RxT.device)
        self_mask = fold_mask(
            (span_S[None, None, :] <= pos_RxT[:, :, None]).unsqueeze(1), dec.num_heads // dec.num_kv_heads
        )
        lengths_R = cross.lengths if rows_R is None else cross.lengths.index_select(0, rows_R)
        cross_mask = torch.arange(cross_span, device=pos_RxT.device)[None, :] < lengths_R[:, None]
        cross_group = dec.cross_num_heads // dec.cross_num_kv_heads
        cross_mask = fold_mask(cross_mask[:, None, None, :].expand(r, 1, t, cross_span), cross_group)
        return _Masked(rope[0].unsqueeze(1), rope[1].unsqueeze(1), self_mask, cross_mask)
