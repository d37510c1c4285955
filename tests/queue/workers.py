"""Real worker processes (`python -m tts_engine worker`) on the tiny checkpoints, and event collection."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

from redis.asyncio import Redis

from tests.helpers import env_without_settings
from tts_engine import job_events, jobs


def database(redis_url: str, number: int) -> str:
    """The URL of database `number` on the server of `redis_url`: a module's workers get one of their own."""
    return redis_url.rsplit("/", 1)[0] + f"/{number}"


def fresh_worker(url: str, dia: Path, dac: Path, log: Path, **settings: str) -> WorkerProcess:
    """A worker on an emptied database `url`, started and waiting for jobs."""
    import redis as sync_redis

    sync_redis.Redis.from_url(url).flushdb()
    worker = WorkerProcess(url, dia, dac, log, **settings)
    try:
        return worker.wait_ready()
    except BaseException:
        worker.close()  # a worker that failed to start must not outlive the test
        raise


class WorkerProcess:
    def __init__(self, url: str, dia: Path, dac: Path, log: Path, **settings: str) -> None:
        # Tests: CPU, quick reclaims, and one thread each: two workers with a thread per core each spin against
        # each other on a two-core machine, and a test's twenty short lines took 24 to over 100 s instead of 15.
        settings = {"DIA_DEVICE": "cpu", "DIA_RECLAIM_AFTER": "2", "DIA_CPU_THREADS": "1", **settings}
        env = env_without_settings(DIA_REDIS_URL=url, DIA_MODEL=str(dia), DIA_CODEC=str(dac), **settings)
        self.log_path = log
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tts_engine", "worker"], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90) -> WorkerProcess:
        deadline = time.monotonic() + timeout
        while not self._started(deadline):
            time.sleep(0.05)
        return self

    async def ready(self, timeout: float = 90) -> WorkerProcess:
        """`wait_ready` for async tests. It must not block the event loop: a test's own Redis reads go on
        meanwhile, and redis-py (8 and later) fails a read that its loop leaves unanswered for 5 s."""
        deadline = time.monotonic() + timeout
        while not self._started(deadline):
            await asyncio.sleep(0.05)
        return self

    def _started(self, deadline: float) -> bool:
        if "waiting for jobs" in self.log():
            return True
        if self.process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"worker did not start:\n{self.log()}")
        return False

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        code = self.process.wait(timeout=timeout)
        self._log.close()
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.wait()


async def collect(redis: Redis, job_id: str, timeout: float = 90) -> list[jobs.Event]:
    """Every event of the job up to its end or error."""

    async def run() -> list[jobs.Event]:
        return [event async for _, event in job_events.events(redis, job_id)]

    return await asyncio.wait_for(run(), timeout)


async def first_audio(redis: Redis, job_id: str, timeout: float = 60) -> None:
    """Return once the job has streamed its first audio batch."""

    async def run() -> None:
        async for _, event in job_events.events(redis, job_id):
            if isinstance(event, jobs.AudioEvent):
                return
        raise AssertionError("the job ended before any audio")

    await asyncio.wait_for(run(), timeout)
