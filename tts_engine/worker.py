"""The GPU worker: jobs from Redis in, audio events out, one thread (this one) owning the GPU.

Shaped after arq's worker (a health key with a TTL, bounded retries, one summary line at shutdown) and rq's
SimpleWorker (no fork: the model stays resident) with its warm/cold shutdown: the first SIGTERM/SIGINT stops
taking jobs and finishes the current one, a second abandons it for another worker to reclaim. A heartbeat
thread reports the worker and keeps its current job from being reclaimed while it is alive. A bad job never
stops the worker: it becomes an error event (and a dead letter when it cannot even be read).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import msgpack
import redis

from tts_engine.audio.ogg import ogg_opus
from tts_engine.jobs import (
    PENDING_VOICE_TTL,
    AudioEvent,
    ContractError,
    EndEvent,
    ErrorCode,
    ErrorEvent,
    RenderJob,
    StartEvent,
    decode_job,
)
from tts_engine.rendering import Renderer, RenderInputError, RenderResult
from tts_engine.worker_store import LostJob, VoiceMissing, WorkerStore, cache_key

log = logging.getLogger(__name__)

EXPORT_LIMIT = 8 * 2**20  # bytes of Ogg an end event may carry (Discord's smallest upload limit is 10 MiB)


class ColdShutdown(BaseException):
    """The second stop signal: abandon the current job (it stays pending and is reclaimed elsewhere)."""


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


@dataclass
class _Current:
    entry_id: str
    job_id: str


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
        self.report = {"id": config.worker_id, "host": socket.gethostname(), "pid": os.getpid(), **(report or {})}
        self.jobs_done = self.jobs_failed = 0
        self._current: _Current | None = None
        self._stopping = threading.Event()
        self._beat_stop = threading.Event()

    def stop(self) -> None:
        """Warm shutdown: take no new job, finish the current one."""
        self._stopping.set()

    def run(self) -> None:
        self.store.ensure_group()
        self._beat_once()
        beat = threading.Thread(target=self._beat_loop, name="heartbeat", daemon=True)
        beat.start()
        log.info("worker %s ready; waiting for jobs", self.config.worker_id)
        backoff = 0.1
        try:
            while not self._stopping.is_set():
                try:
                    entry = self.store.reclaim(int(self.config.reclaim_after * 1000)) or self.store.read_new(
                        self.config.block_ms
                    )
                    backoff = 0.1
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    log.warning("Redis unreachable (%s); retrying in %.1f s", exc, backoff)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                except redis.ResponseError as exc:
                    if "NOGROUP" not in str(exc):
                        raise
                    self.store.ensure_group()  # Redis lost its data (no AOF): start the group again
                    continue
                if entry is not None:
                    self._process(*entry)
        finally:
            self._beat_stop.set()
            beat.join(timeout=5)
            with contextlib.suppress(redis.RedisError):
                self.store.leave()
            log.info("worker stopped: %d jobs done, %d failed", self.jobs_done, self.jobs_failed)

    def _beat_once(self) -> None:
        current = self._current
        report = {**self.report, "jobs_done": self.jobs_done, "current_job": current and current.job_id}
        ttl_ms = int(self.config.heartbeat_interval * 3000)
        self._beat_store.heartbeat(report, ttl_ms)
        if current is not None and not self._beat_store.touch(current.entry_id):
            log.warning("job %s was taken over by another worker", current.job_id)

    def _beat_loop(self) -> None:
        while not self._beat_stop.wait(self.config.heartbeat_interval):
            try:
                self._beat_once()
            except redis.RedisError as exc:
                log.warning("heartbeat failed: %s", exc)

    def _process(self, entry_id: str, fields: dict[bytes, bytes]) -> None:
        raw = fields.get(b"job", b"")
        try:
            job = decode_job(raw)
        except ContractError as exc:
            self._refuse(entry_id, raw, str(exc))
            return
        attempt = self.store.next_attempt(job.job_id)
        self._current = _Current(entry_id, job.job_id)
        try:
            self._attempt(entry_id, raw, job, attempt)
        except LostJob as exc:
            log.warning("%s; leaving it to its new owner", exc)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # Unacknowledged, the job stays pending: another attempt picks it up once Redis is back.
            log.warning("lost Redis during job %s (%s); it will be retried", job.job_id, exc)
        finally:
            self._current = None

    def _attempt(self, entry_id: str, raw: bytes, job: RenderJob, attempt: int) -> None:
        job_id = job.job_id
        if attempt > self.config.max_attempts:
            self._fail(entry_id, raw, job, attempt, f"gave up after {attempt - 1} attempts")
            return
        if self.store.cancelled(job_id):
            cancelled = EndEvent(attempt=attempt, seconds=0.0, cancelled=True)
            self.store.finish(entry_id, job_id, job.guild_id, attempt=attempt, event=cancelled)
            return
        picked_at = time.time()
        self.store.emit(job_id, attempt, StartEvent(attempt=attempt, worker=self.config.worker_id, picked_at=picked_at))
        try:
            end = self._render(job, attempt, picked_at)
        except (RenderInputError, VoiceMissing) as exc:
            code: ErrorCode = "bad_input" if isinstance(exc, RenderInputError) else "voice_missing"
            error = ErrorEvent(attempt=attempt, code=code, message=str(exc))
            self.store.finish(entry_id, job_id, job.guild_id, attempt=attempt, event=error)
            self.jobs_failed += 1
            return
        except (LostJob, ColdShutdown, redis.ConnectionError, redis.TimeoutError):
            raise
        except Exception:
            log.exception("job %s failed on attempt %d", job_id, attempt)
            if attempt < self.config.max_attempts:
                self.store.requeue(entry_id, raw)
            else:
                self._fail(entry_id, raw, job, attempt, "the last attempt failed")
            return
        self.store.finish(entry_id, job_id, job.guild_id, attempt=attempt, event=end)
        self.jobs_done += 1
        log.info("job %s: %.2f s of audio%s", job_id, end.seconds, " (cancelled)" if end.cancelled else "")

    def _render(self, job: RenderJob, attempt: int, picked_at: float) -> EndEvent:
        voices = self.store.voices(job.guild_id, {v for s in job.segments for v in s.voices})
        makes_voice = job.clip is not None or job.keep_voice is not None
        cacheable = job.params.seed is not None and not makes_voice  # a made voice must be stored every time
        key = cache_key(job, voices, self.renderer.revision) if cacheable else None
        hit = self.store.cache_get(key) if key else None
        result = RenderResult()
        if hit is not None:
            result.samples, result.pre_skip = hit["samples"], hit["pre_skip"]
            batches: Iterator[list[bytes]] = iter(
                [list(hit["packets"][i : i + 50]) for i in range(0, len(hit["packets"]), 50)]
            )
        else:
            batches = self.renderer.render(job, voices, result)
        packets: list[bytes] = []
        first_audio = None
        try:
            for seq, batch in enumerate(batches):
                if self.store.cancelled(job.job_id):
                    return EndEvent(attempt=attempt, seconds=len(packets) * 0.02, cancelled=True)
                self.store.emit(
                    job.job_id, attempt, AudioEvent(attempt=attempt, seq=seq, packets=tuple(batch), sent_at=time.time())
                )
                first_audio = first_audio or time.time()
                packets += batch
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
        done = time.time()
        if job.keep_voice is not None:
            if result.voice is None:
                raise RenderInputError("this line made no voice to keep")
            self.store.put_pending_voice(job.guild_id, job.keep_voice, result.voice, PENDING_VOICE_TTL)
        if key is not None and hit is None:
            value = {"packets": packets, "samples": result.samples, "pre_skip": result.pre_skip}
            self.store.cache_put(
                key, value, ttl_ms=int(self.config.cache_ttl * 1000), max_bytes=self.config.cache_max_bytes
            )
        ogg = None
        if job.export:
            ogg = ogg_opus(packets, samples=result.samples, pre_skip=result.pre_skip)
            ogg = ogg if len(ogg) <= EXPORT_LIMIT else None
        stats = {
            "queued_s": max(0.0, picked_at - job.created_at),
            "first_audio_s": (first_audio or done) - picked_at,
            "render_s": done - picked_at,
        }
        return EndEvent(attempt=attempt, seconds=result.samples / 48000, cached=hit is not None, stats=stats, ogg=ogg)

    def _fail(self, entry_id: str, raw: bytes, job: RenderJob, attempt: int, reason: str) -> None:
        self.store.dead_letter(raw, reason, attempt - 1)
        message = "this line could not be rendered, even after retrying; try again or rephrase it"
        error = ErrorEvent(attempt=attempt, code="render_failed", message=message)
        self.store.finish(entry_id, job.job_id, job.guild_id, attempt=attempt, event=error)
        self.jobs_failed += 1

    def _refuse(self, entry_id: str, raw: bytes, reason: str) -> None:
        """A payload no worker can read: dead-letter it; tell its reader if its id can be made out."""
        log.warning("dead-lettering unreadable job %s: %s", entry_id, reason)
        self.store.dead_letter(raw, reason, 0)
        job_id = _job_id_of(raw)
        event = None
        if job_id is not None:
            event = ErrorEvent(attempt=1, code="malformed", message="the bot and the worker disagree: " + reason)
        self.store.finish(entry_id, job_id or "-", None, event=event)
        self.jobs_failed += 1


def _job_id_of(raw: bytes) -> str | None:
    try:
        body = msgpack.unpackb(raw, raw=False)
        job_id = body["job"]["job_id"]
    except (ValueError, TypeError, KeyError, msgpack.UnpackException):
        return None
    return job_id if isinstance(job_id, str) and 0 < len(job_id) <= 64 else None


def install_signals(worker: Worker) -> None:
    """First SIGTERM/SIGINT: warm shutdown. Second: cold (raise in the main thread, abandoning the job)."""

    def handle(signum: int, frame: FrameType | None) -> None:
        if worker._stopping.is_set():
            log.warning("second stop signal: abandoning the current job")
            raise ColdShutdown
        log.info("stop signal: finishing the current job, taking no new ones (again to stop at once)")
        worker.stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
