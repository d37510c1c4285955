"""Takes the bot has queued, kept for a week so that a reply's **Play again** button can queue the same one.

A take is the job as it was sent: its render segments (speakers already resolved to stored voices), settings
and seed. Queued again with the same seed it is the same take, straight from the worker's cache while that
holds it (tts_engine/worker_store.py: `cache_key` ignores who asked and whether the seed was drawn), so a
character renamed or a personal voice changed since does not change what plays.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass
from typing import Any

import msgpack
from redis.asyncio import Redis

from tts_engine import jobs

TAKE_TTL = 7 * 86_400  # seconds a take can be played again from its reply


def _key(job_id: str) -> str:
    return f"dia:take:{job_id}"


@dataclass(frozen=True)
class Take:
    job: jobs.RenderJob
    preview: str  # what the reply showed of it

    def again(self, requester: int, channel_id: int | None) -> jobs.RenderJob:
        """A new job for the same take, asked for by `requester` from `channel_id`; never exported again."""
        return dataclasses.replace(
            self.job, job_id=uuid.uuid4().hex, requester=requester, channel_id=channel_id, export=False,
            created_at=time.time(),
        )  # fmt: skip


async def keep(redis: Redis, job: jobs.RenderJob, preview: str) -> None:
    body = {"job": jobs.encode_job(job), "preview": preview}
    await redis.set(_key(job.job_id), msgpack.packb(body, use_bin_type=True), ex=TAKE_TTL)


async def find(redis: Redis, job_id: str) -> Take | None:
    """The take queued as `job_id`, or None once it expired (or was never kept)."""
    data: Any = await redis.get(_key(job_id))
    if data is None:
        return None
    try:
        body = msgpack.unpackb(data, raw=False)
        return Take(jobs.decode_job(body["job"]), str(body["preview"]))
    except (ValueError, KeyError, TypeError):  # kept by a release whose jobs this one cannot read: gone, as if expired
        return None
