"""The Redis contract between the bot and the GPU workers. Torch-free: the bot imports it.

Layout (all keys under `dia:`; Redis Streams as in research/discord.md §5, the way arq's jobs.py is shared):
- `dia:jobs`: one stream of jobs, consumer group `workers`; at-least-once delivery, reclaimed after a worker
  dies (XAUTOCLAIM), retried a bounded number of times, then dead-lettered to `dia:dead`.
- `dia:out:{job}`: one capped stream of events per job: start (a new attempt), audio (a batch of 20 ms Opus
  packets), end, error. Resumable from any entry id; it expires minutes after the end.
- `dia:cancel:{job}`: set to stop a job; the worker checks it between batches.
- `dia:codes:{job}`: the DAC codes a job's attempts have rendered so far (worker-side, tts_engine/worker_store.py),
  so a retry carries on from them; deleted when the job ends.
- `dia:workers` (live workers by heartbeat expiry) and `dia:worker:{id}` (what each one is doing).
Payloads are msgpack maps carrying a schema version; anything else is refused with `ContractError`.

Exactly-once audio across retries: every job carries the seed it renders with (the user's, or one drawn at
submit), and a retried attempt first replays the codes the dead one had rendered (`dia:codes:{job}`) before it
generates more, so its audio matches what already played even where the new worker would round differently;
`JobAudio` (tts_engine/job_events.py, which reads the events) passes each packet position on once, whichever
attempt it came from, and ignores events of attempts older than the newest it has seen.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from dataclasses import asdict, field
from typing import Annotated, Any, Literal, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import msgpack
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass
from redis.asyncio import Redis
from redis.exceptions import RedisError

SCHEMA_VERSION = 1
JOBS = "dia:jobs"
GROUP = "workers"
DEAD_LETTER = "dia:dead"
WORKERS = "dia:workers"
OUT_MAXLEN = 5000  # audio batches per job stream; a 36 s line needs about 150
# For the host, when Redis is at its maxmemory with no eviction (its default) and refuses writes with OOM.
REDIS_FULL_HINT = "Redis is full (at its maxmemory): give it more, or lower DIA_CACHE_MAX_MB"
MAX_SEED = 2**63 - 1


def out_key(job_id: str) -> str:
    return f"dia:out:{job_id}"


def cancel_key(job_id: str) -> str:
    return f"dia:cancel:{job_id}"


def codes_key(job_id: str) -> str:
    return f"dia:codes:{job_id}"


def attempt_key(job_id: str) -> str:
    return f"dia:attempt:{job_id}"


def guild_queue_key(guild_id: int) -> str:
    return f"dia:queue:{guild_id}"


def rate_key(user_id: int) -> str:
    return f"dia:rate:{user_id}"


def worker_key(worker_id: str) -> str:
    return f"dia:worker:{worker_id}"


CLIP_MAX_BYTES = 10 * 2**20  # the clip intake's default size cap (tts_engine/audio/clip.py)
PENDING_VOICE_TTL = 3600  # seconds a made voice waits for a character to adopt it


def voice_key(guild_id: int, voice_id: str) -> str:
    return f"dia:voice:{guild_id}:{voice_id}"


class ContractError(ValueError):
    """A payload is malformed or of an unknown schema version; `str()` says which."""


# Lax mode: msgpack delivers nested dataclasses as maps; wrong types (a text guild id) are still refused.
_FROZEN = ConfigDict(frozen=True)


@dataclass(config=_FROZEN)
class RenderParams:
    """Generation settings, mirrored from the engine's GenerationParams so the bot needs no torch."""

    cfg_scale: Annotated[float, Field(ge=1.0, le=10.0)] = 3.0
    temperature: Annotated[float, Field(ge=0.0, le=5.0)] = 1.2
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95
    top_k: Annotated[int, Field(ge=1, le=1024)] = 45
    max_tokens: Annotated[int, Field(ge=2, le=100_000)] = 3072  # decoder steps for the new audio, prompt not counted
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] | None = None  # given by the user: renders may be cached
    speed: Annotated[float, Field(ge=0.75, le=1.5)] = 1.0


@dataclass(config=_FROZEN)
class Segment:
    """One render: Dia text with [S1]/[S2] tags, the stored voices prompting it (in order), then a pause."""

    text: Annotated[str, Field(min_length=1, max_length=4096)]
    voices: tuple[str, ...] = ()
    pause_after: Annotated[float, Field(ge=0.0, le=10.0)] = 0.0


