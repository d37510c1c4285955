"""Guild queues kept in Redis beside the players' memory, so that a restarted bot plays what was waiting.

A line is saved when it is queued and forgotten once it has played, been skipped, or failed; `/stop` forgets
a guild's whole queue. The line that was playing when the bot went down stays saved and plays again from its
start: its job's audio stays in Redis for `out_ttl` (10 minutes) after the job ends. A guild's saved queue
expires RESUME_WINDOW after its last change, and at start-up a line whose job has neither audio nor a place
in the job queue any more is dropped, so nothing plays long after anyone waited for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict, fields
from typing import Any

from redis.asyncio import Redis

from bot.services import Line
from tts_engine import jobs

log = logging.getLogger(__name__)

RESUME_WINDOW = 600  # seconds: the worker keeps a finished job's audio this long (WorkerConfig.out_ttl)
_PREFIX = "dia:bot:lines:"
_STORED = tuple(f.name for f in fields(Line) if f.name != "queued_at")  # a wait restarts with the bot


# KEYS: the guild's saved queue; ARGV: the old entry, the new one, the queue's TTL.
_REPLACE = """
local at = redis.call('LPOS', KEYS[1], ARGV[1])
if at then
  redis.call('LSET', KEYS[1], at, ARGV[2])
else
  redis.call('RPUSH', KEYS[1], ARGV[2])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
"""


def _key(guild_id: int) -> str:
    return f"{_PREFIX}{guild_id}"


def _encode(line: Line) -> str:
    # Deterministic, so that LREM finds exactly the entry `save` wrote. A field that is None is left out: an
    # entry saved before the field existed then reads and writes back the same, and so is still found.
    data = asdict(line)
    return json.dumps({name: data[name] for name in _STORED if data[name] is not None}, sort_keys=True)


def _decode(raw: bytes | str) -> Line:
    data: dict[str, Any] = json.loads(raw)
    return Line(**{name: data[name] for name in _STORED if name in data})


class SavedQueues:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._order = asyncio.Lock()  # saves reach Redis in the order lines were queued
        self._replace = redis.register_script(_REPLACE)

    async def save(self, guild_id: int, line: Line) -> None:
        async with self._order:
            key = _key(guild_id)
            pipe = self.redis.pipeline(transaction=True)
            pipe.rpush(key, _encode(line))
            pipe.expire(key, RESUME_WINDOW)
            await pipe.execute()

    async def forget(self, guild_id: int, *lines: Line) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:  # one round trip for any number of lines
            for line in lines:
                pipe.lrem(_key(guild_id), 1, _encode(line))
            await pipe.execute()

    async def replace(self, guild_id: int, old: Line, new: Line) -> None:
        """`new` where `old` was saved; at the end if `old` is not there (its save failed)."""
        async with self._order:
            await self._replace(keys=[_key(guild_id)], args=[_encode(old), _encode(new), RESUME_WINDOW])

    async def forget_all(self, guild_id: int) -> None:
        await self.redis.delete(_key(guild_id))

    async def load(self) -> dict[int, list[Line]]:
        """Every guild's saved lines, in order, without those whose job is gone (they are forgotten)."""
        saved: dict[int, list[Line]] = {}
        async for key in self.redis.scan_iter(match=f"{_PREFIX}*"):
            guild_id = int(key.decode().removeprefix(_PREFIX))
            waiting = set(await jobs.queued(self.redis, guild_id))
            lines = []
            entries: Any = await self.redis.lrange(key, 0, -1)
            for raw in entries:
                try:
                    line = _decode(raw)
                except (ValueError, TypeError, KeyError):
                    log.warning("dropping an unreadable saved line in guild %d", guild_id)
                    await self.redis.lrem(key, 1, raw)
                    continue
                if line.job_id in waiting or await self.redis.exists(jobs.out_key(line.job_id)):
                    lines.append(line)
                else:
                    await self.forget(guild_id, line)
            if lines:
                saved[guild_id] = lines
        return saved
