"""The persistent decoder layers (tts_engine/dia/megakernel.py) against the layer loop they replace
(kernel_step.residual), on the tiny checkpoints. Without a GPU they run in Triton's interpreter, which runs a
launch's blocks one after another: each phase as a launch of several blocks, and the whole persistent kernel,
barriers and all, as one block. tests/engine/test_kernel_build.py builds it for an H100 and an RTX 4090."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import Tensor

from tests.engine.conftest import Checkpoint
from tests.engine.lines import assert_same_lines
from tts_engine.dia import kernel_step
from tts_engine.dia.cache import CrossCache, SelfCache
from tts_engine.dia.model import DiaModel
from tts_engine.engine import Engine

megakernel = pytest.importorskip("tts_engine.dia.persistent_layers", reason="triton is not installed")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SMALL = megakernel.Shapes(qkv=(8, 16), hidden=(8, 16), gate_up=(8, 16), down=(8, 32), warps=4)
SPAN, TEXT = 64, 48


def _caches(model: DiaModel, rows: int) -> tuple[SelfCache, CrossCache]:
    cfg, gen = model.cfg, torch.Generator(device=DEVICE).manual_seed(1)
    cache = SelfCache.allocate(cfg, rows=rows, length=SPAN, device=DEVICE, dtype=torch.float32)
    cross = CrossCache.allocate(cfg, rows=rows, max_text=TEXT, device=DEVICE, dtype=torch.float32)
    for t in (*cache.k, *cache.v, *cross.k, *cross.v):
        t.copy_(torch.randn(t.shape, generator=gen, device=DEVICE))
    cross.lengths.copy_(torch.tensor([40, 17, 48, 3][:rows], device=DEVICE))
    return cache, cross


@pytest.mark.parametrize("rows", [2, 3])
def test_the_persistent_layers_are_the_layer_loop(checkpoint: Checkpoint, rows: int) -> None:
    """Every phase launched alone over several blocks (each block taking bands and splits in turn, several
    attention splits merged), and the whole persistent kernel as one block: the residual stream after the last
    layer and the keys and values written into the cache are the layer loop's, for rows at their own positions
    and text lengths; the barrier's and the merges' counts are zero again after each launch."""
    engine = Engine.load(checkpoint.folder, device=DEVICE, dtype="float32", use_cuda_graphs=False, decode_kernels=True)
    model = engine.model
    model.setup_rope(SPAN, DEVICE)
    assert model.rope is not None
    cache, cross = _caches(model, rows)
    gen = torch.Generator(device=DEVICE).manual_seed(2)
    x_Rx1xD = torch.randn((rows, 1, model.cfg.decoder.hidden_size), generator=gen, device=DEVICE)
    pos_R = torch.tensor([37, 5, 63][:rows], device=DEVICE)
    looped = cache.clone()
    x, delta = kernel_step.residual(model, x_Rx1xD, pos_R, looped, cross, SPAN, TEXT)
    expected = x + delta
    for programs, persistent in ((3, False), (1, True)):
        layers = megakernel.PersistentLayers(model, rows=rows, shapes=SMALL, programs=programs)
        written = cache.clone()
        x, delta = layers(x_Rx1xD, pos_R, written, cross, SPAN, TEXT, model.rope, persistent=persistent)
        torch.testing.assert_close(x + delta, expected, rtol=1e-5, atol=1e-5)
        for ours, theirs in zip(written.k + written.v, looped.k + looped.v, strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
        assert not layers.sync.any() and not layers.att_counts.any()


def test_an_engine_with_persistent_layers_renders_the_same_lines(
    ending_checkpoint: Checkpoint, caplog: pytest.LogCaptureFixture
) -> None:
    """Through the real decode path (the decoder's steps, prefill with a voice prompt, sampling): greedy and seeded
    lines are the layer loop's, and the log says the persistent kernel serves."""
    options = {"device": DEVICE, "dtype": "float32", "use_cuda_graphs": False, "decode_kernels": True}
    looped = Engine.load(ending_checkpoint.folder, **options)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="tts_engine.dia.model"):
        persistent = Engine.load(ending_checkpoint.folder, persistent_layers=True, **options)  # type: ignore[arg-type]
    assert "as one persistent kernel" in caplog.text
    assert persistent.model.ops.persistent is not None and looped.model.ops.persistent is None
    assert_same_lines(looped, persistent, "[S1] Hi. [S2] Oh.", max_tokens=14)