@dataclass(config=_FROZEN)
class RenderJob:
    """A line to speak in a guild: its segments, settings and who asked."""

    guild_id: int
    requester: int
    segments: Annotated[tuple[Segment, ...], Field(min_length=1, max_length=64)]
    params: RenderParams = field(default_factory=RenderParams)
    channel_id: int | None = None  # where messages about the line go
    export: bool = False  # also deliver the line as an Ogg Opus file
    priority: int = 0
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: float = field(default_factory=time.time)
    # The seed every attempt renders with, so a retry reproduces the audio a dead attempt had begun.
    render_seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = field(default_factory=lambda: secrets.randbelow(MAX_SEED))
    # A voice clip (any audio format) to turn into a stored voice instead of speaking: the first segment's
    # text is its transcript. Nothing is played.
    clip: Annotated[bytes, Field(max_length=CLIP_MAX_BYTES)] | None = None
    # Store the voice this job makes (from `clip`, or the codes of its one rendered segment) under this id, as
    # a pending voice that expires unless a character adopts it (tts_engine/characters.py).
    keep_voice: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")] | None = None

    def __post_init__(self) -> None:
        if self.params.seed is not None and self.render_seed != self.params.seed:
            object.__setattr__(self, "render_seed", self.params.seed)


@dataclass(config=_FROZEN)
class StartEvent:
    attempt: int
    worker: str
    picked_at: float
    type: Literal["start"] = "start"


@dataclass(config=_FROZEN)
class AudioEvent:
    """`packets` are consecutive 20 ms Opus packets; `seq` numbers the batches of one attempt from 0."""

    attempt: int
    seq: int
    packets: tuple[bytes, ...]
    sent_at: float
    type: Literal["audio"] = "audio"


@dataclass(config=_FROZEN)
class EndEvent:
    attempt: int
    seconds: float  # of audio
    cancelled: bool = False
    cached: bool = False
    stats: dict[str, float] = field(default_factory=dict)  # queued_s, first_audio_s, render_s
    ogg: bytes | None = None  # the whole line as Ogg Opus, when the job asked for it
    type: Literal["end"] = "end"


ErrorCode = Literal["bad_input", "voice_missing", "render_failed", "malformed", "timeout", "no_worker"]


@dataclass(config=_FROZEN)
class ErrorEvent:
    attempt: int
    code: ErrorCode
    message: str  # for the user
    type: Literal["error"] = "error"


Event: TypeAlias = StartEvent | AudioEvent | EndEvent | ErrorEvent
_EVENT = TypeAdapter(Annotated[Event, Field(discriminator="type")])
_JOB = TypeAdapter(RenderJob)


