"""A local Discord for tests: REST, gateway v10 and voice, spoken to by the real discord.py client.

The bot reaches it only through its testing settings (REST base URL, gateway URL, voice TLS verification);
tests drive it like users: someone joins a voice channel, someone runs /say. Gotchas that discord.py 2.7.1
imposes are kept (research/discord.md §3.4): JSON responses carry exactly `Content-Type: application/json`,
the gateway answers in plain text frames, and an interaction callback answers with `interaction`/`resource`.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakediscord.certs import self_signed_context
from tests.fakediscord.model import TEXT, Channel, Guild, Member, User, snowflake
from tests.fakediscord.voice import VoiceServer, VoiceSession

EPHEMERAL = 1 << 6
APPLICATION_ID = 900_000_000_000_000_000


@dataclass
class Interaction:
    """A slash command a test ran, and everything the bot answered to it."""

    id: int
    token: str
    name: str
    sent: float
    responses: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # initial callbacks
    messages: list[dict[str, Any]] = field(default_factory=list)  # follow-ups and edits of the original
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def deferred(self) -> bool:
        return any(r["type"] == 5 for _, r in self.responses)

    def replies(self) -> list[dict[str, Any]]:
        """Every message content the user saw: immediate replies, then follow-ups and edits, in order."""
        immediate = [r["data"] for _, r in self.responses if r["type"] == 4]
        return immediate + self.messages

    async def reply(self, timeout: float = 30) -> dict[str, Any]:
        """The first message with content (not the 'thinking' placeholder)."""

        async def run() -> dict[str, Any]:
            while True:
                for message in self.replies():
                    if message.get("content") or message.get("attachments") or message.get("embeds"):
                        return message
                self.changed.clear()
                await self.changed.wait()

        return await asyncio.wait_for(run(), timeout)


@dataclass
class Posted:
    channel_id: int
    content: str
    files: dict[str, bytes]
    at: float


class FakeDiscord:
    """Start with `async with FakeDiscord() as discord:`; give the bot `discord.settings()`."""

    def __init__(self) -> None:
        self.bot = User("DiaVoice", bot=True)
        self.guilds: dict[int, Guild] = {}
        self.interactions: dict[str, Interaction] = {}
        self.posted: list[Posted] = []
        self.commands: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.identified = asyncio.Event()
        self.ready_sent = asyncio.Event()
        self.posted_changed = asyncio.Event()
        self._gateway: web.WebSocketResponse | None = None
        self._pending: set[asyncio.Future[None]] = set()
        self._seq = 0
        self._folder = ""
        self.voice: VoiceServer | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def __aenter__(self) -> FakeDiscord:
        import tempfile

        self._folder = tempfile.mkdtemp(prefix="fakediscord-")
        self.voice = VoiceServer(self_signed_context(self._folder))
        await self.voice.start()
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_get("/gateway", self._gateway_handler)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._gateway is not None:
            await self._gateway.close()
        assert self.voice is not None
        await self.voice.stop()
        if self._runner is not None:
            await self._runner.cleanup()

    def settings(self) -> dict[str, str]:
        """The bot's testing-only settings that point it here."""
        return {
            "DIA_DISCORD_API_BASE": f"http://127.0.0.1:{self.port}/api/v10",
            "DIA_DISCORD_GATEWAY_URL": f"ws://127.0.0.1:{self.port}/gateway",
            "DIA_DISCORD_VOICE_TLS_VERIFY": "false",
        }

    # ---- the world -------------------------------------------------------------------------------------------

    def guild(self, name: str = "Campaign") -> Guild:
        guild = Guild(name, self.bot)
        self.guilds[guild.id] = guild
        return guild

    async def join_voice(self, guild: Guild, member: Member, channel: Channel | None) -> None:
        """`member` moves into `channel` (None: leaves voice)."""
        if channel is None:
            guild.voice.pop(member.user.id, None)
        else:
            guild.voice[member.user.id] = channel.id
        state = guild.voice_state(member.user.id)
        if channel is None:
            state["channel_id"] = None
        await self.dispatch("VOICE_STATE_UPDATE", state)

    async def kick_bot(self, guild: Guild) -> None:
        """A moderator disconnects the bot from voice: its state goes to no channel and the voice socket closes."""
        guild.voice.pop(self.bot.id, None)
        state = guild.voice_state(self.bot.id)
        state["channel_id"] = None
        await self.dispatch("VOICE_STATE_UPDATE", state)
        for session in self.sessions(guild):
            await session.drop(4014)

    async def slash(self, guild: Guild, member: Member, channel: Channel, name: str, **options: Any) -> Interaction:
        """`member` runs `/name` in text `channel`; options as keyword arguments (str, bool, int)."""
        await asyncio.wait_for(self.ready_sent.wait(), 30)
        interaction = Interaction(snowflake(), os.urandom(16).hex(), name, time.monotonic())
        self.interactions[interaction.token] = interaction
        group, _, sub = name.partition(" ")
        typed = [{"name": k, "type": _option_type(v), "value": v} for k, v in options.items() if v is not None]
        if sub:
            typed = [{"name": sub, "type": 1, "options": typed}]
        data = {
            "id": str(interaction.id), "application_id": str(APPLICATION_ID), "type": 2,
            "token": interaction.token, "version": 1,
            "data": {"id": self.commands.get(group, {}).get("id", str(snowflake())), "name": group, "type": 1,
                     "options": typed, "guild_id": str(guild.id)},
            "guild_id": str(guild.id), "channel_id": str(channel.id), "channel": channel.payload(),
            "member": {**member.payload(), "permissions": str(guild.permissions(member))},
            "app_permissions": str(guild.permissions(guild.members[self.bot.id])), "locale": "en-US",
            "guild_locale": "en-US", "entitlements": [], "authorizing_integration_owners": {"0": str(guild.id)},
            "context": 0, "attachment_size_limit": 10 * 2**20,
        }  # fmt: skip
        await self.dispatch("INTERACTION_CREATE", data)
        return interaction

    def sessions(self, guild: Guild) -> list[VoiceSession]:
        assert self.voice is not None
        return [s for s in self.voice.sessions if s.guild_id == guild.id]

    async def session(self, guild: Guild, timeout: float = 30) -> VoiceSession:
        """The guild's latest voice session, once the bot has identified on it."""

        async def run() -> VoiceSession:
            while True:
                found = [s for s in self.sessions(guild) if s.identify is not None]
                if found:
                    return found[-1]
                await asyncio.sleep(0.01)

        return await asyncio.wait_for(run(), timeout)

    async def wait_posted(self, channel: Channel, count: int = 1, timeout: float = 30) -> list[Posted]:
        async def run() -> list[Posted]:
            while True:
                found = [p for p in self.posted if p.channel_id == channel.id]
                if len(found) >= count:
                    return found
                self.posted_changed.clear()
                await self.posted_changed.wait()

        return await asyncio.wait_for(run(), timeout)

    # ---- gateway ---------------------------------------------------------------------------------------------

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        assert self._gateway is not None, "the bot is not connected"
        self._seq += 1
        await self._gateway.send_str(json.dumps({"op": 0, "t": event, "s": self._seq, "d": data}))

    async def _gateway_handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._gateway = ws
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            payload = json.loads(message.data)
            op, d = payload.get("op"), payload.get("d")
            if op == 1:
                # Real acks take a network round trip; an instant one can reach discord.py before its keep-alive
                # thread has noted the send, and it then warns of a 40 s lag that never happened.
                asyncio.get_running_loop().call_later(0.05, self._ack, ws)
            elif op == 2:
                self.identified.set()
                await self._ready()
            elif op == 4:
                await self._voice_state_update(d)
        return ws

    def _ack(self, ws: web.WebSocketResponse) -> None:
        if not ws.closed:
            task = asyncio.ensure_future(ws.send_str(json.dumps({"op": 11})))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _ready(self) -> None:
        ready = {
            "v": 10, "user": self.bot.payload(), "session_id": "gateway-session",
            "resume_gateway_url": f"ws://127.0.0.1:{self.port}/gateway",
            "guilds": [{"id": str(g), "unavailable": True} for g in self.guilds],
            "application": {"id": str(APPLICATION_ID), "flags": 0},
        }  # fmt: skip
        await self.dispatch("READY", ready)
        for guild in self.guilds.values():
            await self.dispatch("GUILD_CREATE", guild.payload())
        self.ready_sent.set()

    async def _voice_state_update(self, d: dict[str, Any]) -> None:
        guild = self.guilds[int(d["guild_id"])]
        channel_id = d.get("channel_id")
        bot = self.bot.id
        if channel_id is None:
            guild.voice.pop(bot, None)
            state = guild.voice_state(bot)
            state["channel_id"] = None
            await self.dispatch("VOICE_STATE_UPDATE", state)
            return
        guild.voice[bot] = int(channel_id)
        guild.sessions[bot] = os.urandom(8).hex()
        assert self.voice is not None
        session = self.voice.expect(guild.id, int(channel_id))
        await self.dispatch("VOICE_STATE_UPDATE", guild.voice_state(bot))
        endpoint = f"127.0.0.1:{self.voice.ws_port}"
        await self.dispatch(
            "VOICE_SERVER_UPDATE", {"token": session.token, "guild_id": str(guild.id), "endpoint": endpoint}
        )

    # ---- REST ------------------------------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        self.requests.append((request.method, path))
        parts = path.strip("/").split("/")
        if path == "/users/@me":
            return _json(self.bot.payload())
        if path == "/oauth2/applications/@me":
            return _json(self._application())
        if request.method == "PUT" and parts[0] == "applications" and parts[-1] == "commands":
            return _json(self._sync(await request.json(), guild=parts[3] if len(parts) > 4 else None))
        if parts[0] == "interactions" and parts[-1] == "callback":
            return await self._callback(request, parts[2])
        if parts[0] == "webhooks":
            return await self._webhook(request, parts)
        if request.method == "GET" and parts[0] == "guilds" and len(parts) == 4 and parts[2] == "members":
            member = self.guilds[int(parts[1])].members.get(int(parts[3]))
            if member is None:
                return _json({"message": "Unknown Member", "code": 10007}, status=404)
            return _json(member.payload())
        if request.method == "POST" and parts[0] == "channels" and parts[-1] == "messages":
            body, files = await _body(request)
            self.posted.append(Posted(int(parts[1]), body.get("content") or "", files, time.monotonic()))
            self.posted_changed.set()
            return _json(self._message(int(parts[1]), body, files))
        return _json({"message": f"fake discord has no {request.method} {path}", "code": 0}, status=404)

    def _application(self) -> dict[str, Any]:
        owner = {"id": "1", "username": "host", "discriminator": "0", "avatar": None}
        return {"id": str(APPLICATION_ID), "name": "DiaVoice", "description": "", "icon": None, "bot_public": True,
                "bot_require_code_grant": False, "owner": owner, "verify_key": "00", "flags": 0}  # fmt: skip

    def _sync(self, commands: list[dict[str, Any]], guild: str | None) -> list[dict[str, Any]]:
        synced = []
        for command in commands:
            entry = {**command, "id": str(snowflake()), "application_id": str(APPLICATION_ID), "version": "1"}
            if guild is not None:
                entry["guild_id"] = guild
            self.commands[command["name"]] = entry
            synced.append(entry)
        return synced

    async def _callback(self, request: web.Request, token: str) -> web.Response:
        interaction = self.interactions[token]
        body, _ = await _body(request)
        interaction.responses.append((time.monotonic(), body))
        interaction.changed.set()
        return _json({"interaction": {"id": str(interaction.id), "type": 2}, "resource": {"type": body["type"]}})

    async def _webhook(self, request: web.Request, parts: list[str]) -> web.Response:
        interaction = self.interactions.get(parts[2])
        if request.method in ("POST", "PATCH"):
            body, files = await _body(request)
            message = self._message(0, body, files)
            if interaction is not None:
                interaction.messages.append(message)
                interaction.changed.set()
            return _json(message)
        if request.method == "DELETE":
            return web.Response(status=204)
        return _json(self._message(0, {}, {}))

    def _message(self, channel_id: int, body: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        attachments = [
            {"id": str(snowflake()), "filename": name, "size": len(data), "url": f"http://127.0.0.1/{name}",
             "proxy_url": f"http://127.0.0.1/{name}", "data": data}
            for name, data in files.items()
        ]  # fmt: skip
        return {
            "id": str(snowflake()), "channel_id": str(channel_id), "author": self.bot.payload(),
            "content": body.get("content") or "", "timestamp": "2026-01-01T00:00:00+00:00", "edited_timestamp": None,
            "tts": False, "mention_everyone": False, "mentions": [], "mention_roles": [], "pinned": False, "type": 0,
            "attachments": [{k: v for k, v in a.items() if k != "data"} for a in attachments],
            "files": files, "embeds": body.get("embeds") or [], "flags": body.get("flags", 0),
        }  # fmt: skip


def _option_type(value: Any) -> int:
    if isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return 4
    if isinstance(value, float):
        return 10
    return 3


def _json(data: Any, status: int = 200) -> web.Response:
    # discord.py parses a body as JSON only when the content type is exactly application/json.
    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items() if k != "files"}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return web.Response(
        body=json.dumps(plain(data)).encode(), status=status, headers={"Content-Type": "application/json"}
    )


async def _body(request: web.Request) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A JSON body, or a multipart one (payload_json plus files) as discord.py sends attachments."""
    if not request.content_type.startswith("multipart/"):
        text = await request.text()
        return (json.loads(text) if text else {}), {}
    reader = await request.multipart()
    body: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    async for part in reader:
        if part.name == "payload_json":  # type: ignore[union-attr]
            body = json.loads(await part.text())  # type: ignore[union-attr]
        else:
            files[part.filename or part.name or "file"] = bytes(await part.read())  # type: ignore[union-attr]
    return body, files


def text_channels(guild: Guild) -> list[Channel]:
    return [c for c in guild.channels if c.type == TEXT]