@pytest.mark.parametrize(
    ("fault", "said"),
    [("varies", "two persistent launches on the same inputs gave other bits"),
     ("apart", "differ from its phases launched one by one"),
     ("eps", "differ from the layer loop")],
)  # fmt: skip
def test_the_check_refuses_layers_that_compute_something_else(
    ending_checkpoint: Checkpoint, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, fault: str,
    said: str,
) -> None:  # fmt: skip
    """Persistent launches whose bits vary from run to run (as a grid barrier that does not hold makes them), or
    that differ from their phases launched one by one, or layers that differ from the loop (a wrong norm epsilon
    here) are refused at load with a warning that says which; steps stay layer by layer."""
    engine = Engine.load(
        ending_checkpoint.folder, device=DEVICE, dtype="float32", use_cuda_graphs=False, decode_kernels=True
    )
    model = engine.model
    assert megakernel.check(model, megakernel.PersistentLayers(model, shapes=SMALL), span=SPAN, text=TEXT) is None
    run, calls = megakernel.PersistentLayers.__call__, []

    def faulty(self: megakernel.PersistentLayers, *args: object, persistent: bool = True) -> tuple[Tensor, Tensor]:
        if fault == "eps":
            self.eps = 0.5
        x, delta = run(self, *args, persistent=persistent)  # type: ignore[arg-type]
        calls.append(persistent)
        if fault == "varies" and persistent:
            return x + 1e-3 * len(calls), delta
        return (x + 1e-3 if fault == "apart" and persistent else x), delta

    monkeypatch.setattr(megakernel.PersistentLayers, "__call__", faulty)
    with caplog.at_level(logging.WARNING):
        assert model.use_decode_kernels(persistent_layers=True)
    assert "persistent layers unavailable" in caplog.text and said in caplog.text
    assert model.ops.persistent is None and model.ops.kernels is not None


def test_tensors_that_cannot_join_are_refused(ending_checkpoint: Checkpoint) -> None:
    """The kernel reaches every tensor as an offset from one base in the model's dtype: a cache of another dtype
    is refused with a message, not read as garbage."""
    engine = Engine.load(ending_checkpoint.folder, device=DEVICE, dtype="float32", use_cuda_graphs=False)
    model = engine.model
    model.setup_rope(SPAN, DEVICE)
    assert model.rope is not None
    layers = megakernel.PersistentLayers(model, shapes=SMALL)
    cache, cross = _caches(model, 2)
    half = SelfCache([k.half() for k in cache.k], [v.half() for v in cache.v], cache.length)
    x_Rx1xD = torch.zeros((2, 1, model.cfg.decoder.hidden_size), device=DEVICE)
    with pytest.raises(ValueError, match="model's dtype"):
        layers(x_Rx1xD, torch.tensor([3, 4], device=DEVICE), half, cross, SPAN, TEXT, model.rope)


@pytest.mark.gpu
@pytest.mark.timeout(360)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_on_a_gpu_the_persistent_layers_serve_captured_steps(ending_checkpoint: Checkpoint, dtype: str) -> None:
    """On CUDA the kernel runs as it serves: a block an SM, meeting at real grid barriers. Its check at load wants
    two launches to give the same bits and to agree with the phases launched one by one, so a barrier that does
    not hold refuses it; in float32 the captured steps then render the layer loop's lines."""
    options = {"device": DEVICE, "dtype": dtype, "decode_kernels": True}
    persistent = Engine.load(ending_checkpoint.folder, persistent_layers=True, **options)  # type: ignore[arg-type]
    layers = persistent.model.ops.persistent
    assert layers is not None and layers.programs == torch.cuda.get_device_properties(DEVICE).multi_processor_count
    if dtype == "float32":
        looped = Engine.load(ending_checkpoint.folder, **options)  # type: ignore[arg-type]
        assert_same_lines(looped, persistent, "[S1] Hi. [S2] Oh.", max_tokens=40)
