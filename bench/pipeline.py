"""The queue alone: submit -> pickup latency, worker -> reader relay latency, and jobs per second.

    python bench/pipeline.py                 # 1000 jobs one at a time, then 1000 at once
    python bench/pipeline.py --jobs 2000 --json pipeline.json

A real redis-server on loopback and the real worker loop (tts_engine/worker.py) in this process, with a
renderer that does no work: it returns three batches of ten 240-byte packets (96 kbit/s Opus size) at once.
So the numbers are the queue's own cost: Lua submit, XREADGROUP pickup, guarded XADDs, the reader's XREAD.
- pickup: the worker's pickup time minus the job's creation time, jobs submitted one at a time;
- relay: when the reader got an audio batch minus when the worker sent it;
- throughput: all jobs submitted at once, finished jobs per second until the last end event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import redis
from redis.asyncio import Redis

from bench.common import commit, redis_server
from launcher.embedded_redis import find_redis_server
from tts_engine import job_events, jobs
from tts_engine.jobs import AudioEvent, RenderJob, RenderParams, Segment, StartEvent, VoiceRecord
from tts_engine.rendering import RenderResult
from tts_engine.worker import Worker, WorkerConfig

PACKET = bytes(240)


class NoopRenderer:
    revision = "noop"

    def render(self, job: RenderJob, voices: Mapping[str, VoiceRecord], result: RenderResult) -> Iterator[list[bytes]]:
        for _ in range(3):
            yield [PACKET] * 10
        result.samples, result.pre_skip = 30 * 960, 312


def _percentiles(values: list[float]) -> dict[str, float]:
    ms = np.array(values) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2)}


async def _one_by_one(client: Redis, count: int, limits: jobs.QueueLimits) -> tuple[list[float], list[float]]:
    pickups, relays = [], []
    for i in range(count):
        job = RenderJob(guild_id=i, requester=i, segments=(Segment(text="[S1] Hi."),), params=RenderParams())
        await jobs.submit(client, job, limits)
        async for _, event in job_events.events(client, job.job_id, block_ms=100):
            received = time.time()
            if isinstance(event, StartEvent):
                pickups.append(event.picked_at - job.created_at)
            elif isinstance(event, AudioEvent):
                relays.append(received - event.sent_at)
    return pickups, relays


async def _all_at_once(client: Redis, count: int, limits: jobs.QueueLimits) -> float:
    batch = [
        RenderJob(guild_id=i, requester=i, segments=(Segment(text="[S1] Hi."),), params=RenderParams())
        for i in range(count)
    ]
    start = time.perf_counter()
    for job in batch:
        await jobs.submit(client, job, limits)

    readers = asyncio.Semaphore(50)  # blocking reads hold a connection each; the jobs are all queued already

    async def finish(job_id: str) -> None:
        async with readers:
            async for _, event in job_events.events(client, job_id, block_ms=100):
                assert not isinstance(event, jobs.ErrorEvent), event

    await asyncio.gather(*(finish(job.job_id) for job in batch))
    return count / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--commit")
    args = parser.parse_args()

    with redis_server() as url:
        worker = Worker(
            redis.Redis.from_url(url), redis.Redis.from_url(url), NoopRenderer(), WorkerConfig(block_ms=100)
        )
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        limits = jobs.QueueLimits(guild_cap=10**6, rate_burst=10**6, rate_per_minute=10**9)

        async def run() -> tuple[list[float], list[float], float]:
            client = Redis.from_url(url)
            while not await jobs.live_workers(client):
                await asyncio.sleep(0.01)
            pickups, relays = await _one_by_one(client, args.jobs, limits)
            throughput = await _all_at_once(client, args.jobs, limits)
            await client.aclose()
            return pickups, relays, throughput

        pickups, relays, throughput = asyncio.run(run())
        worker.stop()
        thread.join(timeout=10)

    pickup, relay = _percentiles(pickups), _percentiles(relays)
    result = {
        "meta": {
            "jobs": args.jobs,
            "redis": subprocess.run(
                [str(find_redis_server()), "--version"], capture_output=True, text=True
            ).stdout.split()[2],
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "commit": args.commit or commit(),
        },
        "pickup": pickup,
        "relay": relay,
        "jobs_per_second": round(throughput, 1),
    }
    print(f"# {result['meta']}")
    print("| measurement | p50 | p99 |")
    print("|---|---|---|")
    for label, measured in (("submit -> pickup", pickup), ("worker -> reader, per audio batch", relay)):
        print(f"| {label} | {measured['p50_ms']} ms | {measured['p99_ms']} ms |")
    print(f"# throughput with a no-op renderer: {result['jobs_per_second']} jobs/s ({args.jobs} submitted at once)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
