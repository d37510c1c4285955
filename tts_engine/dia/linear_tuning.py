"""Choosing the skinny matmul's kernels (linear.py) on this GPU: every candidate block shape timed against
cuBLAS for each group of same-shape weights at each row count, and each fused form against the kernels it
replaces; only what is strictly faster is kept, and only after it agrees with the path it would replace.

Each timing runs through the whole group (one weight per layer), as a step does, so the weights come from
memory rather than from L2, and as replays of a captured CUDA graph (timing.graph_timer), as a step runs them.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from tts_engine.dia import fused, kernel_step, linear
from tts_engine.dia.linear import (
    FORMS,
    GATED,
    MAX_ROWS,
    NORM,
    NORM_GATED,
    PLAIN,
    ROPED,
    Config,
    Group,
    RopeWrite,
    SkinnyLinear,
)  # fmt: skip
from tts_engine.dia.timing import graph_timer

log = logging.getLogger(__name__)

T = TypeVar("T")


def through(matmul: Callable[[T], object], group: Sequence[T]) -> Callable[[], None]:
    """One call that multiplies by every weight of the group (or the weight of each layer index) in turn."""

    def run() -> None:
        for item in group:
            matmul(item)

    return run


def tune(skinny: SkinnyLinear, groups: Iterable[Group], rows: Iterable[int], ops: fused.Ops) -> None:
    """Time cuBLAS and every candidate for each group of same-shape weights (one per layer) at each row
    count, and keep the fastest. Each timing runs through the whole group, as a step does, so the weights
    come from memory rather than from L2. For a NORM group, then the fused kernel against what it replaces:
    `ops`' add_rms_norm followed by the projection just chosen; for the q/k/v group, its form with RoPE and the
    cache write against those and kernels.rope_write; for the gate/up group, its two forms with the activation
    (with and without the norm) against the norm, the projection and `ops`' silu_mul."""
    if skinny.invariant:
        _tune_shapes(skinny, groups)
        return
    row_counts = sorted({r for r in rows if r <= MAX_ROWS})
    for group in groups:
        n, k = group.weights[0].shape
        for r in row_counts:
            if (PLAIN, r, n, k) not in skinny.tuned:
                _tune_plain(skinny, group.weights, r)
            if group.gated and (NORM_GATED, r, n, k) not in skinny.tuned:
                _tune_gated(skinny, group, r, ops)
            elif not group.gated and group.prologue == NORM and (NORM, r, n, k) not in skinny.tuned:
                _tune_normed(skinny, group, r, ops)
            if group.rope is not None and ops.kernels is not None and (ROPED, r, n, k) not in skinny.tuned:
                _tune_roped(skinny, group, r, ops)


def _tune_plain(skinny: SkinnyLinear, weights: Sequence[Tensor], r: int) -> None:
    n, k = weights[0].shape
    x = torch.randn(r, k, device=weights[0].device, dtype=weights[0].dtype)
    cublas = skinny.timer(through(functools.partial(F.linear, x), weights))
    best = _fastest(cublas, time_candidates(skinny, x, weights), "matmul", weights, r)
    skinny.tuned.add((PLAIN, r, n, k))
    if best is not None:
        skinny.choices[(r, n, k)] = best


def _tune_normed(skinny: SkinnyLinear, group: Group, r: int, ops: fused.Ops) -> None:
    weights, eps = group.weights, group.eps
    n, k = weights[0].shape
    x, delta = (torch.randn(r, k, device=weights[0].device, dtype=weights[0].dtype) for _ in range(2))

    def before(i: int) -> Tensor:  # for layer i, the norm the fused form replaces
        return ops.add_rms_norm(x, delta, group.norms[i], eps)[1]

    def fused_form(i: int, config: Config) -> Tensor:
        return skinny.run_normed(x, delta, group.norms[i], eps, weights[i], config=config)[0]

    separate = skinny.timer(through(lambda i: skinny(before(i), weights[i]), range(len(weights))))
    expected = F.linear(before(0), weights[0])
    _keep(skinny, [_race(skinny, (NORM, r, n, k), weights, separate, fused_form, lambda c: fused_form(0, c), expected)])


