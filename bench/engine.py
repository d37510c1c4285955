"""Engine speed: our Dia engine against transformers' `generate`, on the same random full-size weights.

    python bench/engine.py                    # CUDA + bfloat16 when present (1100 steps), else CPU + float32
    python bench/engine.py --steps 40 --json results.json

Both engines share one set of weights, initialised directly on the device (no download). Each renders a
200-byte, two-speaker line with classifier-free guidance and Dia's default sampling, after a short warm-up.
Reported per engine: decoder steps per second over the whole call and in steady state (after the first
final frame), the real-time factor (86.13 steps make one second of audio), the time from the call to the
first final frame (the first frame is final 1 + max_delay steps after the start), and the peak device memory
of the call. Random weights never end a line early, so every run decodes the same number of steps. The two
engines take turns for --repeats rounds and each reports its median round, so a noisy moment on a shared
machine does not decide the comparison.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from transformers import DiaConfig as HFDiaConfig
from transformers import DiaForConditionalGeneration
from transformers.generation.streamers import BaseStreamer

from tts_engine.dia.config import DiaConfig
from tts_engine.dia.model import DiaModel
from tts_engine.dia.text import encode
from tts_engine.engine import Engine, GenerationParams

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


class _StepClock(BaseStreamer):  # type: ignore[misc]
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


def run_ours(engine: Engine, max_tokens: int, device: torch.device) -> Result:
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
    # No prompt and no early EOS: frames 1..max_tokens-2 came out, after max_tokens - 1 + max_delay steps.
    assert frames == max_tokens - 2, f"expected {max_tokens - 2} frames, got {frames}"
    return _result("ours", max_tokens - 1 + max_delay, start, first, end, device)


def run_reference(model: DiaForConditionalGeneration, max_tokens: int, device: torch.device) -> Result:
    ids = torch.tensor([encode(TEXT)], device=device)
    delays = list(model.config.delay_pattern)
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


def _commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        return done.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--steps", type=int, help="max_tokens per run (default 1100 on CUDA, 24 on CPU)")
    parser.add_argument("--skip-reference", action="store_true", help="time only our engine")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per engine; the median is reported")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--commit", default=None, help="commit to record (default: git rev-parse)")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    max_tokens = args.steps or (1100 if device.type == "cuda" else 24)
    torch.manual_seed(0)

    begin = time.perf_counter()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    with torch.device(device):
        reference = DiaForConditionalGeneration(HFDiaConfig()).eval()  # random init, on the device
    torch.set_default_dtype(previous)
    with torch.device("meta"):
        ours = DiaModel(DiaConfig())
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)  # the very same tensors
    ours.fuse()
    ours.requires_grad_(False)
    engine = Engine(ours.eval())
    print(f"# built both engines in {time.perf_counter() - begin:.1f} s", file=sys.stderr)

    warm = min(max_tokens, 40)
    run_ours(engine, warm, device)
    if not args.skip_reference:
        run_reference(reference, warm, device)
    rounds: dict[str, list[Result]] = {"ours": [], "transformers": []}
    for _ in range(args.repeats):
        rounds["ours"].append(run_ours(engine, max_tokens, device))
        if not args.skip_reference:
            rounds["transformers"].append(run_reference(reference, max_tokens, device))
    results = [sorted(runs, key=lambda r: r.seconds)[len(runs) // 2] for runs in rounds.values() if runs]

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    meta = {
        "device": name,
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "text_bytes": len(encode(TEXT)),
        "max_tokens": max_tokens,
        "repeats": args.repeats,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "commit": args.commit or _commit(),
    }
    print(f"# {meta}")
    header = f"| {'engine':<12} | steps | steps/s | steady steps/s | x real time | first frame ms | peak GB |"
    print(header)
    print("|" + "|".join("-" * (len(part)) for part in header.split("|")[1:-1]) + "|")
    for r in results:
        peak = "n/a" if r.peak_memory_gb is None else f"{r.peak_memory_gb:.2f}"
        print(
            f"| {r.engine:<12} | {r.steps:5d} | {r.steps_per_s:7.1f} | {r.steady_steps_per_s:14.1f} | "
            f"{r.realtime_factor:11.2f} | {r.first_frame_ms:14.1f} | {peak:>7} |"
        )
    if len(results) == 2:
        print(f"# speed-up: {results[0].steps_per_s / results[1].steps_per_s:.2f}x overall")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
