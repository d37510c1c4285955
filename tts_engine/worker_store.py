"""The worker's side of the Redis contract (tts_engine/jobs.py): synchronous, one client per thread.

Three rules keep a job's output consistent when workers die or stall:
- every event is written by a script that first checks the job's attempt counter, so a worker whose job was
  reclaimed (it stalled, another took over) cannot write a word more (`LostJob`);
- while a worker renders, its heartbeat thread keeps the job's pending entry fresh, but only if it still
  owns the entry, so only dead workers' jobs are reclaimed;
- liveness and cache times come from the Redis server's clock.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

import msgpack
import redis
from redis.exceptions import ResponseError

from tts_engine.jobs import (
    DEAD_LETTER,
    GROUP,
    JOBS,
    OUT_MAXLEN,
    SCHEMA_VERSION,
    WORKERS,
    ContractError,
    Event,
    RenderJob,
    VoiceRecord,
    attempt_key,
    cancel_key,
    codes_key,
    decode_voice,
    encode_event,
    encode_voice,
    guild_queue_key,
    out_key,
    voice_key,
    worker_key,
)
from tts_engine.rendering import CodesChunk

log = logging.getLogger(__name__)

CACHE_INDEX = "dia:cache:index"
CACHE_SIZES = "dia:cache:sizes"
CACHE_BYTES = "dia:cache:bytes"  # the sum of CACHE_SIZES
RUNNING_TTL_MS = 3_600_000  # an output stream whose job never ends still goes away

# The codes behind an event go in with it, so the log never lags what played, and a stale attempt (the attempt
# counter moved on) can add nothing to either.
_EMIT_LUA = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if #ARGV >= 5 then
  for i = 5, #ARGV do redis.call('XADD', KEYS[3], '*', 'c', ARGV[i]) end
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'e', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

# The final event and the acknowledgement as one step: once a reader sees the end, the job is done in Redis
# too, and a worker dying in between cannot leave a finished job pending or a pending job without its end.
_COMPLETE_LUA = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'e', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
redis.call('XACK', KEYS[3], ARGV[5], ARGV[6])
redis.call('XDEL', KEYS[3], ARGV[6])
if KEYS[4] ~= '' then redis.call('ZREM', KEYS[4], ARGV[7]) end
redis.call('DEL', KEYS[5], KEYS[2], KEYS[6])
return 1
"""

_TOUCH_LUA = """
local entry = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #entry == 0 or entry[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""

_HEARTBEAT_LUA = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - 60000)
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
return now_ms
"""

# Entries are indexed by when they expire, with their sizes, so the cache stays under its byte budget: expired
# entries leave the index first, then those closest to expiring (the oldest, as workers share one TTL) go until
# the new one fits. The total is kept beside the sizes, so a put costs the entries it drops, not the whole
# index; a Redis written before the total existed has it summed once (its entries, indexed by when they were
# written, count as expired).
_CACHE_PUT_LUA = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local ttl, budget = tonumber(ARGV[2]), tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[4]) == 0 then
  local total = 0
  for _, size in ipairs(redis.call('HVALS', KEYS[3])) do total = total + tonumber(size) end
  redis.call('SET', KEYS[4], total)
end
local function drop(member)
  local size = redis.call('HGET', KEYS[3], member)
  if size then redis.call('DECRBY', KEYS[4], size) end
  redis.call('DEL', member)
  redis.call('ZREM', KEYS[2], member)
  redis.call('HDEL', KEYS[3], member)
