"""Child processes for `make run`: started in order, output prefixed with their names, stopped in reverse.

Each child runs in its own session, so a Ctrl-C in the terminal reaches only the launcher, which then stops
the children in order (bot, worker, then Redis so it can flush its append-only file). On Linux each child
also asks the kernel for SIGTERM when the launcher dies, so even a killed launcher leaves no orphans.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

_PR_SET_PDEATHSIG = 1
_COLORS = ("\033[36m", "\033[35m", "\033[33m", "\033[32m", "\033[34m")
_RESET = "\033[0m"


def _death_signal_hook() -> Callable[[], None] | None:
    """A pre-exec hook that makes the child receive SIGTERM when this process dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl = libc.prctl  # resolved here: the hook runs between fork and exec, where little is safe to do
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the launcher died before prctl took effect
            os._exit(1)

    return hook


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    pump: threading.Thread
    stopping: bool = False


@dataclass
class Supervisor:
    """Starts named children and prefixes every line they print with their name."""

    out: IO[str] = field(default_factory=lambda: sys.stdout)
    color: bool = False
    children: list[Child] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _width: int = 8

    def say(self, name: str, line: str) -> None:
        """Write `line` prefixed with `name`; safe from any thread."""
        prefix = f"{name:<{self._width}} |"
        if self.color:
            names = [child.name for child in self.children]
            color = _COLORS[names.index(name) % len(_COLORS)] if name in names else "\033[1m"
            prefix = f"{color}{prefix}{_RESET}"
        with self._lock:
            self.out.write(f"{prefix} {line}\n")
            self.out.flush()

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
            # The hook only calls prctl (already resolved), so forking beside the pump threads is safe.
            preexec_fn=_death_signal_hook(),
        )
        pump = threading.Thread(target=self._pump, args=(name, process), name=f"pump-{name}", daemon=True)
        self.children.append(Child(name, process, pump))
        pump.start()
        self.say("launcher", f"started {name} (pid {process.pid})")
        return process

    def _pump(self, name: str, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in iter(process.stdout.readline, b""):
            self.say(name, raw.decode("utf-8", "replace").rstrip("\r\n"))

    def wait_first_exit(self, stop: threading.Event, poll: float = 0.1) -> Child | None:
        """Block until a child exits (returned) or `stop` is set (None)."""
        while not stop.wait(poll):
            for child in self.children:
                if child.process.poll() is not None:
                    return child
        return None

    def stop_all(self, timeout: float = 20.0, force: threading.Event | None = None) -> None:
        """SIGTERM each child, newest first, waiting up to `timeout` each; SIGKILL what is left or on `force`."""
        for child in reversed(self.children):
            process = child.process
            if process.poll() is None:
                child.stopping = True
                self.say("launcher", f"stopping {child.name}")
                process.terminate()
                deadline = time.monotonic() + timeout
                while process.poll() is None and time.monotonic() < deadline and not (force and force.is_set()):
                    time.sleep(0.05)
                if process.poll() is None:
                    self.say("launcher", f"{child.name} did not stop in time: killing it")
                    process.kill()
                    process.wait()
            child.pump.join(timeout=5)
