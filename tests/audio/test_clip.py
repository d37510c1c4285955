"""Voice-clip intake: real files of every common format, and each kind of bad input gets its own error."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from tts_engine.audio.clip import (
    ClipLimits,
    ClipTimeout,
    ClipTooLarge,
    ClipTooLong,
    ClipTooShort,
    CorruptClip,
    NotAudio,
    SilentClip,
    decode_clip,
)

# A voice-like test signal: a vibrato tone with syllable-rate amplitude, so codecs keep it audible.
SOURCE = "aevalsrc='0.3*sin(2*PI*(180+20*sin(2*PI*5*t))*t)*(0.6+0.4*sin(2*PI*3*t))':s=44100:d={seconds}"


def make_clip(folder: Path, name: str, seconds: float = 5.0, *extra: str, source: str = SOURCE) -> Path:
    path = folder / name
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", source.format(seconds=seconds), *extra, str(path)],
        check=True,
    )
    return path


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("clip.wav", ()),
        ("clip.mp3", ("-b:a", "128k")),
        ("clip.ogg", ("-c:a", "libopus", "-b:a", "64k")),
        ("clip.flac", ()),
        ("clip.m4a", ("-c:a", "aac", "-b:a", "128k")),
        ("clip.webm", ("-c:a", "libopus")),
    ],
)
def test_common_formats_decode(tmp_path: Path, name: str, extra: tuple[str, ...]) -> None:
    audio = decode_clip(make_clip(tmp_path, name, 5.0, *extra).read_bytes())
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) / 44100 == pytest.approx(5.0, abs=0.06)  # lossy codecs pad a little
    assert 0.1 < np.abs(audio).max() <= 1.0


def test_stereo_and_other_rates_become_mono_44k(tmp_path: Path) -> None:
    path = make_clip(tmp_path, "stereo.wav", 4.0, "-ac", "2", "-ar", "22050")
    assert len(decode_clip(path.read_bytes())) == 4 * 44100


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"Hello, this is a text file, not a recording.\n" * 20, NotAudio, "not audio"),
        (np.random.default_rng(0).bytes(50_000), NotAudio, "not audio"),
        (b"", NotAudio, "empty"),
        (b"\0" * (20 * 2**20), ClipTooLarge, "20.0 MiB; the limit is 10 MiB"),
    ],
)
def test_garbage_is_refused(data: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        decode_clip(data)


@pytest.mark.parametrize("name", ["clip.wav", "clip.flac"])
def test_truncated_files_are_called_damaged(tmp_path: Path, name: str) -> None:
    data = make_clip(tmp_path, name, 8.0).read_bytes()
    with pytest.raises(CorruptClip, match="damaged or cut off"):
        decode_clip(data[: len(data) // 2])


def test_too_short(tmp_path: Path) -> None:
    with pytest.raises(ClipTooShort, match=r"0\.5 s long; a voice needs at least 3 s"):
        decode_clip(make_clip(tmp_path, "short.wav", 0.5).read_bytes())


def test_too_long_by_its_header(tmp_path: Path) -> None:
    path = make_clip(tmp_path, "long.ogg", 300.0, "-c:a", "libopus", "-b:a", "8k")
    with pytest.raises(ClipTooLong, match=r"300\.0 s long; the limit is 30 s"):
        decode_clip(path.read_bytes())


def test_too_long_without_a_header(tmp_path: Path) -> None:
    """A raw stream declares no length: decoding stops just past the limit and still says it is too long."""
    path = make_clip(tmp_path, "long.mp3", 40.0, "-b:a", "32k", "-write_xing", "0", "-id3v2_version", "0")
    with pytest.raises(ClipTooLong, match="the limit is 30 s"):
        decode_clip(path.read_bytes())


def test_silence(tmp_path: Path) -> None:
    path = make_clip(tmp_path, "quiet.wav", 5.0, source="anullsrc=r=44100:cl=mono:d={seconds}")
    with pytest.raises(SilentClip, match="silent"):
        decode_clip(path.read_bytes())


def test_limits_are_configurable(tmp_path: Path) -> None:
    data = make_clip(tmp_path, "clip.wav", 5.0).read_bytes()
    with pytest.raises(ClipTooLong, match="the limit is 4 s"):
        decode_clip(data, ClipLimits(max_seconds=4))
    with pytest.raises(ClipTooShort, match="at least 6 s"):
        decode_clip(data, ClipLimits(min_seconds=6))


def test_a_stuck_decoder_is_killed_on_time(tmp_path: Path) -> None:
    data = make_clip(tmp_path, "clip.flac", 20.0).read_bytes()
    with pytest.raises(ClipTimeout, match=r"longer than 0\.001 s"):
        decode_clip(data, ClipLimits(timeout_seconds=0.001))
    leftovers = [p for p in Path("/proc").glob("[0-9]*/cmdline") if b"dia-clip-" in _read(p)]
    assert leftovers == [], "no ffmpeg or ffprobe may survive its timeout"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended while we looked
        return b""
