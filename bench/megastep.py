"""The persistent decoder layers (tts_engine/dia/megakernel.py) in several block shapes against the layer loop they
replace, on one request's step: a tuning aid for `persistent_layers.Shapes`, not a benchmark of record
(`bench/engine.py --against-persistent-layers` is).

    python bench/megastep.py [--span 1024] [--text 200] [--no-tune]   # CUDA, random full-size bf16 weights
    python bench/megastep.py --check                                   # CPU, Triton's interpreter, a small model

Each form runs the 18 layers of a two-row step (one request with CFG) at `--span` cached positions and `--text`
text bytes, captured as a CUDA graph and timed by its replays, as a decode step runs. The loop goes through the
decode kernels with its projections as the engine's start-up tuning chooses them at two rows (`--no-tune`: all on
cuBLAS). Before it is timed, each persistent form runs twice (the same bits, or a grid barrier does not hold) and
against the loop (within bf16 rounding). A form whose blocks cannot all be resident is reported and skipped.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch

from bench.common import under_triton_interpreter
from bench.random_dia import hf_config
from tts_engine.dia import kernel_step
from tts_engine.dia.cache import CrossCache, SelfCache
from tts_engine.dia.config import DiaConfig
from tts_engine.dia.model import DiaModel

# The shapes tried: the defaults, then deeper pipelines (more weight bytes in flight a block), wider steps and bands,
# and no L2 prefetch at the barriers. Keyword arguments of persistent_layers.Shapes.
VARIANTS: tuple[dict[str, object], ...] = (
    {},
    {"stages": 4},
    {"stages": 5},
    {"hidden": (16, 256), "gate_up": (16, 256), "down": (16, 512)},
    {"hidden": (32, 128), "gate_up": (32, 128), "down": (32, 128)},
    {"prefetch": False},
    {"per_sm": 2, "warps": 4},
)


def _model(size: str, device: torch.device, dtype: torch.dtype) -> DiaModel:
    cfg = DiaConfig.from_dict(hf_config(size).to_dict())
    with torch.device(device):
        model = DiaModel(cfg).to(dtype)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():  # random weights at a scale that keeps the residual stream in range through every layer
        for weight in model.parameters():
            if weight.dim() == 2:
                weight.copy_(torch.randn(weight.shape, generator=gen, device=device) * weight.shape[1] ** -0.5)
    model.fuse()
    model.requires_grad_(False)
    return model


def _inputs(model: DiaModel, span: int, text: int) -> tuple[torch.Tensor, torch.Tensor, SelfCache, CrossCache]:
    cfg, param = model.cfg, next(model.parameters())
    device, dtype = param.device, param.dtype
    gen = torch.Generator(device=device).manual_seed(1)
    cache = SelfCache.allocate(cfg, rows=2, length=span, device=device, dtype=dtype)
    cross = CrossCache.allocate(cfg, rows=2, max_text=text, device=device, dtype=dtype)
    for t in (*cache.k, *cache.v, *cross.k, *cross.v):
        t.copy_(torch.randn(t.shape, generator=gen, device=device).to(dtype))
    cross.lengths.fill_(text)
    x_Rx1xD = torch.randn((2, 1, cfg.decoder.hidden_size), generator=gen, device=device).to(dtype)
    return x_Rx1xD, torch.full((2,), span - 1, device=device), cache, cross


def run(size: str, span: int, text: int, tune: bool, device: torch.device, dtype: torch.dtype,
        timer: Callable[[Callable[[], object]], float] | None) -> int:  # fmt: skip
    """Every variant against the loop; `timer` None checks without timing (the CPU). Returns the failures."""
    from tts_engine.dia import persistent_layers

    model = _model(size, device, dtype)
    model.setup_rope(span, device)
    if not model.use_decode_kernels():
        print("the decode kernels fail their check here", file=sys.stderr)
        return 1
    if tune:
        begin = time.perf_counter()
        model.tune_decode([2])
        print(f"# tuned the loop's projections at 2 rows in {time.perf_counter() - begin:.0f} s", flush=True)
    x_Rx1xD, pos_R, cache, cross = _inputs(model, span, text)
    rope = model.rope
    assert rope is not None
    x, delta = kernel_step.residual(model, x_Rx1xD, pos_R, cache, cross, span, text)
    expected = x.float() + delta.float()
    loop = (
        None if timer is None else timer(lambda: kernel_step.residual(model, x_Rx1xD, pos_R, cache, cross, span, text))
    )
    layers_count = model.cfg.decoder.num_layers
    if loop is not None:
        print(f"| layer loop | {loop * 1e3:.3f} ms | {loop / layers_count * 1e6:.1f} us a layer | 1.00x |", flush=True)
    failures = 0
    for variant in VARIANTS if timer is not None else VARIANTS[:1]:
        shapes = persistent_layers.Shapes(**variant)  # type: ignore[arg-type]
        name = ", ".join(f"{k}={v}" for k, v in variant.items()) or "defaults"
        try:
            layers = persistent_layers.PersistentLayers(model, shapes=shapes, programs=None if timer else 1)
            results = [layers(x_Rx1xD, pos_R, cache, cross, span, text, rope) for _ in range(2)]
        except RuntimeError as exc:  # blocks that would not all be resident, or a launch the GPU refuses
            print(f"# {name}: {exc}", flush=True)
            continue
        sums = [(x.float() + delta.float()).clone() for x, delta in results]
        error = persistent_layers.relative_error(sums[0], expected)
        if not torch.equal(sums[0], sums[1]) or error > (1e-4 if dtype == torch.float32 else 0.25):
            print(f"# {name}: wrong (two runs equal: {torch.equal(sums[0], sums[1])}; against the loop {error:.3g})")
            failures += 1
            continue
        if timer is None:
            print(f"# {name}: agrees with the loop ({error:.2g})")
            continue
        t = timer(lambda layers=layers: layers(x_Rx1xD, pos_R, cache, cross, span, text, rope))  # type: ignore[misc]
        print(f"| {name} ({layers.programs} blocks) | {t * 1e3:.3f} ms | {t / layers_count * 1e6:.1f} us a layer | "
              f"{(loop or t) / t:.2f}x |", flush=True)  # fmt: skip
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--span", type=int, default=1024, help="cached positions each row attends to")
    parser.add_argument("--text", type=int, default=200, help="text bytes each row attends to")
    parser.add_argument("--no-tune", action="store_true", help="the loop's projections all on cuBLAS")
    parser.add_argument("--check", action="store_true", help="check the defaults on the CPU and stop")
    args = parser.parse_args()
    if args.check:
        under_triton_interpreter()
        failures = run("small", 64, 16, False, torch.device("cpu"), torch.float32, None)
        return 1 if failures else 0
    if not torch.cuda.is_available():
        print("needs a CUDA device (or --check)", file=sys.stderr)
        return 2
    from tts_engine.dia.timing import graph_timer

    print(f"# {torch.cuda.get_device_name()} torch {torch.__version__}; span {args.span}, text {args.text}", flush=True)
    with torch.inference_mode():
        failures = run("full", args.span, args.text, not args.no_tune, torch.device("cuda"), torch.bfloat16,
                       graph_timer)  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
