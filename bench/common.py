"""What the benchmark scripts share: the commit they measured, and a private redis-server to measure against."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator

from launcher.embedded_redis import find_redis_server, wait_until_ready
from tests.helpers import free_port


def commit() -> str:
    """The short hash of HEAD, or "unknown" outside a git checkout."""
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        return done.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway redis-server on loopback (no persistence); yields its URL and stops it afterwards."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with tempfile.TemporaryDirectory() as folder:
        server = subprocess.Popen(
            [str(find_redis_server()), "--port", str(port), "--dir", folder, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        try:
            wait_until_ready(url, server)
            yield url
        finally:
            server.terminate()
            server.wait()
