"""Where split attention runs as a programmatic dependent launch (tts_engine/dia/attention_tuning.py): the race
on a real tiny model's attention and output projections, through the decode kernels (in Triton's interpreter
on the CPU).

Triton's interpreter, and GPUs before Hopper, have no dependent launches (no `launch_pdl`, no griddepcontrol),
so a stand-in runs each attention launch plainly and notes whether it was asked as a dependent one: what these
tests isolate is the choice and what the decode step then launches. The dependent kernel itself is compiled
for an H100 and read by tests/engine/test_kernel_build.py, and run against the plain one by the last test here,
on a Hopper GPU.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
import torch

from tests.engine.conftest import Checkpoint
from tests.engine.stand_ins import Plainly, counting_timer
from tts_engine.dia.cache import CrossCache, SelfCache
from tts_engine.dia.model import DiaModel
from tts_engine.engine import Engine

kernels = pytest.importorskip("tts_engine.dia.kernels", reason="triton is not installed")
attention_tuning = pytest.importorskip("tts_engine.dia.attention_tuning", reason="triton is not installed")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ROWS = (2, 4)
SELF_SPAN, CROSS_SPAN = 40, 24


def _model(folder: Path, asked: list[bool], skew: bool = False, fail: bool = False) -> DiaModel:
    model = Engine.load(folder, DEVICE, "float32", use_cuda_graphs=False, decode_kernels=True).model
    assert model.ops.kernels is not None
    # With `skew`, the attention scale (the launch's last argument) doubled.
    stand_in = Plainly(model.ops.kernels.split_attention, "DEPENDENT", asked, skew=skew, fail=fail)
    model.ops = dataclasses.replace(model.ops, kernels=dataclasses.replace(model.ops.kernels, split_attention=stand_in))
    return model


def _caches(model: DiaModel) -> tuple[SelfCache, CrossCache]:
    cfg, rows = model.cfg, max(ROWS)
    cache = SelfCache.allocate(cfg, rows=rows, length=SELF_SPAN + 8, device=DEVICE, dtype=torch.float32)
    return cache, CrossCache.allocate(cfg, rows=rows, max_text=CROSS_SPAN + 8, device=DEVICE, dtype=torch.float32)


def test_dependent_attention_is_kept_where_it_times_faster(ending_checkpoint: Checkpoint) -> None:
    asked: list[bool] = []
    model = _model(ending_checkpoint.folder, asked)
    assert model.ops.kernels is not None
    model.ops = dataclasses.replace(model.ops, kernels=dataclasses.replace(model.ops.kernels, dependent=frozenset({4})))
    cache, cross = _caches(model)
    calls: list[int] = []
    # 2 rows: plain 2.0, dependent 1.0 (kept); 4 rows: plain 1.0, dependent 1.0 (not strictly faster: dropped).
    timer = counting_timer(iter([2.0, 1.0, 1.0, 1.0]), asked, calls)
    caches = {rows: (cache, cross) for rows in ROWS}
    attention_tuning.tune(model, caches, SELF_SPAN, CROSS_SPAN, timer=timer, capable=True)

    assert model.ops.kernels is not None and model.ops.kernels.dependent == frozenset({2})
    layers = model.cfg.decoder.num_layers
    assert calls == [2 * layers] * 4, "each timing runs both attentions of every layer"
    # Per row count: the agreement check (dependent, then plain) and the two timings (plain, then dependent).
    per_rows = [False] * 2 * layers
    assert asked == 2 * ([True] * 2 * layers + per_rows + per_rows + [True] * 2 * layers)
    for region in (*cache.k, *cache.v, *cross.k, *cross.v):
        assert not region.any(), "the timings leave the caches zero, as they found them"

    # The step then launches attention at 2 rows as a dependent launch, at 4 plainly.
    for rows, expected in ((2, True), (4, False)):
        q = torch.randn(rows, model.cfg.decoder.num_heads, model.cfg.decoder.head_dim, device=DEVICE)
        k = torch.randn(rows, model.cfg.decoder.num_kv_heads, SELF_SPAN, model.cfg.decoder.head_dim, device=DEVICE)
        model.ops.kernels.attend(q, k, k, torch.full((rows,), SELF_SPAN, device=DEVICE))
        assert asked[-1] is expected


@pytest.mark.parametrize(
    ("skew", "fail", "warning"),
    [
        (True, False, "split attention as a dependent launch differs at 2 rows: left out"),
        (False, True, "split attention as a dependent launch failed at 2 rows, left out: launch() got an unexpected"),
    ],
    ids=["computes-something-else", "cannot-launch"],
)
def test_a_dependent_launch_that_is_wrong_here_is_left_out(
    ending_checkpoint: Checkpoint, caplog: pytest.LogCaptureFixture, skew: bool, fail: bool, warning: str
) -> None:
    """Left out with a warning, however fast the timer would call it, and the decoder starts."""
    asked: list[bool] = []
    model = _model(ending_checkpoint.folder, asked, skew=skew, fail=fail)
    cache, cross = _caches(model)
    calls: list[int] = []
    with caplog.at_level(logging.WARNING):
        timer = counting_timer(iter([2.0, 1.0]), asked, calls)
        attention_tuning.tune(model, {2: (cache, cross)}, SELF_SPAN, CROSS_SPAN, timer=timer, capable=True)
    assert model.ops.kernels is not None and model.ops.kernels.dependent == frozenset()
    assert not calls, "never timed"
    assert warning in caplog.text


def test_no_race_where_the_gpu_has_no_dependent_launches(ending_checkpoint: Checkpoint) -> None:
    """Triton's interpreter (and GPUs before Hopper): nothing timed, nothing launched, nothing chosen."""
    asked: list[bool] = []
    model = _model(ending_checkpoint.folder, asked)
    assert model.ops.kernels is not None
    if kernels.pdl_capable(DEVICE):  # on Hopper, the kernels as kernels.for_device makes them for a GPU before it
        model.ops = dataclasses.replace(model.ops, kernels=dataclasses.replace(model.ops.kernels, trigger=False))
    cache, cross = _caches(model)
    calls: list[int] = []
    attention_tuning.tune(
        model, {2: (cache, cross)}, SELF_SPAN, CROSS_SPAN, timer=counting_timer(iter([]), asked, calls)
    )
    assert model.ops.kernels is not None and model.ops.kernels.dependent == frozenset()
    assert not calls and not asked


