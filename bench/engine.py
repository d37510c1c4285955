"""Engine speed: our Dia engine against transformers' `generate`, on the same random full-size weights.

    python bench/engine.py                    # CUDA + bfloat16 when present (1100 steps), else CPU + float32
    python bench/engine.py --steps 40 --json results.json
    python bench/engine.py --concurrent 1 4 8 16 32          # continuous batching (tts_engine/batching.py)
    python bench/engine.py --skip-reference --against-no-dependent-launches   # what PDL gains (Hopper)
    python bench/engine.py --skip-reference --against-persistent-layers   # the megakernel (megakernel.py)
    python bench/engine.py --concurrent 1 4 8 --size small   # the same on a reduced random model (CPU runs)

Both engines share one set of weights, initialised directly on the device (no download). Each renders a
200-byte, two-speaker line with classifier-free guidance and Dia's default sampling, after a short warm-up.
Reported per engine: decoder steps per second over the whole call and in steady state (after the first
final frame), the real-time factor (86.13 steps make one second of audio), the time from the call to the
first final frame (the first frame is final 1 + max_delay steps after the start), and the peak device memory
of the call. The random model's EOS logit is held at 0, below every code a line could sample, so no line ends
early and every run decodes the same number of steps. The two engines take turns for --repeats rounds and
each reports its median round, so a noisy moment on a shared machine does not decide the comparison.

With --concurrent, the comparison is our single-stream engine against one scheduler (slots = the largest N)
running N streams of the same line (different seeds) at once, for each N. Reported per N: aggregate and
per-stream steps per second (all N streams start together and run to the cap: see EOS above; steps per
stream is still an average, for models that do end lines), the per-stream real-time factor, the time from
submitting the N streams to the last one's first final frame, and "join": with N - 1 streams already
decoding, the time from submitting one more to its first final frame (with how many of the N - 1 were still
decoding then).
`--size small` swaps the full architecture for a reduced one (6 decoder layers of width 512), so CPU runs
of 32 streams fit in memory and minutes; its numbers say how the scheduler scales, not how fast Dia is.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from transformers import DiaForConditionalGeneration
from transformers.generation.streamers import BaseStreamer

from bench.common import commit
from bench.random_dia import build, build_ours, hf_config, matmul_choices, sampler_choices
from tts_engine.batching import Scheduler
from tts_engine.dia.config import DiaConfig
from tts_engine.dia.text import encode
from tts_engine.engine import Engine, GenerationParams

log = logging.getLogger("bench.engine")
STEPS_PER_SECOND_OF_AUDIO = 44100 / 512
TEXT = (
    "[S1] Welcome to the Prancing Pony, traveler! (laughs) Rooms are two silver a night, supper included. "
    "[S2] Two silver? For that straw? [S1] The straw is fresh, I swear it on my mother. [S2] Fine... One night only."
)


@dataclass
class Result:
    engine: str
    steps: int
    seconds: float
    steps_per_s: float
    steady_steps_per_s: float
    realtime_factor: float
    first_frame_ms: float
    peak_memory_gb: float | None


@dataclass
class BatchResult:
    streams: int
    steps: float  # per stream, on average (a line that samples EOS ends early)
    seconds: float
    aggregate_steps_per_s: float
    stream_steps_per_s: float
    stream_realtime_factor: float
    first_frame_ms: float  # submitting all N -> the last of them has its first final frame
    join_first_frame_ms: float  # N - 1 decoding, submit one more -> its first final frame
    join_beside: int  # how many of those N - 1 were still decoding then
    peak_memory_gb: float | None


class _StepClock(BaseStreamer):
    """Host time of each step transformers' generate announces (its first put is the prefilled input)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _result(name: str, steps: int, start: float, first: float, end: float, device: torch.device) -> Result:
    first_steps = 1 + max(DiaConfig().delay_pattern)
    total = end - start
    return Result(
        engine=name,
        steps=steps,
        seconds=round(total, 3),
        steps_per_s=round(steps / total, 1),
        steady_steps_per_s=round((steps - first_steps) / (end - first), 1),
        realtime_factor=round(steps / total / STEPS_PER_SECOND_OF_AUDIO, 2),
        first_frame_ms=round((first - start) * 1000, 1),
        peak_memory_gb=None if _peak(device) is None else round(_peak(device) or 0.0, 2),
    )


