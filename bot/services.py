"""What a guild's player works with: the lines it queues, where they are saved across restarts, and the bot's
services it is handed (bot/voice.py plays; bot/saved.py saves; bot/client.py hands out the services).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import discord
from redis.asyncio import Redis

from bot.retries import Retries


@dataclass
class Line:
    """A line waiting to be played in a guild."""

    job_id: str
    requester: int
    text_channel: int
    voice_channel: int
    preview: str
    export: bool = False
    message_id: int | None = None  # the message it speaks (read channel, Speak message): deleting it takes it back
    queued_at: float = field(default_factory=time.monotonic)

    @property
    def notes_to(self) -> tuple[int, int]:
        """Where notes on this line go: the text channel it was asked for in, else its voice channel's own chat
        (where the bot may be allowed to post when it is not in the first)."""
        return self.text_channel, self.voice_channel


class LineStore(Protocol):
    """Where queued lines outlive the bot (bot/saved.py)."""

    async def save(self, guild_id: int, line: Line) -> None: ...
    async def forget(self, guild_id: int, *lines: Line) -> None: ...
    async def replace(self, guild_id: int, old: Line, new: Line) -> None: ...
    async def forget_all(self, guild_id: int) -> None: ...


class Services:
    """What a player needs from the bot: Redis, its guild, a way to post to a text channel, a place to keep its
    queue across restarts, and someone to try again what Redis missed."""

    def __init__(
        self,
        redis: Redis,
        guild: Callable[[], discord.Guild | None],
        post: Callable[[Sequence[int], str, discord.File | None], Awaitable[None]],
        *,
        guild_id: int,
        saved: LineStore,
        retries: Retries,
        prebuffer_packets: int,
        idle_timeout: float,
        stall_timeout: float,
    ) -> None:
        self.redis, self.guild, self.post = redis, guild, post
        self.guild_id, self.saved, self.retries = guild_id, saved, retries
        self.prebuffer_packets, self.idle_timeout, self.stall_timeout = prebuffer_packets, idle_timeout, stall_timeout
