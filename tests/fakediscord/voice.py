"""The emulator's voice side: voice gateway v8 over TLS and the UDP endpoint that receives RTP.

Sequence from research/discord.md §2.2: IDENTIFY -> HELLO + READY (ssrc, ip, port, modes) -> UDP IP discovery
-> SELECT_PROTOCOL -> SESSION_DESCRIPTION (secret key, `dave_protocol_version: 0`, so no DAVE session) ->
SPEAKING, heartbeats. Every RTP packet is kept with its arrival time and decrypted
(aead_xchacha20_poly1305_rtpsize: AAD = the 12-byte header, nonce = the 4 trailing bytes zero-padded), and marked
unheard when the bot sat in a stage's audience or was server-muted as it arrived (Discord forwards such audio to
nobody), or when its voice connection had ended (a sender that has not noticed yet sends into the void).
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt

from tts_engine.audio.opus import OpusDecoder

OPUS_SILENCE = b"\xf8\xff\xfe"
MODES = ["aead_aes256_gcm_rtpsize", "aead_xchacha20_poly1305_rtpsize"]  # the bot picks the one it supports


@dataclass
class Packet:
    arrived: float
    seq: int
    timestamp: int
    opus: bytes
    heard: bool = True  # False: sent from a stage's audience, muted, or after its connection ended: nobody heard it


@dataclass
class VoiceSession:
    """One voice connection of the bot to one guild."""

    guild_id: int
    channel_id: int
    token: str
    ssrc: int
    secret_key: bytes = field(default_factory=lambda: os.urandom(32))
    identify: dict[str, Any] | None = None
    mode: str | None = None
    packets: list[Packet] = field(default_factory=list)
    speaking: list[tuple[float, int]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    websocket: web.WebSocketResponse | None = None
    transport: asyncio.BaseTransport | None = None  # the websocket's connection, to break it (`cut`)
    answered: bool = True  # False: its voice server never answers the handshake (VoiceServer.unanswered)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # What has been decoded so far: packets only ever arrive at the end, and tests ask again after each one, so
    # each packet is decoded once (a full decode every time made a long session's waits lag behind the audio).
    _decoder: OpusDecoder | None = field(default=None, repr=False, compare=False)
    _decoded: list[np.ndarray] = field(default_factory=list, repr=False, compare=False)
    _pitches: list[float | None] = field(default_factory=list, repr=False, compare=False)

    def audio(self) -> list[Packet]:
        """Packets that carry sound (not Opus silence frames)."""
        return [p for p in self.packets if p.opus != OPUS_SILENCE]

    def unheard(self) -> list[Packet]:
        """Packets that carry sound that nobody heard (`Packet.heard`)."""
        return [p for p in self.audio() if not p.heard]

    def pcm(self) -> np.ndarray:
        """Every packet decoded with libopus, as discord.py's receivers would: float32 stereo (N, 2)."""
        self._decode_new()
        return np.concatenate(self._decoded) if self._decoded else np.zeros((0, 2), np.float32)

    def frequencies(self) -> list[float | None]:
        """The dominant frequency of each packet; None for a quiet one or a silence filler (the first filler after
        sound decodes to that sound's fading tail, as CELT frames overlap: a short burst with no clean pitch)."""
        self._decode_new()
        done = len(self._pitches)
        for packet, decoded in zip(self.packets[done:], self._decoded[done:], strict=True):
            frame = decoded[:, 0]
            if packet.opus == OPUS_SILENCE or np.sqrt(np.mean(frame**2)) < 0.01:
                self._pitches.append(None)
                continue
            spectrum = np.abs(np.fft.rfft(frame * np.hanning(len(frame)), n=9600))
            self._pitches.append(float(np.fft.rfftfreq(9600, 1 / 48000)[np.argmax(spectrum)]))
        return list(self._pitches)

    def _decode_new(self) -> None:
        """Decode the packets that arrived since the last call, in order (the decoder carries state across them)."""
        if self._decoder is None:
            self._decoder = OpusDecoder()
        for packet in self.packets[len(self._decoded) :]:
            raw = self._decoder.decode(packet.opus)
            self._decoded.append(np.frombuffer(raw, dtype="<i2").reshape(-1, 2).astype(np.float32) / 32768)

    async def wait_for(self, predicate: Any, timeout: float = 30) -> None:
        """Wait until `predicate(self)` holds, re-checking whenever a packet or message arrives."""

        async def run() -> None:
            while not predicate(self):
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(run(), timeout)

    async def drop(self, code: int = 4006) -> None:
        """Close the voice websocket as Discord does when a voice server goes away."""
        if self.websocket is not None:
            await self.websocket.close(code=code)

    def cut(self) -> None:
        """Break the voice websocket's connection without a close frame, as a network outage does (close code 1006
        on the bot's side)."""
        if self.transport is not None:
            self.transport.abort()

    def _touch(self) -> None:
        self.changed.set()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: VoiceServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) == 74 and data[:2] == b"\x00\x01":  # IP discovery request
            ssrc = struct.unpack_from(">I", data, 4)[0]
            reply = struct.pack(">HHI64sH", 2, 70, ssrc, addr[0].encode(), addr[1])
            assert self.transport is not None
            self.transport.sendto(reply, addr)
            return
        if len(data) < 12 + 16 + 4 or data[0] != 0x80 or data[1] != 0x78:
            return
        seq, timestamp, ssrc = struct.unpack_from(">HII", data, 2)
        session = self.server.by_ssrc.get(ssrc)
        if session is None:
            return
        nonce = data[-4:] + b"\0" * 20
        opus = crypto_aead_xchacha20poly1305_ietf_decrypt(data[12:-4], data[:12], nonce, session.secret_key)
        # Discord drops what arrives for a voice connection that has ended (a sender that has not noticed yet), and
        # nothing arrives while the bot's network is down
        heard = self.server.audible(session.guild_id) and not session.closed.is_set() and not self.server.unreachable
        session.packets.append(Packet(time.monotonic(), seq, timestamp, opus, heard))
        session._touch()


