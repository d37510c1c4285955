"""The emulator's world: guilds with channels, roles, members and voice states, and their gateway payloads.

Payload shapes follow discord-api-docs (gateway v10) with what discord.py 2.7.1 actually reads: members need
`user`, `roles` and `flags`; voice channels need `bitrate` and `user_limit`; a guild's `voice_states` tell
discord.py who is in which channel (research/discord.md §3.4).
"""

from __future__ import annotations

import itertools
import mimetypes
from dataclasses import dataclass, field
from typing import Any

# Permission bits (discord-api-docs, topics/permissions).
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
CONNECT = 1 << 20
SPEAK = 1 << 21
MANAGE_GUILD = 1 << 5
MANAGE_CHANNELS = 1 << 4
MUTE_MEMBERS = 1 << 22
SEND_MESSAGES_IN_THREADS = 1 << 38
ADMINISTRATOR = 1 << 3
EVERYONE_DEFAULT = (
    VIEW_CHANNEL | SEND_MESSAGES | SEND_MESSAGES_IN_THREADS | ATTACH_FILES | READ_MESSAGE_HISTORY | CONNECT | SPEAK
)

TEXT, VOICE, THREAD, STAGE = 0, 2, 11, 13  # THREAD: a public thread
_ids = itertools.count(900_000_000_000_000_001)


def snowflake() -> int:
    return next(_ids)


@dataclass(frozen=True)
class Upload:
    """A file: one a member attaches to a slash command option (type 11), or one the bot uploads."""

    filename: str
    data: bytes
    content_type: str | None = None

    def mime(self) -> str:
        """The content type, guessed from the name when not given (Discord sniffs it the same way)."""
        return self.content_type or mimetypes.guess_type(self.filename)[0] or "application/octet-stream"


@dataclass
class User:
    name: str
    id: int = field(default_factory=snowflake)
    bot: bool = False

    def payload(self) -> dict[str, Any]:
        return {"id": str(self.id), "username": self.name, "global_name": self.name, "discriminator": "0",
                "avatar": None, "bot": self.bot}  # fmt: skip


@dataclass
class Role:
    name: str
    permissions: int
    id: int = field(default_factory=snowflake)
    position: int = 1

    def payload(self) -> dict[str, Any]:
        return {"id": str(self.id), "name": self.name, "permissions": str(self.permissions), "position": self.position,
                "color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0}  # fmt: skip


@dataclass
class Overwrite:
    """A channel permission overwrite for a role or member."""

    target: int
    allow: int = 0
    deny: int = 0
    member: bool = False

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.target),
            "type": 1 if self.member else 0,
            "allow": str(self.allow),
            "deny": str(self.deny),
        }


@dataclass
class Channel:
    name: str
    type: int
    guild_id: int
    id: int = field(default_factory=snowflake)
    position: int = 0
    overwrites: list[Overwrite] = field(default_factory=list)
    user_limit: int = 0  # a voice channel's: 0 is none
    parent_id: int | None = None  # a thread's channel

    def payload(self) -> dict[str, Any]:
        if self.type == THREAD:  # no overwrites of its own: its channel's permissions hold
            metadata = {"archived": False, "auto_archive_duration": 1440, "locked": False,
                        "archive_timestamp": "2026-01-01T00:00:00+00:00"}  # fmt: skip
            return {"id": str(self.id), "type": THREAD, "name": self.name, "guild_id": str(self.guild_id),
                    "parent_id": str(self.parent_id), "owner_id": "1", "message_count": 0, "member_count": 1,
                    "thread_metadata": metadata}  # fmt: skip
        data: dict[str, Any] = {
            "id": str(self.id), "type": self.type, "name": self.name, "guild_id": str(self.guild_id),
            "position": self.position, "permission_overwrites": [o.payload() for o in self.overwrites],
            "parent_id": None, "nsfw": False,
        }  # fmt: skip
        if self.type in (VOICE, STAGE):
            data.update(bitrate=64000, user_limit=self.user_limit, rtc_region=None)
        if self.type == STAGE:
            data.update(topic=None)
        return data


@dataclass
class Member:
    user: User
    roles: list[int] = field(default_factory=list)
    nick: str | None = None  # the member's name in this server

    def payload(self) -> dict[str, Any]:
        return {"user": self.user.payload(), "roles": [str(r) for r in self.roles], "nick": self.nick, "flags": 0,
                "joined_at": "2026-01-01T00:00:00+00:00", "deaf": False, "mute": False, "pending": False}  # fmt: skip


