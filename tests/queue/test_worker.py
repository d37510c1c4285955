"""Workers as real processes on the tiny checkpoints, against a real redis-server: the queue's promises.

A line is never lost (crashes, Redis restarts, shutdowns), never plays twice (retries), and a bad job never
takes a worker down.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import msgpack
import numpy as np
import pytest
from redis.asyncio import Redis

from tests.helpers import RestartableRedis
from tests.queue.test_jobs import pretend_worker
from tests.queue.workers import WorkerProcess, collect, database, first_audio, fresh_worker
from tts_engine import job_events, jobs
from tts_engine.audio.opus import FRAME_BYTES_PCM16, OpusDecoder
from tts_engine.jobs import AudioEvent, EndEvent, ErrorEvent, RenderJob, RenderParams, Segment, StartEvent

# About 11.6 s of audio, about 2 s to render on the tiny model. Greedy, because sampling on random weights can
# end a line early, and these tests need a line that is still playing when they act.
LONG = RenderParams(max_tokens=1000, temperature=0.0)
SHORT = RenderParams(max_tokens=60, temperature=0.0)


_requesters = itertools.count(1000)  # a user per line, so the per-user rate limit stays out of the way


def line(text: str = "[S1] Hello there.", guild: int = 1, params: RenderParams = SHORT, **options: object) -> RenderJob:
    segments = (Segment(text=text),)
    return RenderJob(guild_id=guild, requester=next(_requesters), segments=segments, params=params, **options)  # type: ignore[arg-type]


def packets(events: list[jobs.Event]) -> list[bytes]:
    return [p for e in events if isinstance(e, AudioEvent) for p in e.packets]


@pytest.fixture(scope="module")
def shared_url(redis_server: str) -> str:
    return database(redis_server, 3)  # not flushed between tests


@pytest.fixture(scope="module")
def shared_worker(
    shared_url: str, tiny_dia: Path, tiny_dac: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    worker = fresh_worker(shared_url, tiny_dia, tiny_dac, tmp_path_factory.mktemp("w") / "worker.log")
    yield worker
    worker.signal()
    assert worker.wait() == 0, worker.log()


@pytest.fixture
async def shared(shared_url: str, shared_worker: WorkerProcess) -> AsyncIterator[Redis]:
    client = Redis.from_url(shared_url)
    yield client
    await client.aclose()
    assert shared_worker.process.poll() is None, "a job must never take the worker down:\n" + shared_worker.log()


async def test_happy_path(shared: Redis) -> None:
    job = line()
    await jobs.submit(shared, job)
    events = await collect(shared, job.job_id)
    assert isinstance(events[0], StartEvent) and events[0].attempt == 1
    assert isinstance(events[-1], EndEvent) and not events[-1].cancelled and not events[-1].cached
    audio = [e for e in events if isinstance(e, AudioEvent)]
    assert [e.seq for e in audio] == list(range(len(audio))) and len(audio) > 1
    assert len(audio[0].packets) <= len(audio[1].packets), "the first batch leaves as early as possible"
    decoder = OpusDecoder()
    assert all(len(decoder.decode(p)) == FRAME_BYTES_PCM16 for p in packets(events))
    end = events[-1]
    assert end.seconds == pytest.approx(58 * 512 / 44100, abs=1e-3)
    assert {"queued_s", "first_audio_s", "render_s"} <= set(end.stats)
    assert await jobs.queued(shared, 1) == []
    assert await shared.ttl(jobs.out_key(job.job_id)) > 0, "the output stream expires after the end"


async def test_a_script_the_engine_rejects(shared: Redis) -> None:
    job = line("[S1] " + "far too long " * 100)  # 1301 bytes once [S1] is its one byte; Dia reads 1024
    await jobs.submit(shared, job)
    events = await collect(shared, job.job_id)
    assert isinstance(events[-1], ErrorEvent) and events[-1].code == "bad_input"
    assert "1301 bytes long" in events[-1].message and "Dia reads at most 1024" in events[-1].message


async def test_a_missing_voice(shared: Redis) -> None:
    job = RenderJob(guild_id=2, requester=2, segments=(Segment(text="[S1] Hi.", voices=("bram",)),), params=SHORT)
    await jobs.submit(shared, job)
    events = await collect(shared, job.job_id)
    assert isinstance(events[-1], ErrorEvent) and events[-1].code == "voice_missing"
    assert "'bram' no longer exists" in events[-1].message


async def test_a_stored_voice_prompts_the_line(shared: Redis) -> None:
    codes = np.random.default_rng(0).integers(0, 1024, size=(40, 9)).astype("<i2")
    voice = jobs.VoiceRecord(transcript="[S1] I am Bram.", codes=codes.tobytes(), frames=40, channels=9)
    await shared.set(jobs.voice_key(3, "bram"), jobs.encode_voice(voice))
    params = RenderParams(max_tokens=100, temperature=0.0)  # greedy: a random seed could end it early
    job = RenderJob(guild_id=3, requester=3, segments=(Segment(text="[S1] Hi.", voices=("bram",)),), params=params)
    await jobs.submit(shared, job)
    events = await collect(shared, job.job_id)
    assert isinstance(events[-1], EndEvent)
    assert events[-1].seconds == pytest.approx((100 - 2) * 512 / 44100, abs=1e-3)  # 100 steps of new audio


async def test_cancel_mid_job(shared: Redis) -> None:
    job = line(params=LONG)
    await jobs.submit(shared, job)
    await first_audio(shared, job.job_id)
    await jobs.cancel(shared, job.job_id)
    events = await collect(shared, job.job_id)
    end = events[-1]
    assert isinstance(end, EndEvent) and end.cancelled
    assert len(packets(events)) < 998 * 512 / 44100 / 0.02 / 2, "it stopped well before the end"


async def test_cancel_before_pickup(shared: Redis) -> None:
    job = line(params=LONG)
    await jobs.cancel(shared, job.job_id)
    await jobs.submit(shared, job)
    events = await collect(shared, job.job_id)
    assert len(events) == 1 and isinstance(events[0], EndEvent) and events[0].cancelled


async def test_unreadable_jobs_are_dead_lettered(shared: Redis) -> None:
    future = msgpack.packb({"v": 99, "job": {"job_id": "from-the-future"}})
    await shared.xadd(jobs.JOBS, {"job": b"\xc1not msgpack"})
    await shared.xadd(jobs.JOBS, {"job": future})
    events = await collect(shared, "from-the-future")
    assert isinstance(events[-1], ErrorEvent) and events[-1].code == "malformed"
    assert "schema version 99" in events[-1].message
    dead = await shared.xrange(jobs.DEAD_LETTER)
    reasons = [fields[b"reason"].decode() for _, fields in dead[-2:]]
    assert reasons[0].startswith("not a job payload") and "schema version 99" in reasons[1]
    job = line()  # and the worker carries on
    await jobs.submit(shared, job)
    assert isinstance((await collect(shared, job.job_id))[-1], EndEvent)


async def test_a_take_is_served_from_the_cache_when_its_seed_is_asked_for(shared: Redis) -> None:
    """Every line is cached under its seed, drawn or asked for: asking for a drawn seed replays that take."""
    sampled = RenderParams(max_tokens=60)
    drawn = line(params=sampled, render_seed=5)  # the bot drew the seed: the user did not ask for one
    asked = line(params=replace(sampled, seed=5))  # then gave it back with the same text
    other = line(params=replace(sampled, seed=6))
    takes = []
    for job in (drawn, asked, other):
        await jobs.submit(shared, job)
        takes.append(await collect(shared, job.job_id))
    ends = [take[-1] for take in takes]
    assert all(isinstance(end, EndEvent) for end in ends)
    assert [end.cached for end in ends] == [False, True, False]  # type: ignore[union-attr]
    assert packets(takes[1]) == packets(takes[0]) and ends[1].seconds == ends[0].seconds  # type: ignore[union-attr]
    assert packets(takes[2]) != packets(takes[0]), "another seed is another take"


async def test_export_delivers_an_ogg_file(shared: Redis, tmp_path: Path) -> None:
    job = line(export=True)
    await jobs.submit(shared, job)
    end = (await collect(shared, job.job_id))[-1]
    assert isinstance(end, EndEvent) and end.ogg is not None
    (tmp_path / "line.ogg").write_bytes(end.ogg)
    pcm = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(tmp_path / "line.ogg"), "-f", "s16le", "-ac", "1", "pipe:"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert len(pcm) / 2 / 48000 == pytest.approx(end.seconds, abs=1e-3)


async def _describe(redis: Redis, *workers: WorkerProcess) -> str:
    entries = [(i, jobs.decode_job(f[b"job"]).job_id) for i, f in await redis.xrange(jobs.JOBS)]
    groups = await redis.xinfo_groups(jobs.JOBS)
    return f"entries {entries}\ngroups {groups}\n" + "\n---\n".join(w.log()[-3000:] for w in workers)


@pytest.fixture
def start_worker(redis_server: str, tiny_dia: Path, tiny_dac: Path, tmp_path: Path) -> Iterator[type[WorkerProcess]]:
    started: list[WorkerProcess] = []

    def make(url: str = redis_server, **settings: str) -> WorkerProcess:
        worker = WorkerProcess(url, tiny_dia, tiny_dac, tmp_path / f"worker{len(started)}.log", **settings)
        started.append(worker)
        return worker

    yield make  # type: ignore[misc]
    for worker in started:
        worker.close()


def _listen(redis: Redis, job_id: str) -> tuple[job_events.JobAudio, list[bytes], asyncio.Task[None]]:
    """What the bot does: play the job's audio, each packet position once, whichever attempt it comes from."""
    reader = job_events.JobAudio(redis, job_id)
    played: list[bytes] = []

    async def play() -> None:
        async for batch in reader:
            played.extend(batch)

    return reader, played, asyncio.create_task(play())