def _tune_gated(skinny: SkinnyLinear, group: Group, r: int, ops: fused.Ops) -> None:
    """The gate/up projection with the activation in its epilogue, with the norm in its prologue (NORM_GATED)
    and after the norm's kernel (GATED), each against the three kernels a step runs without them: the norm,
    the projection as chosen and silu_mul. The fastest of all is kept where it beats them."""
    weights, eps = group.weights, group.eps
    n, k = weights[0].shape
    x, delta = (torch.randn(r, k, device=weights[0].device, dtype=weights[0].dtype) for _ in range(2))

    def normed(i: int) -> Tensor:
        return ops.add_rms_norm(x, delta, group.norms[i], eps)[1]

    def apart(i: int) -> Tensor:
        return ops.silu_mul(skinny(normed(i), weights[i]))

    def all_in_one(i: int, config: Config) -> Tensor:
        return skinny.run_normed(x, delta, group.norms[i], eps, weights[i], config=config, gated=True)[0]

    def after_norm(i: int, config: Config) -> Tensor:
        return skinny.run_gated(normed(i), weights[i], config=config)

    assert group.prologue == NORM, "the gate/up projection follows a norm"
    expected = ops.silu_mul(F.linear(normed(0), weights[0]))
    races = []
    for form, fused_form in ((NORM_GATED, all_in_one), (GATED, after_norm)):
        separate = skinny.timer(through(apart, range(len(weights))))  # each race beside its own baseline
        result = functools.partial(fused_form, 0)
        races.append(_race(skinny, (form, r, n, k), weights, separate, fused_form, result, expected))
    _keep(skinny, races)


def _tune_roped(skinny: SkinnyLinear, group: Group, r: int, ops: fused.Ops) -> None:
    """The q/k/v projection with its norm, RoPE and the cache write in one kernel (`SkinnyLinear.roped`)
    against what a step runs without it: the norm and the projection as chosen (fused or not), then
    kernels.rope_write. Checked on the queries and on both caches, written at a position per row."""
    weights, rope, kernels = group.weights, group.rope, ops.kernels
    assert rope is not None and kernels is not None and group.prologue == NORM
    step_ops = dataclasses.replace(ops, linear=skinny)  # the projections as a step runs them
    n, k = weights[0].shape
    device, dtype = weights[0].device, weights[0].dtype
    x, delta = (torch.randn(r, k, device=device, dtype=dtype) for _ in range(2))
    head_dim, positions = rope.table.shape[2], min(8, rope.table.shape[1])
    caches = torch.zeros(2, r, rope.kv_heads, positions, head_dim, device=device, dtype=dtype)
    pos_R = torch.arange(r, device=device) % positions

    def before(i: int) -> Tensor:
        qkv = kernel_step.normed(step_ops, x, delta, group.norms[i], group.eps, weights[i])[0]
        return kernels.rope_write(qkv.view(r, -1), rope.table, pos_R, caches[0], caches[1], rope.heads)

    def fused_form(i: int, config: Config) -> Tensor:
        write = RopeWrite(rope.table, pos_R, caches[0], caches[1], rope.heads)
        return skinny.run_normed(x, delta, group.norms[i], group.eps, weights[i], config=config, rope=write)[0]

    def written(queries: Callable[[], Tensor]) -> Tensor:
        """The queries and both caches, from zeroed caches."""
        caches.zero_()
        return torch.cat([queries().flatten(), caches.flatten()])

    separate = skinny.timer(through(before, range(len(weights))))
    expected = written(lambda: before(0))

    def result(config: Config) -> Tensor:
        return written(lambda: fused_form(0, config))

    _keep(skinny, [_race(skinny, (ROPED, r, n, k), weights, separate, fused_form, result, expected)])


Key = tuple[int, int, int, int]  # (form, rows, N, K)
Won = tuple[float, Key, Config]  # a race's winner: its seconds through the layers, its form, its block shape


def _race(
    skinny: SkinnyLinear, key: Key, weights: Sequence[Tensor], separate: float,
    fused_form: Callable[[int, Config], Tensor], result: Callable[[Config], Tensor], expected: Tensor,
) -> Won | None:  # fmt: skip
    """Each candidate of the fused form `key` (form, rows, N, K), run through every layer, against `separate`
    (the kernels it replaces, timed alike); a candidate whose `result` disagrees with `expected` is out. `key`
    is then tuned; its fastest candidate is returned where it won."""
    form, r, n, _ = key

    def together(config: Config) -> Callable[[], None]:
        return through(lambda i: fused_form(i, config), range(len(weights)))

    # The roped form's result is the queries and caches, not (r, n): it names its outputs.
    timings = _time_each(skinny, together, result, expected, r, form, n=n if form == ROPED else None)
    best = _fastest(separate, timings, FORMS[form], weights, r)
    skinny.tuned.add(key)
    return None if best is None else (timings[best], key, best)


def _keep(skinny: SkinnyLinear, races: Sequence[Won | None]) -> None:
    """The fastest of the races' winners, if any won: forms of one projection that replace the same kernels
    (the first listed where two tie)."""
    won = [race for race in races if race is not None]
    if won:
        _, key, config = min(won, key=lambda race: race[0])
        skinny.fusions[key] = config