end
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms)) do drop(member) end
if redis.call('HEXISTS', KEYS[3], KEYS[1]) == 1 then drop(KEYS[1]) end
local size = string.len(ARGV[1])
if size > budget then return 0 end
while tonumber(redis.call('GET', KEYS[4])) + size > budget do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #oldest == 0 then break end
  drop(oldest[1])
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('ZADD', KEYS[2], now_ms + ttl, KEYS[1])
redis.call('HSET', KEYS[3], KEYS[1], size)
redis.call('INCRBY', KEYS[4], size)
return 1
"""


class LostJob(Exception):
    """Another worker owns this job now; stop working on it without writing or acknowledging anything."""


class VoiceMissing(Exception):
    """A voice the job names is not stored (deleted after the line was queued)."""


def _entry(reply: Any) -> tuple[str, dict[bytes, bytes]] | None:
    if not reply:
        return None
    entry_id, fields = reply[0]
    return entry_id.decode(), fields or {}


class WorkerStore:
    def __init__(self, client: redis.Redis, worker_id: str, *, out_ttl_ms: int = 600_000) -> None:
        self.redis, self.worker_id, self.out_ttl_ms = client, worker_id, out_ttl_ms
        self._emit = client.register_script(_EMIT_LUA)
        self._complete = client.register_script(_COMPLETE_LUA)
        self._touch = client.register_script(_TOUCH_LUA)
        self._heartbeat = client.register_script(_HEARTBEAT_LUA)
        self._cache_put = client.register_script(_CACHE_PUT_LUA)

    def ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(JOBS, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read_new(self, block_ms: int | None, *, count: int = 1) -> list[tuple[str, dict[bytes, bytes]]]:
        """Up to `count` new jobs, now ours; waits up to `block_ms` for the first (None: does not wait)."""
        reply: Any = self.redis.xreadgroup(GROUP, self.worker_id, {JOBS: ">"}, count=count, block=block_ms)
        return [(entry_id.decode(), fields or {}) for entry_id, fields in reply[0][1]] if reply else []

    def reclaim(self, min_idle_ms: int) -> tuple[str, dict[bytes, bytes]] | None:
        """A job a dead worker left pending for `min_idle_ms`, now ours; entries deleted meanwhile are dropped."""
        reply: Any = self.redis.xautoclaim(JOBS, GROUP, self.worker_id, min_idle_ms, "0-0", count=1)
        claimed = [(entry_id, fields) for entry_id, fields in reply[1] if fields]
        for entry_id, fields in reply[1]:
            if not fields:  # Redis 6.2 reports an XDEL'ed entry this way
                self.redis.xack(JOBS, GROUP, entry_id)
        return _entry(claimed)

    def next_attempt(self, job_id: str) -> int:
        pipe = self.redis.pipeline()
        pipe.incr(attempt_key(job_id))
        pipe.expire(attempt_key(job_id), 86_400)
        attempt, _ = pipe.execute()
        return int(attempt)

    def emit(self, job_id: str, attempt: int, event: Event, codes: Sequence[bytes] = ()) -> None:
        """Append a start or audio event (final events go through `finish`), and log the codes behind it
        (`encode_log`) for a retry to go on from."""
        keys = [out_key(job_id), attempt_key(job_id), codes_key(job_id)]
        args: list[bytes | int] = [attempt, encode_event(event), OUT_MAXLEN, RUNNING_TTL_MS, *codes]
        if not self._emit(keys=keys, args=args):
            raise LostJob(f"job {job_id} belongs to a later attempt now")

    def logged_codes(self, job_id: str, revision: str) -> dict[int, list[CodesChunk]]:
        """What earlier attempts of the job rendered, per segment (see `resumable`)."""
        entries: Any = self.redis.xrange(codes_key(job_id))
        return resumable([fields[b"c"] for _, fields in entries if b"c" in fields], revision)

    def cancelled(self, job_id: str) -> bool:
        return bool(self.redis.exists(cancel_key(job_id)))

    def finish(
        self,
        entry_id: str,
        job_id: str,
        guild_id: int | None,
        *,
        attempt: int | None = None,
        event: Event | None = None,
    ) -> None:
        """Write the final `event` (if any) and acknowledge the job in one step: it is never delivered again.

        With `attempt`, nothing happens unless that attempt still owns the job (`LostJob`).
        """
        keys = [out_key(job_id), attempt_key(job_id), JOBS, "" if guild_id is None else guild_queue_key(guild_id)]
        args = ["" if attempt is None else attempt, "" if event is None else encode_event(event), OUT_MAXLEN]
        args += [self.out_ttl_ms, GROUP, entry_id, job_id]
        if not self._complete(keys=[*keys, cancel_key(job_id), codes_key(job_id)], args=args):
            raise LostJob(f"job {job_id} belongs to a later attempt now")

    def requeue(self, entry_id: str, raw: bytes) -> None:
        """Put the job back at the end of the queue for another try (its attempt count stays)."""
        pipe = self.redis.pipeline()
        pipe.xadd(JOBS, {"job": raw})
        pipe.xack(JOBS, GROUP, entry_id)
        pipe.xdel(JOBS, entry_id)
        pipe.execute()

    def dead_letter(self, raw: bytes, reason: str, attempts: int) -> None:
        fields: Any = {"job": raw, "reason": reason, "attempts": attempts, "worker": self.worker_id}
        self.redis.xadd(DEAD_LETTER, fields, maxlen=1000, approximate=True)

    def heartbeat(self, report: dict[str, Any], ttl_ms: int) -> None:
        self._heartbeat(
            keys=[WORKERS, worker_key(self.worker_id)],
            args=[self.worker_id, ttl_ms, msgpack.packb(report, use_bin_type=True)],
        )

    def leave(self) -> None:
        self.redis.zrem(WORKERS, self.worker_id)
        self.redis.delete(worker_key(self.worker_id))

    def touch(self, entry_id: str) -> bool:
        """Reset the idle time of our pending entry; False when it is not ours any more."""
        return bool(self._touch(keys=[JOBS], args=[GROUP, self.worker_id, entry_id]))

    def voices(self, guild_id: int, ids: set[str]) -> dict[str, VoiceRecord]:
        if not ids:
            return {}
        ordered = sorted(ids)
        raw: Any = self.redis.mget([voice_key(guild_id, v) for v in ordered])
        found = {}
        for voice_id, data in zip(ordered, raw, strict=True):
            if data is None:
                raise VoiceMissing(f"the voice {voice_id!r} no longer exists in this server")
            try:
                found[voice_id] = decode_voice(data)
            except ContractError as exc:
                raise VoiceMissing(
                    f"the voice {voice_id!r} is stored in a form this worker cannot read ({exc})"
                ) from exc
        return found

    def put_pending_voice(self, guild_id: int, voice_id: str, voice: VoiceRecord, ttl_s: int) -> None:
        """A made voice, kept `ttl_s` unless a character adopts it (tts_engine/characters.py)."""
        self.redis.set(voice_key(guild_id, voice_id), encode_voice(voice), ex=ttl_s)

    def cache_get(self, key: str) -> dict[str, Any] | None:
        data: Any = self.redis.get(key)
        if data is None:
            return None
        outer = msgpack.unpackb(data, raw=False)
        return outer.get("cache") if outer.get("v") == SCHEMA_VERSION else None

    def cache_put(self, key: str, value: dict[str, Any], *, ttl_ms: int, max_bytes: int) -> bool:
        data = msgpack.packb({"v": SCHEMA_VERSION, "cache": value}, use_bin_type=True)
        return bool(self._cache_put(keys=[key, CACHE_INDEX, CACHE_SIZES, CACHE_BYTES], args=[data, ttl_ms, max_bytes]))


def cache_key(job: RenderJob, voices: dict[str, VoiceRecord], revision: str) -> str:
    """Where a render is cached: its segments, voices' contents, settings, seed and model revision. Whether the
    seed was asked for or drawn does not matter, so asking for a drawn one replays that take."""
    body = {
        "segments": [asdict(s) for s in job.segments],
        "voices": {v: voices[v].digest for v in sorted(voices)},
        "params": asdict(replace(job.params, seed=None)),
        "seed": job.render_seed,
        "revision": revision,
    }
    digest = hashlib.sha256(msgpack.packb(body, use_bin_type=True)).hexdigest()
    return f"dia:cache:{digest}"


def encode_log(chunks: Sequence[CodesChunk], revision: str) -> list[bytes]:
    """Chunks to log (as one entry; none for none), with the revision (weights, codec, settings) that rendered them."""
    if not chunks:
        return []
    packed: bytes = msgpack.packb(
        {"v": SCHEMA_VERSION, "revision": revision, "chunks": [asdict(chunk) for chunk in chunks]}
    )
    return [packed]


def resumable(entries: Sequence[bytes], revision: str) -> dict[int, list[CodesChunk]]:
    """Each segment's logged chunks in order from frame 0 (the last one `last` if the segment ended).

    Attempts log in turn (a stale one cannot write, see `_EMIT_LUA`), each going on from where the log
    stood, so the chunks of a segment follow on. What follows anything else is dropped, keeping the frames
    before it: a chunk out of sequence or of another revision (other weights make other codes), and after an
    unreadable entry, the rest of the log.
    """
    joined: dict[int, list[CodesChunk]] = {}
    broken: set[int] = set()
    for raw in entries:
        try:
            fields = msgpack.unpackb(raw)
            if fields["v"] != SCHEMA_VERSION:
                raise ValueError("another schema version")
            entry_revision, chunks = fields["revision"], [CodesChunk(**chunk) for chunk in fields["chunks"]]
        except Exception as exc:  # the log only saves work: a bad entry costs the replay of what follows it
            log.warning("ignoring the codes log from an unreadable entry on (%s)", exc)
            break
        for chunk in chunks:
            kept = joined.setdefault(chunk.segment, [])
            follows = chunk.start == sum(c.frames for c in kept) and not (kept and kept[-1].last)
            if chunk.segment in broken or entry_revision != revision or not follows:
                broken.add(chunk.segment)
                continue
            kept.append(chunk)
    return {segment: chunks for segment, chunks in joined.items() if chunks}