async def test_a_killed_worker_s_job_completes_once_elsewhere(redis: Redis, start_worker: type[WorkerProcess]) -> None:
    doomed = await start_worker().ready()
    job = line(params=LONG, render_seed=1234)
    await jobs.submit(redis, job)
    reader, played, playing = _listen(redis, job.job_id)
    await first_audio(redis, job.job_id)
    doomed.process.kill()  # kill -9, mid-job
    doomed.wait()
    rescuer = await start_worker(DIA_CACHE_TTL="0").ready()  # so the reference below is rendered, not replayed
    await asyncio.wait_for(playing, 90)
    assert isinstance(reader.result, EndEvent) and reader.result.attempt == 2
    reference = line(params=LONG, render_seed=1234)  # the same line, rendered in one go
    await jobs.submit(redis, reference)
    expected = packets(await collect(redis, reference.job_id))
    assert played == expected, "one complete rendering, nothing twice"
    pending = await redis.xpending_range(jobs.JOBS, jobs.GROUP, "-", "+", 10)
    assert pending == [], (pending, await redis.xrange(jobs.JOBS), rescuer.log())
    assert await redis.xlen(jobs.JOBS) == 0
    assert rescuer.process.poll() is None


async def _packets_of(redis: Redis, job_id: str, attempt: int) -> list[bytes]:
    return [p for _, e in await _events_so_far(redis, job_id) if isinstance(e, AudioEvent) and e.attempt == attempt
            for p in e.packets]  # fmt: skip


