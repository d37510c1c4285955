"""Opus packets Discord can play, and Ogg Opus / WAV files that players read."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.audio.conftest import dominant_frequency, sine
from tts_engine.audio.ogg import ogg_opus, write_wav
from tts_engine.audio.opus import FRAME_BYTES_PCM16, OpusDecoder, OpusFramer, OpusSettings, coding_mode


def _encode(x: np.ndarray, bitrate: int = 96_000) -> tuple[list[bytes], OpusFramer]:
    framer = OpusFramer(OpusSettings(bitrate))
    packets = framer.process(x[: len(x) // 3]) + framer.process(x[len(x) // 3 :]) + framer.flush()
    return packets, framer


def _decode(packets: list[bytes]) -> np.ndarray:
    decoder = OpusDecoder()
    frames = [decoder.decode(p) for p in packets]
    assert all(len(f) == FRAME_BYTES_PCM16 for f in frames), "discord.py reads 3840 bytes per 20 ms"
    pcm = np.frombuffer(b"".join(frames), dtype="<i2").reshape(-1, 2).astype(np.float32) / 32768
    return pcm


def _body(packets: list[bytes], framer: OpusFramer, samples: int) -> np.ndarray:
    """The decoded left channel of `samples` sent, less the encoder's lookahead and 2000 samples at each edge."""
    start = framer.encoder.lookahead
    return _decode(packets)[start + 2000 : start + samples - 2000, 0]


def test_packets_decode_back_to_the_sine() -> None:
    x = sine(1000, 1.01, 48000, amplitude=0.5)  # 50.5 frames, plus the 312-sample lookahead: 51 packets
    packets, framer = _encode(x)
    assert len(packets) == 51 and framer.samples == len(x)
    pcm = _decode(packets)
    left, right = pcm[:, 0], pcm[:, 1]
    assert all(packet[0] & 0x04 == 0 for packet in packets), "mono packets (the TOC byte's stereo bit clear)"
    assert np.array_equal(left, right), "a stereo decoder plays a mono packet on both channels alike"
    body = left[framer.encoder.lookahead + 2000 : framer.encoder.lookahead + len(x) - 2000]
    assert abs(dominant_frequency(body, 48000) - 1000) < 2
    assert abs(20 * np.log10(np.sqrt(np.mean(body**2)) / (0.5 / np.sqrt(2)))) < 0.5


def test_bitrate_is_honoured_and_checked() -> None:
    noise = np.random.default_rng(0).standard_normal(48000).astype(np.float32) * 0.3
    small = sum(map(len, _encode(noise, 24_000)[0]))
    large = sum(map(len, _encode(noise, 128_000)[0]))
    assert small < large
    assert small * 8 < 24_000 * 1.3  # about 24 kbit over one second
    with pytest.raises(ValueError, match="bitrate"):
        OpusSettings(1000)


def test_complexity_reaches_the_encoder_and_is_checked() -> None:
    """At complexity 0 and 10 the sine decodes to the same tone and level; the encoder's choices differ (the
    setting reaches libopus); out of 0..10 is refused by name."""
    x = sine(1000, 0.5, 48000, amplitude=0.5)
    coded = {}
    for complexity in (0, 10):
        framer = OpusFramer(OpusSettings(complexity=complexity))
        coded[complexity] = framer.process(x) + framer.flush()
        body = _body(coded[complexity], framer, len(x))
        assert abs(dominant_frequency(body, 48000) - 1000) < 2
        assert abs(20 * np.log10(np.sqrt(np.mean(body**2)) / (0.5 / np.sqrt(2)))) < 0.5
    assert coded[0] != coded[10]
    for bad in (-1, 11):
        with pytest.raises(ValueError, match=re.escape(f"Opus complexity must be 0..10, got {bad}")):
            OpusSettings(complexity=bad)


def test_fec_is_off_by_default_and_codes_celt_alone() -> None:
    """Without FEC libopus codes 96 kbit/s speech in CELT alone; with it, every packet is hybrid (SILK carries
    the redundant copy the receiver rebuilds a lost packet from). Both decode to the tone."""
    t = np.arange(48000) / 48000
    voiced = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 20)).astype(np.float32) * 0.2
    coded = {}
    for fec in (False, True):
        framer = OpusFramer(OpusSettings(fec=fec))
        coded[fec] = framer.process(voiced) + framer.flush()
        body = _body(coded[fec], framer, len(t))
        assert abs(dominant_frequency(body, 48000) - 140) < 2
    assert OpusSettings() == OpusSettings(fec=False)
    assert {coding_mode(p) for p in coded[False]} == {"celt"} and {coding_mode(p) for p in coded[True]} == {"hybrid"}
    assert OpusSettings().revision == "opus96000c10celt" and OpusSettings(fec=True).revision == "opus96000c10fec"


def _probe(path: Path) -> dict[str, str]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_name,sample_rate,channels",
         "-of", "json", str(path)],
        capture_output=True, check=True, text=True,
    ).stdout  # fmt: skip
    info = json.loads(out)
    return {**info["format"], **info["streams"][0]}


def test_ogg_opus_file_has_the_exact_duration(tmp_path: Path) -> None:
    x = sine(440, 2.345, 48000)
    packets, framer = _encode(x)
    path = tmp_path / "line.ogg"
    path.write_bytes(ogg_opus(packets, samples=framer.samples, pre_skip=framer.encoder.lookahead))
    info = _probe(path)
    assert info["codec_name"] == "opus" and info["channels"] == 2
    # ffprobe's container duration counts the encoder's pre-skip (6.5 ms); the decoded length below is exact.
    assert float(info["duration"]) == pytest.approx(2.345 + framer.encoder.lookahead / 48000, abs=0.001)
    decoded = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-ar", "48000", "pipe:"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert len(decoded) == 2 * round(2.345 * 48000)


def test_wav_file(tmp_path: Path) -> None:
    path = tmp_path / "line.wav"
    write_wav(path, sine(440, 0.5, 48000))
    info = _probe(path)
    assert (info["codec_name"], info["sample_rate"], float(info["duration"])) == ("pcm_s16le", "48000", 0.5)
