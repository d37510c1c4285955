"""Where a decode step's time goes, on random full-size weights: for tuning the engine on a GPU.

    python bench/profile_step.py                 # CUDA only

Prints: attention alone at decode shapes (SDPA with a mask, batched matmuls, our split-KV kernel), the
kernels of one eager step (count, and GPU time by kernel from torch.profiler), and the replay time of one
captured step at widths 1 and 16 (CUDA events, median of many). Not a benchmark of record: bench/engine.py is.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from bench.engine import TEXT
from bench.random_dia import build, hf_config
from tts_engine.dia import kernels
from tts_engine.dia.decode import Decoder
from tts_engine.dia.timing import cuda_timer
from tts_engine.engine import Engine, GenerationParams


def _time(fn: Callable[[], object], repeats: int = 50) -> float:
    """Median milliseconds of `fn` on the device."""
    return cuda_timer(fn, repeats) * 1000


def _engine() -> Engine:
    torch.manual_seed(0)
    return build(hf_config("full"), torch.device("cuda"), torch.bfloat16)[1]


def _steps(engine: Engine) -> None:
    begin = time.perf_counter()
    scheduler = engine.scheduler(slots=16)
    print(f"# 16-slot scheduler built in {time.perf_counter() - begin:.1f} s")
    for width, decoder in ((1, engine._decoder), (16, scheduler._decoder)):
        for slot in range(width):
            decoder.start(slot, engine._request(TEXT, GenerationParams(seed=slot), None))
        for span in (256, 1024):
            graph = decoder.graphs[(width, span, 256)]

            def replay(graph: torch.cuda.CUDAGraph = graph, decoder: Decoder = decoder) -> None:
                decoder.noise_step.zero_()  # each replay reads noise[noise_step] and moves it on
                graph.replay()

            ms = _time(replay, 200)
            print(f"| replay width {width:2d} self span {span:4d} | {ms:.3f} ms | {1000 / ms:.0f} steps/s |")
        for slot in range(width):
            decoder.stop(slot)


def _kernels(engine: Engine) -> None:
    decoder = engine._decoder
    decoder.start(0, engine._request(TEXT, GenerationParams(seed=0), None))
    with torch.inference_mode():
        for _ in range(3):
            decoder.noise_step.zero_()
            decoder._step(1, 1024, 256)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                decoder.noise_step.zero_()
                decoder._step(1, 1024, 256)
            torch.cuda.synchronize()
    decoder.stop(0)
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    launched = sum(e.count for e in events) / 10
    gpu_ms = sum(e.self_device_time_total for e in events) / 10 / 1000
    print(f"# eager step, width 1: {launched:.0f} kernels, {gpu_ms:.3f} ms of GPU time")
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=22, max_name_column_width=70))


def _attention(width: int, span: int = 1024, layers: int = 18) -> None:
    """Decode-shape attention as a step runs it (18 layers in one captured graph): cuDNN SDPA with a mask,
    two batched matmuls around a float32 masked softmax, and our split-KV kernel (tts_engine/dia/kernels.py)."""
    rows, heads, kv = 2 * width, 16, 4
    g = torch.Generator(device="cuda").manual_seed(width)
    q = torch.randn(layers, rows, kv, heads // kv, 128, device="cuda", dtype=torch.bfloat16, generator=g)
    cache = torch.randn(layers, rows, kv, 3136, 128, device="cuda", dtype=torch.bfloat16, generator=g)
    lengths = torch.randint(span // 2, span + 1, (rows,), device="cuda", generator=g)
    mask = (torch.arange(span, device="cuda")[None, :] < lengths[:, None])[:, None, None, :]
    mask = mask.expand(rows, 1, heads // kv, span).contiguous()  # as fold_mask makes it

    def sdpa() -> None:
        for i in range(layers):
            k = v = cache[i, :, :, :span]
            F.scaled_dot_product_attention(q[i], k, v, attn_mask=mask, scale=1.0)

    def bmm() -> None:
        for i in range(layers):
            k = v = cache[i, :, :, :span]
            scores = torch.matmul(q[i], k.transpose(-1, -2)).float().masked_fill(~mask, float("-inf"))
            torch.matmul(scores.softmax(-1).to(v.dtype), v)

    split_kv = kernels.for_device(torch.device("cuda"))

    def ours() -> None:
        for i in range(layers):
            k = v = cache[i, :, :, :span]
            split_kv.attend(q[i].reshape(rows, heads, 128), k, v, lengths)

    with torch.inference_mode():
        for name, fn in (("sdpa+mask", sdpa), ("bmm+softmax", bmm), ("split-kv", ours)):
            fn()
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                fn()
            us = _time(graph.replay, 100) * 1000 / layers
            print(f"| attention width {width:2d} span {span} {name:12s} | {us:.1f} us a layer (captured) |")


def main() -> int:
    if not torch.cuda.is_available():
        print("needs a CUDA device", file=sys.stderr)
        return 2
    print(f"# {torch.cuda.get_device_name()} torch {torch.__version__}")
    for width in (1, 16):
        _attention(width)
    if "--attention-only" in sys.argv:
        return 0
    engine = _engine()
    _kernels(engine)
    _steps(engine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