GPU = torch.device("cuda")


@pytest.mark.skipif(
    not torch.cuda.is_available() or not kernels.pdl_capable(GPU), reason="programmatic dependent launches need Hopper"
)
def test_dependent_attention_waits_for_the_cache_write_before_it() -> None:
    """Layers of the step's chain on a GPU, captured in a graph: the q/k/v projection writing the rows' newest
    keys into the cache (a dependent launch that lets the next one in at once), split attention over the cache
    as a dependent launch, and the output projection after it. Same bits as the chain without dependent
    launches, outputs and caches: an attention block that read before the cache write had finished would not
    give them."""
    from tts_engine.dia import linear
    from tts_engine.dia.model import rope_table

    heads, kv_heads, e, d, layers, span, rows = 16, 4, 128, 2048, 4, 300, 2
    gen = torch.Generator(device=GPU).manual_seed(5)

    def weight(n: int, k: int) -> torch.Tensor:
        return (torch.randn(n, k, device=GPU, generator=gen) * k**-0.5).bfloat16()

    w_qkv = [weight((heads + 2 * kv_heads) * e, d) for _ in range(layers)]
    w_o = [weight(d, heads * e) for _ in range(layers)]
    gamma = torch.rand(d, device=GPU, generator=gen).bfloat16() + 0.5
    x0 = torch.randn(rows, d, device=GPU, generator=gen).bfloat16()
    caches = torch.randn(2, layers, rows, kv_heads, span, e, device=GPU, generator=gen).bfloat16()
    table = rope_table(10_000.0, e, span, GPU)
    pos_R = torch.tensor([span - 1, 137], device=GPU)
    lengths_R = pos_R + 1
    skinny, base = linear.SkinnyLinear(), kernels.for_device(GPU)

    def chain(dependent: bool, kv: torch.Tensor) -> torch.Tensor:
        attention = dataclasses.replace(base, dependent=frozenset({rows}) if dependent else frozenset())
        config = dataclasses.replace(linear.CANDIDATES[0], pdl=dependent)
        x, delta = x0, None
        for i in range(layers):
            write = linear.RopeWrite(table, pos_R, kv[0, i], kv[1, i], heads)
            q, x = skinny.run_normed(x, delta, gamma, 1e-5, w_qkv[i], config=config, rope=write)
            out = attention.attend(q, kv[0, i], kv[1, i], lengths_R)
            delta = skinny.run(out.view(rows, -1), w_o[i], config=config)
        return x + delta

    expected_kv = caches.clone()
    expected = chain(False, expected_kv)
    kv = caches.clone()
    chain(True, kv)  # compiled outside the capture
    kv.copy_(caches)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = chain(True, kv)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, expected) and torch.equal(kv, expected_kv)