@dataclass
class Guild:
    name: str
    bot: User
    id: int = field(default_factory=snowflake)
    channels: list[Channel] = field(default_factory=list)
    roles: list[Role] = field(default_factory=list)
    members: dict[int, Member] = field(default_factory=dict)
    voice: dict[int, int] = field(default_factory=dict)  # user id -> voice channel id
    sessions: dict[int, str] = field(default_factory=dict)  # user id -> voice session id
    suppressed: set[int] = field(default_factory=set)  # users in a stage's audience: nobody hears them
    muted: set[int] = field(default_factory=set)  # users a moderator server-muted: nobody hears them either
    bot_removed: bool = False  # the bot was kicked from the server (or it was deleted): it may see nothing there

    def __post_init__(self) -> None:
        # The @everyone role shares the guild's id; it grants what a normal server grants.
        self.roles.append(Role("@everyone", EVERYONE_DEFAULT, id=self.id, position=0))
        self.members[self.bot.id] = Member(self.bot)

    def text_channel(self, name: str = "general", *, deny_bot: int = 0) -> Channel:
        channel = Channel(name, TEXT, self.id, position=len(self.channels))
        if deny_bot:
            channel.overwrites.append(Overwrite(self.bot.id, deny=deny_bot, member=True))
        self.channels.append(channel)
        return channel

    def voice_channel(self, name: str = "Tavern", *, deny_bot: int = 0, user_limit: int = 0) -> Channel:
        channel = Channel(name, VOICE, self.id, position=len(self.channels), user_limit=user_limit)
        if deny_bot:
            channel.overwrites.append(Overwrite(self.bot.id, deny=deny_bot, member=True))
        self.channels.append(channel)
        return channel

    def stage_channel(self, name: str = "Stage") -> Channel:
        channel = Channel(name, STAGE, self.id, position=len(self.channels))
        self.channels.append(channel)
        return channel

    def thread(self, parent: Channel, name: str = "Session 12") -> Channel:
        """A public thread in text channel `parent` (resources/channel, "Thread")."""
        thread = Channel(name, THREAD, self.id, parent_id=parent.id)
        self.channels.append(thread)
        return thread

    def role(self, name: str, permissions: int = 0) -> Role:
        role = Role(name, permissions, position=len(self.roles))
        self.roles.append(role)
        return role

    def member(self, name: str, *roles: Role) -> Member:
        member = Member(User(name), [r.id for r in roles])
        self.members[member.user.id] = member
        return member

    def voice_state(self, user_id: int) -> dict[str, Any]:
        channel = self.voice.get(user_id)
        return {
            "guild_id": str(self.id), "channel_id": None if channel is None else str(channel),
            "user_id": str(user_id), "session_id": self.sessions.get(user_id, f"session-{user_id}"),
            "deaf": False, "mute": user_id in self.muted, "self_deaf": False, "self_mute": False, "self_video": False,
            "suppress": user_id in self.suppressed, "request_to_speak_timestamp": None,
            "member": self.members[user_id].payload(),
        }  # fmt: skip

    def payload(self) -> dict[str, Any]:
        return {
            # The owner bypasses every permission, so it is a host account of its own, never the bot.
            "id": str(self.id), "name": self.name, "owner_id": "1", "unavailable": False,
            "member_count": len(self.members), "large": False, "features": [], "emojis": [], "stickers": [],
            "channels": [c.payload() for c in self.channels if c.type != THREAD],
            "threads": [c.payload() for c in self.channels if c.type == THREAD],
            "roles": [r.payload() for r in self.roles],
            "members": [m.payload() for m in self.members.values()],
            "voice_states": [self.voice_state(u) for u in self.voice],
            "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
            "preferred_locale": "en-US", "premium_tier": 0, "verification_level": 0,
            "default_message_notifications": 0, "explicit_content_filter": 0, "mfa_level": 0, "nsfw_level": 0,
            "system_channel_flags": 0, "afk_timeout": 300,
        }  # fmt: skip

    def permissions(self, member: Member) -> int:
        """Guild-level permissions of `member` (roles only), as an interaction's member payload carries them."""
        value = 0
        for role in self.roles:
            if role.id == self.id or role.id in member.roles:
                value |= role.permissions
        return value

    def channel_permissions(self, member: Member, channel: Channel) -> int:
        """`member`'s permissions in `channel`: the guild's, then the channel's overwrites for @everyone, for the
        member's roles and for the member, in that order (topics/permissions, "Permission Overwrites")."""
        value = self.permissions(member)
        if value & ADMINISTRATOR:
            return ~0
        if channel.type == THREAD:
            channel = next(c for c in self.channels if c.id == channel.parent_id)
        layers = [
            [o for o in channel.overwrites if not o.member and o.target == self.id],
            [o for o in channel.overwrites if not o.member and o.target in member.roles],
            [o for o in channel.overwrites if o.member and o.target == member.user.id],
        ]
        for layer in layers:
            deny = allow = 0
            for overwrite in layer:
                deny, allow = deny | overwrite.deny, allow | overwrite.allow
            value = (value & ~deny) | allow
        return value

    def full_for(self, member: Member, channel: Channel) -> bool:
        """Whether Discord keeps bot `member` out of voice `channel`: at its user limit, without Manage Channels
        there, which lets a bot join a full channel (topics/voice-connections, "Connecting to Voice")."""
        inside = sum(1 for user, at in self.voice.items() if at == channel.id and user != member.user.id)
        full = channel.user_limit > 0 and inside >= channel.user_limit
        return full and not self.channel_permissions(member, channel) & MANAGE_CHANNELS
