"""A local Discord for tests: REST, gateway v10 and voice, spoken to by the real discord.py client.

The bot reaches it only through its testing settings (REST base URL, gateway URL, voice TLS verification);
tests drive it like users: someone joins a voice channel, runs /say, clicks a button, types into an
autocompleted option. Gotchas that discord.py 2.7.1 imposes are kept (research/discord.md §3.4): JSON
responses carry exactly `Content-Type: application/json`, the gateway answers in plain text frames.
Interactions live in interactions.py, messages and the files on them in messages.py. A message or autocomplete
answer Discord would refuse (limits.py) gets Discord's 400 and is noted in `store.refused`, which fails a bot test.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakediscord.certs import self_signed_context
from tests.fakediscord.interactions import (
    APPLICATION_ID,
    AUTOCOMPLETE,
    CHAT_INPUT,
    COMMAND,
    COMPONENT,
    MESSAGE_COMMAND,
    Desk,
    Interaction,
    command_options,
)
from tests.fakediscord.limits import message_problems
from tests.fakediscord.messages import EPHEMERAL, Message, MessageRef, Posted, Store, error, json_response, read_body
from tests.fakediscord.model import (
    ATTACH_FILES,
    MUTE_MEMBERS,
    READ_MESSAGE_HISTORY,
    SEND_MESSAGES,
    SEND_MESSAGES_IN_THREADS,
    STAGE,
    TEXT,
    THREAD,
    VIEW_CHANNEL,
    Channel,
    Guild,
    Member,
    Upload,
    User,
    snowflake,
)
from tests.fakediscord.voice import VoiceServer, VoiceSession

GUILD_MESSAGES = 1 << 9
MESSAGE_CONTENT = 1 << 15  # privileged
ROUND_TRIP = 0.05  # seconds a network takes: before a heartbeat ack, between the two voice updates of a join

__all__ = ["APPLICATION_ID", "EPHEMERAL", "FakeDiscord", "Interaction", "Posted"]

Handler = Callable[[web.Request, list[str]], Awaitable[web.Response | None]]


class FakeDiscord:
    """Start with `async with FakeDiscord() as discord:`; give the bot `discord.settings()`."""

    def __init__(self) -> None:
        self.bot = User("DiaVoice", bot=True)
        self.guilds: dict[int, Guild] = {}
        self.store = Store(self.bot.payload())
        self.desk = Desk(self.bot, self.store)
        self.interactions: dict[str, Interaction] = self.desk.interactions
        self.commands: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.identified = asyncio.Event()
        self.ready_sent = asyncio.Event()  # set while a connected bot has had READY and its guilds
        self.readies = 0  # how many times READY was sent: a restarted bot is ready once this grows
        self.resumes = 0  # how many times the bot resumed its gateway session (RESUMED was sent)
        self._session = "gateway-session-0"  # the gateway session: a RESUME of another one is refused
        self.intents = 0  # what the bot asked for in IDENTIFY
        self.refused_joins: list[int] = []  # voice channels the bot tried to join while they were full
        # False stands for Discord's voice service being down: a join gets no answer at all (like a full channel).
        self.voice_answers = True
        self.spoke_up: list[float] = []  # when (time.monotonic) the bot stepped up to speak on a stage
        # Whether the application has the Message Content intent turned on in the developer portal; without
        # it, Discord closes a gateway that asks for it with 4014.
        self.message_content_allowed = True
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
        self.voice = VoiceServer(
            self_signed_context(self._folder), audible=lambda guild_id: self._audible(self.guilds[guild_id])
        )
        await self.voice.start()
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_get("/gateway", self._gateway_handler)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        app.router.add_get("/attachments/{channel}/{id}/{filename}", self.store.serve)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.store.base = f"http://127.0.0.1:{self.port}"
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

    @property
    def posted(self) -> list[Posted]:
        """Channel messages the bot posted, as they were then (`Posted.message`: as they are now)."""
        return self.store.posted

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

    async def move_bot(self, guild: Guild, channel: Channel) -> None:
        """A moderator drags the bot into another voice channel (Move Members)."""
        await self._place_bot(guild, channel.id)

    async def seat_bot(self, guild: Guild, *, speaker: bool) -> None:
        """A stage moderator moves the bot on its stage: into the audience (`speaker=False`, "Move to Audience"),
        or up to speak (PATCH /guilds/{id}/voice-states/{user}; a bot, unlike a person, speaks at once)."""
        (guild.suppressed.discard if speaker else guild.suppressed.add)(self.bot.id)
        await self.dispatch("VOICE_STATE_UPDATE", guild.voice_state(self.bot.id))

    async def remove_bot(self, guild: Guild) -> None:
        """The bot is removed from `guild` (kicked, banned, or the server deleted): GUILD_DELETE without
        `unavailable`, and its voice connection there ends. From then on the server's channels refuse it (403
        Missing Access) and its voice state updates for the server are ignored."""
        guild.bot_removed = True
        guild.voice.pop(self.bot.id, None)
        await self.dispatch("GUILD_DELETE", {"id": str(guild.id)})
        for session in self.sessions(guild):
            await session.drop(4014)

    async def outage(self, guild: Guild) -> None:
        """`guild` is unavailable for a while (a Discord outage): GUILD_DELETE with `unavailable: true`, which is
        no removal, then GUILD_CREATE as it comes back. The bot's voice connection there is untouched."""
        await self.dispatch("GUILD_DELETE", {"id": str(guild.id), "unavailable": True})
        await asyncio.sleep(0.2)
        await self.dispatch("GUILD_CREATE", guild.payload())

    async def mute_bot(self, guild: Guild, *, muted: bool) -> None:
        """A moderator server-mutes the bot (or lifts it): nobody hears it, in any channel, until lifted."""
        (guild.muted.add if muted else guild.muted.discard)(self.bot.id)
        await self.dispatch("VOICE_STATE_UPDATE", guild.voice_state(self.bot.id))

    def _audible(self, guild: Guild) -> bool:
        return self.bot.id not in guild.suppressed and self.bot.id not in guild.muted

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

    async def kick_bot(self, guild: Guild) -> None:
        """A moderator disconnects the bot from voice: its state goes to no channel and the voice socket closes."""
        await self._unplace_bot(guild)
        for session in self.sessions(guild):
            await session.drop(4014)

    async def slash(self, guild: Guild, member: Member, channel: Channel, name: str, /, **options: Any) -> Interaction:
        """`member` runs `/name` in text `channel`: "cmd", "cmd sub" or "cmd group sub". Options are keyword
        arguments: str, int, float, bool, a `Role`, a `Channel`, or an `Upload` for an attachment option (served
        to the bot)."""
        top, typed, resolved = command_options(
            name, options, lambda u: self.store.attach(channel.id, u, ephemeral=True)
        )
        data = self._command_data(guild, top, typed)
        if resolved:
            data["resolved"] = resolved
        return await self._interact(COMMAND, name, (guild, member, channel), data)

    def user_message(
        self, member: Member, channel: Channel, content: str, *uploads: Upload, stickers: Sequence[str] = ()
    ) -> Message:
        """`member` posts `content` (and files, and stickers by name) in `channel`, and the bot hears nothing of it
        (as an app without the guild-messages intent): it learns of it through `message_command`. `chat` is the
        same, heard."""
        items = [{"id": str(snowflake()), "name": name, "format_type": 1} for name in stickers]
        extra = {"sticker_items": items} if items else {}
        return self.store.create(channel.id, {"content": content}, list(uploads), author=member.user.payload(), **extra)

    async def chat(
        self,
        guild: Guild,
        member: Member,
        channel: Channel,
        content: str,
        *uploads: Upload,
        stickers: Sequence[str] = (),
    ) -> Message:
        """`member` posts `content` in `channel`; like Discord, the gateway sends MESSAGE_CREATE if the bot asked
        for guild messages, with the content and attachments only if it also has the Message Content intent."""
        message = self.user_message(member, channel, content, *uploads, stickers=stickers)
        await self._message_event("MESSAGE_CREATE", guild, member, message, heard=bool(self.intents & MESSAGE_CONTENT))
        return message

    async def _message_event(self, event: str, guild: Guild, member: Member, message: Message, *, heard: bool) -> None:
        if self.intents & GUILD_MESSAGES:
            member_data = {k: v for k, v in member.payload().items() if k != "user"}
            payload = message.payload() | ({} if heard else {"content": "", "attachments": [], "embeds": []})
            await self.dispatch(event, {**payload, "guild_id": str(guild.id), "member": member_data})

    async def edit(self, guild: Guild, member: Member, message: Message, **changes: Any) -> Message:
        """`member` edits their message (`content`, `attachments` kept by id, as the REST API takes them), or
        Discord does (`embeds`: a link's preview arrives as an edit). Like Discord, the gateway sends MESSAGE_UPDATE
        with the whole message if the bot asked for guild messages, its content only with Message Content."""
        self.store.edit(message, changes, [])
        await self._message_event("MESSAGE_UPDATE", guild, member, message, heard=bool(self.intents & MESSAGE_CONTENT))
        return message

    async def delete(self, guild: Guild, *messages: Message) -> None:
        """Messages of one channel deleted by their writer or a moderator: like Discord, the gateway sends
        MESSAGE_DELETE for one and MESSAGE_DELETE_BULK for several (a purge) if the bot asked for guild
        messages."""
        (channel_id,) = {message.channel_id for message in messages}
        for message in messages:
            self.store.delete(message)
        await self._messages_deleted(guild, channel_id, [message.id for message in messages])

    async def _messages_deleted(self, guild: Guild, channel_id: int, ids: list[int]) -> None:
        if self.intents & GUILD_MESSAGES:
            where = {"channel_id": str(channel_id), "guild_id": str(guild.id)}
            if len(ids) == 1:
                await self.dispatch("MESSAGE_DELETE", {"id": str(ids[0]), **where})
            else:
                await self.dispatch("MESSAGE_DELETE_BULK", {"ids": [str(i) for i in ids], **where})

    async def message_command(
        self, guild: Guild, member: Member, channel: Channel, name: str, message: Message, /
    ) -> Interaction:
        """`member` picks Apps > `name` in `message`'s context menu. Like a real client, it offers only what the bot
        synced as a message command."""
        synced = self.commands.get(name)
        if synced is None or synced.get("type") != MESSAGE_COMMAND:
            menus = [n for n, c in self.commands.items() if c.get("type") == MESSAGE_COMMAND]
            raise LookupError(f"the bot synced no message command {name!r} (it has {menus})")
        payload = {**message.payload(), "guild_id": str(guild.id)}
        data = {
            **self._command_data(guild, name, None, kind=MESSAGE_COMMAND), "target_id": str(message.id),
            "resolved": {"messages": {str(message.id): payload}},
        }  # fmt: skip
        return await self._interact(COMMAND, name, (guild, member, channel), data)

    async def click(
        self,
        guild: Guild,
        member: Member,
        channel: Channel,
        message: MessageRef,
        custom_id: str,
        /,
        *,
        values: list[str] | None = None,
    ) -> Interaction:
        """`member` uses the component `custom_id` on `message` (a `Message`, `Posted`, reply dict or id): a
        button, or a select menu with `values`. Like a real client, it refuses a missing or disabled one."""
        target = self.store.get(message)
        component = target.component(custom_id)
        if target.deleted or component is None:
            shown = [c.get("custom_id") for c in target.walk() if "custom_id" in c]
            raise LookupError(f"message {target.id} has no component {custom_id!r} (it has {shown})")
        if component.get("disabled"):
            raise ValueError(f"{custom_id!r} on message {target.id} is disabled")
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component["type"]}
        if values is not None:
            data["values"] = values
        return await self._interact(COMPONENT, custom_id, (guild, member, channel), data, target)

    async def autocomplete(
        self,
        guild: Guild,
        member: Member,
        channel: Channel,
        name: str,
        /,
        *,
        option: str,
        value: Any,
        timeout: float = 10,
        **options: Any,
    ) -> list[dict[str, Any]]:
        """`member` types `value` into `option` of `/name` (other options already filled in as `options`);
        the `choices` the bot offers ({"name", "value"} dicts)."""
        top, typed, _ = command_options(name, {**options, option: value}, lambda u: self.store.attach(0, u), option)
        interaction = await self._interact(
            AUTOCOMPLETE, name, (guild, member, channel), self._command_data(guild, top, typed)
        )
        return await interaction.choices(timeout)

    def message(self, ref: MessageRef) -> Message:
        """A message the bot sent, as it is now (content, components, attachments, `deleted`)."""
        return self.store.get(ref)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 30) -> None:
        """Wait until `predicate()` holds, re-checking whenever the bot sends, edits or deletes a message."""

        async def run() -> None:
            while not predicate():
                self.store.changed.clear()
                await self.store.changed.wait()

        await asyncio.wait_for(run(), timeout)

    def _command_data(
        self, guild: Guild, top: str, options: list[dict[str, Any]] | None, *, kind: int = CHAT_INPUT
    ) -> dict[str, Any]:
        """The interaction's `data` for command `top`: a slash command's `options`; None for a context menu's."""
        synced = self.commands.get(top, {})
        data: dict[str, Any] = {"id": synced.get("id", str(snowflake())), "name": top, "type": kind}
        if options is not None:
            data["options"] = options
        # Discord names the guild only for guild commands (an unsynced one is taken to be the guild's).
        # Commands synced to one dev guild stay usable in every emulated guild, as the tests need.
        if not synced or "guild_id" in synced:
            data["guild_id"] = str(guild.id)
        return data

    async def _interact(
        self,
        kind: int,
        name: str,
        where: tuple[Guild, Member, Channel],
        data: dict[str, Any],
        message: Message | None = None,
    ) -> Interaction:
        await asyncio.wait_for(self.ready_sent.wait(), 30)
        interaction, payload = self.desk.open(kind, name, where, data, message)
        await self.dispatch("INTERACTION_CREATE", payload)
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
                self.store.changed.clear()
                await self.store.changed.wait()

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

    # ---- REST ------------------------------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        self.requests.append((request.method, path))
        parts = path.strip("/").split("/")
        routes: dict[str, Handler] = {
            "users": self._users, "oauth2": self._oauth2, "applications": self._applications,
            "interactions": self._interactions, "webhooks": self.desk.webhook, "guilds": self._guilds,
            "channels": self._channels,
        }  # fmt: skip
        handler = routes.get(parts[0])
        response = None if handler is None else await handler(request, parts)
        # Not `or`: an aiohttp response is a mapping, falsy when it holds no per-request state.
        return response if response is not None else error(404, 0, f"fake discord has no {request.method} {path}")

    async def _users(self, request: web.Request, parts: list[str]) -> web.Response | None:
        return json_response(self.bot.payload()) if parts == ["users", "@me"] else None

    async def _oauth2(self, request: web.Request, parts: list[str]) -> web.Response | None:
        return json_response(self._application()) if parts == ["oauth2", "applications", "@me"] else None

    async def _applications(self, request: web.Request, parts: list[str]) -> web.Response | None:
        if request.method != "PUT" or parts[-1] != "commands":
            return None
        commands = await request.json()
        problems = [p for c in commands for p in command_problems(c)]
        if problems:  # Discord refuses the whole sync, and the bot has no commands
            return error(400, 50035, "Invalid Form Body: " + "; ".join(problems))
        return json_response(self._sync(commands, guild=parts[3] if len(parts) > 4 else None))

    async def _interactions(self, request: web.Request, parts: list[str]) -> web.Response | None:
        return await self.desk.callback(request, parts[2]) if parts[-1] == "callback" else None

    async def _guilds(self, request: web.Request, parts: list[str]) -> web.Response | None:
        if request.method == "PATCH" and parts[2:] == ["voice-states", "@me"]:
            return await self._my_voice_state(self.guilds[int(parts[1])], await request.json())
        if request.method != "GET" or len(parts) != 4 or parts[2] != "members":
            return None
        member = self.guilds[int(parts[1])].members.get(int(parts[3]))
        return error(404, 10007, "Unknown Member") if member is None else json_response(member.payload())

    async def _channels(self, request: web.Request, parts: list[str]) -> web.Response | None:
        """Channel messages: POST one; GET, PATCH or DELETE one by id."""
        if len(parts) < 3 or parts[2] != "messages":
            return None
        channel_id = int(parts[1])
        guild = self._guild_of(channel_id)
        if guild is not None and guild.bot_removed:
            self.store.refused.append(f"{request.method} {request.path}: the bot is not in that server")
            return error(403, 50001, "Missing Access")
        if len(parts) == 3 and request.method == "POST":
            body, uploads = await read_body(request)
            refused = self.store.refuse(f"POST {request.path}", message_problems(body, uploads, new=True))
            if refused is not None:
                return refused
            missing = None if guild is None else self._may_not_post(guild, channel_id, body, uploads)
            if missing is not None:
                self.store.refused.append(f"POST {request.path}: the bot lacks {missing} there")
                return error(403, 50013, "Missing Permissions")
            message = self.store.post(channel_id, body, uploads)
            # Like Discord, the bot hears its own message too, content included (the intent is for others').
            if guild is not None:
                await self._message_event("MESSAGE_CREATE", guild, guild.members[self.bot.id], message, heard=True)
            return json_response(message.payload())
        message = self.store.messages.get(int(parts[3])) if len(parts) == 4 and parts[3].isdigit() else None
        # Ephemeral messages exist only for their interaction's webhook, never for the channel API.
        if message is None or message.deleted or message.channel_id != channel_id or message.ephemeral:
            return error(404, 10008, "Unknown Message")
        if request.method == "PATCH":
            body, uploads = await read_body(request)
            refused = self.store.refuse(f"PATCH {request.path}", message_problems(body, uploads, new=False))
            if refused is not None:
                return refused
            self.store.edit(message, body, uploads)
        elif request.method == "DELETE":
            self.store.delete(message)
            if guild is not None:  # the bot hears its own deletions too
                await self._messages_deleted(guild, channel_id, [message.id])
            return web.Response(status=204)
        return json_response(message.payload())

    def _may_not_post(self, guild: Guild, channel_id: int, body: dict[str, Any], uploads: list[Upload]) -> str | None:
        """The permission the bot lacks to post this message in the channel, if any (resources/message, "Create
        Message"): View Channel and Send Messages (in a thread, Send Messages in Threads); Attach Files for files;
        Read Message History for a reply."""
        channel = self._channel(guild, channel_id)
        have = guild.channel_permissions(guild.members[self.bot.id], channel)
        thread = channel.type == THREAD
        send = ("Send Messages in Threads", SEND_MESSAGES_IN_THREADS) if thread else ("Send Messages", SEND_MESSAGES)
        needed = [("View Channel", VIEW_CHANNEL), send]
        if uploads:
            needed.append(("Attach Files", ATTACH_FILES))
        if body.get("message_reference"):
            needed.append(("Read Message History", READ_MESSAGE_HISTORY))
        return next((name for name, bit in needed if not have & bit), None)

    async def _my_voice_state(self, guild: Guild, body: dict[str, Any]) -> web.Response:
        """PATCH /guilds/{id}/voice-states/@me: the bot steps up to speak on its stage (`suppress: false`, which
        takes Mute Members there), or back into the audience (resources/voice, "Modify Current User Voice
        State")."""
        bot = guild.members[self.bot.id]
        where = guild.voice.get(bot.user.id)
        channel = None if where is None else self._channel(guild, where)
        if channel is None or channel.type != STAGE or str(body.get("channel_id")) != str(channel.id):
            return error(400, 50035, "Invalid Form Body: channel_id must be the stage the bot is on")
        if body.get("suppress") is False:
            if not guild.channel_permissions(bot, channel) & MUTE_MEMBERS:
                return error(403, 50013, "Missing Permissions")
            guild.suppressed.discard(bot.user.id)
            self.spoke_up.append(time.monotonic())
        elif body.get("suppress") is True:
            guild.suppressed.add(bot.user.id)
        await self.dispatch("VOICE_STATE_UPDATE", guild.voice_state(bot.user.id))
        return web.Response(status=204)

    @staticmethod
    def _channel(guild: Guild, channel_id: int) -> Channel:
        return next(c for c in guild.channels if c.id == channel_id)

    def _guild_of(self, channel_id: int) -> Guild | None:
        return next((g for g in self.guilds.values() if any(c.id == channel_id for c in g.channels)), None)

    def _application(self) -> dict[str, Any]:
        owner = {"id": "1", "username": "host", "discriminator": "0", "avatar": None}
        return {"id": str(APPLICATION_ID), "name": "DiaVoice", "description": "", "icon": None, "bot_public": True,
                "bot_require_code_grant": False, "owner": owner, "verify_key": "00", "flags": 0}  # fmt: skip

    def _sync(self, commands: list[dict[str, Any]], guild: str | None) -> list[dict[str, Any]]:
        synced = []
        for command in commands:
            # Discord answers with every field; a context menu's description is "" (discord.py reads it).
            entry = {"description": "", **command, "id": str(snowflake()), "application_id": str(APPLICATION_ID),
                     "version": "1"}  # fmt: skip
            if guild is not None:
                entry["guild_id"] = guild
            self.commands[command["name"]] = entry
            synced.append(entry)
        return synced


_COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")  # Discord's pattern, less its other scripts' marks
SUBCOMMAND, SUBCOMMAND_GROUP = 1, 2


def command_problems(command: dict[str, Any], where: str = "") -> list[str]:
    """What Discord's API would refuse in a command it is asked to register (docs: Application Commands,
    "Application Command Naming" and the limits of each field): names of 1-32 lower-case word characters,
    descriptions of 1-100 characters (a context menu has neither rule), at most 25 options and 25 choices,
    required options first, and at most 4000 characters of names, descriptions and choices in all."""
    name = str(command.get("name", ""))
    here = f"{where}{name}"
    problems = []
    menu = not where and command.get("type", CHAT_INPUT) != CHAT_INPUT
    if menu and not 1 <= len(name) <= 32:
        problems.append(f"{here}: a menu's name must be 1-32 characters")
    if not menu and (not _COMMAND_NAME.match(name) or name != name.lower()):
        problems.append(f"{here}: name must be 1-32 lower-case letters, digits, - or _")
    description = str(command.get("description") or "")
    if not menu and not 1 <= len(description) <= 100:
        problems.append(f"{here}: description must be 1-100 characters, not {len(description)}")
    options = command.get("options") or []
    if len(options) > 25:
        problems.append(f"{here}: more than 25 options")
    required = [bool(o.get("required")) for o in options if o.get("type") not in (SUBCOMMAND, SUBCOMMAND_GROUP)]
    if required != sorted(required, reverse=True):
        problems.append(f"{here}: required options must come before optional ones")
    for option in options:
        problems += command_problems(option, f"{here} ")
        if len(option.get("choices") or []) > 25:
            problems.append(f"{here} {option.get('name')}: more than 25 choices")
    if not where and not menu and _characters(command) > 4000:
        problems.append(f"{here}: more than 4000 characters in all")
    return problems


def _characters(command: dict[str, Any]) -> int:
    total = len(command.get("name", "")) + len(command.get("description", ""))
    for option in command.get("options") or []:
        total += _characters(option)
        total += sum(len(str(c.get("name", ""))) + len(str(c.get("value", ""))) for c in option.get("choices") or [])
    return total


def text_channels(guild: Guild) -> list[Channel]:
    return [c for c in guild.channels if c.type == TEXT]
