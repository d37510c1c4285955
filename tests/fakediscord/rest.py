"""The emulator's REST API: the routes discord.py calls (users, application commands, interactions' webhooks,
guilds, channels), and the checks Discord makes of a command sync. `Rest` is a part of FakeDiscord (server.py).
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.fakediscord.interactions import APPLICATION_ID, CHAT_INPUT, Desk
from tests.fakediscord.limits import message_problems
from tests.fakediscord.messages import Message, Store, error, json_response, read_body
from tests.fakediscord.model import (
    ATTACH_FILES,
    MUTE_MEMBERS,
    READ_MESSAGE_HISTORY,
    SEND_MESSAGES,
    SEND_MESSAGES_IN_THREADS,
    STAGE,
    THREAD,
    VIEW_CHANNEL,
    Channel,
    Guild,
    Member,
    Upload,
    User,
    snowflake,
)

Handler = Callable[[web.Request, list[str]], Awaitable[web.Response | None]]


class Rest:
    """FakeDiscord's REST routes: `_rest` answers every request under /api/v10."""

    bot: User
    guilds: dict[int, Guild]
    store: Store
    desk: Desk
    commands: dict[str, dict[str, Any]]
    requests: list[tuple[str, str]]
    spoke_up: list[float]
    unreachable: bool

    if TYPE_CHECKING:  # the gateway's side, in server.py

        async def dispatch(self, event: str, data: dict[str, Any]) -> None: ...
        async def _message_event(
            self, event: str, guild: Guild, member: Member, message: Message, *, heard: bool
        ) -> None: ...
        async def _messages_deleted(self, guild: Guild, channel_id: int, ids: list[int]) -> None: ...

    async def _rest(self, request: web.Request) -> web.Response:
        if self.unreachable:  # the bot's network is down (Gateway.network_outage)
            raise web.HTTPServiceUnavailable()
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
