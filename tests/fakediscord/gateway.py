"""The emulator's gateway (v10): READY and the guilds, heartbeats, the bot's voice state updates answered with a
place in a channel and a voice server, resumes, and the ways a session ends. `Gateway` is a part of FakeDiscord
(server.py).
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from tests.fakediscord.interactions import APPLICATION_ID
from tests.fakediscord.model import STAGE, Channel, Guild, User
from tests.fakediscord.voice import VoiceServer, VoiceSession

GUILD_MESSAGES = 1 << 9
MESSAGE_CONTENT = 1 << 15  # privileged
ROUND_TRIP = 0.05  # seconds a network takes: before a heartbeat ack, between the two voice updates of a join


class Gateway:
    """FakeDiscord's gateway: `_gateway_handler` serves the bot's websocket, `dispatch` sends it an event."""

    bot: User
    guilds: dict[int, Guild]
    voice: VoiceServer | None
    port: int
    identified: asyncio.Event
    ready_sent: asyncio.Event
    readies: int
    resumes: int
    intents: int
    message_content_allowed: bool
    voice_answers: bool
    refused_joins: list[int]
    unreachable: bool
    _gateway: web.WebSocketResponse | None
    _gateway_transport: asyncio.BaseTransport | None
    _pending: set[asyncio.Future[None]]
    _seq: int
    _session: str

    if TYPE_CHECKING:  # the world's side, in server.py and rest.py

        def sessions(self, guild: Guild) -> list[VoiceSession]: ...
        @staticmethod
        def _channel(guild: Guild, channel_id: int) -> Channel: ...

    async def reconnect_gateway(self) -> None:
        """Discord asks the bot to reconnect (op 7), as it does every so often: discord.py resumes its session."""
        assert self._gateway is not None, "the bot is not connected"
        await self._gateway.send_str(json.dumps({"op": 7, "d": None}))

    async def end_session(self) -> None:
        """The bot's gateway connection drops, and Discord ends its session, as after a network outage longer than
        a resume allows: the bot's voice states end with it (its voice connections close with 4014,
        discord-api-docs#2257), and its resume is refused (op 9), so discord.py identifies again and gets READY
        anew."""
        assert self._gateway is not None, "the bot is not connected"
        self._session = f"gateway-session-{self.readies}"
        await self._gateway.close(code=4000)  # discord.py tries to resume
        await asyncio.sleep(0.5)  # the session outlives its connection a while
        for guild in self.guilds.values():
            if guild.voice.pop(self.bot.id, None) is not None:
                guild.suppressed.discard(self.bot.id)
                for session in self.sessions(guild):
                    await session.drop(4014)

    async def network_outage(self, seconds: float, *, session_kept: bool = True) -> None:
        """The bot's host loses its network for `seconds` (a home connection dropping): its gateway and voice
        connections break without a close frame, and nothing gets through meanwhile (connections and requests are
        refused, voice packets lost). Then discord.py resumes its gateway session, which Discord kept, with the
        bot's voice states (it never asked to leave); or, not `session_kept`, Discord ended the session and the
        voice states with it meanwhile, so discord.py identifies anew."""
        assert self.voice is not None and self._gateway_transport is not None, "the bot is not connected"
        self.unreachable = self.voice.unreachable = True
        self._gateway_transport.abort()
        for guild in self.guilds.values():
            for session in self.sessions(guild):
                session.cut()
            if not session_kept and guild.voice.pop(self.bot.id, None) is not None:
                guild.suppressed.discard(self.bot.id)
        if not session_kept:
            self._session = f"gateway-session-{self.readies}"
        await asyncio.sleep(seconds)
        self.unreachable = self.voice.unreachable = False

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        assert self._gateway is not None, "the bot is not connected"
        self._seq += 1
        await self._gateway.send_str(json.dumps({"op": 0, "t": event, "s": self._seq, "d": data}))

    async def _gateway_handler(self, request: web.Request) -> web.WebSocketResponse:
        if self.unreachable:
            raise web.HTTPServiceUnavailable()
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._gateway, self._gateway_transport = ws, request.transport
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            payload = json.loads(message.data)
            op, d = payload.get("op"), payload.get("d")
            if op == 1:
                # Real acks take a network round trip; an instant one can reach discord.py before its keep-alive
                # thread has noted the send, and it then warns of a 40 s lag that never happened.
                asyncio.get_running_loop().call_later(ROUND_TRIP, self._ack, ws)
            elif op == 2:
                self.intents = int(d.get("intents") or 0)
                if self.intents & MESSAGE_CONTENT and not self.message_content_allowed:
                    await ws.close(code=4014, message=b"Disallowed intent(s).")
                    break
                self.identified.set()
                await self._ready()
            elif op == 4:
                await self._voice_state_update(d)
            elif op == 6:
                if d.get("session_id") != self._session:
                    await ws.send_str(json.dumps({"op": 9, "d": False}))  # not resumable: identify anew
                    continue
                self.resumes += 1
                await self.dispatch("RESUMED", {})  # (nothing happened meanwhile that it missed)
        if self._gateway is ws:  # the bot went away: interactions wait for the next one to be ready
            self.ready_sent.clear()
        return ws

    def _ack(self, ws: web.WebSocketResponse) -> None:
        if not ws.closed:
            task = asyncio.ensure_future(ws.send_str(json.dumps({"op": 11})))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _ready(self) -> None:
        ready = {
            "v": 10, "user": self.bot.payload(), "session_id": self._session,
            "resume_gateway_url": f"ws://127.0.0.1:{self.port}/gateway",
            "guilds": [{"id": str(g), "unavailable": True} for g in self.guilds],
            "application": {"id": str(APPLICATION_ID), "flags": 0},
        }  # fmt: skip
        await self.dispatch("READY", ready)
        for guild in self.guilds.values():
            await self.dispatch("GUILD_CREATE", guild.payload())
        self.readies += 1
        self.ready_sent.set()

    async def _voice_state_update(self, d: dict[str, Any]) -> None:
        guild = self.guilds[int(d["guild_id"])]
        if guild.bot_removed:
            return  # Discord tells the bot nothing of a server it is not in
        channel_id = d.get("channel_id")
        if channel_id is None:
            await self._unplace_bot(guild)
            return
        channel = self._channel(guild, int(channel_id))
        if guild.voice.get(self.bot.id) != channel.id and (
            not self.voice_answers or guild.full_for(guild.members[self.bot.id], channel)
        ):
            # Discord answers a join of a full channel with nothing at all: discord.py's connect times out.
            self.refused_joins.append(channel.id)
            return
        await self._place_bot(guild, channel.id)

    async def _unplace_bot(self, guild: Guild) -> None:
        """The bot is in no voice channel now (it left, or a moderator disconnected it)."""
        guild.voice.pop(self.bot.id, None)
        guild.suppressed.discard(self.bot.id)
        state = guild.voice_state(self.bot.id)
        state["channel_id"] = None
        await self.dispatch("VOICE_STATE_UPDATE", state)

    async def _place_bot(self, guild: Guild, channel_id: int) -> None:
        """The bot is in `channel_id` now (it asked, or a moderator moved it): its voice state, and a voice server
        for that channel with a new token. Moved from another channel, its old voice connection ends with 4014
        (discord.py then connects again with the new token)."""
        bot = self.bot.id
        moved_from = guild.voice.get(bot)
        guild.voice[bot] = channel_id
        if self._channel(guild, channel_id).type != STAGE:
            guild.suppressed.discard(bot)
        elif moved_from != channel_id:
            guild.suppressed.add(bot)  # on a stage, a newcomer is in the audience
        guild.sessions[bot] = os.urandom(8).hex()
        assert self.voice is not None
        earlier = self.sessions(guild)
        session = self.voice.expect(guild.id, channel_id)
        await self.dispatch("VOICE_STATE_UPDATE", guild.voice_state(bot))
        # The two updates come from different services, not back to back. discord.py can miss the second if it
        # comes while its join is between noticing the first and waiting again (VoiceConnectionState's
        # `_wait_for_state` starts a fresh Event.wait() task each time, and the state setter's set() and clear()
        # pass before that task waits): its join then times out after 20 s. Back to back, that happened now and
        # then here, with two guilds joining at once.
        await asyncio.sleep(ROUND_TRIP)
        endpoint = f"127.0.0.1:{self.voice.ws_port}"
        await self.dispatch(
            "VOICE_SERVER_UPDATE", {"token": session.token, "guild_id": str(guild.id), "endpoint": endpoint}
        )
        if moved_from is not None and moved_from != channel_id:
            for old in earlier:
                await old.drop(4014)
