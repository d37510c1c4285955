"""Timing GPU work for the start-up tuners: a median over CUDA events, and the same over replays of a captured
CUDA graph, which is how a decode step runs its kernels."""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch

Timer = Callable[[Callable[[], object]], float]  # seconds one call of a function takes (the tuners' timers)


def cuda_timer(fn: Callable[[], object], repeats: int = 30) -> float:
    """Median seconds of `fn` on the current CUDA stream, after a warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times)


def graph_timer(fn: Callable[[], object], repeats: int = 20) -> float:
    """Median seconds of one replay of `fn` captured as a CUDA graph, which is how a decode step runs it.

    Timed as launched from Python, a projection of a few microseconds measures the launch instead: Triton's
    launcher and PyTorch's dispatch each take several microseconds of CPU a call, so the GPU waits between
    kernels and the faster kernel can lose. A replayed graph pays neither, and keeps what a step does pay:
    the gaps between kernels inside a graph.
    """
    warmup = torch.cuda.Stream()
    warmup.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(warmup):  # compiles the kernels and lets cuBLAS set up, outside the capture
        fn()
    torch.cuda.current_stream().wait_stream(warmup)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    try:
        return cuda_timer(graph.replay, repeats)
    finally:
        graph.reset()  # frees the graph's private memory pool
