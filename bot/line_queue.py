"""A guild's queue of lines, and the ways a line leaves it early: skipped, taken back, replaced by an edit of its
message, stopped with the rest.

Each removal tells Redis too: the saved queue forgets the line (bot/saved.py), and the worker drops its job, rendering
or not. bot/voice_link.py builds the voice connection on this, and the player (bot/voice.py) the playing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Collection

from redis.exceptions import RedisError

from bot.errors import REDIS_AWAY
from bot.services import Line, Services
from tts_engine import jobs

log = logging.getLogger(__name__)


class LineQueue:
    """The lines of one guild: `current` plays, `lines` wait in order."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.lines: deque[Line] = deque()
        self.current: Line | None = None

    def _silence(self) -> Line | None:
        """Stop the current line's sound at once, before any await; the line, if one played."""
        raise NotImplementedError

    @property
    def busy(self) -> bool:
        return self.current is not None or bool(self.lines)

    @property
    def queued(self) -> int:
        """Lines playing or waiting to play."""
        return len(self.lines) + (self.current is not None)

    async def skip(self) -> Line | None:
        """Stop the current line at once (the worker is told to stop rendering it)."""
        line = self._silence()
        if line is not None:
            await self._cancel([line])
        return line

    async def withdraw(self, requester: int) -> tuple[Line, bool] | None:
        """Take back `requester`'s latest line: out of the queue if it waits, stopped if it plays. The line and
        whether it was playing; None if they have no line here."""
        waiting = next((line for line in reversed(self.lines) if line.requester == requester), None)
        if waiting is not None:
            self.lines.remove(waiting)
            await self._drop([waiting])
            return waiting, False
        if self.current is not None and self.current.requester == requester:
            skipped = await self.skip()
            return (skipped, True) if skipped is not None else None
        return None

    def waiting(self, job_id: str) -> Line | None:
        """The line of job `job_id` if it waits in the queue (not playing, not played)."""
        return next((line for line in self.lines if line.job_id == job_id), None)

    async def replace(self, job_id: str, new: Line) -> bool:
        """Put `new` in the place of the waiting line of job `job_id` (its message was edited): False, and nothing
        changed, if that line no longer waits. The old line's job is cancelled."""
        old = self.waiting(job_id)
        if old is None:
            return False
        self.lines[self.lines.index(old)] = new  # before any await: the old line cannot have started
        await self._unsave(self.services.saved.replace(self.services.guild_id, old, new), [old])
        await self._cancel([old])
        return True

    async def withdraw_line(self, job_id: str) -> Line | None:
        """Take the waiting line of job `job_id` out of the queue; None if it no longer waits."""
        line = self.waiting(job_id)
        if line is not None:
            self.lines.remove(line)
            await self._drop([line])
        return line

    async def withdraw_messages(self, message_ids: Collection[int]) -> list[Line]:
        """Take back the lines that speak these messages (they were deleted): out of the queue if they wait,
        stopped if one plays. The lines taken back."""
        taken = [line for line in self.lines if line.message_id in message_ids]
        for line in taken:  # all before the first await, while none of them can start playing
            self.lines.remove(line)
        playing = self._silence() if self.current is not None and self.current.message_id in message_ids else None
        await self._drop(taken, playing)
        return taken + ([playing] if playing is not None else [])

    async def stop(self) -> int:
        """Skip the current line and cancel every queued one; returns how many were dropped."""
        dropped = list(self.lines)
        self.lines.clear()
        skipped = self._silence()
        await self._drop(dropped, skipped, everything=True)
        return len(dropped) + (skipped is not None)

    async def _drop(self, waiting: list[Line], playing: Line | None = None, *, everything: bool = False) -> None:
        """Lines taken out of the queue (`everything`: the whole queue), and the one silenced: no longer saved,
        and the worker drops them, rendering or not. The saved queue and the job queue are told at once, so a
        Redis that does not answer holds the caller for one socket timeout, however many lines."""
        saved, guild_id = self.services.saved, self.services.guild_id
        unsave = saved.forget_all(guild_id) if everything else saved.forget(guild_id, *waiting)
        cancelled = [*waiting, playing] if playing is not None else waiting
        await asyncio.gather(self._unsave(unsave, cancelled if everything else waiting), self._cancel(cancelled))

    async def _unsave(self, change: Awaitable[None], lines: list[Line]) -> None:
        """`change` takes `lines` out of the saved queue. Should Redis not answer, forgetting exactly these lines is
        tried again until it does (never the whole queue, as lines saved meanwhile must stay), so that a restart
        cannot play them."""
        saved, guild_id = self.services.saved, self.services.guild_id
        try:
            await change
        except REDIS_AWAY as exc:
            log.warning("updating the queue of guild %d failed: %s; trying again", guild_id, exc)
            if lines:
                what = f"forgetting jobs {', '.join(line.job_id for line in lines)} of guild {guild_id}"
                self.services.retries.add(what, lambda: saved.forget(guild_id, *lines))
        except Exception as exc:
            log.warning("updating the queue of guild %d failed: %s", guild_id, exc)

    async def _cancel(self, lines: list[Line]) -> None:
        # The lines are out of the queue already; until the cancel lands, the worker spends its time on them.
        redis, job_ids = self.services.redis, [line.job_id for line in lines]
        try:
            await jobs.cancel(redis, *job_ids)
        except REDIS_AWAY as exc:
            log.warning("could not tell the worker to drop jobs %s: %s; trying again", ", ".join(job_ids), exc)
            self.services.retries.add(f"dropping jobs {', '.join(job_ids)}", lambda: jobs.cancel(redis, *job_ids))
        except RedisError as exc:
            log.warning("could not tell the worker to drop jobs %s: %s", ", ".join(job_ids), exc)
