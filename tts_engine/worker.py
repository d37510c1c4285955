"""The GPU worker: jobs from Redis in, audio events out, one thread (this one) owning the GPU.

Shaped after arq's worker (a health key with a TTL, bounded retries, one summary line at shutdown) and rq's
SimpleWorker (no fork: the model stays resident) with its warm/cold shutdown (shutdown.py): the first
SIGTERM/SIGINT stops taking jobs and finishes the current one, a second abandons it for another worker to
reclaim. A heartbeat thread reports the worker and keeps its current job from being reclaimed while it is
alive. A bad job never stops the worker: it becomes an error event (and a dead letter when it cannot even be
read).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

from tts_engine.jobs import (
    REDIS_FULL_HINT,
    AudioEvent,
    ContractError,
    EndEvent,
    ErrorCode,
    ErrorEvent,
    Event,
    RenderJob,
    StartEvent,
    decode_job,
    job_id_of,
)
from tts_engine.rendering import Renderer, RenderInputError, RenderResult
from tts_engine.shutdown import ColdShutdown
from tts_engine.worker_run import Run
from tts_engine.worker_store import LostJob, VoiceMissing, WorkerStore, cache_key, encode_log

log = logging.getLogger(__name__)

# Redis cannot take the worker's writes for now: it is away (down, or stalled past the socket timeout), or full (at
# its maxmemory with no eviction, where it refuses writes with OOM). Either way the job stays this worker's, first in
# line, and is started (or, cut off mid-line, taken up from the codes it had logged) once Redis takes writes again.
REDIS_UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.OutOfMemoryError)


def _unavailable(exc: redis.RedisError) -> str:
    """Why Redis takes no writes, for the host."""
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return REDIS_FULL_HINT
    return f"Redis unreachable ({exc})"


@dataclass(frozen=True)
class WorkerConfig:
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    reclaim_after: float = 15.0  # seconds a job may sit with a silent worker before another takes it
    max_attempts: int = 3
    heartbeat_interval: float = 2.0
    cache_ttl: float = 86_400.0
    cache_max_bytes: int = 256 * 2**20
    out_ttl: float = 600.0  # seconds a finished job's events stay readable
    block_ms: int = 1000
    slots: int = 1  # jobs rendered at once (a batching renderer steps them together)
    guild_share: float = 0.5  # of the slots one guild may hold while other guilds' jobs wait

    @property
    def beat(self) -> float:
        """Seconds between heartbeats: `heartbeat_interval`, but at most a quarter of `reclaim_after`, so several
        beats reset a held job's idle time before it could look abandoned (DIA_RECLAIM_AFTER=2 in tests)."""
        return min(self.heartbeat_interval, self.reclaim_after / 4)

    @property
    def caching(self) -> bool:
        """Whether lines are cached: a TTL or size of 0 turns the cache off (and Redis refuses a 0 ms expiry)."""
        return int(self.cache_ttl * 1000) > 0 and self.cache_max_bytes > 0


_Waiting = tuple[str, bytes, RenderJob]  # entry id, raw job, decoded job


