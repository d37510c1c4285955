"""Next-token choice for Dia: classifier-free guidance, the EOS channel rules, temperature, top-k, top-p.

Exactly the chain transformers runs for Dia (generation_dia.py `_get_logits_processor`, logits_process.py):
DiaClassifierFreeGuidance (top-k of the guided logits picks the candidates, the conditional logits give their
values) -> Temperature -> DiaEOSChannelFilter (only channel 0 may end, and only when EOS is its top logit) ->
TopK -> TopP, then a draw. The EOS countdown lives in the decode step, since it rewrites tokens, not logits.

Every knob is a per-row tensor so one captured step serves requests with different settings, and nothing
here syncs with the host. The draw is gpt-fast's exponential race, argmax(p / q) with q ~ Exp(1), which
samples p exactly; the caller supplies q from the request's own generator, or ones for greedy decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

_NEG_INF = float("-inf")


@dataclass
class SamplingParams:
    """Per-row settings, all shape (B,): guidance scale, temperature (1 for greedy), top-k, top-p, greedy flag."""

    cfg_scale: Tensor
    temperature: Tensor
    top_k: Tensor
    top_p: Tensor
    greedy: Tensor


def _kth_largest(scores_BxCxV: Tensor, k_B: Tensor) -> Tensor:
    """The k-th largest value of each (row, channel): (B, C, 1)."""
    ordered = scores_BxCxV.sort(dim=-1, descending=True).values
    index = (k_B.clamp(1, scores_BxCxV.shape[-1]) - 1)[:, None, None].expand(*scores_BxCxV.shape[:2], 1)
    return ordered.gather(-1, index)


def process(cond_BxCxV: Tensor, uncond_BxCxV: Tensor, params: SamplingParams, eos_id: int) -> Tensor:
    """Filtered logits float32 (B, C, V): -inf outside the candidates, softmax of the rest is the distribution."""
    scale = params.cfg_scale[:, None, None]
    guided = cond_BxCxV + (cond_BxCxV - uncond_BxCxV) * scale
    # transformers adds the guidance processor only when the scale is not 1; then plain conditional logits remain.
    keep = (guided >= _kth_largest(guided, params.top_k)) | (scale == 1.0)
    scores = cond_BxCxV.masked_fill(~keep, _NEG_INF)
    scores = scores / params.temperature[:, None, None]
    scores = _eos_channel_filter(scores, eos_id)
    scores = scores.masked_fill(scores < _kth_largest(scores, params.top_k), _NEG_INF)
    return _top_p(scores, params.top_p)


def _eos_channel_filter(scores_BxCxV: Tensor, eos_id: int) -> Tensor:
    vocab_V = torch.arange(scores_BxCxV.shape[-1], device=scores_BxCxV.device)
    first_channel_C = torch.arange(scores_BxCxV.shape[1], device=scores_BxCxV.device) == 0
    # Ids from EOS up are special: channel 0 may produce EOS itself, no channel anything above it.
    banned_CxV = torch.where(first_channel_C[:, None], vocab_V[None, :] > eos_id, vocab_V[None, :] >= eos_id)
    scores = scores_BxCxV.masked_fill(banned_CxV, _NEG_INF)
    eos_on_top = (scores.argmax(dim=-1) == eos_id)[..., None]
    # EOS only ever wins as the argmax: then it is the sole candidate, otherwise it is no candidate at all.
    drop = torch.where(eos_on_top, vocab_V < eos_id, vocab_V == eos_id)
    return scores.masked_fill(drop, _NEG_INF)


def _top_p(scores_BxCxV: Tensor, top_p_B: Tensor) -> Tensor:
    # transformers' TopPLogitsWarper: drop the lowest tokens whose ascending cumulative mass is <= 1 - top_p,
    # always keeping the top one; it is skipped at top_p = 1, so rows at 1 stay untouched here too.
    ordered, order = scores_BxCxV.sort(dim=-1, descending=False)
    cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative <= (1 - top_p_B)[:, None, None]
    drop_sorted[..., -1] = False
    drop_sorted &= (top_p_B < 1.0)[:, None, None]
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return scores_BxCxV.masked_fill(drop, _NEG_INF)


def draw(scores_BxCxV: Tensor, noise_BxCxV: Tensor, greedy_B: Tensor) -> Tensor:
    """Token ids int64 (B, C): a sample of softmax(scores) given Exp(1) noise, or the argmax for greedy rows."""
    sampled = (scores_BxCxV.softmax(dim=-1) / noise_BxCxV).argmax(dim=-1)
    return torch.where(greedy_B[:, None], scores_BxCxV.argmax(dim=-1), sampled)
