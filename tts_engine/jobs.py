"""The Redis contract between the bot and the workers. Torch-free: the bot imports it.

So far it holds the connection helper both processes start with; the job and event schema lands with the
queue (issue 5).
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.exceptions import RedisError


class RedisUnavailable(Exception):
    """Redis cannot be reached; `str()` is one line naming the (password-free) URL and the cause."""


def redact_url(url: str) -> str:
    """`url` without its password, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


async def connect(url: str, *, timeout: float = 5.0) -> Redis:
    """A client for `url` that has answered PING, or `RedisUnavailable`."""
    client = Redis.from_url(url, socket_connect_timeout=timeout, health_check_interval=30)
    try:
        await asyncio.wait_for(client.ping(), timeout)
    except (RedisError, OSError, TimeoutError) as exc:
        await client.aclose()
        cause = str(exc) or type(exc).__name__
        raise RedisUnavailable(f"cannot reach Redis at {redact_url(url)}: {cause}") from exc
    return client
