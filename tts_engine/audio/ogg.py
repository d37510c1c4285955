"""Ogg Opus files from 20 ms packets (RFC 7845), and WAV files from PCM: in pure Python, torch-free.

The bot can build an attachment from the packets it already has, and `render` writes files with the same code.
Pages follow RFC 3533: 'OggS', flags, granule position (48 kHz samples including the pre-skip), serial,
sequence, CRC-32 (polynomial 0x04C11DB7, unreflected), lacing table. The last page's granule position trims
the padding of the final frame, so players decode the exact duration (ffprobe's container duration adds the
pre-skip; the decoded length is exact).
"""

from __future__ import annotations

import struct
import wave
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

_CRC_TABLE = []
for _byte in range(256):
    _r = _byte << 24
    for _ in range(8):
        _r = ((_r << 1) ^ 0x04C11DB7) if _r & 0x80000000 else (_r << 1)
    _CRC_TABLE.append(_r & 0xFFFFFFFF)

SAMPLES_PER_PACKET = 960
_PACKETS_PER_PAGE = 50  # one second a page


def _crc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[((crc >> 24) & 0xFF) ^ byte]
    return crc


def _page(packets: Sequence[bytes], *, granule: int, serial: int, sequence: int, flags: int) -> bytes:
    lacing = bytearray()
    for packet in packets:
        lacing += b"\xff" * (len(packet) // 255) + bytes([len(packet) % 255])
    header = struct.pack("<4sBBqIIIB", b"OggS", 0, flags, granule, serial, sequence, 0, len(lacing)) + bytes(lacing)
    body = b"".join(packets)
    crc = _crc(header + body)
    return header[:22] + struct.pack("<I", crc) + header[26:] + body


def ogg_opus(
    packets: Iterable[bytes], *, samples: int, pre_skip: int, channels: int = 2, serial: int = 0x44494121
) -> bytes:
    """An Ogg Opus file of 20 ms `packets` whose real length is `samples` (48 kHz, per channel)."""
    head = struct.pack("<8sBBHIhB", b"OpusHead", 1, channels, pre_skip, 48000, 0, 0)
    vendor = b"dia-voice-bot"
    tags = struct.pack("<8sI", b"OpusTags", len(vendor)) + vendor + struct.pack("<I", 0)
    pages = [_page([head], granule=0, serial=serial, sequence=0, flags=0x02)]
    pages.append(_page([tags], granule=0, serial=serial, sequence=1, flags=0))
    packets = list(packets)
    final = pre_skip + samples
    for start in range(0, len(packets), _PACKETS_PER_PAGE):
        chunk = packets[start : start + _PACKETS_PER_PAGE]
        last = start + _PACKETS_PER_PAGE >= len(packets)
        # Granules count decoded samples, the pre-skip included; the last one ends the real audio exactly.
        granule = final if last else (start + len(chunk)) * SAMPLES_PER_PACKET
        pages.append(_page(chunk, granule=granule, serial=serial, sequence=len(pages), flags=0x04 if last else 0))
    if not packets:
        pages[-1] = _page([tags], granule=0, serial=serial, sequence=1, flags=0x04)
    return b"".join(pages)


def write_wav(path: Path, mono: np.ndarray, rate: int = 48000) -> None:
    """16-bit mono WAV of float audio in [-1, 1]."""
    pcm = (np.clip(mono, -1.0, 1.0) * 32767).round().astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
