"""Reading a job's output stream `dia:out:{job}` (the bot's side of tts_engine/jobs.py): every event in order,
resumable from an entry id (`events`); just the end (`outcome`); or the audio, each packet once whatever
attempts a crash caused (`JobAudio`). A lost connection to Redis (a restart, a blip, a read left unanswered
past the client's socket timeout) does not end a reading: the stream keeps every event, so it reads on from
the last one seen. Torch-free: the bot imports it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tts_engine.jobs import AudioEvent, ContractError, EndEvent, ErrorEvent, Event, decode_event, out_key

log = logging.getLogger(__name__)

RECONNECT_PAUSE_S = 0.5  # between reads while Redis cannot be reached (redis-py's own retries take milliseconds)


class JobStalled(Exception):
    """No event arrived for the job within the stall timeout; `redis_lost` when Redis could not be reached
    at the end of it (then the worker may be fine, and the user is told what really happened)."""

    def __init__(self, message: str, *, redis_lost: bool = False) -> None:
        super().__init__(message)
        self.redis_lost = redis_lost


def stalled_error(exc: JobStalled, attempt: int) -> ErrorEvent:
    """The error a stalled reading ends with, as the user will read it."""
    if exc.redis_lost:
        message = "the bot lost its connection to the job queue (Redis) and it did not come back; try again"
    else:
        message = "the voice worker stopped answering; try again"
    return ErrorEvent(attempt=attempt, code="timeout", message=message)


async def events(
    redis: Redis, job_id: str, *, last_id: str = "0", block_ms: int = 1000, stall_timeout: float | None = None
) -> AsyncIterator[tuple[str, Event]]:
    """(entry id, event) for each event of the job from after `last_id`, until an end or error event.

    Resume after a restart by passing the last id seen. A payload this build cannot read ends the stream
    with an error event rather than an exception. `JobStalled` when nothing arrives for `stall_timeout` s;
    time without Redis counts as quiet, so a Redis that stays away ends the reading there.
    """
    key = out_key(job_id)
    quiet_since = time.monotonic()
    lost = False  # Redis could not be reached at the last read
    while True:
        try:
            response: Any = await redis.xread({key: last_id}, count=256, block=block_ms)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            if not lost:
                log.warning("lost Redis while reading job %s (%s); reading on once it is back", job_id, exc)
            lost, response = True, None
            await asyncio.sleep(RECONNECT_PAUSE_S)
        else:
            if lost:
                log.info("Redis is back; reading job %s on from entry %s", job_id, last_id)
                lost = False
        if not response:
            if stall_timeout is not None and time.monotonic() - quiet_since > stall_timeout:
                without = " (Redis unreachable)" if lost else ""
                raise JobStalled(f"no news of job {job_id} for {stall_timeout:g} s{without}", redis_lost=lost)
            continue
        quiet_since = time.monotonic()
        for entry_id, fields in response[0][1]:
            last_id = entry_id.decode()
            try:
                event: Event = decode_event(fields[b"e"])
            except (ContractError, KeyError) as exc:
                event = ErrorEvent(attempt=0, code="malformed", message=f"the worker sent something unreadable ({exc})")
            yield last_id, event
            if isinstance(event, EndEvent | ErrorEvent):
                return


async def outcome(redis: Redis, job_id: str, *, stall_timeout: float = 120.0) -> EndEvent | ErrorEvent:
    """Wait for the job's end: its end event, or an error event (a stall becomes a timeout error)."""
    attempt = 0
    try:
        async for _, event in events(redis, job_id, stall_timeout=stall_timeout):
            attempt = max(attempt, event.attempt)
            if isinstance(event, EndEvent | ErrorEvent):
                return event
    except JobStalled as exc:
        return stalled_error(exc, attempt)
    raise AssertionError("events() ends only after an end or error event")


class JobAudio:
    """The audio of one job, each 20 ms packet exactly once, whatever attempts a crash caused.

    Iterate for batches of packets; afterwards `result` is the end or error event. Events of attempts older
    than the newest seen are ignored; a new attempt reproduces the same audio (same seed), so its packets
    are passed on only from where the previous attempt stopped. `last_id` resumes after a bot restart.
    """

    def __init__(self, redis: Redis, job_id: str, *, last_id: str = "0", stall_timeout: float = 120.0) -> None:
        self.redis, self.job_id = redis, job_id
        self.last_id = last_id
        self.stall_timeout = stall_timeout
        self.result: EndEvent | ErrorEvent | None = None
        self.delivered = 0  # packet positions passed on
        self.attempt = 0
        self._position = 0  # packets seen in the current attempt

    async def __aiter__(self) -> AsyncIterator[list[bytes]]:
        stream = events(self.redis, self.job_id, last_id=self.last_id, stall_timeout=self.stall_timeout)
        try:
            async for entry_id, event in stream:
                self.last_id = entry_id
                fresh = self._take(event)
                if fresh:
                    yield fresh
        except JobStalled as exc:
            self.result = stalled_error(exc, self.attempt)

    def _take(self, event: Event) -> list[bytes]:
        if event.attempt < self.attempt:
            return []  # a dead attempt, superseded
        if event.attempt > self.attempt:
            self.attempt, self._position = event.attempt, 0
        if isinstance(event, AudioEvent):
            skip = max(0, self.delivered - self._position)
            fresh = list(event.packets[skip:])
            self._position += len(event.packets)
            self.delivered += len(fresh)
            return fresh
        if isinstance(event, EndEvent | ErrorEvent):
            self.result = event
        return []
