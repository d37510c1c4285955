"""The elementwise glue of a decode step as pure functions, which torch.compile fuses into a kernel each on CUDA.

Profiled on an H100 (bench/profile_step.py, 2026-11-22): an eager bf16 decode step at batch 1 launched 1168
kernels, about 1040 of them small elementwise ones (float32 norms, RoPE, casts, masks) costing ~2 ms of its
3.8 ms, while the weight matmuls took 1.2 ms. Inside a CUDA graph launches are free but each kernel still
costs its few microseconds, so the fix is fewer kernels: gpt-fast compiles the whole step; we compile only
these small functions, a step's inputs, the sampling chain, the draw and the ending rules (dynamic shapes, so
one compilation serves every layer, batch width and span). Attention, the cache writes, the projections and
sampling have their own Triton kernels (kernels.py, linear.py, sample_kernel.py), which `Ops` carries too once
chosen.

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
    from tts_engine.dia.persistent_layers import PersistentLayers
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


def step_inputs(
    grid_BxPxC: Tensor, at_W: Tensor, pos_W: Tensor, table_NxD: Tensor, vocab: int
) -> tuple[Tensor, Tensor]:
    """A decode step's inputs for slots at_W, each at its position pos_W of the token grid: the tokens embedded
    (channel c's token v is row c * vocab + v of the table, model.MultiChannelEmbedding) and summed over the
    channels, and the positions, each repeated for the slot's two rows (conditional, then unconditional):
    ((2W, 1, D), (2W, 1)). Each slot's tokens are embedded once for both rows. Eager, several small kernels (the
    gathers, the channels' sum, the stacks; the step before took a dozen, two repeat_interleaves among them);
    compiled, one or two."""
    tokens_WxC = grid_BxPxC[at_W, pos_W]
    offsets_C = torch.arange(tokens_WxC.shape[1], device=tokens_WxC.device) * vocab
    x_WxD = F.embedding(tokens_WxC + offsets_C, table_NxD).sum(dim=1)
    w, d = x_WxD.shape
    # Stacked, not expanded: at one slot an expanded view reshapes to rows of stride 0, which the kernels that
    # read positions and rows by offset would not see.
    return torch.stack((x_WxD, x_WxD), dim=1).view(2 * w, 1, d), torch.stack((pos_W, pos_W), dim=1).view(2 * w, 1)


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


class _StepOutputs(Protocol):
    def __call__(
        self, next_WxC: Tensor, grid_BxPxC: Tensor, forced_BxPxC: Tensor, at_W: Tensor, pos_W: Tensor, eos_W: Tensor,
        last_W: Tensor, live_W: Tensor, delays_C: Tensor, noise_step_1: Tensor, positions: int, rules: ending.Rules,
    ) -> None: ...  # fmt: skip


class _StepInputs(Protocol):
    def __call__(
        self, grid_BxPxC: Tensor, at_W: Tensor, pos_W: Tensor, table_NxD: Tensor, vocab: int
    ) -> tuple[Tensor, Tensor]: ...


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
    step_outputs: _StepOutputs  # the ending rules and bookkeeping of a step (ending.step_outputs)
    compiled: bool
    kernels: DecodeKernels | None = None  # decode-step attention and cache writes (kernels.py), when chosen
    linear: _Linear = linear  # the decoder's projections; linear.SkinnyLinear where tuned (CUDA)
    sampler: FusedSampler | None = None  # process and draw in one kernel (sample_kernel.py), where it serves
    step_inputs: _StepInputs = step_inputs  # a decoder step's embedded tokens and positions (step_inputs)
    # every decoder layer of a one-request step as one persistent kernel (megakernel.py), where turned on
    persistent: PersistentLayers | None = None


EAGER = Ops(
    rms_norm, add_rms_norm, rope, silu_mul, sampling.process, sampling.draw, ending.step_outputs, compiled=False
)


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
        torch.compile(ending.step_outputs, dynamic=True),
        compiled=True,
        step_inputs=torch.compile(step_inputs, dynamic=True, fullgraph=True),
    )