class Worker:
    def __init__(
        self,
        client: redis.Redis,
        beat_client: redis.Redis,
        renderer: Renderer,
        config: WorkerConfig,
        report: dict[str, Any] | None = None,
    ) -> None:
        self.store = WorkerStore(client, config.worker_id, out_ttl_ms=int(config.out_ttl * 1000))
        self._beat_store = WorkerStore(beat_client, config.worker_id)
        self.renderer, self.config = renderer, config
        self.report = {"id": config.worker_id, "host": socket.gethostname(), "pid": os.getpid(),
                       "slots": config.slots, **(report or {})}  # fmt: skip
        self.jobs_done = self.jobs_failed = 0
        self._runs: list[Run] = []
        self._waiting: deque[_Waiting] = deque()
        self._owned: dict[str, str] = {}  # entry id -> job id of every job read and not finished
        self._owned_lock = threading.Lock()
        self._next_reclaim = 0.0  # monotonic time of the next look for abandoned jobs
        self._stopping = threading.Event()
        self._beat_stop = threading.Event()

    @property
    def stopping(self) -> bool:
        """Whether stop() was called: no new jobs are taken."""
        return self._stopping.is_set()

    def stop(self) -> None:
        """Warm shutdown: take no new job, finish the current ones."""
        self._stopping.set()

    def run(self) -> None:
        self.store.ensure_group()
        self._beat_once()
        beat = threading.Thread(target=self._beat_loop, name="heartbeat", daemon=True)
        beat.start()
        log.info("worker %s ready (%d slots); waiting for jobs", self.config.worker_id, self.config.slots)
        backoff = 0.1
        try:
            while self._runs or not self._stopping.is_set():
                if self._stopping.is_set():
                    self._give_back()
                else:
                    try:
                        self._fill()
                        backoff = 0.1
                    except REDIS_UNAVAILABLE as exc:
                        log.warning("%s; retrying in %.1f s", _unavailable(exc), backoff)
                        time.sleep(backoff)
                        backoff = min(backoff * 2, 5.0)
                        continue
                    except redis.ResponseError as exc:
                        if "NOGROUP" not in str(exc):
                            raise
                        self.store.ensure_group()  # Redis lost its data (no AOF): start the group again
                        continue
                # One batch of every job in turn: with a batching renderer they share each engine step.
                for run in list(self._runs):
                    self._advance(run)
        finally:
            self._beat_stop.set()
            beat.join(timeout=5)
            with contextlib.suppress(redis.RedisError):
                self.store.leave()
            log.info("worker stopped: %d jobs done, %d failed", self.jobs_done, self.jobs_failed)

    def _beat_once(self) -> None:
        with self._owned_lock:
            owned = dict(self._owned)
        running = [run.job.job_id for run in list(self._runs)]
        report = {**self.report, "jobs_done": self.jobs_done, "current_job": running[0] if running else None,
                  "current_jobs": running}  # fmt: skip
        ttl_ms = int(self.config.beat * 3000)
        self._beat_store.heartbeat(report, ttl_ms)
        for entry_id, job_id in owned.items():  # running and read-ahead jobs alike stay ours while we live
            if not self._beat_store.touch(entry_id):
                log.warning("job %s was taken over by another worker", job_id)

    def _beat_loop(self) -> None:
        while not self._beat_stop.wait(self.config.beat):
            try:
                self._beat_once()
            except REDIS_UNAVAILABLE as exc:
                log.warning("heartbeat failed: %s", _unavailable(exc))
            except redis.RedisError as exc:
                log.warning("heartbeat failed: %s", exc)

    # ---- taking jobs -----------------------------------------------------------------------------------------

    def _fill(self) -> None:
        """Read jobs while slots are free (blocking only when idle), then start the fairest waiting ones."""
        slots = self.config.slots
        free = slots - len(self._runs)
        if free <= 0:
            return
        # With several slots, read one slot-load ahead: a guild that floods the queue must not hide the others'
        # jobs behind its own (see `_pick`). Read-ahead jobs are ours in Redis and kept alive by the heartbeat.
        room = free + (slots if slots > 1 else 0) - len(self._waiting)
        if room > 0:
            idle = not self._runs and not self._waiting
            entries = []
            # Abandoned jobs wait `reclaim_after` s before anyone may take them: a look a second (as often as the
            # idle loop wakes) is enough. New jobs are looked for on every round: a free slot should fill at once.
            if time.monotonic() >= self._next_reclaim:
                self._next_reclaim = time.monotonic() + min(1.0, self.config.reclaim_after / 4)
                reclaimed = self.store.reclaim(int(self.config.reclaim_after * 1000))
                if reclaimed is not None and not self._holds(reclaimed[0]):
                    entries.append(reclaimed)
            if len(entries) < room:
                block = self.config.block_ms if idle and not entries else None
                entries += self.store.read_new(block, count=room - len(entries))
            for entry_id, fields in entries:
                self._queue(entry_id, fields)
        while self._waiting and len(self._runs) < slots:
            self._begin(*self._pick())

    def _holds(self, entry_id: str) -> bool:
        """Whether a job entry that looked abandoned is one this worker runs or read ahead (its beat came late):
        it stays ours, once, rather than running twice."""
        with self._owned_lock:
            held = entry_id in self._owned
        if held:
            log.warning("job entry %s looked abandoned while this worker held it", entry_id)
        return held

    def _queue(self, entry_id: str, fields: dict[bytes, bytes]) -> None:
        raw = fields.get(b"job", b"")
        try:
            job = decode_job(raw)
        except ContractError as exc:
            self._refuse(entry_id, raw, str(exc))
            return
        with self._owned_lock:
            self._owned[entry_id] = job.job_id
        self._waiting.append((entry_id, raw, job))

    def _pick(self) -> _Waiting:
        """The oldest waiting job whose guild holds less than its share of slots; else simply the oldest."""
        share = max(1, int(self.config.guild_share * self.config.slots))
        held = Counter(run.job.guild_id for run in self._runs)
        for index, waiting in enumerate(self._waiting):
            if held[waiting[2].guild_id] < share:
                del self._waiting[index]
                return waiting
        return self._waiting.popleft()

    def _give_back(self) -> None:
        """Stopping: jobs read ahead but not started go back to the queue for the other workers."""
        while self._waiting:
            entry_id, raw, _ = self._waiting.popleft()
            with contextlib.suppress(redis.RedisError):
                self.store.requeue(entry_id, raw)
            self._release(entry_id)

    def _release(self, entry_id: str) -> None:
        with self._owned_lock:
            self._owned.pop(entry_id, None)

    # ---- rendering -------------------------------------------------------------------------------------------

    def _begin(self, entry_id: str, raw: bytes, job: RenderJob) -> None:
        try:
            self._start(entry_id, raw, job)
        except LostJob as exc:
            log.warning("%s; leaving it to its new owner", exc)
            self._release(entry_id)
        except REDIS_UNAVAILABLE as exc:
            # Raised on, so that the worker waits before it tries again (should it die meanwhile, the job is
            # unacknowledged, and another worker reclaims it).
            log.warning("could not start job %s: %s; it will be tried again", job.job_id, _unavailable(exc))
            self._waiting.appendleft((entry_id, raw, job))
            raise

    def _start(self, entry_id: str, raw: bytes, job: RenderJob) -> None:
        attempt = self.store.next_attempt(job.job_id)
        if attempt > self.config.max_attempts:
            self._fail(entry_id, raw, job, attempt, f"gave up after {attempt - 1} attempts")
            return
        if self.store.cancelled(job.job_id):
            cancelled = EndEvent(attempt=attempt, seconds=0.0, cancelled=True)
            self._finish(entry_id, job, attempt, cancelled)
            return
        picked_at = time.time()
        self.store.emit(
            job.job_id, attempt, StartEvent(attempt=attempt, worker=self.config.worker_id, picked_at=picked_at)
        )
        try:
            voices = self.store.voices(job.guild_id, {v for s in job.segments for v in s.voices})
        except VoiceMissing as exc:
            self._finish(entry_id, job, attempt, ErrorEvent(attempt=attempt, code="voice_missing", message=str(exc)))
            self.jobs_failed += 1
            return
        makes_voice = job.clip is not None or job.keep_voice is not None
        cacheable = self.config.caching and not makes_voice  # a made voice must be stored every time
        key = cache_key(job, voices, self.renderer.revision) if cacheable else None
        hit = self.store.cache_get(key) if key else None
        result = RenderResult()
        if attempt > 1 and hit is None:
            # Carry on from what the earlier attempts rendered, so the audio matches what already played.
            result.resume = self.store.logged_codes(job.job_id, self.renderer.revision)
            if result.resume:
                frames = sum(chunk.frames for chunks in result.resume.values() for chunk in chunks)
                log.info("job %s, attempt %d: going on from %d frames rendered before", job.job_id, attempt, frames)
        if hit is not None:
            result.samples, result.pre_skip = hit["samples"], hit["pre_skip"]
            packets = hit["packets"]
            batches: Iterator[list[bytes]] = iter([list(packets[i : i + 50]) for i in range(0, len(packets), 50)])
        else:
            batches = self.renderer.render(job, voices, result)
        self._runs.append(Run(entry_id, raw, job, attempt, picked_at, batches, result, key, hit is not None))

    def _advance(self, run: Run) -> None:
        """Send the run's next batch, or end it; whatever goes wrong ends only this job."""
        job_id = run.job.job_id
        try:
            try:
                batch = next(run.batches)
            except StopIteration:
                self._drop(run)
                end = run.end_event(
                    self.store,
                    cache_ttl_ms=int(self.config.cache_ttl * 1000),
                    cache_max_bytes=self.config.cache_max_bytes,
                )
                self._finish(run.entry_id, run.job, run.attempt, end)
                self.jobs_done += 1
                log.info("job %s: %.2f s of audio", job_id, end.seconds)
                return
            if self.store.cancelled(job_id):
                self._drop(run)
                end = EndEvent(attempt=run.attempt, seconds=len(run.packets) * 0.02, cancelled=True)
                self._finish(run.entry_id, run.job, run.attempt, end)
                self.jobs_done += 1
                log.info("job %s: %.2f s of audio (cancelled)", job_id, end.seconds)
                return
            event = AudioEvent(attempt=run.attempt, seq=run.batches_sent, packets=tuple(batch), sent_at=time.time())
            codes = encode_log(run.result.codes, self.renderer.revision)
            run.result.codes.clear()
            self.store.emit(job_id, run.attempt, event, codes)
            run.first_audio = run.first_audio or time.time()
            run.packets += batch
            run.batches_sent += 1
        except (RenderInputError, VoiceMissing) as exc:
            self._drop(run)
            code: ErrorCode = "bad_input" if isinstance(exc, RenderInputError) else "voice_missing"
            with contextlib.suppress(LostJob):
                self._finish(
                    run.entry_id, run.job, run.attempt, ErrorEvent(attempt=run.attempt, code=code, message=str(exc))
                )
            self.jobs_failed += 1
        except LostJob as exc:
            self._drop(run)
            log.warning("%s; leaving it to its new owner", exc)
        except ColdShutdown:
            raise
        except REDIS_UNAVAILABLE as exc:
            self._drop(run)
            self._waiting.appendleft((run.entry_id, run.raw, run.job))
            log.warning("job %s cut off: %s; it will be taken up again", job_id, _unavailable(exc))
        except Exception:
            self._drop(run)
            log.exception("job %s failed on attempt %d", job_id, run.attempt)
            try:
                if run.attempt < self.config.max_attempts:
                    self.store.requeue(run.entry_id, run.raw)
                    self._release(run.entry_id)
                else:
                    self._fail(run.entry_id, run.raw, run.job, run.attempt, "the last attempt failed")
            except (LostJob, redis.RedisError) as exc:
                log.warning("could not hand job %s back (%s); it will be reclaimed", job_id, exc)

    def _drop(self, run: Run) -> None:
        if run in self._runs:
            self._runs.remove(run)
        run.close()

    def _finish(self, entry_id: str, job: RenderJob, attempt: int, event: Event) -> None:
        try:
            self.store.finish(entry_id, job.job_id, job.guild_id, attempt=attempt, event=event)
        finally:
            self._release(entry_id)

    def _fail(self, entry_id: str, raw: bytes, job: RenderJob, attempt: int, reason: str) -> None:
        self.store.dead_letter(raw, reason, attempt - 1)
        message = "this line could not be rendered, even after retrying; try again or rephrase it"
        error = ErrorEvent(attempt=attempt, code="render_failed", message=message)
        self._finish(entry_id, job, attempt, error)
        self.jobs_failed += 1

    def _refuse(self, entry_id: str, raw: bytes, reason: str) -> None:
        """A payload no worker can read: dead-letter it; tell its reader if its id can be made out."""
        log.warning("dead-lettering unreadable job %s: %s", entry_id, reason)
        self.store.dead_letter(raw, reason, 0)
        job_id = job_id_of(raw)
        event = None
        if job_id is not None:
            event = ErrorEvent(attempt=1, code="malformed", message="the bot and the worker disagree: " + reason)
        self.store.finish(entry_id, job_id or "-", None, event=event)
        self.jobs_failed += 1
