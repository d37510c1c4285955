"""Small helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

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
