"""20 ms Opus packets for Discord, through libopus with ctypes (Debian's libopus0; no Python binding needed).

Discord plays 48 kHz stereo Opus in 20 ms frames. Our speech is mono, so the stereo encoder is told to code
one channel (OPUS_SET_FORCE_CHANNELS): every packet is a mono packet, which any stereo decoder plays on both
channels (RFC 6716 lets each packet choose), the whole bitrate goes to that one channel, and encoding takes
5-15% less CPU than coding two identical channels (two test signals on the development machine, 2026-11-22).
Application AUDIO, as discord.py's own encoder; the bitrate (96 kbit/s by default), the complexity (10) and in-band
forward error correction (off) are settings (`OpusSettings`).

FEC is off by default, unlike discord.py, whose encoder (and FFmpegOpusAudio's ffmpeg flags) ask for in-band FEC
at 15 % expected loss (../shared/research/discord.md). In-band FEC exists only in SILK, so libopus then codes every
packet in hybrid mode (SILK below 8 kHz, CELT above) whatever the bitrate; without it, its own mode decision picks
CELT alone for full-band audio at 96 kbit/s. Measured on the development machine (bench/audio.py,
docs/benchmarks.md): CELT takes less than a third of the encoder CPU (0.094 against 0.339 ms a packet at
complexity 10) and keeps the waveform closer (20.5 against 12.3 dB signal-to-noise on a voiced, noisy test
signal: hybrid's SILK layer codes the spectrum, not the waveform; no listening test). FEC is for listeners on
lossy links: a lost packet is then rebuilt from the next one's redundant copy instead of concealed.

A decoder is included for tests and checks. ctypes calls follow libopus's opus.h.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

RATE = 48000
CHANNELS = 2
FRAME_SAMPLES = 960  # 20 ms per channel
FRAME_BYTES_PCM16 = FRAME_SAMPLES * CHANNELS * 2  # 3840: what discord.py reads per frame
MAX_PACKET = 1500
DEFAULT_BITRATE = 96_000
# libopus's most thorough analysis (its default too). Lower trades a little quality for encoder CPU: on the
# development machine's CPU, per 20 ms packet, 0.094 ms at 10 and 0.074 at 5 without FEC, 0.339 and 0.191 with
# (docs/benchmarks.md).
DEFAULT_COMPLEXITY = 10
EXPECTED_LOSS_PERCENT = 15  # what discord.py tells its encoder, used with FEC

_APPLICATION_AUDIO = 2049
_SET_BITRATE = 4002
_SET_COMPLEXITY = 4010
_SET_INBAND_FEC = 4012
_SET_PACKET_LOSS_PERC = 4014
_SET_FORCE_CHANNELS = 4022
_GET_LOOKAHEAD = 4027


class OpusError(RuntimeError):
    """libopus is missing or refused a call; `str()` says which."""


@dataclass(frozen=True)
class OpusSettings:
    """How lines are encoded; invalid values raise `ValueError` here, before any work."""

    bitrate: int = DEFAULT_BITRATE
    complexity: int = DEFAULT_COMPLEXITY  # 0..10: lower spends less CPU per packet, for a little quality
    fec: bool = False  # in-band FEC at 15 % expected loss (so hybrid mode), see the module docstring

    def __post_init__(self) -> None:
        if not 6_000 <= self.bitrate <= 510_000:
            raise ValueError(f"bitrate must be 6000..510000 bit/s, got {self.bitrate}")
        if not 0 <= self.complexity <= 10:
            raise ValueError(f"Opus complexity must be 0..10, got {self.complexity}")

    @property
    def revision(self) -> str:
        """Names what makes the packets: lines cached or resumed under another never mix with these."""
        return f"opus{self.bitrate}c{self.complexity}{'fec' if self.fec else 'celt'}"


def coding_mode(packet: bytes) -> str:
    """ "silk", "hybrid" or "celt": how a packet was coded, from its TOC byte's configuration (RFC 6716 3.1)."""
    config = packet[0] >> 3
    return "silk" if config < 12 else "hybrid" if config < 16 else "celt"


@lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("opus") or "libopus.so.0"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        raise OpusError(f"cannot load libopus ({name}): install it (Debian/Ubuntu: apt-get install libopus0)") from exc
    lib.opus_encoder_create.restype = ctypes.c_void_p
    lib.opus_encoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    lib.opus_encode_float.restype = ctypes.c_int32
    lib.opus_encode_float.argtypes = [
        ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_int, ctypes.c_char_p, ctypes.c_int32,
    ]  # fmt: skip
    lib.opus_encoder_destroy.argtypes = [ctypes.c_void_p]
    lib.opus_decoder_create.restype = ctypes.c_void_p
    lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    lib.opus_decode.restype = ctypes.c_int
    lib.opus_decode.argtypes = [
        ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32, ctypes.POINTER(ctypes.c_int16), ctypes.c_int, ctypes.c_int,
    ]  # fmt: skip
    lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
    lib.opus_strerror.restype = ctypes.c_char_p
    lib.opus_strerror.argtypes = [ctypes.c_int]
    return lib


