"""One job a worker is rendering (`Run`): its place in Redis, its renderer's batches, what it sent so far,
and at its end what it made (a kept voice, a cache entry, an exported file) stored and reported."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from tts_engine.audio.ogg import ogg_opus
from tts_engine.jobs import PENDING_VOICE_TTL, EndEvent, RenderJob
from tts_engine.rendering import RenderInputError, RenderResult
from tts_engine.worker_store import WorkerStore

EXPORT_LIMIT = 8 * 2**20  # bytes of Ogg an end event may carry (Discord's smallest upload limit is 10 MiB)


@dataclass
class Run:
    """A job this worker is rendering."""

    entry_id: str
    raw: bytes
    job: RenderJob
    attempt: int
    picked_at: float
    batches: Iterator[list[bytes]]
    result: RenderResult
    cache_key: str | None  # fill the cache under this key when done
    cached: bool  # served from the cache
    packets: list[bytes] = field(default_factory=list)
    batches_sent: int = 0
    first_audio: float | None = None

    def close(self) -> None:
        close = getattr(self.batches, "close", None)
        if close is not None:
            close()  # a renderer's generator frees its engine slot

    def end_event(self, store: WorkerStore, *, cache_ttl_ms: int, cache_max_bytes: int) -> EndEvent:
        """The end event of a run whose batches are all sent, once what it made is stored."""
        job, result, done = self.job, self.result, time.time()
        if job.keep_voice is not None:
            if result.voice is None:
                raise RenderInputError("this line made no voice to keep")
            store.put_pending_voice(job.guild_id, job.keep_voice, result.voice, PENDING_VOICE_TTL)
        if self.cache_key is not None and not self.cached:
            value = {"packets": self.packets, "samples": result.samples, "pre_skip": result.pre_skip}
            store.cache_put(self.cache_key, value, ttl_ms=cache_ttl_ms, max_bytes=cache_max_bytes)
        ogg = None
        if job.export:
            ogg = ogg_opus(self.packets, samples=result.samples, pre_skip=result.pre_skip)
            ogg = ogg if len(ogg) <= EXPORT_LIMIT else None
        stats = {
            "queued_s": max(0.0, self.picked_at - job.created_at),
            "first_audio_s": (self.first_audio or done) - self.picked_at,
            "render_s": done - self.picked_at,
        }
        return EndEvent(attempt=self.attempt, seconds=result.samples / 48000, cached=self.cached, stats=stats, ogg=ogg)
