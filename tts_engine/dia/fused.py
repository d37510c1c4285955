"""The elementwise glue of a decode step as pure functions, which torch.compile fuses into a kernel each on CUDA.

Profiled on an H100 (bench/profile_step.py, 2026-11-22): an eager bf16 decode step at batch 1 launched 1168
kernels, about 1040 of them small elementwise ones (float32 norms, RoPE, casts, masks) costing ~2 ms of its
3.8 ms, while the weight matmuls took 1.2 ms. Inside a CUDA graph launches are free but each kernel still
costs its few microseconds, so the fix is fewer kernels: gpt-fast compiles the whole step; we compile only
these small functions, the sampling chain, the draw and the ending rules (dynamic shapes, so one compilation
serves every layer, batch width and span). Attention, the cache writes, the projections and sampling have
their own Triton kernels (kernels.py, linear.py, sample_kernel.py), which `Ops` carries too once chosen.

The plain functions are the semantics (transformers' DiaRMSNorm in float32, rotate_half RoPE) and are what
runs on CPU; `compiled()` gives the same functions through torch.compile.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from tts_engine.dia import ending, sampling

if TYPE_CHECKING:
    from tts_engine.dia.kernels import DecodeKernels
    from tts_engine.dia.sample_kernel import FusedSampler


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    # Statistics in float32 whatever the compute dtype, as transformers' DiaRMSNorm does.
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def add_rms_norm(x: Tensor, delta: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """The residual sum and its norm: (x + delta, rms_norm(x + delta))."""
    total = x + delta
    return total, rms_norm(total, weight, eps)


def rope(x_RxHxTxE: Tensor, cos_Rx1xTxE: Tensor, sin_Rx1xTxE: Tensor) -> Tensor:
    """Half-split rotary embedding (transformers' rotate_half)."""
    half = x_RxHxTxE.shape[-1] // 2
    rotated = torch.cat((-x_RxHxTxE[..., half:], x_RxHxTxE[..., :half]), dim=-1)
    return x_RxHxTxE * cos_Rx1xTxE + rotated * sin_Rx1xTxE


def linear(x: Tensor, weight: Tensor) -> Tensor:
    """A bias-free projection, x @ weight^T (every Dia projection is bias-free)."""
    return F.linear(x, weight)


def rowwise_linear(x: Tensor, weight: Tensor) -> Tensor:
    """`linear` one batch row (x's first dimension) at a time, so a row's result never depends on which rows
    share the call.

    A BLAS picks its kernel, and with it the order of each dot product's sums, by the matrix shape: MKL on a
    CPU without AVX-512 (or with it, for other shapes) gives a row other low bits at 4 rows than at 2, and one
    such bit can flip a sampled token. Slower (the weights are read once per row), so only for the engine's
    batch-invariant mode, as vLLM's VLLM_BATCH_INVARIANT and SGLang's deterministic inference do it.
    """
    return torch.cat([F.linear(row, weight) for row in x.split(1)])


def silu_mul(gate_up: Tensor) -> Tensor:
    """The gated-SiLU of a fused gate/up projection: up * silu(gate)."""
    gate, up = gate_up.chunk(2, dim=-1)
    return up * F.silu(gate)


class _Norm(Protocol):
    def __call__(self, x: Tensor, weight: Tensor, eps: float) -> Tensor: ...


class _AddNorm(Protocol):
    def __call__(self, x: Tensor, delta: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]: ...


class _Rope(Protocol):
    def __call__(self, x_RxHxTxE: Tensor, cos_Rx1xTxE: Tensor, sin_Rx1xTxE: Tensor) -> Tensor: ...


class _Unary(Protocol):
    def __call__(self, gate_up: Tensor) -> Tensor: ...


class _Linear(Protocol):
    def __call__(self, x: Tensor, weight: Tensor) -> Tensor: ...


class _Draw(Protocol):
    def __call__(self, scores_BxCxV: Tensor, noise_BxCxV: Tensor, greedy_B: Tensor) -> Tensor: ...


class _Advance(Protocol):
    def __call__(
        self, next_WxC: Tensor, new_pos_W: Tensor, pos_W: Tensor, eos_W: Tensor, last_W: Tensor, live_W: Tensor,
        delays_C: Tensor, forced_WxC: Tensor, current_WxC: Tensor, rules: ending.Rules,
    ) -> tuple[Tensor, Tensor, Tensor]: ...  # fmt: skip


class _Process(Protocol):
    def __call__(
        self, cond_BxCxV: Tensor, uncond_BxCxV: Tensor, params: sampling.SamplingParams, eos_id: int
    ) -> Tensor: ...


@dataclass(frozen=True)
class Ops:
    """One implementation of each piece: the plain functions (EAGER) or their compiled forms."""

    rms_norm: _Norm
    add_rms_norm: _AddNorm
    rope: _Rope
    silu_mul: _Unary
    process: _Process  # the sampling chain (sampling.process): a few dozen small kernels when not compiled
    draw: _Draw  # the draw from the processed scores (sampling.draw)
    advance: _Advance  # the ending rules and bookkeeping of a step (ending.advance)
    compiled: bool
    kernels: DecodeKernels | None = None  # decode-step attention and cache writes (kernels.py), when chosen
    linear: _Linear = linear  # the decoder's projections; linear.SkinnyLinear where tuned (CUDA)
    sampler: FusedSampler | None = None  # process and draw in one kernel (sample_kernel.py), where it serves


EAGER = Ops(rms_norm, add_rms_norm, rope, silu_mul, sampling.process, sampling.draw, ending.advance, compiled=False)


@functools.cache
def compiled() -> Ops:
    """The pieces through torch.compile (Inductor), compiled lazily at their first call; one set per process."""

    return Ops(
        torch.compile(rms_norm, dynamic=True, fullgraph=True),
        torch.compile(add_rms_norm, dynamic=True, fullgraph=True),
        torch.compile(rope, dynamic=True, fullgraph=True),
        torch.compile(silu_mul, dynamic=True, fullgraph=True),
        torch.compile(sampling.process, dynamic=True),
        torch.compile(sampling.draw, dynamic=True),
        torch.compile(ending.advance, dynamic=True),
        compiled=True,
    )
