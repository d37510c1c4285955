"""One Triton kernel for a decode step's next-token choice: guidance, the EOS channel rules, temperature, top-k,
top-p and the draw (sampling.process, then sampling.draw), one block per (request, channel).

Why (bench/profile_step.py on an H100, 2026-11-22): compiled by Inductor, that chain ran about fifteen kernels a
step, three of them radix sorts of the vocabulary, about 100 us of a 1.97 ms step. Here one block holds a
channel's 1028 logits in registers and never sorts: each threshold is found by bisection over the logits' bits
(a float's bits, flipped below zero, order as integers do), each probe a count or a sum over the block.
  - top-k's cut is the k-th largest value: the largest key with at least k keys at or above it;
  - top-p's cut is the smallest kept value: transformers' TopPLogitsWarper drops a token when the ascending
    cumulative mass up to it is <= 1 - top_p, so the kept tokens are those whose mass at or below exceeds it,
    and the smallest such key is found the same way.
Both cuts are values, so ties at a cut are all kept, where torch.sort's order keeps some of a top-p tie (a tie
of float32 logits at that cut); otherwise the result is the chain's up to the rounding of its sums, and the
draw is gpt-fast's exponential race on the same noise. Whether it runs is measured, not assumed: the decoder
times it against the compiled chain at start-up for each batch width (`FusedSampler.tune`) and keeps the faster.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from tts_engine.dia import kernels, sampling

if TYPE_CHECKING:
    from tts_engine.dia.config import DecoderConfig
    from tts_engine.dia.fused import Ops

log = logging.getLogger(__name__)

NEG_INF = float("-inf")
_MINUS_INF = tl.constexpr(NEG_INF)  # what jitted code may read of a global: a constexpr
WARPS = (4, 8)  # warps a block may run on; the tuner times both


@triton.jit
def _key(x):
    """An int32 per float that orders as the floats do (-inf lowest); -0.0 just below +0.0."""
    bits = x.to(tl.int32, bitcast=True)
    return tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)


@triton.jit
def _value(key):
    """The float of a `_key`."""
    bits = tl.where(key >= 0, key, key ^ 0x7FFFFFFF)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _kth_largest(x, k):
    """The k-th largest value of x (1 <= k <= x's length): the largest key with at least k keys at or above it."""
    keys = _key(x)
    lo = tl.min(keys, 0).to(tl.int64)
    hi = tl.max(keys, 0).to(tl.int64)
    while lo < hi:
        mid = lo + (hi - lo + 1) // 2
        if tl.sum((keys >= mid).to(tl.int32), 0) >= k:
            lo = mid
        else:
            hi = mid - 1
    return _value(lo.to(tl.int32))


@triton.jit
def _top_p_cut(x, probs, top_p):
    """The smallest value top-p keeps: the smallest key whose mass at or below it exceeds 1 - top_p (the top
    value always qualifies)."""
    keys = _key(x)
    lo = tl.min(keys, 0).to(tl.int64)
    hi = tl.max(keys, 0).to(tl.int64)
    floor = 1.0 - top_p
    while lo < hi:
        mid = lo + (hi - lo) // 2
        if tl.sum(tl.where(keys <= mid, probs, 0.0), 0) > floor:
            hi = mid
        else:
            lo = mid + 1
    return _value(lo.to(tl.int32))


@triton.jit
def _softmax(x):
    """Softmax, all zeros where every value is -inf: the filters can leave no candidate (a top-1 of the
    guided logits that the channel rules ban), and then the draw takes token 0, as the chain's argmax of NaNs
    does."""
    top = tl.max(x, 0)
    e = tl.exp(x - tl.where(top == _MINUS_INF, 0.0, top))
    total = tl.sum(e, 0)
    return e / tl.where(total > 0, total, 1.0)


def _sample(
    cond_ptr, uncond_ptr, noise_ptr, step_ptr, scale_ptr, temperature_ptr, top_k_ptr, top_p_ptr, greedy_ptr,
    out_ptr, scores_ptr, stride_w, stride_c, stride_ns, stride_nw, stride_nc, channels, eos_id,
    VOCAB: tl.constexpr, BLOCK_V: tl.constexpr, VECTOR: tl.constexpr, SCORES: tl.constexpr,
):  # fmt: skip
    """One (request, channel): its token into out (W, C) int64, and with SCORES its filtered logits into
    scores (W, C, V) float32, -inf outside the candidates (what sampling.process returns).

    VECTOR divides every stride and VOCAB: written as multiples of it, the offsets tell the compiler that rows
    start 16-byte aligned and the mask changes only at whole vectors, so rows load four floats at a time
    (1028 is a multiple of 4 but not of 16, the JIT's only divisibility hint)."""
    w = tl.program_id(0)
    c = tl.program_id(1)
    v = tl.arange(0, BLOCK_V)
    real = v < VOCAB
    at = (w * (stride_w // VECTOR) + c * (stride_c // VECTOR)) * VECTOR + v
    cond = tl.load(cond_ptr + at, mask=real, other=0.0).to(tl.float32)
    uncond = tl.load(uncond_ptr + at, mask=real, other=0.0).to(tl.float32)
    scale = tl.load(scale_ptr + w)
    k = tl.minimum(tl.maximum(tl.load(top_k_ptr + w).to(tl.int32), 1), VOCAB)

    # Guidance (DiaClassifierFreeGuidance): top-k of the guided logits picks the candidates, the conditional
    # logits give their values; transformers leaves the processor out at scale 1, where every token stays.
    scores = tl.where(real, cond, _MINUS_INF)
    if scale != 1.0:
        guided = tl.where(real, cond + (cond - uncond) * scale, _MINUS_INF)
        scores = tl.where(guided >= _kth_largest(guided, k), scores, _MINUS_INF)
    scores = scores / tl.load(temperature_ptr + w)

    # The EOS channel filter: ids from EOS up are special; channel 0 may produce EOS, no channel anything above
    # it; and EOS only ever wins as the argmax, as the sole candidate.
    first = (c == 0).to(tl.int32)
    scores = tl.where(v >= eos_id + first, _MINUS_INF, scores)
    if tl.argmax(scores, 0) == eos_id:
        scores = tl.where(v == eos_id, scores, _MINUS_INF)
    else:
        scores = tl.where(v == eos_id, _MINUS_INF, scores)

    # Top-k again, which only cuts where more than k candidates are left (guidance off, or ties at its cut).
    if tl.sum((scores > _MINUS_INF).to(tl.int32), 0) > k:
        scores = tl.where(scores >= _kth_largest(scores, k), scores, _MINUS_INF)
    top_p = tl.load(top_p_ptr + w)
    if top_p < 1.0:
        scores = tl.where(scores >= _top_p_cut(scores, _softmax(scores), top_p), scores, _MINUS_INF)
    if SCORES:
        tl.store(scores_ptr + (w * channels + c) * VOCAB + v, scores, mask=real)

    # The draw: argmax for greedy rows, else argmax(p / q) with q ~ Exp(1) from the request's generator.
    if tl.load(greedy_ptr + w) != 0:
        token = tl.argmax(scores, 0)
    else:
        step = tl.load(step_ptr)
        noise_at = (step * (stride_ns // VECTOR) + w * (stride_nw // VECTOR) + c * (stride_nc // VECTOR)) * VECTOR
        noise = tl.load(noise_ptr + noise_at + v, mask=real, other=1.0)
        token = tl.argmax(_softmax(scores) / noise, 0)
    tl.store(out_ptr + w * channels + c, token.to(tl.int64))


@dataclass
class FusedSampler:
    """The kernel (compiled for CUDA, or Triton's interpreter on the CPU) and, per batch width it was tuned for,
    its warps or None where the chain it replaces was faster there."""

    kernel: Any
    choices: dict[int, int | None] = field(default_factory=dict)

    def serves(self, width: int) -> bool:
        return self.choices.get(width, WARPS[-1]) is not None

    def __call__(
        self, cond_WxCxV: Tensor, uncond_WxCxV: Tensor, params: sampling.SamplingParams, eos_id: int,
        noise_NxSxCxV: Tensor, step_1: Tensor, *, scores_out: Tensor | None = None, warps: int | None = None,
    ) -> Tensor:  # fmt: skip
        """Token ids int64 (W, C) from the step's conditional and unconditional logits (W, C, V), as
        sampling.draw(sampling.process(...)) gives them, with noise noise[step] (its first W slots).
        `scores_out` (W, C, V) float32, when given, receives the filtered logits."""
        w, c, v = cond_WxCxV.shape
        assert uncond_WxCxV.stride() == cond_WxCxV.stride() and cond_WxCxV.stride(2) == 1
        assert noise_NxSxCxV.stride(3) == 1 and noise_NxSxCxV.shape[1] >= w and noise_NxSxCxV.shape[2:] == (c, v)
        assert scores_out is None or scores_out.is_contiguous()  # the kernel writes it as (W, C, V) rows
        out_WxC = torch.empty((w, c), dtype=torch.long, device=cond_WxCxV.device)
        warps = warps or self.choices.get(w) or WARPS[-1]
        strides = (*cond_WxCxV.stride()[:2], *noise_NxSxCxV.stride()[:3])
        self.kernel[(w, c)](
            cond_WxCxV, uncond_WxCxV, noise_NxSxCxV, step_1, params.cfg_scale, params.temperature, params.top_k,
            params.top_p, params.greedy, out_WxC, out_WxC if scores_out is None else scores_out, *strides, c,
            eos_id, VOCAB=v, BLOCK_V=triton.next_power_of_2(v),
            VECTOR=_vector(v, strides, cond_WxCxV, uncond_WxCxV, noise_NxSxCxV), SCORES=scores_out is not None,
            num_warps=warps,
        )  # fmt: skip
        return out_WxC

    def tune(self, widths: Iterable[int], dec: DecoderConfig, ops: Ops, device: torch.device) -> None:
        """Time the kernel on each of its warp counts against `ops`' process and draw at each batch width, as a
        captured step runs them, and keep the fastest (CUDA)."""
        from tts_engine.dia.timing import graph_timer

        for width in widths:
            if width in self.choices:
                continue
            inputs = _Inputs.random(width, dec.num_channels, dec.vocab_size, dec.eos_id, device)
            chain = graph_timer(inputs.chain(ops))
            timed = {warps: graph_timer(inputs.fused(self, warps)) for warps in WARPS}
            best = min(timed, key=timed.__getitem__)
            self.choices[width] = best if timed[best] < chain else None
            log_line = "fused sampling at width %d: %.1f us on %d warps against the chain's %.1f us"
            log.info(log_line, width, timed[best] * 1e6, best, chain * 1e6)


def _vector(vocab: int, strides: tuple[int, ...], *tensors: Tensor) -> int:
    """4 where every row of the float32 inputs starts 16-byte aligned and the vocabulary is whole vectors."""
    aligned = all(t.element_size() == 4 and t.data_ptr() % 16 == 0 for t in tensors)
    return 4 if aligned and vocab % 4 == 0 and all(stride % 4 == 0 for stride in strides) else 1


@dataclass(frozen=True)
class _Inputs:
    """A step's worth of sampling inputs: logits with an EOS on top here and there, typical settings."""

    cond: Tensor
    uncond: Tensor
    params: sampling.SamplingParams
    noise: Tensor
    step: Tensor
    eos_id: int

    @classmethod
    def random(cls, width: int, channels: int, vocab: int, eos_id: int, device: torch.device) -> _Inputs:
        gen = torch.Generator(device=device).manual_seed(0)
        cond = torch.randn((width, channels, vocab), device=device, generator=gen) * 3
        uncond = cond + torch.randn((width, channels, vocab), device=device, generator=gen)
        cond[::3, 0, eos_id] = cond[::3, 0].amax(-1) + 5
        params = sampling.SamplingParams(
            cfg_scale=torch.full((width,), 3.0, device=device),
            temperature=torch.full((width,), 1.2, device=device),
            top_k=torch.full((width,), 45, dtype=torch.long, device=device),
            top_p=torch.full((width,), 0.95, device=device),
            greedy=torch.zeros(width, dtype=torch.bool, device=device),
        )
        noise = torch.empty((2, width, channels, vocab), device=device).exponential_(generator=gen)
        return cls(cond, uncond, params, noise, torch.ones(1, dtype=torch.long, device=device), eos_id)

    def step_noise(self) -> Tensor:
        """noise[step]: what the chain draws with (the kernel indexes it itself)."""
        return self.noise.index_select(0, self.step).squeeze(0)

    def chain(self, ops: Ops) -> Callable[[], Tensor]:
        def run() -> Tensor:
            scores = ops.process(self.cond, self.uncond, self.params, self.eos_id)
            return ops.draw(scores, self.step_noise(), self.params.greedy)

        return run

    def fused(self, sampler: FusedSampler, warps: int) -> Callable[..., Tensor]:
        return functools.partial(
            sampler, self.cond, self.uncond, self.params, self.eos_id, self.noise, self.step, warps=warps
        )


def check(sampler: FusedSampler, channels: int, vocab: int, eos_id: int, device: torch.device) -> str | None:
    """Why the kernel cannot serve here (it fails to compile, or its tokens or filtered logits differ from
    sampling.process and sampling.draw on random logits), or None. Run once at load."""
    inputs = _Inputs.random(4, channels, vocab, eos_id, device)
    inputs.params.greedy[1] = True
    inputs.params.cfg_scale[2] = 1.0
    inputs.params.top_p[3] = 1.0
    expected_scores = sampling.process(inputs.cond, inputs.uncond, inputs.params, eos_id)
    expected = sampling.draw(expected_scores, inputs.step_noise(), inputs.params.greedy)
    scores = torch.empty_like(expected_scores)
    try:
        tokens = inputs.fused(sampler, WARPS[-1])(scores_out=scores)
    except Exception as exc:  # Triton's compile errors have no common type
        return f"{type(exc).__name__}: {exc}"
    kept, expected_kept = scores > NEG_INF, expected_scores > NEG_INF
    if not torch.equal(kept, expected_kept):
        return f"it keeps other candidates ({int((kept != expected_kept).sum())} of {kept.numel()} differ)"
    if not torch.allclose(scores[kept], expected_scores[kept], rtol=1e-5, atol=1e-5):
        return "its filtered logits differ"
    if not torch.equal(tokens, expected):
        return f"it draws other tokens ({int((tokens != expected).sum())} of {tokens.numel()} differ)"
    return None


def for_device(device: torch.device) -> FusedSampler:
    """A sampler for `device`, untuned: compiled by Triton for CUDA; on the CPU only under Triton's interpreter."""
    if device.type != "cuda" and not kernels.interpreting():
        raise RuntimeError("the fused sampler runs on CUDA, or on the CPU with TRITON_INTERPRET=1 (for tests)")
    return FusedSampler(triton.jit(_sample))


def checked(dec: DecoderConfig, device: torch.device) -> FusedSampler | None:
    """A sampler for `device` if it passes its check there, else None and a warning (steps keep the chain)."""
    sampler = for_device(device)
    problem = check(sampler, dec.num_channels, dec.vocab_size, dec.eos_id, device)
    if problem is not None:
        log.warning("fused sampler unavailable, sampling through the chain: %s", problem)
        return None
    return sampler