def run_ours(engine: Engine, max_tokens: int, device: torch.device, name: str = "ours") -> Result:
    params = GenerationParams(max_tokens=max_tokens, seed=0)
    max_delay = engine.config.max_delay
    _peak_reset(device)
    start = time.perf_counter()
    first, frames = 0.0, 0
    for chunk in engine.stream_codes(TEXT, params):
        if frames == 0:
            first = time.perf_counter()
        frames += len(chunk)
    end = time.perf_counter()
    # Without a prompt, frames 1..max_tokens-2 come out after max_tokens - 1 + max_delay steps; a line that
    # samples EOS (not with build's weights) ends after its n frames and n + 1 + max_delay steps.
    if frames != max_tokens - 2:
        log.warning("ours sampled EOS after %d of %d frames: steps/s counts the steps it ran", frames, max_tokens - 2)
    return _result(name, frames + 1 + max_delay, start, first, end, device)


def run_batch(scheduler: Scheduler, streams: int, max_tokens: int) -> tuple[int, float, float]:
    """N streams submitted together, decoded to the end: (steps, seconds, seconds to the last first frame)."""
    ids = [f"stream-{i}" for i in range(streams)]
    frames = dict.fromkeys(ids, 0)
    first: dict[str, float] = {}
    start = time.perf_counter()
    for i, request_id in enumerate(ids):
        scheduler.submit(request_id, TEXT, GenerationParams(max_tokens=max_tokens, seed=i))
    while scheduler.active:
        chunk = scheduler.step_chunk()
        now = time.perf_counter()
        for request_id, new in chunk.frames.items():
            first.setdefault(request_id, now)
            frames[request_id] += len(new)
    end = time.perf_counter()
    # A line that samples EOS after n frames took n + 1 + max_delay steps (not with build's weights).
    steps = sum(count + 1 + max(DiaConfig().delay_pattern) for count in frames.values())
    return steps, end - start, max(first.values()) - start


def run_join(scheduler: Scheduler, streams: int) -> tuple[float, int]:
    """Seconds from submitting one stream, beside streams - 1 already decoding, to its first final frame, and
    how many of the others were still decoding then."""
    others = [f"busy-{i}" for i in range(streams - 1)]
    # Long enough that the others are still decoding when the newcomer's first frame is final.
    busy_tokens = 4 * (scheduler.chunk_steps + 1 + max(DiaConfig().delay_pattern))
    for i, request_id in enumerate(others):
        scheduler.submit(request_id, TEXT, GenerationParams(max_tokens=busy_tokens, seed=100 + i))
    for _ in range(2):  # the others are past their own first frames: steady decoding
        scheduler.step_chunk()
    start = time.perf_counter()
    scheduler.submit("newcomer", TEXT, GenerationParams(max_tokens=busy_tokens, seed=99))
    while "newcomer" not in scheduler.step_chunk().frames:
        pass
    elapsed = time.perf_counter() - start
    beside = len(set(scheduler.active) & set(others))
    for request_id in scheduler.active:
        scheduler.cancel(request_id)
    return elapsed, beside


def run_concurrent(scheduler: Scheduler, streams: int, max_tokens: int, device: torch.device) -> BatchResult:
    _peak_reset(device)
    steps, seconds, first = run_batch(scheduler, streams, max_tokens)
    join, beside = run_join(scheduler, streams)
    peak = _peak(device)
    return BatchResult(
        streams=streams,
        steps=round(steps / streams, 1),
        seconds=round(seconds, 3),
        aggregate_steps_per_s=round(steps / seconds, 1),
        stream_steps_per_s=round(steps / streams / seconds, 1),
        stream_realtime_factor=round(steps / streams / seconds / STEPS_PER_SECOND_OF_AUDIO, 2),
        first_frame_ms=round(first * 1000, 1),
        join_first_frame_ms=round(join * 1000, 1),
        join_beside=beside,
        peak_memory_gb=None if peak is None else round(peak, 2),
    )


