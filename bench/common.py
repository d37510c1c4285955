"""What the benchmark scripts share: the commit they measured, a private redis-server to measure against, and
Triton's interpreter for the kernel probes' CPU checks."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
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


def under_triton_interpreter() -> None:
    """Run this script again in Triton's interpreter unless it already runs there (a CPU check of its kernels):
    TRITON_INTERPRET=1 only counts when set before triton is first imported, which a kernel script does as it
    loads."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "TRITON_INTERPRET": "1"})
