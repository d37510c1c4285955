"""How a worker process stops, after rq's warm and cold shutdown: the first SIGTERM/SIGINT stops taking jobs
and lets the current one finish; a second raises ColdShutdown in the main thread, abandoning the job, which
stays pending in Redis for another worker to reclaim. SIGUSR1 dumps every thread's stack to stderr."""

from __future__ import annotations

import faulthandler
import logging
import signal
from types import FrameType
from typing import Protocol

log = logging.getLogger(__name__)


class ColdShutdown(BaseException):
    """The second stop signal: abandon the current job (it stays pending and is reclaimed elsewhere)."""


class Stoppable(Protocol):
    @property
    def stopping(self) -> bool: ...

    def stop(self) -> None: ...


def install_signals(worker: Stoppable) -> None:
    """First SIGTERM/SIGINT: warm shutdown. Second: cold (raise in the main thread, abandoning the job).
    SIGUSR1: every thread's stack to stderr, to see what a worker that seems stuck waits on."""

    def handle(signum: int, frame: FrameType | None) -> None:
        if worker.stopping:
            log.warning("second stop signal: abandoning the current job")
            raise ColdShutdown
        log.info("stop signal: finishing the current job, taking no new ones (again to stop at once)")
        worker.stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