def run_reference(model: DiaForConditionalGeneration, max_tokens: int, device: torch.device) -> Result:
    ids = torch.tensor([encode(TEXT)], device=device)
    pattern = model.config.delay_pattern
    assert pattern is not None, "Dia's config has a delay pattern"
    delays = list(pattern)
    prefill = torch.full((1, 1 + max(delays), len(delays)), 1025, dtype=torch.long, device=device)
    for c, delay in enumerate(delays):
        prefill[0, : delay + 1, c] = 1026  # DiaProcessor's delayed BOS frame
    clock = _StepClock()
    _peak_reset(device)
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            decoder_input_ids=prefill,
            decoder_attention_mask=torch.ones(prefill.shape[:2], dtype=torch.long, device=device),
            do_sample=True,
            guidance_scale=3.0,
            temperature=1.2,
            top_p=0.95,
            top_k=45,
            max_length=max_tokens,
            streamer=clock,
        )
    _sync(device)
    end = time.perf_counter()
    steps = len(clock.times) - 1
    return _result("transformers", steps, start, clock.times[1 + max(delays)], end, device)


def print_single(results: list[Result]) -> None:
    header = f"| {'engine':<12} | steps | steps/s | steady steps/s | x real time | first frame ms | peak GB |"
    print(header)
    print("|" + "|".join("-" * (len(part)) for part in header.split("|")[1:-1]) + "|")
    for r in results:
        peak = "n/a" if r.peak_memory_gb is None else f"{r.peak_memory_gb:.2f}"
        print(
            f"| {r.engine:<12} | {r.steps:5d} | {r.steps_per_s:7.1f} | {r.steady_steps_per_s:14.1f} | "
            f"{r.realtime_factor:11.2f} | {r.first_frame_ms:14.1f} | {peak:>7} |"
        )


def print_concurrent(single: Result, results: list[BatchResult]) -> None:
    header = (
        "| streams | steps/stream | seconds | aggregate steps/s | per-stream steps/s | per-stream x real time "
        "| first frame ms | join first frame ms (beside) | peak GB |"
    )
    print(header)
    print("|" + "|".join("-" * (len(part)) for part in header.split("|")[1:-1]) + "|")
    print(
        f"| single  | {single.steps:12d} | {single.seconds:7.3f} | {single.steps_per_s:17.1f} | "
        f"{single.steps_per_s:18.1f} | {single.realtime_factor:22.2f} | {single.first_frame_ms:14.1f} | "
        f"{'n/a':>28} | {'n/a' if single.peak_memory_gb is None else f'{single.peak_memory_gb:.2f}':>7} |"
    )
    for r in results:
        peak = "n/a" if r.peak_memory_gb is None else f"{r.peak_memory_gb:.2f}"
        join = f"{r.join_first_frame_ms:.1f} ({r.join_beside})"
        print(
            f"| {r.streams:7d} | {r.steps:12.1f} | {r.seconds:7.3f} | {r.aggregate_steps_per_s:17.1f} | "
            f"{r.stream_steps_per_s:18.1f} | {r.stream_realtime_factor:22.2f} | {r.first_frame_ms:14.1f} | "
            f"{join:>28} | {peak:>7} |"
        )


def _print_gains(results: list[Result], others: dict[str, Engine]) -> None:
    """What each same-run A/B gains against our engine's usual form."""
    by_name = {result.engine: result for result in results}
    if NO_PDL in others:
        gain = by_name["ours"].steps_per_s / by_name[NO_PDL].steps_per_s
        print(f"# dependent launches: {gain:.3f}x the steps/s without")
    if PERSISTENT in others:
        gain = by_name[PERSISTENT].steps_per_s / by_name["ours"].steps_per_s
        print(f"# persistent layers: {gain:.3f}x the steps/s of the layer loop")


