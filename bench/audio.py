"""Audio path speed: the full-size 44.1 kHz DAC and the whole codes -> Opus path, in real-time factor.

    python bench/audio.py                  # CUDA when present, else CPU
    python bench/audio.py --seconds 4 --json audio.json

Random codes stand in for a rendered line (decode cost does not depend on the values) and the DAC has random
full-size weights on the device (no download). Measured:
- full decode: the whole line decoded at once, first with transformers' Snake activations, then (on CUDA)
  with them fused as Codec does there;
- streaming path: frames pushed 8 at a time, as the engine yields them, through the streaming decoder,
  resampling to 48 kHz, loudness normalisation and Opus, until the last packet; once all on one thread,
  once with the stages after the DAC on a thread pool (AudioPipeline's executor, the engine's CUDA default);
- first packet: frames pushed one at a time as if the engine had just made each; the wall time of the push
  that returns the first packet is the latency this path adds, and its frame index says how many frames the
  codec's right context holds back;
- the Opus encoder alone, per 20 ms packet (a voiced, noisy test signal), the largest of the CPU stages, at
  a few complexities (DIA_OPUS_COMPLEXITY) without and with in-band FEC (DIA_OPUS_FEC), with the packets'
  coding modes and the decoded waveform's signal-to-noise ratio (a waveform measure, not a perceptual one).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import Counter
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from transformers import DacConfig, DacModel

from bench.common import commit
from tts_engine.audio.codec import Codec, fuse_activations
from tts_engine.audio.loudness import LoudnessNormalizer
from tts_engine.audio.opus import DEFAULT_COMPLEXITY, RATE, OpusDecoder, OpusFramer, OpusSettings, coding_mode
from tts_engine.audio.pipeline import AudioPipeline
from tts_engine.audio.resample import Resampler
from tts_engine.audio.speed import SpeedChanger
from tts_engine.audio.stream import warm_up
from tts_engine.engine import AUDIO_THREADS

FRAME_RATE = 44100 / 512


COMPLEXITIES = (10, 7, 5, 3)  # the encoder alone is also timed at these


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def voiced(seconds: float, rate: int = RATE) -> np.ndarray:
    """A 150 Hz voice-like tone with noise."""
    t = np.arange(int(seconds * rate)) / rate
    tone = sum(np.sin(2 * np.pi * 150 * h * t) / h for h in range(1, 12)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    noise = np.random.default_rng(0).standard_normal(len(t)) * 0.02
    return (0.2 * tone + noise).astype(np.float32)


def cpu_stages(seconds: float, opus: OpusSettings) -> dict[str, float]:
    """ms each stage after the DAC takes per second of audio, called directly on the codec's 44.1 kHz output in
    pushes of 8 frames (4096 samples), as the pipeline calls them; the median of three rounds per stage."""
    pushes = np.array_split(voiced(seconds, 44100), max(1, int(seconds * 44100) // 4096))
    names = ("resample", "speed", "loudness", "opus")
    rounds = []
    for _ in range(3):
        resampler, speed, loudness, framer = (
            Resampler(44100, RATE),
            SpeedChanger(1.0, RATE),
            LoudnessNormalizer(),
            OpusFramer(opus),
        )
        spent = np.zeros(len(names))
        for pcm in pushes:
            t0 = time.perf_counter()
            at48 = resampler.process(pcm)
            t1 = time.perf_counter()
            sped = speed.process(at48)
            t2 = time.perf_counter()
            leveled = loudness.process(sped)
            t3 = time.perf_counter()
            framer.process(leveled)
            spent += np.diff([t0, t1, t2, t3, time.perf_counter()])
        rounds.append(spent)
    median = np.median(rounds, axis=0)
    return {name: round(float(ms) / seconds * 1000, 2) for name, ms in zip(names, median, strict=True)}


def opus_alone(seconds: float, settings: OpusSettings) -> dict[str, object]:
    """The encoder on `seconds` of `voiced`: ms per packet (median of three rounds), the packets' coding modes,
    and the decoded waveform's signal-to-noise ratio (not a perceptual measure)."""
    pcm = voiced(seconds)
    rounds, packets, skip = [], [], 0
    for _ in range(3):
        framer = OpusFramer(settings)
        begin = time.perf_counter()
        packets = framer.process(pcm)
        rounds.append((time.perf_counter() - begin) / len(packets))
        skip = framer.encoder.lookahead
    decoder = OpusDecoder()
    decoded = np.frombuffer(b"".join(decoder.decode(p) for p in packets), dtype="<i2")[::2] / 32768
    sent, heard = pcm[: len(decoded) - skip], decoded[skip:]
    modes = Counter(coding_mode(p) for p in packets)
    return {
        "ms_per_packet": round(sorted(rounds)[1] * 1000, 3),
        "modes": dict(modes),
        "snr_db": round(float(10 * np.log10(np.sum(sent**2) / np.sum((sent - heard) ** 2))), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, help="length of the line (default 10 on CUDA, 4 on CPU)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--commit")
    parser.add_argument("--audio-threads", type=int, default=AUDIO_THREADS, help="the pool for the second run")
    parser.add_argument(
        "--opus-complexity", type=int, default=DEFAULT_COMPLEXITY, help="the streaming path's encoder (0-10)"
    )
    parser.add_argument("--opus-fec", action="store_true", help="the streaming path's encoder with in-band FEC")
    args = parser.parse_args()
    opus = OpusSettings(complexity=args.opus_complexity, fec=args.opus_fec)
    device = torch.device(args.device)
    seconds = args.seconds or (10.0 if device.type == "cuda" else 4.0)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    torch.manual_seed(0)
    with torch.device(device):
        dac = DacModel(DacConfig(sampling_rate=44100)).eval()
    dac.requires_grad_(False)
    codec = Codec(dac, device=device, fuse=False)
    frames = round(seconds * FRAME_RATE)
    codes = np.random.default_rng(0).integers(0, 1024, size=(frames, 9))
    audio_seconds = frames / FRAME_RATE

    def full_decode() -> float:
        codec.decode(codes[:64])  # warm-up: kernels, allocator, compilation
        _sync(device)
        start = time.perf_counter()
        codec.decode(codes)
        _sync(device)
        return time.perf_counter() - start

    unfused = full_decode()
    if device.type == "cuda":  # as Codec does by default there
        fuse_activations(dac)
    full = full_decode()
    warm_up(codec)  # every streaming window length, as Engine.load does

    decode_seconds = [0.0]
    plain_decode = codec.decode

    def timed_decode(codes_TxC: np.ndarray) -> np.ndarray:
        begin = time.perf_counter()
        try:
            return plain_decode(codes_TxC)  # returns host memory: the device work is done when this returns
        finally:
            decode_seconds[0] += time.perf_counter() - begin

    codec.decode = timed_decode  # type: ignore[method-assign]

    def stream(step: int, executor: Executor | None = None) -> tuple[float, float | None, int | None]:
        decode_seconds[0] = 0.0
        pipeline = AudioPipeline(codec, opus=opus, executor=executor)
        first_latency, first_frame = None, None
        begin = time.perf_counter()
        for i in range(0, frames, step):
            pushed = time.perf_counter()
            chunk = pipeline.push_codes(codes[i : i + step])
            if first_latency is None and chunk.packets:
                first_latency, first_frame = time.perf_counter() - pushed, i + step
        pipeline.finish()
        return time.perf_counter() - begin, first_latency, first_frame

    stream(8)  # warm-up of every window size
    streamed, _, _ = stream(8)
    streamed_decode = decode_seconds[0]
    _, first_latency, first_frame = stream(1)
    with ThreadPoolExecutor(args.audio_threads) as pool:
        stream(8, pool)
        pooled, _, _ = stream(8, pool)
        pooled_decode = decode_seconds[0]
        _, pooled_first_latency, _ = stream(1, pool)

    # The encoder alone at each complexity, without and with FEC (the path's own settings are among them or added).
    encoders = {s: opus_alone(seconds, s) for s in [OpusSettings(complexity=c, fec=f) for f in (False, True)
                                                     for c in COMPLEXITIES] + [opus]}  # fmt: skip
    stages = cpu_stages(seconds, opus)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    result = {
        "meta": {
            "device": name,
            "torch": torch.__version__,
            "seconds_of_audio": round(audio_seconds, 2),
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "commit": args.commit or commit(),
        },
        "full_decode_x_realtime": round(audio_seconds / full, 2),
        "full_decode_unfused_x_realtime": round(audio_seconds / unfused, 2),
        "streaming_path_x_realtime": round(audio_seconds / streamed, 2),
        "streaming_path_dac_share": round(streamed_decode / streamed, 2),
        "first_packet_added_ms": round((first_latency or 0.0) * 1000, 1),
        "audio_threads": args.audio_threads,
        "pooled_streaming_path_x_realtime": round(audio_seconds / pooled, 2),
        "pooled_streaming_path_dac_share": round(pooled_decode / pooled, 2),
        "pooled_first_packet_added_ms": round((pooled_first_latency or 0.0) * 1000, 1),
        "first_packet_after_frames": first_frame,
        "opus": opus.revision,
        "opus_ms_per_packet": encoders[opus]["ms_per_packet"],
        "opus_alone": {s.revision: measured for s, measured in encoders.items()},
        "cpu_stages_ms_per_second": stages,
    }
    print(f"# {result['meta']}")
    print("| measurement | value |")
    print("|---|---|")
    unfused_x = result["full_decode_unfused_x_realtime"]
    print(f"| DAC full decode, Snake activations as transformers runs them | {unfused_x}x real time |")
    print(f"| DAC full decode (activations fused on CUDA) | {result['full_decode_x_realtime']}x real time |")
    print(f"| streaming decode + 48 kHz + loudness + Opus | {result['streaming_path_x_realtime']}x real time |")
    print(f"| of which the DAC decode | {result['streaming_path_dac_share']:.0%} |")
    print(f"| added before the first packet | {result['first_packet_added_ms']} ms of compute |")
    pool_note = f"stages after the DAC on a pool of {args.audio_threads} (the engine's default on CUDA)"
    print(f"| the same, {pool_note} | {result['pooled_streaming_path_x_realtime']}x real time |")
    print(f"| of which the DAC decode, with the pool | {result['pooled_streaming_path_dac_share']:.0%} |")
    print(f"| added before the first packet, with the pool | {result['pooled_first_packet_added_ms']} ms |")
    print(f"| Opus encoder alone, per 20 ms packet ({opus.revision}) | {result['opus_ms_per_packet']} ms |")
    per_second = ", ".join(f"{name} {ms} ms" for name, ms in stages.items())
    print(f"| the stages after the DAC, per second of audio ({opus.revision}) | {per_second} |")
    for settings, measured in encoders.items():
        about = f"{measured['ms_per_packet']} ms, {measured['snr_db']} dB SNR, modes {measured['modes']}"
        print(f"| the encoder alone, {settings.revision} | {about} |")
    held_ms = (first_frame or 0) / FRAME_RATE * 1000
    print(f"| frames needed before the first packet | {first_frame} ({held_ms:.0f} ms of audio) |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