async def _events_so_far(redis: Redis, job_id: str) -> list[tuple[bytes, jobs.Event]]:
    return [
        (entry_id, jobs.decode_event(fields[b"e"])) for entry_id, fields in await redis.xrange(jobs.out_key(job_id))
    ]


@pytest.mark.parametrize("slots", ["1", "2"], ids=["one-slot", "batching"])
async def test_a_retry_goes_on_from_the_dead_attempt_s_codes(
    redis: Redis, start_worker: type[WorkerProcess], slots: str
) -> None:
    """The rescuer renders in bfloat16, so rendering the line afresh it would make other audio; it replays the
    codes the dead worker logged instead (the first segment whole, the second up to where it was), and what
    already played runs on without a seam. With two slots the rescuer's scheduler takes the resumed line."""
    doomed = await start_worker().ready()
    segments = (Segment(text="[S1] Hello there."), Segment(text="[S2] And you."))
    job = RenderJob(guild_id=1, requester=next(_requesters), segments=segments, params=LONG, render_seed=77)
    await jobs.submit(redis, job)
    reader, played, playing = _listen(redis, job.job_id)
    first_segment = 998 * 512 / 44100 / 0.02  # packets of the first segment (greedy runs to the cap)
    while len(await _packets_of(redis, job.job_id, 1)) < first_segment + 50:
        await asyncio.sleep(0.02)
    doomed.process.kill()  # kill -9, in the second segment
    doomed.wait()
    before = await _packets_of(redis, job.job_id, 1)
    assert await redis.xlen(jobs.codes_key(job.job_id)) > 0, "the dead attempt logged its codes"
    # No cache: the fresh rendering below must not be served what the rescuer finished.
    rescuer = await start_worker(DIA_DTYPE="bfloat16", DIA_SLOTS=slots, DIA_CACHE_TTL="0").ready()
    await asyncio.wait_for(playing, 90)
    assert isinstance(reader.result, EndEvent) and reader.result.attempt == 2, "the line ended in the second segment"
    after = await _packets_of(redis, job.job_id, 2)
    assert after[: len(before)] == before, "the retry's audio is what already played, packet for packet"
    assert played == after
    assert "going on from" in rescuer.log()
    assert not await redis.exists(jobs.codes_key(job.job_id)), "the log goes with the job"
    # The premise: rendered afresh by the rescuer, the same line sounds different from the start.
    fresh = RenderJob(guild_id=1, requester=next(_requesters), segments=segments, params=LONG, render_seed=77)
    await jobs.submit(redis, fresh)
    assert packets(await collect(redis, fresh.job_id))[: len(before)] != before


