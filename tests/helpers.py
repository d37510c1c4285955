"""Small helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from launcher.embedded_redis import find_redis_server, wait_until_ready

# Shaped like a real bot token (three base64url parts); no Discord will ever accept it.
TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4OQ.GaBcDe.abcdefghijklmnopqrstuvwxyz0123456789AB"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def env_without_settings(**settings: str) -> dict[str, str]:
    """This process's environment minus every DIA_* variable, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DIA_")}
    env.update(settings)
    return env


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


class RestartableRedis:
    """A redis-server of the test's own that keeps its data across a restart (append-only, fsync always)."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._argv = [str(find_redis_server()), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(folder)]
        self._argv += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(self._argv, stdout=subprocess.DEVNULL)
        wait_until_ready(self.url, self._process)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=15)
            self._process = None

    def __enter__(self) -> RestartableRedis:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
