"""The worker process: joins the engine to Redis.

Until the engine and the queue land (issues 3-5) it only proves its settings and its Redis connection, then
waits for SIGTERM or SIGINT, so that `make run` can supervise it like the real thing.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from config.settings import WorkerSettings
from tts_engine import jobs

log = logging.getLogger(__name__)


async def run(settings: WorkerSettings) -> None:
    """Serve until SIGTERM or SIGINT. Raises `jobs.RedisUnavailable` when Redis cannot be reached."""
    redis = await jobs.connect(settings.require_redis_url())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        log.info("connected to Redis at %s (model %s)", jobs.redact_url(settings.require_redis_url()), settings.model)
        log.warning("the render engine is not wired in yet: this worker takes no jobs")
        await stop.wait()
        log.info("stopping")
    finally:
        await redis.aclose()