async def test_a_job_survives_a_redis_restart(tmp_path: Path, start_worker: type[WorkerProcess]) -> None:
    with RestartableRedis(tmp_path) as server:
        client = Redis.from_url(server.url)
        await pretend_worker(client)
        job = line()
        await jobs.submit(client, job)
        await client.aclose()
        server.stop()  # between submit and pickup
        server.start()
        await start_worker(server.url).ready()
        client = Redis.from_url(server.url)
        events = await collect(client, job.job_id)
        await client.aclose()
        assert isinstance(events[-1], EndEvent) and len(packets(events)) > 0


async def test_a_line_cut_off_by_a_redis_restart_is_taken_up_again(
    tmp_path: Path, start_worker: type[WorkerProcess]
) -> None:
    """Redis is away for seconds mid-line (then back, its data kept): the worker, cut off, keeps the job and takes
    it up again from its logged codes as soon as Redis is back, rather than holding it where no one retries it."""
    with RestartableRedis(tmp_path) as server:
        worker = await start_worker(server.url).ready()
        client = Redis.from_url(server.url)
        job = line(params=LONG)
        await jobs.submit(client, job)
        await first_audio(client, job.job_id)
        await client.aclose()
        server.stop()
        await asyncio.sleep(4.0)  # longer than the worker's client retries on its own
        server.start()
        client = Redis.from_url(server.url)
        events = await collect(client, job.job_id, timeout=30)
        await client.aclose()
    ends = [e for e in events if isinstance(e, EndEvent)]
    assert len(ends) == 1 and not ends[0].cancelled and ends[0].attempt >= 2, events[-3:]
    assert "going on from" in worker.log(), worker.log()


async def test_a_full_redis_holds_the_line_until_it_has_room(tmp_path: Path, start_worker: type[WorkerProcess]) -> None:
    """Redis at its maxmemory (no eviction: Redis's default) refuses writes with OOM. The worker does not die of
    it: it names the cause for the host, waits, and once Redis takes writes again the line is taken up where it
    was cut off and ends whole; the next line plays too."""
    with RestartableRedis(tmp_path) as server:
        worker = await start_worker(server.url).ready()
        client = Redis.from_url(server.url)
        job, after = line(params=LONG), line()
        await jobs.submit(client, job)
        await first_audio(client, job.job_id)
        await client.config_set("maxmemory", "1")
        await jobs.submit(client, after)  # queued before the cap bit: it waits for room too
        await asyncio.sleep(2.0)
        assert worker.process.poll() is None, worker.log()
        assert "Redis is full (at its maxmemory)" in worker.log(), worker.log()
        await client.config_set("maxmemory", "0")
        events, next_events = await collect(client, job.job_id), await collect(client, after.job_id)
        await client.aclose()
    ends = [e for e in events if isinstance(e, EndEvent)]
    assert len(ends) == 1 and not ends[0].cancelled and ends[0].attempt >= 2, events[-3:]
    assert "going on from" in worker.log(), "taken up from its logged codes, not rendered afresh"
    assert isinstance(next_events[-1], EndEvent), next_events[-3:]


