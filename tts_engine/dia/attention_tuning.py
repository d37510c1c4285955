"""Choosing where split attention runs as a programmatic dependent launch (kernels.DecodeKernels.dependent):
at each row count a decoder steps, timed on this GPU, kept only where strictly faster.

Launched as one (Hopper on), an attention block may start while the kernel before it still runs, and asks L2
for the first tile of its split's keys and values meanwhile; the q/k/v projection before self-attention and the
query projection before cross-attention let it in early where they are dependent launches themselves. Whether
that pays depends on what shares the GPU then, so it is measured as a step runs it: both attentions of every
layer, each with the output projection after it as the tuned step runs it, replayed as a captured graph
(timing.graph_timer). The dependent launch must give the same bits as the plain one first: a prefetch changes
nothing it computes.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from tts_engine.dia import fused
from tts_engine.dia.cache import CrossCache, SelfCache
from tts_engine.dia.kernels import DecodeKernels
from tts_engine.dia.timing import Timer, graph_timer

if TYPE_CHECKING:
    from tts_engine.dia.model import DiaModel

log = logging.getLogger(__name__)


def tune(
    model: DiaModel, caches: Mapping[int, tuple[SelfCache, CrossCache]], self_span: int, cross_span: int, *,
    timer: Timer = graph_timer, capable: bool | None = None,
) -> None:  # fmt: skip
    """For each row count of `caches` (rows: the caches a step of that many rows reads), time the model's
    attention as plain and as dependent launches over `self_span` cached keys and `cross_span` text bytes, and
    keep the dependent launch where faster. The caches must hold nothing yet (a new decoder's): the timings fill
    them with random keys and values, and leave them zero. A no-op without the decode kernels, batch-invariant
    ones, or dependent launches (a GPU before Hopper, or turned off: DecodeKernels.trigger; `capable` overrides
    it, for tests)."""
    kernels = model.ops.kernels
    if kernels is None or kernels.invariant_span is not None:
        return
    if not (kernels.trigger if capable is None else capable):
        return
    chosen = set(kernels.dependent)
    for rows, (cache, cross) in sorted(caches.items()):
        layers = _Layers.random(model, cache, cross, rows, self_span, cross_span)
        try:
            faster = _faster(layers, model.ops, kernels, rows, timer)
        finally:
            layers.clear()
        if faster:
            chosen.add(rows)
        else:
            chosen.discard(rows)
    model.ops = dataclasses.replace(model.ops, kernels=dataclasses.replace(kernels, dependent=frozenset(chosen)))


def _faster(layers: _Layers, ops: fused.Ops, kernels: DecodeKernels, rows: int, timer: Timer) -> bool:
    """Whether attention at `rows` rows, as a dependent launch, agrees with the plain launch and is faster."""
    plain = dataclasses.replace(ops, kernels=dataclasses.replace(kernels, dependent=frozenset()))
    trial = dataclasses.replace(ops, kernels=dataclasses.replace(kernels, dependent=frozenset({rows})))
    try:
        if not torch.equal(torch.cat(layers.run(trial)), torch.cat(layers.run(plain))):
            log.warning("split attention as a dependent launch differs at %d rows: left out", rows)
            return False
        before, after = timer(functools.partial(layers.run, plain)), timer(functools.partial(layers.run, trial))
    except Exception as exc:  # a Triton or driver that cannot build, launch or capture it here
        log.warning("split attention as a dependent launch failed at %d rows, left out: %s", rows, exc)
        return False
    log.info(
        "attention and output projections at %d rows through the layers: %.1f us, as dependent launches "
        "%.1f us%s", rows, before * 1e6, after * 1e6, " (kept)" if after < before else " (slower: not kept)",
    )  # fmt: skip
    return after < before


@dataclass(frozen=True)
class _Layers:
    """Random queries for both attentions of every layer, at full spans over a decoder's own caches (random keys
    and values there, so that a launch that computes something else shows)."""

    model: DiaModel
    cache: SelfCache
    cross: CrossCache
    q_RxHxE: Tensor
    q_Rx1xF: Tensor
    self_lengths_R: Tensor
    cross_lengths_R: Tensor
    self_span: int
    cross_span: int

    @classmethod
    def random(
        cls, model: DiaModel, cache: SelfCache, cross: CrossCache, rows: int, self_span: int, cross_span: int
    ) -> _Layers:
        layer = model.decoder().typed_layers()[0]
        attention, crossing = layer.self_attention, layer.cross_attention
        param = next(model.parameters())
        gen = torch.Generator(device=param.device).manual_seed(0)
        shape = (rows, attention.heads, attention.head_dim)
        q = torch.randn(shape, generator=gen, device=param.device).to(param.dtype)
        q_cross = torch.randn((rows, 1, crossing.heads * crossing.head_dim), generator=gen, device=param.device)
        layers = cls(
            model, cache, cross, q, q_cross.to(param.dtype),
            torch.full((rows,), self_span, device=param.device), torch.full((rows,), cross_span, device=param.device),
            self_span, cross_span,
        )  # fmt: skip
        for region in layers.regions():
            region.copy_(torch.randn(region.shape, generator=gen, device=param.device))
        return layers

    def regions(self) -> list[Tensor]:
        """The parts of the caches the layers read."""
        rows = self.q_RxHxE.shape[0]
        caches = [(self.cache.k + self.cache.v, self.self_span), (self.cross.k + self.cross.v, self.cross_span)]
        return [part[:rows, :, :span] for parts, span in caches for part in parts]

    def clear(self) -> None:
        """Zeroes what `random` filled."""
        for region in self.regions():
            region.zero_()

    def run(self, ops: fused.Ops) -> list[Tensor]:
        """Each layer's self- and cross-attention, with their output projections, through `ops`."""
        rows = self.q_RxHxE.shape[0]
        outputs = []
        for i, layer in enumerate(self.model.decoder().typed_layers()):
            k, v = self.cache.k[i][:rows], self.cache.v[i][:rows]
            outputs.append(layer.self_attention.step(self.q_RxHxE, k, v, self.self_lengths_R, self.self_span, ops))
            k, v = (c[i][:rows, :, : self.cross_span] for c in (self.cross.k, self.cross.v))
            outputs.append(layer.cross_attention.step(self.q_Rx1xF, k, v, self.cross_lengths_R, ops))
        return outputs