def _alternatives(
    args: argparse.Namespace, reference: DiaForConditionalGeneration, kernels: bool | None
) -> dict[str, Engine]:
    """Our engine in the other forms the same-run A/Bs ask for, by name, on the same weights."""
    others: dict[str, Engine] = {}
    if args.against_no_dependent_launches:
        # Two runs on two machines differed by 2% before any change (docs/benchmarks.md), about what dependent
        # launches gain: taking turns in one process on the same weights compares them on the same footing.
        begin = time.perf_counter()
        others[NO_PDL] = build_ours(reference, decode_kernels=kernels, dependent_launches=False)
        print(f"# built ours without dependent launches in {time.perf_counter() - begin:.1f} s", file=sys.stderr)
    if args.against_persistent_layers:
        begin = time.perf_counter()
        mega = others[PERSISTENT] = build_ours(reference, decode_kernels=kernels, persistent_layers=True)
        served = mega.model.ops.persistent is not None  # its check at load may have refused it (a warning says why)
        print(f"# built ours with persistent layers in {time.perf_counter() - begin:.1f} s; they serve: {served}",
              file=sys.stderr)  # fmt: skip
    return others


NO_PDL, PERSISTENT = "ours, no PDL", "ours, persistent layers"  # the same-run A/Bs' names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--steps", type=int, help="max_tokens per run (default 1100 on CUDA, 24 on CPU)")
    parser.add_argument("--skip-reference", action="store_true", help="time only our engine")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per engine; the median is reported")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--commit", default=None, help="commit to record (default: git rev-parse)")
    parser.add_argument("--concurrent", type=int, nargs="+", metavar="N", help="stream counts for the batching run")
    parser.add_argument("--size", choices=("full", "small"), default="full", help="architecture (small: CPU runs)")
    parser.add_argument(
        "--no-decode-kernels", action="store_true", help="our engine with SDPA attention and cuBLAS (for comparison)"
    )
    parser.add_argument("--batch-invariant", action="store_true", help="our engine batch-invariant (the mode's cost)")
    parser.add_argument(
        "--no-dependent-launches", action="store_true",
        help="no programmatic dependent launches (Hopper), whatever the tuners would find (what they gain)",
    )  # fmt: skip
    parser.add_argument(
        "--against-no-dependent-launches", action="store_true",
        help="also time our engine without dependent launches on the same weights, taking turns (the A/B in one run)",
    )  # fmt: skip
    parser.add_argument(
        "--against-persistent-layers", action="store_true",
        help="also time our engine with every decoder layer as one persistent kernel, taking turns (opt-in A/B)",
    )  # fmt: skip
    args = parser.parse_args()
    # What the tuners chose at start-up goes to stderr: each projection cuBLAS or ours (fused or not) with both
    # times, the sampler fused or the chain at each batch width, and attention as a dependent launch or not.
    logging.basicConfig(level=logging.WARNING, format="# %(name)s: %(message)s")
    for tuner in ("tts_engine.dia.linear_tuning", "tts_engine.dia.sample_kernel", "tts_engine.dia.attention_tuning",
                  "tts_engine.dia.model"):  # fmt: skip
        logging.getLogger(tuner).setLevel(logging.INFO)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    max_tokens = args.steps or (1100 if device.type == "cuda" else 24)
    torch.manual_seed(0)

    begin = time.perf_counter()
    kernels = False if args.no_decode_kernels else None
    reference, engine = build(
        hf_config(args.size), device, dtype, decode_kernels=kernels, batch_invariant=args.batch_invariant,
        dependent_launches=not args.no_dependent_launches,
    )  # fmt: skip
    print(f"# built both engines in {time.perf_counter() - begin:.1f} s", file=sys.stderr)
    if args.concurrent:
        return main_concurrent(args, engine, device, dtype, max_tokens)
    others = _alternatives(args, reference, kernels)
    warm = min(max_tokens, 40)
    run_ours(engine, warm, device)
    for other in others.values():
        run_ours(other, warm, device)
    if not args.skip_reference:
        run_reference(reference, warm, device)
    rounds: dict[str, list[Result]] = {"ours": [], **{name: [] for name in others}, "transformers": []}
    for _ in range(args.repeats):
        rounds["ours"].append(run_ours(engine, max_tokens, device))
        for name, other in others.items():
            rounds[name].append(run_ours(other, max_tokens, device, name=name))
        if not args.skip_reference:
            rounds["transformers"].append(run_reference(reference, max_tokens, device))
    results = [sorted(runs, key=lambda r: r.seconds)[len(runs) // 2] for runs in rounds.values() if runs]

    meta = {**_meta(args, device, dtype, max_tokens), "matmuls": matmul_choices(engine)}
    meta["sampler"] = sampler_choices(engine)
    if NO_PDL in others:
        meta["matmuls without dependent launches"] = matmul_choices(others[NO_PDL])
    if PERSISTENT in others:
        meta["persistent layers serve"] = others[PERSISTENT].model.ops.persistent is not None
    print(f"# {meta}")
    print_single(results)
    if not args.skip_reference:
        print(f"# speed-up: {results[0].steps_per_s / results[-1].steps_per_s:.2f}x overall")
    _print_gains(results, others)
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2))
    return 0