async def test_warm_shutdown_finishes_the_job(redis: Redis, start_worker: type[WorkerProcess]) -> None:
    worker = await start_worker().ready()
    job = line(params=LONG)
    await jobs.submit(redis, job)
    await first_audio(redis, job.job_id)
    worker.signal(signal.SIGTERM)
    events = await collect(redis, job.job_id)
    assert isinstance(events[-1], EndEvent) and not events[-1].cancelled
    assert events[-1].seconds == pytest.approx(998 * 512 / 44100, abs=1e-3)  # the whole line
    assert worker.wait() == 0
    assert await jobs.live_workers(redis) == []


async def test_cold_shutdown_leaves_the_job_to_another_worker(redis: Redis, start_worker: type[WorkerProcess]) -> None:
    worker = await start_worker().ready()
    job = line(params=LONG)
    await jobs.submit(redis, job)
    await first_audio(redis, job.job_id)
    worker.signal(signal.SIGTERM)
    await asyncio.sleep(0.1)
    worker.signal(signal.SIGTERM)  # the second signal: cold
    assert worker.wait() == 0
    assert (await redis.xpending(jobs.JOBS, jobs.GROUP))["pending"] == 1
    await start_worker().ready()
    reader = job_events.JobAudio(redis, job.job_id)
    async for _ in reader:
        pass
    assert isinstance(reader.result, EndEvent) and reader.result.attempt == 2


async def test_retries_are_bounded(redis: Redis, start_worker: type[WorkerProcess]) -> None:
    """With one attempt allowed, a job whose worker died is reported failed and dead-lettered, not retried."""
    doomed = await start_worker(DIA_MAX_ATTEMPTS="1").ready()
    job = line(params=LONG)
    await jobs.submit(redis, job)
    await first_audio(redis, job.job_id)
    doomed.process.kill()
    doomed.wait()
    await start_worker(DIA_MAX_ATTEMPTS="1").ready()
    events = await collect(redis, job.job_id)
    assert isinstance(events[-1], ErrorEvent) and events[-1].code == "render_failed"
    dead = await redis.xrange(jobs.DEAD_LETTER)
    assert jobs.decode_job(dead[-1][1][b"job"]).job_id == job.job_id
    assert await jobs.queued(redis, 1) == []


async def test_two_workers_twenty_jobs_each_exactly_once(redis: Redis, start_worker: type[WorkerProcess]) -> None:
    workers = [start_worker(), start_worker()]
    for worker in workers:
        await worker.ready()
        # one each, or on a two-core machine their threads spin against each other (tests/queue/workers.py)
        assert "torch's CPU threads: 1 (DIA_CPU_THREADS)" in worker.log(), worker.log()
    batch = [line(f"[S1] Line number {i}.", guild=100 + i) for i in range(20)]
    for job in batch:
        await jobs.submit(redis, job)
    results = await asyncio.gather(*(collect(redis, job.job_id) for job in batch))
    for events in results:
        assert [type(e).__name__ for e in events if not isinstance(e, AudioEvent)] == ["StartEvent", "EndEvent"]
        assert events[-1].attempt == 1
    served_by = {events[0].worker for events in results if isinstance(events[0], StartEvent)}
    assert len(served_by) == 2, "both workers took jobs"
    assert await redis.xlen(jobs.JOBS) == 0, await _describe(redis, *workers)
    assert (await redis.xpending(jobs.JOBS, jobs.GROUP))["pending"] == 0
