"""Takes the bot has queued, kept for a week so that a reply's **Play again** button can queue the same one.

A take is the job as it was sent: its render segments (speakers already resolved to stored voices), settings
and seed. Queued again with the same seed it is the same take, straight from the worker's cache while that
holds it (tts_engine/worker_store.py: `cache_key` ignores who asked and whether the seed was drawn), so a
character renamed or a personal voice changed since does not change what plays.

A take of a message (the Speak-message menu) also remembers the replies that show the message's text. When the
message is deleted, `retract` edits them to say so, without the text or the button, and forgets their takes:
what its writer took down is neither shown nor played again by the bot.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import discord
import msgpack
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tts_engine import jobs

log = logging.getLogger(__name__)

TAKE_TTL = 7 * 86_400  # seconds a take can be played again from its reply


RETRACTED = "🗑️ The message this line spoke was deleted."


def _key(job_id: str) -> str:
    return f"dia:take:{job_id}"


def _replies_key(guild_id: int, message_id: int) -> str:
    return f"dia:replies:{guild_id}:{message_id}"


@dataclass(frozen=True)
class Take:
    job: jobs.RenderJob
    preview: str  # what the reply showed of it
    message_id: int | None = None  # the message it speaks, if any (the Speak-message menu)

    def again(self, requester: int, channel_id: int | None) -> jobs.RenderJob:
        """A new job for the same take, asked for by `requester` from `channel_id`; never exported again."""
        return dataclasses.replace(
            self.job, job_id=uuid.uuid4().hex, requester=requester, channel_id=channel_id, export=False,
            created_at=time.time(),
        )  # fmt: skip


async def keep(redis: Redis, job: jobs.RenderJob, preview: str, message_id: int | None = None) -> None:
    body = {"job": jobs.encode_job(job), "preview": preview, "message_id": message_id}
    await redis.set(_key(job.job_id), msgpack.packb(body, use_bin_type=True), ex=TAKE_TTL)


async def find(redis: Redis, job_id: str) -> Take | None:
    """The take queued as `job_id`, or None once it expired (or was never kept)."""
    data: Any = await redis.get(_key(job_id))
    if data is None:
        return None
    try:
        body = msgpack.unpackb(data, raw=False)
        message_id = body.get("message_id")  # absent from takes kept before messages were
        return Take(jobs.decode_job(body["job"]), str(body["preview"]), None if message_id is None else int(message_id))
    except (ValueError, KeyError, TypeError):  # kept by a release whose jobs this one cannot read: gone, as if expired
        return None


@dataclass(frozen=True)
class Reply:
    """A reply of the bot that shows a message's text, and the take its **Play again** button plays."""

    channel_id: int
    reply_id: int
    job_id: str


async def shown_in(redis: Redis, guild_id: int, message_id: int, reply: Reply) -> None:
    """Remember that `reply` shows message `message_id`'s text, for as long as its take is kept."""
    key = _replies_key(guild_id, message_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.sadd(key, f"{reply.channel_id}:{reply.reply_id}:{reply.job_id}")
        pipe.expire(key, TAKE_TTL)
        await pipe.execute()


async def claim(redis: Redis, guild_id: int, message_ids: Collection[int]) -> list[Reply]:
    """The replies that show these messages, and their takes, forgotten at once: each reply is claimed by one
    caller only, however many ask."""
    keys = [_replies_key(guild_id, m) for m in message_ids]
    async with redis.pipeline(transaction=True) as pipe:
        for key in keys:
            pipe.smembers(key)
        pipe.delete(*keys)
        *members, _ = await pipe.execute()
    replies = []
    for raw in (entry for found in members for entry in found):
        channel_id, reply_id, job_id = (raw.decode() if isinstance(raw, bytes) else str(raw)).split(":")
        replies.append(Reply(int(channel_id), int(reply_id), job_id))
    if replies:
        await redis.delete(*(_key(reply.job_id) for reply in replies))
    return replies


async def retract(client: discord.Client, redis: Redis, guild_id: int, message_ids: Collection[int]) -> int:
    """These messages were deleted: the replies that show them say so instead, without their Play again button,
    and their takes are gone. Returns how many replies were edited."""
    try:
        replies = await claim(redis, guild_id, message_ids)
    except RedisError as exc:
        log.warning("could not look up the replies to deleted messages in guild %d: %s", guild_id, exc)
        return 0
    edited = 0
    for reply in replies:
        channel = client.get_partial_messageable(reply.channel_id, guild_id=guild_id)
        try:
            await channel.get_partial_message(reply.reply_id).edit(content=RETRACTED, view=None)
            edited += 1
        except discord.HTTPException as exc:  # taken down already, or the channel is out of reach now
            log.info("could not clear reply %d to a deleted message: %s", reply.reply_id, exc)
    return edited