def main_concurrent(
    args: argparse.Namespace, engine: Engine, device: torch.device, dtype: torch.dtype, max_tokens: int
) -> int:
    """The single-stream engine and one scheduler at each stream count, taking turns for --repeats rounds so
    that a noisy moment hits them alike; each reports its median round."""
    begin = time.perf_counter()
    scheduler = engine.scheduler(slots=max(args.concurrent))
    print(f"# built a {scheduler.capacity}-slot scheduler in {time.perf_counter() - begin:.1f} s", file=sys.stderr)
    warm = min(max_tokens, 40)
    run_ours(engine, warm, device)
    run_batch(scheduler, scheduler.capacity, warm)
    singles: list[Result] = []
    rounds: dict[int, list[BatchResult]] = {streams: [] for streams in args.concurrent}
    for round_index in range(args.repeats):
        singles.append(run_ours(engine, max_tokens, device))
        for streams in args.concurrent:
            rounds[streams].append(run_concurrent(scheduler, streams, max_tokens, device))
        print(f"# round {round_index + 1} of {args.repeats} done", file=sys.stderr)
    single = sorted(singles, key=lambda r: r.seconds)[len(singles) // 2]
    results = [sorted(runs, key=lambda r: r.seconds)[len(runs) // 2] for runs in rounds.values()]
    meta = {**_meta(args, device, dtype, max_tokens), "size": args.size, "slots": scheduler.capacity}
    meta["matmuls"] = matmul_choices(engine)
    meta["sampler"] = sampler_choices(engine)
    meta["chunk_steps"] = scheduler.chunk_steps
    print(f"# {meta}")
    print_concurrent(single, results)
    if args.json:
        payload = {"meta": meta, "single": asdict(single), "concurrent": [asdict(r) for r in results]}
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


def _meta(args: argparse.Namespace, device: torch.device, dtype: torch.dtype, max_tokens: int) -> dict[str, object]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {
        "device": name,
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "text_bytes": len(encode(TEXT)),
        "max_tokens": max_tokens,
        "repeats": args.repeats,
        "decode_kernels": not args.no_decode_kernels and device.type == "cuda",
        "batch_invariant": args.batch_invariant,
        "dependent_launches": not args.no_dependent_launches,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "commit": args.commit or commit(),
    }


if __name__ == "__main__":
    sys.exit(main())