def _fastest(
    baseline: float, timings: dict[Config, float], what: str, weights: Sequence[Tensor], r: int
) -> Config | None:
    """The fastest candidate where it is strictly faster than the baseline (cuBLAS, or the unfused kernels)."""
    fastest = min(timings, key=timings.__getitem__, default=None)
    best = None if fastest is None or timings[fastest] >= baseline else fastest
    n, k = weights[0].shape
    ours = "none ran" if fastest is None else f"{timings[fastest] / len(weights) * 1e6:.1f} us with {fastest}"
    verdict = "" if fastest is None else " (kept)" if best is not None else " (slower: not kept)"
    log.info(
        "%s %dx%d at %d rows: as before %.1f us, ours %s%s", what, n, k, r, baseline / len(weights) * 1e6, ours,
        verdict,
    )  # fmt: skip
    return best


def _tune_shapes(skinny: SkinnyLinear, groups: Iterable[Group]) -> None:
    """Invariant mode: the fastest block shape for each weight shape, timed at MAX_ROWS-row blocks (as
    every call runs), kept for every row count."""
    for group in groups:
        weights = group.weights
        n, k = weights[0].shape
        if (n, k) in skinny.shapes or (skinny.timer is graph_timer and weights[0].device.type != "cuda"):
            continue  # chosen already, or no GPU to time on (the interpreter's tests): the default serves
        x = torch.randn(2, k, device=weights[0].device, dtype=weights[0].dtype)
        timings = time_candidates(skinny, x, weights, block_m=MAX_ROWS)
        if timings:
            skinny.shapes[(n, k)] = min(timings, key=timings.__getitem__)
            log.info("batch-invariant matmul %dx%d: %s", n, k, skinny.shapes[(n, k)])


def time_candidates(
    skinny: SkinnyLinear, x: Tensor, group: Sequence[Tensor], *, block_m: int | None = None
) -> dict[Config, float]:
    """Seconds of each candidate block shape through the whole group (see _time_each)."""

    def calls(config: Config) -> Callable[[], None]:
        return through(functools.partial(skinny.run, x, config=config, block_m=block_m), group)

    def result(config: Config) -> Tensor:
        return skinny.run(x, group[0], config=config, block_m=block_m)

    rows = block_m or x.numel() // x.shape[-1]
    return _time_each(skinny, calls, result, F.linear(x, group[0]), rows, PLAIN)


def _time_each(
    skinny: SkinnyLinear, calls: Callable[[Config], Callable[[], None]], result: Callable[[Config], Tensor],
    expected: Tensor, rows: int, form: int, *, n: int | None = None,
) -> dict[Config, float]:  # fmt: skip
    """Seconds of `calls(config)` for each candidate whose `result` agrees with `expected` (the path it would
    replace, on the group's first weight); one that needs more shared memory than a block may have on this
    GPU, fails to compile, or computes something else (a miscompilation: fast is no use then) is left out.
    Where the GPU has programmatic dependent launches, the fastest also as one (linear.Config.pdl): one more
    timing a projection, where each candidate twice would double the start-up's compilations. `n`: the
    projection's outputs, where `expected` is not (rows, n)."""
    timings: dict[Config, float] = {}
    limit = linear.shared_limit(expected.device)
    block_m = linear.block_rows(rows)
    what = FORMS[form]

    def time(config: Config) -> None:
        if limit is not None and config.shared_bytes(block_m, expected.element_size(), form) > limit:
            return
        try:
            right = agrees(result(config), expected)
            if config.splits > 1:  # counts left non-zero (no block found itself last) break the next launch
                right = right and not skinny.counters(expected.device).any()
            if not right:
                log.warning("%s %s gives wrong results for %s rows x %s: left out", what, config, rows, expected.shape)
                return
            timings[config] = skinny.timer(calls(config))
        except Exception as exc:  # a block shape this GPU cannot compile is simply no candidate
            log.warning("%s %s failed for %s: %s", what, config, tuple(expected.shape), exc)

    for config in linear.candidates(n or expected.shape[-1]):
        time(config)
    if timings and skinny.dependent and linear.pdl_capable(expected.device):
        time(dataclasses.replace(min(timings, key=timings.__getitem__), pdl=True))
    return timings


def agrees(actual: Tensor, expected: Tensor) -> bool:
    """Equal within a few roundings of the activations' dtype, relative to the largest value: what the same
    product summed in another order gives (a miscompiled kernel is off by far more)."""
    tolerance = 1e-3 if expected.dtype == torch.float32 else 3e-2
    error = (actual.float() - expected.float()).abs().max().item()
    return bool(actual.shape == expected.shape and error <= tolerance * (expected.float().abs().max().item() + 1))