class VoiceServer:
    """TLS websocket for voice gateway v8 plus a UDP socket, both on 127.0.0.1."""

    def __init__(self, ssl_context: Any, audible: Callable[[int], bool]) -> None:
        self.ssl_context = ssl_context
        self.audible = audible  # whether the bot is heard in a guild now (not in a stage's audience)
        self.sessions: list[VoiceSession] = []
        self.by_token: dict[str, VoiceSession] = {}
        self.by_ssrc: dict[int, VoiceSession] = {}
        self.ws_port = 0
        self.udp_port = 0
        self.unreachable = False  # the bot's network is down (Gateway.network_outage): no connection gets through
        self.unanswered = 0  # the next so many sessions' voice servers never answer the bot's IDENTIFY
        self._runner: web.AppRunner | None = None
        self._udp: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=("127.0.0.1", 0))
        self._udp = transport
        self.udp_port = transport.get_extra_info("sockname")[1]
        app = web.Application()
        app.router.add_get("/", self._websocket)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self.ws_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        for session in self.sessions:
            await session.drop(1001)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._udp is not None:
            self._udp.close()

    def expect(self, guild_id: int, channel_id: int) -> VoiceSession:
        """A session the gateway is about to announce in VOICE_SERVER_UPDATE."""
        session = VoiceSession(guild_id, channel_id, token=os.urandom(8).hex(), ssrc=4000 + len(self.sessions))
        if self.unanswered:
            self.unanswered -= 1
            session.answered = False
        self.sessions.append(session)
        self.by_token[session.token] = session
        self.by_ssrc[session.ssrc] = session
        return session

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        if self.unreachable:
            raise web.HTTPServiceUnavailable()
        ws = web.WebSocketResponse(compress=True)
        await ws.prepare(request)
        session: VoiceSession | None = None
        seq = 0

        async def send(op: int, d: Any) -> None:
            nonlocal seq
            seq += 1
            await ws.send_str(json.dumps({"op": op, "d": d, "seq": seq}))

        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            payload = json.loads(message.data)
            op, d = payload.get("op"), payload.get("d")
            if op == 0:  # IDENTIFY
                session = self.by_token.get(d.get("token"))
                if session is None or str(session.guild_id) != d.get("server_id"):
                    await ws.close(code=4004)  # authentication failed
                    break
                session.identify, session.websocket, session.transport = d, ws, request.transport
                if not session.answered:
                    continue  # the client waits for a HELLO and READY that never come
                await send(8, {"heartbeat_interval": 13750.0, "v": 8})
                await send(2, {"ssrc": session.ssrc, "ip": "127.0.0.1", "port": self.udp_port, "modes": MODES})
            elif op == 1 and session is not None:  # SELECT_PROTOCOL
                session.mode = d["data"]["mode"]
                description = {"mode": session.mode, "secret_key": list(session.secret_key),
                               "dave_protocol_version": 0, "media_session_id": "fake"}  # fmt: skip
                await send(4, description)
            elif op == 3:  # HEARTBEAT
                await send(6, {"t": d.get("t") if isinstance(d, dict) else d})
            elif op == 5 and session is not None:  # SPEAKING
                session.speaking.append((time.monotonic(), int(d.get("speaking", 0))))
            if session is not None:
                session._touch()
        if session is not None:
            session.closed.set()
            session._touch()
        return ws