def _check(code: int, what: str) -> int:
    if code < 0:
        message = _lib().opus_strerror(code).decode()
        raise OpusError(f"libopus {what} failed: {message}")
    return code


class OpusEncoder:
    """Encodes 20 ms of 48 kHz stereo float PCM per call."""

    def __init__(self, settings: OpusSettings | None = None) -> None:
        settings = settings or OpusSettings()
        lib = _lib()
        error = ctypes.c_int()
        self._state = lib.opus_encoder_create(RATE, CHANNELS, _APPLICATION_AUDIO, ctypes.byref(error))
        _check(error.value, "encoder_create")
        fec = settings.fec
        for request, value in (
            (_SET_BITRATE, settings.bitrate),
            (_SET_COMPLEXITY, settings.complexity),
            (_SET_INBAND_FEC, int(fec)),
            (_SET_PACKET_LOSS_PERC, EXPECTED_LOSS_PERCENT if fec else 0),
            (_SET_FORCE_CHANNELS, 1),
        ):
            _check(lib.opus_encoder_ctl(ctypes.c_void_p(self._state), request, ctypes.c_int32(value)), "encoder_ctl")
        lookahead = ctypes.c_int32()
        _check(lib.opus_encoder_ctl(ctypes.c_void_p(self._state), _GET_LOOKAHEAD, ctypes.byref(lookahead)), "ctl")
        self.lookahead = lookahead.value  # samples the decoder skips at the start (the Ogg pre-skip)
        self._out = ctypes.create_string_buffer(MAX_PACKET)

    def encode(self, stereo_Nx2: np.ndarray) -> bytes:
        pcm = np.ascontiguousarray(stereo_Nx2, dtype=np.float32)
        if pcm.shape != (FRAME_SAMPLES, CHANNELS):
            raise ValueError(f"one frame is {FRAME_SAMPLES} stereo samples, got {pcm.shape}")
        pointer = pcm.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        size = _check(_lib().opus_encode_float(self._state, pointer, FRAME_SAMPLES, self._out, MAX_PACKET), "encode")
        return self._out.raw[:size]

    def __del__(self) -> None:
        if getattr(self, "_state", None):
            _lib().opus_encoder_destroy(self._state)
            self._state = None


class OpusDecoder:
    """Decodes packets back to 16-bit 48 kHz stereo PCM (3840 bytes per 20 ms), as discord.py does."""

    def __init__(self) -> None:
        error = ctypes.c_int()
        self._state = _lib().opus_decoder_create(RATE, CHANNELS, ctypes.byref(error))
        _check(error.value, "decoder_create")
        self._pcm = (ctypes.c_int16 * (FRAME_SAMPLES * 6 * CHANNELS))()

    def decode(self, packet: bytes) -> bytes:
        samples = _check(
            _lib().opus_decode(self._state, packet, len(packet), self._pcm, FRAME_SAMPLES * 6, 0), "decode"
        )
        return bytes(memoryview(self._pcm).cast("B")[: samples * CHANNELS * 2])

    def __del__(self) -> None:
        if getattr(self, "_state", None):
            _lib().opus_decoder_destroy(self._state)
            self._state = None


class OpusFramer:
    """Cuts mono 48 kHz float audio into 20 ms stereo packets; `flush` pads the last partial frame with silence."""

    def __init__(self, settings: OpusSettings | None = None) -> None:
        self.encoder = OpusEncoder(settings)
        self._pending = np.zeros(0, dtype=np.float32)
        self.samples = 0  # real (unpadded) samples per channel so far

    def process(self, mono: np.ndarray) -> list[bytes]:
        mono = np.asarray(mono, dtype=np.float32)
        self.samples += len(mono)
        self._pending = np.concatenate((self._pending, mono))
        whole = len(self._pending) // FRAME_SAMPLES * FRAME_SAMPLES
        frames, self._pending = self._pending[:whole], self._pending[whole:]
        return [self.encoder.encode(np.repeat(f[:, None], CHANNELS, axis=1)) for f in frames.reshape(-1, FRAME_SAMPLES)]

    def flush(self) -> list[bytes]:
        """The rest, followed by the encoder's lookahead in silence (else the last 6.5 ms never leave it),
        padded to whole frames."""
        if not self.samples:
            return []
        tail = np.concatenate((self._pending, np.zeros(self.encoder.lookahead, dtype=np.float32)))
        padded = np.zeros(-(-len(tail) // FRAME_SAMPLES) * FRAME_SAMPLES, dtype=np.float32)
        padded[: len(tail)] = tail
        self._pending = np.zeros(0, dtype=np.float32)
        return [self.encoder.encode(np.repeat(f[:, None], CHANNELS, axis=1)) for f in padded.reshape(-1, FRAME_SAMPLES)]
