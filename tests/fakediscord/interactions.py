"""Interactions a member causes (slash commands, component clicks, autocomplete) and the bot's answers to them.

Shapes follow discord-api-docs (interactions/receiving-and-responding) as discord.py 2.7.1 reads them:
- a subcommand is an option of type 1 inside the command, a subcommand group one of type 2 around it; an
  attachment option (type 11) carries an attachment id resolved in `data.resolved.attachments`, a role option
  (type 8) a role id resolved in `data.resolved.roles`;
- a message command (command type 3, from a message's context menu) names its message in `data.target_id` and
  carries it, content included, in `data.resolved.messages` (the one case where an app without the
  message-content intent is sent a member's message text);
- a component interaction carries the `message` its component is on: discord.py routes it to the View stored
  under that message id, which it takes from the callback's `response_message_id` (initial response) or the
  returned message (follow-ups and edits), so every one of those must name the real message;
- the callback answers `{"interaction", "resource"}` because discord.py asks `with_response=1`.
Behaviour kept from Discord: the first callback within 3 s of the interaction (10062 Unknown interaction after
that, and the test that waits for the answer fails, saying so); one callback per interaction (40060 after that);
the first follow-up after a
"thinking" defer replaces the placeholder and keeps the defer's visibility; UPDATE_MESSAGE (7) and
DEFERRED_UPDATE_MESSAGE (6) make @original the message whose component was used.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakediscord.limits import choices_problems, message_problems
from tests.fakediscord.messages import EPHEMERAL, LOADING, Attachment, Message, Store, error, json_response, read_body
from tests.fakediscord.model import Channel, Guild, Member, Role, Upload, User, snowflake

APPLICATION_ID = 900_000_000_000_000_000
COMMAND, COMPONENT, AUTOCOMPLETE = 2, 3, 4  # interaction types
CHAT_INPUT, MESSAGE_COMMAND = 1, 3  # application command types: slash commands, a message's context menu
SUB_COMMAND, SUB_COMMAND_GROUP, ROLE, ATTACHMENT = 1, 2, 8, 11  # option types
ANSWER_WITHIN = 3.0  # seconds Discord gives the first answer to an interaction
# Callback (response) types.
CHANNEL_MESSAGE, DEFERRED_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE, CHOICES = 4, 5, 6, 7, 8


@dataclass
class Interaction:
    """Something a member did (a slash command, a click, an autocomplete) and everything the bot answered.

    `responses` are the raw initial callbacks; `shown` holds a snapshot (`Message.snapshot()`) of every
    message state the bot showed because of it, in order; `messages` the subset made through the webhook
    (follow-ups and edits). `original` and `followups` are the live messages.
    """

    id: int
    token: str
    name: str
    sent: float
    type: int = COMMAND
    channel_id: int = 0
    user: dict[str, Any] = field(default_factory=dict)
    message: Message | None = None  # a component interaction: the message whose component was used
    responses: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    shown: list[dict[str, Any]] = field(default_factory=list)
    original: Message | None = None
    followups: list[Message] = field(default_factory=list)
    late: float | None = None  # the bot's first answer came this many seconds after the interaction: refused
    refused: str | None = None  # why Discord refused something the bot sent about it (tests/fakediscord/limits.py)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def deferred(self) -> bool:
        return any(r["type"] in (DEFERRED_MESSAGE, DEFERRED_UPDATE) for _, r in self.responses)

    def replies(self) -> list[dict[str, Any]]:
        """Every message state the member saw: the response, follow-ups, edits, in order."""
        return list(self.shown)

    async def wait(self, predicate: Callable[[Interaction], bool], timeout: float = 30) -> None:
        """Wait until `predicate(self)` holds, re-checking whenever the bot answers."""

        async def run() -> None:
            while not predicate(self):
                if self.late is not None:
                    raise AssertionError(
                        f"the bot first answered /{self.name} {self.late:.1f} s after it was used, past Discord's "
                        f"{ANSWER_WITHIN:g} s: Discord refused the answer (10062 Unknown interaction)"
                    )
                if self.refused is not None:
                    raise AssertionError(f"Discord refused what the bot sent about /{self.name}: {self.refused}")
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(run(), timeout)

    async def reply(self, timeout: float = 30) -> dict[str, Any]:
        """The first message with something in it (not the 'thinking' placeholder)."""
        await self.wait(lambda i: i._visible() is not None, timeout)
        found = self._visible()
        assert found is not None
        return found

    async def choices(self, timeout: float = 10) -> list[dict[str, Any]]:
        """An autocomplete's answer: the bot's type 8 `choices`."""
        await self.wait(lambda i: bool(i.responses), timeout)
        body = self.responses[0][1]
        if body["type"] != CHOICES:
            raise AssertionError(f"the bot answered an autocomplete with {body}")
        return list(body["data"]["choices"])

    def record(self, message: Message, *, webhook: bool = False) -> None:
        snapshot = message.snapshot()
        self.shown.append(snapshot)
        if webhook:
            self.messages.append(snapshot)
        self.changed.set()

    def _visible(self) -> dict[str, Any] | None:
        keys = ("content", "attachments", "embeds", "components")
        return next((m for m in self.shown if any(m.get(k) for k in keys)), None)


def command_options(
    name: str, options: dict[str, Any], attach: Callable[[Upload], Attachment], focused: str | None = None
) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """`name` ("cmd", "cmd sub" or "cmd group sub") and keyword options as (command, options, resolved)."""
    top, *path = name.split()
    resolved: dict[str, Any] = {}
    typed: list[dict[str, Any]] = []
    for key, value in options.items():
        if value is None:
            continue
        option: dict[str, Any] = {"name": key, "type": option_type(value), "value": value}
        if isinstance(value, Upload):
            attachment = attach(value)
            resolved.setdefault("attachments", {})[str(attachment.id)] = attachment.payload()
            option["value"] = str(attachment.id)
        elif isinstance(value, Role):
            resolved.setdefault("roles", {})[str(value.id)] = value.payload()
            option["value"] = str(value.id)
        elif isinstance(value, Channel):
            # A partial channel with the caller's permissions in it; discord.py resolves it from its cache.
            # A thread's carries its owner and counts too (discord.py reads them).
            kept = ("id", "type", "name", "parent_id", "thread_metadata", "owner_id", "member_count", "message_count")
            partial = {k: v for k, v in value.payload().items() if k in kept}
            resolved.setdefault("channels", {})[str(value.id)] = {**partial, "permissions": "0"}
            option["value"] = str(value.id)
        if key == focused:
            option["focused"] = True
        typed.append(option)
    for depth, sub in enumerate(reversed(path)):
        typed = [{"name": sub, "type": SUB_COMMAND if depth == 0 else SUB_COMMAND_GROUP, "options": typed}]
    return top, typed, resolved


def option_type(value: Any) -> int:
    if isinstance(value, Upload):
        return ATTACHMENT
    if isinstance(value, Role):
        return ROLE
    if isinstance(value, Channel):
        return 7  # CHANNEL
    if isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return 4
    if isinstance(value, float):
        return 10
    return 3


class Desk:
    """Opens interactions and answers the bot's callbacks and webhook calls about them."""

    def __init__(self, bot: User, store: Store) -> None:
        self.bot = bot
        self.store = store
        self.interactions: dict[str, Interaction] = {}

    def open(
        self, kind: int, name: str, where: tuple[Guild, Member, Channel], data: dict[str, Any], message: Message | None
    ) -> tuple[Interaction, dict[str, Any]]:
        """A new interaction and its INTERACTION_CREATE payload."""
        guild, member, channel = where
        interaction = Interaction(
            snowflake(), os.urandom(16).hex(), name, time.monotonic(), kind, channel.id, member.user.payload(), message
        )
        self.interactions[interaction.token] = interaction
        payload = {
            "id": str(interaction.id), "application_id": str(APPLICATION_ID), "type": kind,
            "token": interaction.token, "version": 1, "data": data,
            "guild_id": str(guild.id), "channel_id": str(channel.id), "channel": channel.payload(),
            "member": {**member.payload(), "permissions": str(guild.permissions(member))},
            "app_permissions": str(guild.permissions(guild.members[self.bot.id])), "locale": "en-US",
            "guild_locale": "en-US", "entitlements": [], "authorizing_integration_owners": {"0": str(guild.id)},
            "context": 0, "attachment_size_limit": 10 * 2**20,
        }  # fmt: skip
        if message is not None:
            payload["message"] = message.payload()
        return interaction, payload

    async def callback(self, request: web.Request, token: str) -> web.Response:
        """POST /interactions/{id}/{token}/callback: the initial response."""
        interaction = self.interactions.get(token)
        if interaction is None:
            return error(404, 10062, "Unknown interaction")
        waited = time.monotonic() - interaction.sent
        if not interaction.responses and waited > ANSWER_WITHIN:
            interaction.late = waited
            interaction.changed.set()
            return error(404, 10062, "Unknown interaction")
        if interaction.responses:
            return error(400, 40060, "Interaction has already been acknowledged.")
        body, uploads = await read_body(request)
        kind = int(body["type"])
        if kind in (DEFERRED_UPDATE, UPDATE_MESSAGE) and interaction.message is None:
            return error(400, 50035, "Invalid Form Body: only a component interaction can update its message")
        refused = self._refuse(interaction, "answer", _answer_problems(kind, body, uploads))
        if refused is not None:
            return refused
        message = self._respond(interaction, kind, body.get("data") or {}, uploads)
        interaction.responses.append((time.monotonic(), body))
        interaction.changed.set()
        meta: dict[str, Any] = {"id": str(interaction.id), "type": interaction.type}
        resource: dict[str, Any] = {"type": kind}
        if message is not None and kind != DEFERRED_UPDATE:
            meta.update(response_message_id=str(message.id), response_message_loading=kind == DEFERRED_MESSAGE,
                        response_message_ephemeral=message.ephemeral)  # fmt: skip
            resource["message"] = message.payload()
        return json_response({"interaction": meta, "resource": resource})

    async def webhook(self, request: web.Request, parts: list[str]) -> web.Response:
        """/webhooks/{application}/{token}[/messages/{id|@original}]: follow-ups and their edits."""
        interaction = self.interactions.get(parts[2]) if len(parts) > 2 else None
        if interaction is None:
            return error(404, 10015, "Unknown Webhook")
        if len(parts) == 3 and request.method == "POST":
            return await self._followup(request, interaction)
        target = _target(interaction, parts[4] if len(parts) > 4 else "")
        if target is None:
            return error(404, 10008, "Unknown Message")
        if request.method == "PATCH":
            body, uploads = await read_body(request)
            refused = self._refuse(interaction, "edit", message_problems(body, uploads, new=False))
            if refused is not None:
                return refused
            interaction.record(self.store.edit(target, body, uploads), webhook=True)
        elif request.method == "DELETE":
            self.store.delete(target)
            interaction.changed.set()
            return web.Response(status=204)
        return json_response(target.payload())

    def _refuse(self, interaction: Interaction, what: str, problems: list[str]) -> web.Response | None:
        refused = self.store.refuse(f"/{interaction.name}'s {what}", problems)
        if refused is not None:
            interaction.refused = "; ".join(problems)
            interaction.changed.set()
        return refused

    def _respond(
        self, interaction: Interaction, kind: int, data: dict[str, Any], uploads: list[Upload]
    ) -> Message | None:
        if kind == CHANNEL_MESSAGE:
            message = self._new(interaction, data, uploads)
        elif kind == DEFERRED_MESSAGE:
            flags = (int(data.get("flags") or 0) & EPHEMERAL) | LOADING
            message = self._new(interaction, {"flags": flags}, [])
        elif kind in (DEFERRED_UPDATE, UPDATE_MESSAGE):
            assert interaction.message is not None
            message = interaction.message
            if kind == UPDATE_MESSAGE:
                self.store.edit(message, data, uploads)
        else:
            return None  # autocomplete choices, a modal: the raw body in `responses` is the record
        interaction.original = message
        if kind in (CHANNEL_MESSAGE, UPDATE_MESSAGE):
            interaction.record(message)
        return message

    async def _followup(self, request: web.Request, interaction: Interaction) -> web.Response:
        body, uploads = await read_body(request)
        refused = self._refuse(interaction, "follow-up", message_problems(body, uploads, new=True))
        if refused is not None:
            return refused
        original = interaction.original
        if original is not None and not original.deleted and original.flags & LOADING:
            # The first follow-up after a "thinking" defer replaces the placeholder and keeps the defer's
            # visibility whatever flags it asks for: a public defer cannot be followed by a private reply.
            message = self.store.edit(original, {k: v for k, v in body.items() if k != "flags"}, uploads)
        else:
            message = self._new(interaction, body, uploads)
            interaction.followups.append(message)
        interaction.record(message, webhook=True)
        if request.query.get("wait", "").lower() in ("1", "true"):
            return json_response(message.payload())
        return web.Response(status=204)

    def _new(self, interaction: Interaction, body: dict[str, Any], uploads: list[Upload]) -> Message:
        metadata = {"id": str(interaction.id), "type": interaction.type, "user": interaction.user,
                    "authorizing_integration_owners": {}}  # fmt: skip
        return self.store.create(
            interaction.channel_id, body, uploads, webhook_id=str(APPLICATION_ID),
            application_id=str(APPLICATION_ID), interaction_metadata=metadata,
        )  # fmt: skip


def _answer_problems(kind: int, body: dict[str, Any], uploads: list[Upload]) -> list[str]:
    data = body.get("data") or {}
    if kind == CHOICES:
        return choices_problems(data)
    if kind in (CHANNEL_MESSAGE, UPDATE_MESSAGE):
        return message_problems(data, uploads, new=kind == CHANNEL_MESSAGE)
    return []


def _target(interaction: Interaction, ref: str) -> Message | None:
    """The interaction's message named in a webhook path: `@original` or a follow-up's id."""
    if ref == "@original":
        found = interaction.original
    else:
        found = next((m for m in [interaction.original, *interaction.followups] if m and str(m.id) == ref), None)
    return None if found is None or found.deleted else found
