"""A worker with several slots (continuous batching) on the tiny checkpoints, against a real redis-server.

Lines rendered side by side come out exactly as a one-slot worker renders them alone; a cancelled line frees
its slot for the next; and a guild that floods the queue cannot hold every slot while another guild waits.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
from redis.asyncio import Redis

from tests.queue.workers import WorkerProcess, collect, database, first_audio, fresh_worker
from tts_engine import jobs
from tts_engine.jobs import AudioEvent, EndEvent, RenderJob, RenderParams, Segment, StartEvent

_users = itertools.count(9000)


@pytest.fixture
def workers(redis_server: str, tiny_dia: Path, tiny_dac: Path, tmp_path: Path) -> Iterator[object]:
    started: list[WorkerProcess] = []

    def start(db: int, **settings: str) -> WorkerProcess:
        started.append(
            fresh_worker(database(redis_server, db), tiny_dia, tiny_dac, tmp_path / f"w{db}.log", **settings)
        )
        return started[-1]

    yield start
    for worker in started:
        worker.close()


@pytest.fixture
async def clients(redis_server: str) -> AsyncIterator[object]:
    made: list[Redis] = []

    def client(db: int) -> Redis:
        made.append(Redis.from_url(database(redis_server, db)))
        return made[-1]

    yield client
    for c in made:
        await c.aclose()


def _packets(events: list[jobs.Event]) -> list[bytes]:
    return [p for e in events if isinstance(e, AudioEvent) for p in e.packets]


def _scene(guild: int) -> list[RenderJob]:
    """Lines of different lengths, settings, pauses and voices; seeded, so a rendering is reproducible."""
    greedy, sampled = RenderParams(max_tokens=90, temperature=0.0, seed=1), RenderParams(max_tokens=140, seed=7)
    segments = [
        (Segment(text="[S1] Hello there."),),
        (Segment(text="[S1] A longer line, with more to say. [S2] And a reply.", pause_after=0.3),
         Segment(text="[S1] Then more.")),
        (Segment(text="[S2] Hm.", voices=("bram",)),),
        (Segment(text="[S1] Quick."),),
    ]  # fmt: skip
    params = [greedy, sampled, sampled, RenderParams(max_tokens=60, seed=3, cfg_scale=2.0, top_k=10)]
    return [
        RenderJob(guild_id=guild, requester=next(_users), segments=s, params=p)
        for s, p in zip(segments, params, strict=True)
    ]


async def _store_voice(client: Redis, guild: int) -> None:
    codes = np.random.default_rng(5).integers(0, 1024, size=(20, 9)).astype("<i2")
    voice = jobs.VoiceRecord(transcript="I am Bram.", codes=codes.tobytes(), frames=20, channels=9)
    await client.set(jobs.voice_key(guild, "bram"), jobs.encode_voice(voice))


@pytest.mark.timeout(300)
async def test_side_by_side_equals_alone(workers: object, clients: object) -> None:
    # Batch-invariant workers here, so no CPU's choice of matmul kernel per batch width can flip a token (a
    # greedy line that runs to the length cap alone could then end elsewhere beside others).
    workers(5, DIA_BATCH_INVARIANT="true")  # type: ignore[operator]
    workers(6, DIA_SLOTS="4", DIA_BATCH_INVARIANT="true")  # type: ignore[operator]
    alone, together = clients(5), clients(6)  # type: ignore[operator]
    for client in (alone, together):
        await _store_voice(client, 1)
    lines = _scene(1)
    for job in lines:  # one at a time on the one-slot worker
        await jobs.submit(alone, job)
    for job in lines:  # all at once on the four-slot worker
        await jobs.submit(together, job)
    for job in lines:
        one = await collect(alone, job.job_id)
        many = await collect(together, job.job_id)
        assert isinstance(one[-1], EndEvent) and isinstance(many[-1], EndEvent)
        assert _packets(many) == _packets(one), f"{job.segments[0].text}: the same audio, packet for packet"
        assert many[-1].seconds == one[-1].seconds
    starts = [e for job in lines for e in await collect(together, job.job_id) if isinstance(e, StartEvent)]
    last_start = max(s.picked_at for s in starts)
    ends = [(await collect(together, job.job_id))[-1] for job in lines]
    first_end = min(s.picked_at + e.stats["render_s"] for s, e in zip(starts, ends, strict=True))  # type: ignore[union-attr]
    assert last_start < first_end, "all four were rendering at the same time"


@pytest.mark.timeout(300)
async def test_a_cancelled_line_frees_its_slot(workers: object, clients: object) -> None:
    workers(7, DIA_SLOTS="2", DIA_BATCH_INVARIANT="true")  # type: ignore[operator]
    client = clients(7)  # type: ignore[operator]
    long = RenderParams(max_tokens=1000, temperature=0.0)
    # Greedy "Hello there." runs to the length cap on the tiny model (tests/queue/test_worker.py's LONG line).
    first, second, third = (RenderJob(guild_id=g, requester=next(_users), segments=(Segment(text="[S1] Hello there."),),
                                      params=long) for g in (1, 2, 3))  # fmt: skip
    for job in (first, second, third):
        await jobs.submit(client, job)
    await first_audio(client, second.job_id)
    await jobs.cancel(client, second.job_id)
    ended = await collect(client, second.job_id)
    assert isinstance(ended[-1], EndEvent) and ended[-1].cancelled
    # The third line takes the freed slot while the first is still rendering, and both finish whole.
    done = await asyncio.gather(collect(client, first.job_id), collect(client, third.job_id))
    for events in done:
        assert isinstance(events[-1], EndEvent) and not events[-1].cancelled
        assert events[-1].seconds == pytest.approx(998 * 512 / 44100, abs=0.03)
    third_start = next(e for e in done[1] if isinstance(e, StartEvent)).picked_at
    first_start = next(e for e in done[0] if isinstance(e, StartEvent)).picked_at
    assert third_start < first_start + done[0][-1].stats["render_s"]  # type: ignore[union-attr]


@pytest.mark.timeout(300)
async def test_a_flooding_guild_leaves_room_for_others(workers: object, clients: object) -> None:
    workers(8, DIA_SLOTS="2", DIA_GUILD_SHARE="0.5", DIA_BATCH_INVARIANT="true")  # type: ignore[operator]
    client = clients(8)  # type: ignore[operator]
    long = RenderParams(max_tokens=600, temperature=0.0)
    flood = [RenderJob(guild_id=1, requester=next(_users), segments=(Segment(text=f"[S1] Flood {i}."),), params=long)
             for i in range(4)]  # fmt: skip
    other = RenderJob(guild_id=2, requester=next(_users), segments=(Segment(text="[S1] Me too."),), params=long)
    for job in [*flood, other]:
        await jobs.submit(client, job)

    async def started(job: RenderJob) -> float:
        events = await collect(client, job.job_id)
        starts = [e for e in events if isinstance(e, StartEvent)]
        # Once each: a job read ahead must never look abandoned to its own worker and start a second time.
        assert len(starts) == 1, f"{job.job_id} started {len(starts)} times"
        return starts[0].picked_at

    flood_starts = [await started(job) for job in flood]
    other_start = await started(other)
    assert other_start < flood_starts[2], "the other guild's line went before the flood's third"
