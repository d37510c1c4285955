"""Each server's own choice of who may use the bot and who may change its characters (`/settings`), kept in
Redis over the host's defaults (`DIA_REQUIRED_ROLE`, `DIA_CHARACTER_ROLE`).

A server's entry is a hash `dia:guild:{id}:settings` with a field per choice it made: a role id, or "" for
"no role" (everyone may use the bot; Manage Server changes characters). A field the server never set, or one
it reset, follows the host's setting, so a host can still set one role for every server it serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis

Choice = Literal["required_role", "character_role"]
CHOICES: tuple[Choice, ...] = ("required_role", "character_role")
# Also in the hash: the channel read aloud, the prefix of messages there it skips, whether it says who wrote
# them ("0": no; absent: yes), and the voice (bot/voice_choices.py).
READ_CHANNEL = "read_channel"
READ_SKIP = "read_skip"
READ_NAMES = "read_names"


def settings_key(guild_id: int) -> str:
    return f"dia:guild:{guild_id}:settings"


@dataclass(frozen=True)
class RoleRule:
    """One choice as it applies: a role name or id (None: no role), and whether the server set it itself."""

    role: str | None
    own: bool


@dataclass(frozen=True)
class Reading:
    """The channel read aloud (None: none), the prefix that keeps a message there from being read (None: none),
    and whether the writer's name is said before their message."""

    channel: int | None = None
    skip: str | None = None
    names: bool = True


@dataclass(frozen=True)
class ServerSettings:
    required_role: RoleRule  # members need it to use the bot
    character_role: RoleRule  # members with it may change characters, beside those with Manage Server


class ServerSettingsStore:
    """Reads and changes servers' settings; `defaults` are the host's role for each choice."""

    def __init__(self, redis: Redis, defaults: dict[Choice, str | None]) -> None:
        self.redis = redis
        self.defaults = defaults

    async def get(self, guild_id: int) -> ServerSettings:
        raw: Any = await self.redis.hgetall(settings_key(guild_id))
        own = {key.decode(): value.decode() for key, value in raw.items()}
        rules = {
            choice: RoleRule(own[choice] or None, True) if choice in own else RoleRule(self.defaults[choice], False)
            for choice in CHOICES
        }
        return ServerSettings(**rules)

    async def role(self, guild_id: int, choice: Choice) -> str | None:
        """The role that applies to one choice in the server (None: no role)."""
        rules = await self.get(guild_id)
        return (rules.required_role if choice == "required_role" else rules.character_role).role

    async def set_role(self, guild_id: int, choice: Choice, role_id: int | None) -> None:
        """The server's own choice: a role, or None for no role."""
        await self.redis.hset(settings_key(guild_id), choice, "" if role_id is None else str(role_id))

    async def reading(self, guild_id: int) -> Reading:
        """How the server's channel is read aloud (`/settings read-channel`)."""
        raw: Any = await self.redis.hmget(settings_key(guild_id), [READ_CHANNEL, READ_SKIP, READ_NAMES])
        channel, skip, names = raw
        if not channel:
            return Reading()
        return Reading(int(channel), skip.decode() if skip else None, names != b"0")

    async def set_reading(self, guild_id: int, reading: Reading) -> None:
        """Read `reading.channel` from now on; None reads none and forgets the rest."""
        key = settings_key(guild_id)
        if reading.channel is None:
            await self.redis.hdel(key, READ_CHANNEL, READ_SKIP, READ_NAMES)
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, READ_CHANNEL, str(reading.channel))
            if reading.skip:
                pipe.hset(key, READ_SKIP, reading.skip)
            else:
                pipe.hdel(key, READ_SKIP)
            if reading.names:
                pipe.hdel(key, READ_NAMES)
            else:
                pipe.hset(key, READ_NAMES, "0")
            await pipe.execute()

    async def reset(self, guild_id: int) -> None:
        """Back to the host's settings: its roles, no read channel, Dia's [S1] for untagged text."""
        await self.redis.delete(settings_key(guild_id))
