"""Removals Redis missed while it did not answer (stalled on a slow disk, restarting), tried again until it does.

A line taken out of a queue (skipped, stopped, taken back, deleted, edited, played) must also leave the saved
queue, or a restart within its resume window plays it again, and its job must be cancelled, or a worker renders
it for no one. Commands do not wait for either (bot/voice.py answers within Discord's 3 s); what failed is
handed here and tried again in the background, backing off, for as long as it still matters. Only removals come
here: each is idempotent (LREM of one exact entry, SET of a cancel flag), so a late one is harmless. A save is
never tried again, as it could land after its line played and was forgotten, and bring it back.

The backoff doubles from `first` to `longest` (as rq's `Retry(interval=[...])` lists its delays); nothing is
persisted: a restart drops the pending retries, as it drops the queue in memory they were about.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot.errors import REDIS_AWAY

log = logging.getLogger(__name__)


class Retries:
    """Background retries of changes that failed because Redis did not answer."""

    def __init__(self, *, first: float = 1.0, longest: float = 30.0, within: float = 600.0) -> None:
        self.first, self.longest, self.within = first, longest, within  # seconds
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def add(self, what: str, change: Callable[[], Awaitable[object]]) -> None:
        """Run `change()` again until Redis takes it; `what` names it in the log ("dropping jobs ...")."""
        task = asyncio.create_task(self._retry(what, change), name=f"retry: {what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Drop what is still pending (the bot is closing)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _retry(self, what: str, change: Callable[[], Awaitable[object]]) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.within
        delay, tries = self.first, 0
        while True:
            await asyncio.sleep(delay)
            tries += 1
            try:
                await change()
            except REDIS_AWAY as exc:
                if loop.time() + delay > give_up:
                    log.warning("gave up %s after %d tries: %s", what, tries, exc)
                    return
                delay = min(2 * delay, self.longest)
                continue
            except Exception:
                log.exception("%s failed", what)  # Redis answered with an error: a bug, not worth trying again
                return
            log.info("%s: done, Redis answered again (try %d)", what, tries)
            return
