"""A local Discord for tests: REST, gateway v10 and voice, spoken to by the real discord.py client.

The bot reaches it only through its testing settings (REST base URL, gateway URL, voice TLS verification);
tests drive it like users: someone joins a voice channel, runs /say, clicks a button, types into an
autocompleted option. Gotchas that discord.py 2.7.1 imposes are kept (research/discord.md §3.4): JSON
responses carry exactly `Content-Type: application/json`, the gateway answers in plain text frames.
The REST routes live in rest.py, interactions in interactions.py, messages and the files on them in messages.py.
A message or autocomplete answer Discord would refuse (limits.py) gets Discord's 400 and is noted in
`store.refused`, which fails a bot test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from tests.fakediscord.certs import self_signed_context
from tests.fakediscord.gateway import GUILD_MESSAGES, MESSAGE_CONTENT, Gateway
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
from tests.fakediscord.messages import EPHEMERAL, Message, MessageRef, Posted, Store
from tests.fakediscord.model import (
    Channel,
    Guild,
    Member,
    Upload,
    User,
    snowflake,
)
from tests.fakediscord.rest import Rest
from tests.fakediscord.voice import VoiceServer, VoiceSession

__all__ = ["APPLICATION_ID", "EPHEMERAL", "FakeDiscord", "Interaction", "Posted"]


class FakeDiscord(Gateway, Rest):
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
        self.unreachable = False  # the bot's network is down (`network_outage`): nothing it sends gets through
        self._gateway: web.WebSocketResponse | None = None
        self._gateway_transport: asyncio.BaseTransport | None = None
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

    async def move_bot(self, guild: Guild, channel: Channel, *, answered: bool = True) -> None:
        """A moderator drags the bot into another voice channel (Move Members); not `answered`, the voice server
        there never answers the bot's handshake (discord.py's reconnect hangs)."""
        assert self.voice is not None
        self.voice.unanswered += not answered
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
