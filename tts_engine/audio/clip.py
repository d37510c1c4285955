"""Voice clips from users: any common format in, 44.1 kHz mono float32 out, with a clear error for bad input.

The bytes are untrusted. They are written to a private temporary file and read by ffprobe, then ffmpeg, run
without a shell, with `-nostdin`, a wall-clock timeout (the process is killed when it runs out), `-xerror`
(stop on the first decoding error) and an output capped just past the longest clip allowed, so a tiny file
that claims hours of audio cannot fill memory. Argument lists are built with ffmpeg-python.
Each failure is its own `ClipError` subclass whose message a user can act on.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np

RATE = 44100
SILENCE_DBFS = -50.0  # a clip whose loudest 50 ms stays below this is taken as silent


class ClipError(ValueError):
    """The clip cannot become a voice; `str()` says why in words a user can act on."""


class ClipTooLarge(ClipError): ...


class NotAudio(ClipError): ...


class CorruptClip(ClipError): ...


class ClipTooShort(ClipError): ...


class ClipTooLong(ClipError): ...


class SilentClip(ClipError): ...


class ClipTimeout(ClipError): ...


@dataclass(frozen=True)
class ClipLimits:
    max_bytes: int = 10 * 2**20
    min_seconds: float = 3.0
    max_seconds: float = 30.0
    timeout_seconds: float = 20.0


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(argv, capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:  # subprocess.run kills the child before raising
        raise ClipTimeout(f"reading the clip took longer than {timeout:g} s; try a plain WAV or MP3 file") from None
    except FileNotFoundError as exc:
        raise ClipError(f"{argv[0]} is not installed on the worker (Debian/Ubuntu: apt-get install ffmpeg)") from exc


def _probe(path: Path, timeout: float) -> float | None:
    """The container's duration in seconds (None when it does not say); NotAudio without an audio stream."""
    argv = ["ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_type", "-of", "json", str(path)]
    done = _run(argv, timeout)
    if done.returncode != 0:
        raise NotAudio("the file is not audio (or is damaged beyond reading): send a WAV, MP3, OGG, FLAC or M4A clip")
    info = json.loads(done.stdout or b"{}")
    if not any(stream.get("codec_type") == "audio" for stream in info.get("streams", [])):
        raise NotAudio("the file holds no audio track: send a WAV, MP3, OGG, FLAC or M4A clip")
    duration = info.get("format", {}).get("duration")
    try:
        return float(duration) if duration not in (None, "N/A") else None
    except ValueError:
        return None


def decode_clip(data: bytes, limits: ClipLimits = ClipLimits()) -> np.ndarray:
    """Mono float32 audio at 44.1 kHz of a clip in any format ffmpeg reads (wav, mp3, ogg/opus, flac, m4a, webm)."""
    if len(data) > limits.max_bytes:
        raise ClipTooLarge(f"the clip is {len(data) / 2**20:.1f} MiB; the limit is {limits.max_bytes / 2**20:.0f} MiB")
    if not data:
        raise NotAudio("the file is empty")
    with tempfile.TemporaryDirectory(prefix="dia-clip-") as folder:
        path = Path(folder) / "clip"
        path.write_bytes(data)
        declared = _probe(path, limits.timeout_seconds)
        if declared is not None and declared > limits.max_seconds + 0.5:
            raise ClipTooLong(_too_long(declared, limits))
        argv = (
            ffmpeg.input(str(path))
            .output("pipe:", format="f32le", acodec="pcm_f32le", ac=1, ar=RATE, t=limits.max_seconds + 1.0)
            .global_args("-nostdin", "-hide_banner", "-v", "error", "-xerror")
            .compile()
        )
        done = _run(argv, limits.timeout_seconds)
    audio = np.frombuffer(done.stdout, dtype="<f4").astype(np.float32)
    if done.returncode != 0 or (declared is not None and len(audio) < 0.9 * declared * RATE - RATE // 10):
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = f" ({detail[-1][:160]})" if detail else ""
        raise CorruptClip(f"the clip is damaged or cut off{reason}: export it again and resend it")
    seconds = len(audio) / RATE
    if seconds > limits.max_seconds:
        raise ClipTooLong(_too_long(seconds, limits))
    if seconds < limits.min_seconds:
        raise ClipTooShort(
            f"the clip is {seconds:.1f} s long; a voice needs at least {limits.min_seconds:g} s of speech "
            "(5 to 10 s works best)"
        )
    window = RATE // 20
    usable = len(audio) // window * window
    loudest = np.sqrt(np.square(audio[:usable]).reshape(-1, window).mean(axis=1).max())
    if 20 * np.log10(max(float(loudest), 1e-10)) < SILENCE_DBFS:
        raise SilentClip("the clip is silent (or nearly): record the voice closer to the microphone")
    return audio


def _too_long(seconds: float, limits: ClipLimits) -> str:
    return (
        f"the clip is {seconds:.1f} s long; the limit is {limits.max_seconds:g} s "
        "(5 to 10 s of clear speech works best): trim it and resend it"
    )