def _pack(kind: str, body: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb({"v": SCHEMA_VERSION, kind: body}, use_bin_type=True)
    return packed


def _unpack(kind: str, data: bytes) -> Any:
    try:
        outer = msgpack.unpackb(data, raw=False, use_list=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ContractError(f"not a {kind} payload: {exc}") from None
    if not isinstance(outer, dict) or kind not in outer:
        raise ContractError(f"not a {kind} payload")
    if outer.get("v") != SCHEMA_VERSION:
        raise ContractError(f"{kind} payload of schema version {outer.get('v')!r}; this build reads {SCHEMA_VERSION}")
    return outer[kind]


def encode_job(job: RenderJob) -> bytes:
    return _pack("job", asdict(job))


def decode_job(data: bytes) -> RenderJob:
    body = _unpack("job", data)
    try:
        return _JOB.validate_python(body)
    except ValidationError as exc:
        raise ContractError(f"malformed job: {_first_problem(exc)}") from None


def job_id_of(data: bytes) -> str | None:
    """The job id of a job payload that `decode_job` refused, where one can be made out: so that whoever waits
    on that job hears why, rather than waiting for ever."""
    try:
        body = msgpack.unpackb(data, raw=False)
        job_id = body["job"]["job_id"]
    except (ValueError, TypeError, KeyError, msgpack.UnpackException):
        return None
    return job_id if isinstance(job_id, str) and 0 < len(job_id) <= 64 else None


def encode_event(event: Event) -> bytes:
    return _pack("event", asdict(event))


def decode_event(data: bytes) -> Event:
    body = _unpack("event", data)
    try:
        return _EVENT.validate_python(body)
    except ValidationError as exc:
        raise ContractError(f"malformed event: {_first_problem(exc)}") from None


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "payload"
    return f"{where}: {error['msg']}"


class RedisUnavailable(Exception):
    """Redis cannot be reached; `str()` is one line naming the (password-free) URL and the cause."""


def redact_url(url: str) -> str:
    """`url` without its password, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


async def connect(url: str, *, timeout: float = 5.0, socket_timeout: float | None = None) -> Redis:
    """A client for `url` that has answered PING, or `RedisUnavailable`. With `socket_timeout`, a command whose
    answer takes longer raises redis' TimeoutError (blocking reads must block for less)."""
    client = Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=socket_timeout, health_check_interval=30
    )
    try:
        async with asyncio.timeout(timeout):
            await client.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        await client.aclose()
        cause = str(exc) or type(exc).__name__
        raise RedisUnavailable(f"cannot reach Redis at {redact_url(url)}: {cause}") from exc
    return client


@dataclass(config=_FROZEN)
class VoiceRecord:
    """A stored voice: what its clip says and the clip's DAC codes (int16 little-endian, frames x channels)."""

    transcript: Annotated[str, Field(min_length=1)]
    codes: bytes
    frames: Annotated[int, Field(ge=1)]
    channels: Annotated[int, Field(ge=1)]

    @property
    def digest(self) -> str:
        """Identifies the voice's content, for cache keys: a changed voice never reuses an old render."""
        import hashlib

        return hashlib.sha256(self.transcript.encode() + b"\0" + self.codes).hexdigest()


def encode_voice(voice: VoiceRecord) -> bytes:
    return _pack("voice", asdict(voice))


def decode_voice(data: bytes) -> VoiceRecord:
    body = _unpack("voice", data)
    try:
        voice = TypeAdapter(VoiceRecord).validate_python(body)
    except ValidationError as exc:
        raise ContractError(f"malformed voice: {_first_problem(exc)}") from None
    if len(voice.codes) != voice.frames * voice.channels * 2:
        raise ContractError(f"malformed voice: {len(voice.codes)} bytes of codes for {voice.frames} frames")
    return voice


@dataclass(frozen=True)
class QueueLimits:
    """What one guild and one user may queue: a cap on unfinished jobs per guild, a token bucket per user."""

    guild_cap: int = 20
    rate_burst: int = 5
    rate_per_minute: float = 12.0
    stale_after_s: float = 3600.0  # a queue entry older than this is forgotten (its job is long dead)


class SubmitRejected(Exception):
    """The job was not queued; `str()` tells the user why and what to do."""


class NoWorker(SubmitRejected): ...


class QueueFull(SubmitRejected): ...


class RateLimited(SubmitRejected):
    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# One atomic step: a live worker exists, the guild's queue has room, the user has a token; then enqueue.
# Times come from the Redis server, so hosts with skewed clocks agree.
_SUBMIT_LUA = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if redis.call('ZCOUNT', KEYS[2], now_ms, '+inf') == 0 then return {'no_worker', 0} end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_ms - tonumber(ARGV[6]))
local queued = redis.call('ZCARD', KEYS[3])
if queued >= tonumber(ARGV[3]) then return {'queue_full', queued} end
local burst, per_ms = tonumber(ARGV[4]), tonumber(ARGV[5])
local bucket = redis.call('HMGET', KEYS[4], 'tokens', 'ts')
local tokens, ts = tonumber(bucket[1]) or burst, tonumber(bucket[2]) or now_ms
tokens = math.min(burst, tokens + (now_ms - ts) * per_ms)
if tokens < 1 then return {'rate_limited', math.ceil((1 - tokens) / per_ms)} end
redis.call('HSET', KEYS[4], 'tokens', tostring(tokens - 1), 'ts', now_ms)
redis.call('PEXPIRE', KEYS[4], math.ceil(burst / per_ms) + 1000)
redis.call('XADD', KEYS[1], '*', 'job', ARGV[1])
redis.call('ZADD', KEYS[3], now_ms, ARGV[2])
return {'ok', queued + 1}
"""


async def submit(redis: Redis, job: RenderJob, limits: QueueLimits | None = None) -> str:
    """Queue `job`; returns its id. Raises `NoWorker`, `QueueFull` or `RateLimited` (each a `SubmitRejected`)."""
    limits = limits or QueueLimits()
    script = redis.register_script(_SUBMIT_LUA)
    keys = [JOBS, WORKERS, guild_queue_key(job.guild_id), rate_key(job.requester)]
    args: list[Any] = [encode_job(job), job.job_id, limits.guild_cap, limits.rate_burst, limits.rate_per_minute / 6e4]
    reply: Any = await script(keys=keys, args=[*args, int(limits.stale_after_s * 1000)])
    status, value = reply[0].decode(), reply[1]
    if status == "ok":
        return job.job_id
    if status == "no_worker":
        raise NoWorker(
            "no voice worker is running right now, so nothing can be spoken; ask the bot's host to start one"
        )
    if status == "queue_full":
        raise QueueFull(f"this server already has {value} lines waiting; wait for some to play (or /stop them)")
    seconds = int(value) / 1000
    raise RateLimited(f"you are sending lines too fast; try again in {seconds:.0f} s", retry_after=seconds)


async def cancel(redis: Redis, *job_ids: str) -> None:
    """Ask the jobs to stop: a queued job ends before it starts, a running one within one batch. One round trip
    for any number of jobs."""
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.set(cancel_key(job_id), b"1", ex=3600)
        await pipe.execute()


async def queued(redis: Redis, guild_id: int) -> list[str]:
    """Ids of the guild's unfinished jobs, oldest first."""
    members: Any = await redis.zrange(guild_queue_key(guild_id), 0, -1)
    return [member.decode() for member in members]


async def unfinished(redis: Redis) -> int:
    """Lines queued or rendering, for every server: the job stream's entries (a worker deletes a job's entry as it
    finishes, fails or drops it)."""
    return int(await redis.xlen(JOBS))


async def live_workers(redis: Redis) -> list[dict[str, Any]]:
    """What each live worker last reported (id, model, device, jobs done, current job)."""
    seconds, micros = await redis.time()
    ids: Any = await redis.zrangebyscore(WORKERS, seconds * 1000 + micros // 1000, "+inf")
    if not ids:
        return []
    reports: Any = await redis.mget([worker_key(i.decode()) for i in ids])
    return [msgpack.unpackb(r, raw=False) for r in reports if r is not None]
