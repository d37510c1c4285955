"""The Redis contract without a worker: payloads, submit's limits, cancel, resumable events, exactly-once audio."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import msgpack
import pytest
from redis.asyncio import Redis

from tests.helpers import RestartableRedis
from tts_engine import job_events, jobs
from tts_engine.jobs import (
    AudioEvent,
    ContractError,
    EndEvent,
    ErrorEvent,
    QueueLimits,
    RenderJob,
    RenderParams,
    Segment,
    StartEvent,
)


def job(guild: int = 1, user: int = 10, **options: object) -> RenderJob:
    return RenderJob(guild_id=guild, requester=user, segments=(Segment(text="[S1] Hello."),), **options)  # type: ignore[arg-type]


async def pretend_worker(redis: Redis, seconds: float = 60) -> None:
    """A live heartbeat, as a worker writes it (submit only checks that one exists)."""
    now_s, now_us = await redis.time()
    await redis.zadd(jobs.WORKERS, {"test-worker": now_s * 1000 + now_us // 1000 + seconds * 1000})


def test_payloads_round_trip() -> None:
    original = job(params=RenderParams(seed=7, speed=1.25), export=True, channel_id=5)
    assert jobs.decode_job(jobs.encode_job(original)) == original
    assert original.render_seed == 7, "a user's seed is the render seed"
    event = AudioEvent(attempt=2, seq=3, packets=(b"\x01\x02", b"\xff"), sent_at=1.5)
    assert jobs.decode_event(jobs.encode_event(event)) == event


def test_unseeded_jobs_still_get_a_fixed_render_seed() -> None:
    first, second = job(), job()
    assert first.params.seed is None and first.render_seed != second.render_seed
    assert jobs.decode_job(jobs.encode_job(first)).render_seed == first.render_seed


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xc1garbage", "not a job payload"),
        (msgpack.packb({"v": 2, "job": {}}), "schema version 2; this build reads 1"),
        (msgpack.packb({"job": {}}), "schema version None"),
        (msgpack.packb({"v": 1, "job": {"guild_id": "x"}}), "guild_id: Input should be a valid integer"),
        (msgpack.packb({"v": 1, "job": {"guild_id": 1, "requester": 2, "segments": []}}), "segments"),
        (msgpack.packb([1, 2, 3]), "not a job payload"),
    ],
)
def test_bad_job_payloads_are_refused(payload: bytes, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        jobs.decode_job(payload)


def test_a_refused_job_still_names_its_id_where_it_can() -> None:
    """So the worker can tell whoever waits on it why it was refused (the `malformed` error event)."""
    refused = msgpack.packb({"v": 2, "job": {"job_id": "abc123", "guild_id": "x"}})
    with pytest.raises(ContractError):
        jobs.decode_job(refused)
    assert jobs.job_id_of(refused) == "abc123"
    assert jobs.job_id_of(jobs.encode_job(job())) is not None
    for unreadable in (b"\xc1garbage", msgpack.packb([1, 2]), msgpack.packb({"job": {"job_id": 7}})):
        assert jobs.job_id_of(unreadable) is None
    assert jobs.job_id_of(msgpack.packb({"job": {"job_id": "x" * 65}})) is None, "ids are at most 64 characters"


def test_out_of_range_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="speed"):
        RenderParams(speed=3.0)
    with pytest.raises(ValueError, match="top_k"):
        RenderParams(top_k=0)


async def test_submit_needs_a_live_worker(redis: Redis) -> None:
    with pytest.raises(jobs.NoWorker, match="no voice worker is running"):
        await jobs.submit(redis, job())
    await pretend_worker(redis, seconds=-1)  # a heartbeat that has expired
    with pytest.raises(jobs.NoWorker):
        await jobs.submit(redis, job())
    assert await redis.xlen(jobs.JOBS) == 0


async def test_submit_queues_the_job(redis: Redis) -> None:
    await pretend_worker(redis)
    queued = job(guild=5)
    assert await jobs.submit(redis, queued) == queued.job_id
    entries = await redis.xrange(jobs.JOBS)
    assert jobs.decode_job(entries[0][1][b"job"]) == queued
    assert await jobs.queued(redis, 5) == [queued.job_id]


async def test_guild_queue_cap(redis: Redis) -> None:
    await pretend_worker(redis)
    limits = QueueLimits(guild_cap=3, rate_burst=100)
    for user in range(3):
        await jobs.submit(redis, job(guild=7, user=user), limits)
    with pytest.raises(jobs.QueueFull, match="already has 3 lines waiting"):
        await jobs.submit(redis, job(guild=7, user=99), limits)
    await jobs.submit(redis, job(guild=8), limits)  # other guilds are not affected
    await redis.zrem(jobs.guild_queue_key(7), (await jobs.queued(redis, 7))[0])  # a worker finished one
    await jobs.submit(redis, job(guild=7, user=99), limits)


async def test_stale_queue_entries_are_forgotten(redis: Redis) -> None:
    await pretend_worker(redis)
    await redis.zadd(jobs.guild_queue_key(9), {"long-dead-job": 1})  # queued in 1970
    await jobs.submit(redis, job(guild=9), QueueLimits(guild_cap=1))


async def test_rate_limit_is_a_token_bucket(redis: Redis) -> None:
    await pretend_worker(redis)
    limits = QueueLimits(rate_burst=2, rate_per_minute=1.0)
    await jobs.submit(redis, job(user=42), limits)
    await jobs.submit(redis, job(user=42), limits)
    with pytest.raises(jobs.RateLimited, match="too fast; try again in") as caught:
        await jobs.submit(redis, job(user=42), limits)
    assert 55 <= caught.value.retry_after <= 60
    await jobs.submit(redis, job(user=43), limits)  # someone else still may
    assert await redis.pttl(jobs.rate_key(42)) > 0, "buckets expire once full again"


async def test_cancel_sets_the_flag(redis: Redis) -> None:
    await jobs.cancel(redis, "abc")
    assert await redis.get(jobs.cancel_key("abc")) == b"1"
    assert 3500 < await redis.ttl(jobs.cancel_key("abc")) <= 3600
    await jobs.cancel(redis, "def", "ghi")  # several in one round trip
    assert await redis.mget([jobs.cancel_key("def"), jobs.cancel_key("ghi"), jobs.cancel_key("jkl")]) == [
        b"1",
        b"1",
        None,
    ]
    await jobs.cancel(redis)  # none: nothing to do


async def write(redis: Redis, job_id: str, *events: jobs.Event) -> list[str]:
    return [(await redis.xadd(jobs.out_key(job_id), {"e": jobs.encode_event(event)})).decode() for event in events]


async def test_events_resume_from_the_last_id(redis: Redis) -> None:
    ids = await write(
        redis, "j1",
        StartEvent(attempt=1, worker="w", picked_at=0.0),
        AudioEvent(attempt=1, seq=0, packets=(b"a",), sent_at=0.0),
        AudioEvent(attempt=1, seq=1, packets=(b"b",), sent_at=0.0),
        EndEvent(attempt=1, seconds=0.04),
    )  # fmt: skip
    seen = [(entry_id, event) async for entry_id, event in job_events.events(redis, "j1")]
    assert [entry_id for entry_id, _ in seen] == ids
    resumed = [event async for _, event in job_events.events(redis, "j1", last_id=ids[1])]
    assert [type(e).__name__ for e in resumed] == ["AudioEvent", "EndEvent"]


async def test_unreadable_event_ends_the_stream_with_an_error(redis: Redis) -> None:
    await redis.xadd(jobs.out_key("j2"), {"e": msgpack.packb({"v": 9, "event": {}})})
    events = [event async for _, event in job_events.events(redis, "j2")]
    assert isinstance(events[0], ErrorEvent) and events[0].code == "malformed"


def _audio(attempt: int, seq: int, *packets: bytes) -> AudioEvent:
    return AudioEvent(attempt=attempt, seq=seq, packets=packets, sent_at=0.0)


async def test_job_audio_passes_each_packet_once_across_attempts(redis: Redis) -> None:
    await write(
        redis, "j3",
        StartEvent(attempt=1, worker="a", picked_at=0.0),
        _audio(1, 0, b"p0", b"p1"),
        _audio(1, 1, b"p2"),
        # worker a died; worker b starts over with the same seed, so the same packets come again
        StartEvent(attempt=2, worker="b", picked_at=1.0),
        _audio(2, 0, b"p0", b"p1"),
        _audio(1, 2, b"stale"),  # a late write of the dead attempt
        _audio(2, 1, b"p2", b"p3"),
        _audio(2, 2, b"p4"),
        EndEvent(attempt=2, seconds=0.1),
    )  # fmt: skip
    reader = job_events.JobAudio(redis, "j3")
    batches = [batch async for batch in reader]
    assert [p for batch in batches for p in batch] == [b"p0", b"p1", b"p2", b"p3", b"p4"]
    assert isinstance(reader.result, EndEvent) and reader.result.attempt == 2


async def test_job_audio_resumes_after_a_restart(redis: Redis) -> None:
    ids = await write(redis, "j4", _audio(1, 0, b"a"), _audio(1, 1, b"b"), EndEvent(attempt=1, seconds=0.04))
    reader = job_events.JobAudio(redis, "j4", last_id=ids[0])
    assert [batch async for batch in reader] == [[b"b"]]


async def test_job_audio_gives_up_on_a_silent_job(redis: Redis) -> None:
    reader = job_events.JobAudio(redis, "never-started", stall_timeout=0.5)
    assert [batch async for batch in reader] == []
    assert isinstance(reader.result, ErrorEvent) and reader.result.code == "timeout"


async def test_job_audio_reads_on_across_a_redis_restart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Redis restarting in the middle of a line does not cut the line short: the reading waits for it and goes
    on from the last event seen, each packet once."""
    caplog.set_level(logging.INFO, logger=job_events.__name__)
    with RestartableRedis(tmp_path) as server:
        client = Redis.from_url(server.url)
        try:
            await write(client, "j5", StartEvent(attempt=1, worker="w", picked_at=0.0), _audio(1, 0, b"p0", b"p1"))
            reader = job_events.JobAudio(client, "j5", stall_timeout=30)
            played: list[list[bytes]] = []

            async def play() -> None:
                async for batch in reader:
                    played.append(batch)

            playing = asyncio.create_task(play())
            while not played:
                await asyncio.sleep(0.01)
            await asyncio.to_thread(server.stop)  # in threads: the reading goes on meanwhile, and fails
            await asyncio.sleep(2 * job_events.RECONNECT_PAUSE_S + 0.5)
            await asyncio.to_thread(server.start)
            await write(client, "j5", _audio(1, 1, b"p2"), EndEvent(attempt=1, seconds=0.06))
            await asyncio.wait_for(playing, 30)
        finally:
            await client.aclose()
    assert played == [[b"p0", b"p1"], [b"p2"]]
    assert isinstance(reader.result, EndEvent)
    said = [r.getMessage() for r in caplog.records]
    assert sum("lost Redis while reading job j5" in m for m in said) == 1, said  # once, not at every retry
    assert any("Redis is back; reading job j5 on" in m for m in said), said


