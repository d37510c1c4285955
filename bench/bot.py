"""The bot's own cost per voice stream, and how evenly its packets arrive, at 1, 10 and 50 guilds at once.

    python bench/bot.py                          # 1, 10 and 50 guilds, 20 s measured at each
    python bench/bot.py --guilds 50 --window 30 --json bot.json

Everything is real except the speech: the Discord emulator (tests/fakediscord) in this process, a real
redis-server, `python -m bot` as users start it, and two tone workers (tests/bot/tone_worker.py: the real worker
loop with a sine renderer). Each guild has one member in a voice channel who runs `/say`; the workers render
every line at once (no pacing), so while the numbers are taken the bot alone is working: reading each job's
stream from Redis into its jitter buffer and sending a packet every 20 ms per guild through discord.py.

- bot CPU per stream: user + system CPU time of the bot process over the window (/proc/PID/stat), divided by
  the window and the number of streams, in % of one core;
- packet gap: time between consecutive RTP packets of one stream as the emulator received them, over every
  stream in the window. The emulator shares the 2 cores with the bot, so its own event-loop delays are in the
  numbers too (they can only make the gaps look worse).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import redis

from bench.common import commit, redis_server
from tests.bot.conftest import BotProcess, ToneWorker, World, make_world
from tests.fakediscord import FakeDiscord, VoiceSession

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def _gaps_ms(session: VoiceSession, start: float, end: float) -> list[float]:
    arrivals = [p.arrived for p in session.packets if start <= p.arrived <= end]
    return [1000 * (b - a) for a, b in itertools.pairwise(arrivals)]


async def _measure(redis_url: str, guilds: int, window: float, folder: Path) -> dict[str, float]:
    line_seconds = window + 15  # every stream still plays through the whole window
    async with FakeDiscord() as discord:
        worlds: list[World] = [make_world(discord, f"Guild {i}") for i in range(guilds)]
        workers = [
            ToneWorker(redis_url, folder / f"tone{i}-{guilds}.log", "--seconds", str(line_seconds)).wait_ready()
            for i in range(2)
        ]
        cap = str(max(20, guilds))
        bot = BotProcess(discord, redis_url, folder / f"bot-{guilds}.log", DIA_GUILD_QUEUE_CAP=cap)
        try:
            await bot.ready()
            replies = await asyncio.gather(*(w.say(f"[S1] {300 + 10 * i}") for i, w in enumerate(worlds)))
            assert all("Speaking now" in str(r["content"]) for r in replies), replies
            sessions = [await w.session() for w in worlds]
            # Wait until every stream plays sound, then a little more for joins and pre-buffers to settle.
            for session in sessions:
                await session.wait_for(lambda s: len(s.audio()) >= 25, timeout=120)
            await asyncio.sleep(2)
            cpu_before, start = _cpu_seconds(bot.process.pid), time.monotonic()
            await asyncio.sleep(window)
            cpu_after, end = _cpu_seconds(bot.process.pid), time.monotonic()
            gaps = np.array([g for s in sessions for g in _gaps_ms(s, start, end)])
            silent = sum(p.opus == b"\xf8\xff\xfe" for s in sessions for p in s.packets if start <= p.arrived <= end)
        finally:
            await bot.stop()
            for worker in workers:
                worker.close()
    cpu_share = 100 * (cpu_after - cpu_before) / (end - start)
    return {
        "guilds": guilds,
        "bot_cpu_percent": round(cpu_share, 2),
        "bot_cpu_percent_per_stream": round(cpu_share / guilds, 3),
        "packets": int(gaps.size + len(sessions)),
        "silence_packets": int(silent),
        "gap_p50_ms": round(float(np.percentile(gaps, 50)), 2),
        "gap_p99_ms": round(float(np.percentile(gaps, 99)), 2),
        "gap_max_ms": round(float(gaps.max()), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guilds", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured at each guild count")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = []
    with redis_server() as url, tempfile.TemporaryDirectory() as folder:
        for guilds in args.guilds:
            redis.Redis.from_url(url).flushall()  # each run starts from an empty queue
            result = asyncio.run(_measure(url, guilds, args.window, Path(folder)))
            print(json.dumps(result), flush=True)
            results.append(result)
    report = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "commit": commit(),
        "cpu_count": os.cpu_count(),
        "window_s": args.window,
        "results": results,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
