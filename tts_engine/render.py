"""`python -m tts_engine render "[S1] Hello there. (laughs)" -o line.ogg`: try the engine without Discord.

Writes Ogg Opus (.ogg, .opus) or WAV (.wav) at 48 kHz, exactly what the bot would play, and shows progress
while it renders. Model, codec, device and dtype come from the worker settings (DIA_*), flags override them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from config.settings import WorkerSettings
from config.startup import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, fail
from tts_engine.audio.clip import ClipError
from tts_engine.audio.ogg import ogg_opus, write_wav
from tts_engine.audio.opus import DEFAULT_BITRATE, DEFAULT_COMPLEXITY, OpusSettings
from tts_engine.dia.text import TextError, normalize
from tts_engine.engine import Engine, GenerationParams
from tts_engine.hub import ModelLoadError

SUFFIXES = (".ogg", ".opus", ".wav")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help='what to say, e.g. "[S1] Hello there. (laughs) [S2] Hi!"')
    parser.add_argument("-o", "--output", type=Path, required=True, help="file to write: .ogg/.opus or .wav")
    parser.add_argument("--voice", type=Path, help="a 3-30 s clip of the voice to use (any common format)")
    parser.add_argument("--transcript", help="what the --voice clip says, with speaker tags")
    parser.add_argument("--seed", type=int, help="the same seed gives the same rendering")
    parser.add_argument("--speed", type=float, default=1.0, help="0.75 to 1.5, pitch kept (default 1.0)")
    defaults = GenerationParams()
    parser.add_argument("--cfg-scale", type=float, default=defaults.cfg_scale)
    parser.add_argument("--temperature", type=float, default=defaults.temperature, help="0 is greedy")
    parser.add_argument("--top-p", type=float, default=defaults.top_p)
    parser.add_argument("--top-k", type=int, default=defaults.top_k)
    parser.add_argument("--max-tokens", type=int, default=defaults.max_tokens, help="86 make one second")
    parser.add_argument("--bitrate", type=int, default=DEFAULT_BITRATE, help="Opus bit/s (default 96000)")
    parser.add_argument(
        "--opus-complexity", type=int, default=DEFAULT_COMPLEXITY, help="Opus encoder effort, 0-10 (default 10)"
    )
    parser.add_argument("--opus-fec", action="store_true", help="in-band FEC, for streaming over lossy links")
    parser.add_argument("--codec", help="DAC hub id or folder; overrides DIA_CODEC")


def run(options: argparse.Namespace, settings: WorkerSettings) -> int:
    output: Path = options.output
    if output.suffix.lower() not in SUFFIXES:
        return fail(f"{output} must end in .ogg, .opus or .wav", EXIT_USAGE)
    if (options.voice is None) != (options.transcript is None):
        return fail("--voice and --transcript go together: the clip and what it says", EXIT_USAGE)
    try:
        params = GenerationParams(
            cfg_scale=options.cfg_scale,
            temperature=options.temperature,
            top_p=options.top_p,
            top_k=options.top_k,
            max_tokens=options.max_tokens,
            seed=options.seed,
        )
        opus = OpusSettings(options.bitrate, options.opus_complexity, options.opus_fec)
    except ValueError as exc:
        return fail(exc, EXIT_USAGE)
    try:
        normalize(options.text)  # an empty line should not wait for a model to load to be refused
        clip = options.voice.read_bytes() if options.voice is not None else None
    except TextError as exc:
        return fail(exc, EXIT_USAGE)
    except OSError as exc:
        return fail(f"cannot read the voice clip {options.voice}: {exc.strerror or exc}", EXIT_USAGE)
    try:
        engine = Engine.load(settings.model, settings.device, settings.dtype, codec=options.codec or settings.codec)
    except ModelLoadError as exc:
        return fail(exc, EXIT_UNAVAILABLE)
    try:
        prompt = None if clip is None else engine.voice_from_clip(clip, options.transcript)
        pipeline = engine.audio_pipeline(speed=options.speed, opus=opus)
        codes = engine.stream_codes(options.text, params, prompt)
    except (TextError, ClipError, ValueError) as exc:
        return fail(exc, EXIT_USAGE)

    packets: list[bytes] = []
    pcm: list[np.ndarray] = []
    started = time.perf_counter()
    for frames in codes:
        chunk = pipeline.push_codes(frames)
        packets += chunk.packets
        pcm.append(chunk.pcm)
        _progress(pipeline.samples, started)
    chunk = pipeline.finish()
    packets += chunk.packets
    pcm.append(chunk.pcm)
    seconds = pipeline.samples / 48000
    _progress(pipeline.samples, started, final=True)

    if output.suffix.lower() == ".wav":
        write_wav(output, np.concatenate(pcm))
    else:
        output.write_bytes(ogg_opus(packets, samples=pipeline.samples, pre_skip=pipeline.pre_skip))
    sys.stdout.write(f"wrote {output}: {seconds:.2f} s of audio\n")
    return EXIT_OK


def _progress(samples: int, started: float, *, final: bool = False) -> None:
    audio = samples / 48000
    spent = time.perf_counter() - started
    speed = f" ({audio / spent:.1f}x real time)" if spent > 0 and audio > 0 else ""
    sys.stderr.write(f"\rrendering: {audio:5.1f} s of audio in {spent:5.1f} s{speed}   ")
    if final:
        sys.stderr.write("\n")
    sys.stderr.flush()