async def test_a_redis_that_stays_away_is_named_in_the_error(tmp_path: Path) -> None:
    """A reading that outlasts its stall timeout without Redis tells the user the queue was lost, not that the
    worker stopped answering (which is what a quiet but reachable stream means)."""
    with RestartableRedis(tmp_path) as server:
        client = Redis.from_url(server.url)
        try:
            await write(client, "j6", StartEvent(attempt=1, worker="w", picked_at=0.0), _audio(1, 0, b"p0"))
            reader = job_events.JobAudio(client, "j6", stall_timeout=1.5)
            played = [batch async for batch in _until_stopped(reader, server)]
            quiet = await job_events.outcome(client, "never-started", stall_timeout=0.5)
        finally:
            await client.aclose()
    assert played == [[b"p0"]]
    assert isinstance(reader.result, ErrorEvent) and reader.result.code == "timeout"
    assert "lost its connection to the job queue (Redis)" in reader.result.message, reader.result
    assert reader.result.attempt == 1
    assert quiet.code == "timeout" and "voice worker stopped answering" in quiet.message, quiet


async def _until_stopped(reader: job_events.JobAudio, server: RestartableRedis) -> AsyncIterator[list[bytes]]:
    """The reader's batches; Redis stops after the first and is started again once the reading has ended."""
    async for batch in reader:
        yield batch
        await asyncio.to_thread(server.stop)
    await asyncio.to_thread(server.start)
