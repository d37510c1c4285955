"""A worker for tests: the real worker loop (tts_engine/worker.py) with a test-signal renderer instead of Dia.

Each segment becomes `--seconds` of sine at the last number in its text (440 if none), at `--level`, through
the real Opus framer. `--pace` sends batches in real time, like a worker that renders just fast enough, and
`--stall-at`/`--stall` freeze it once mid-line, to make the bot's buffer run dry.

    python -m tests.bot.tone_worker --redis-url redis://... [--seconds 2] [--pace] [--stall-at 1.0 --stall 0.4]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
import time
from collections.abc import Iterator, Mapping

import numpy as np
import redis

from tts_engine.audio.opus import OpusFramer
from tts_engine.jobs import RenderJob, VoiceRecord
from tts_engine.rendering import RenderResult
from tts_engine.shutdown import ColdShutdown, install_signals
from tts_engine.worker import Worker, WorkerConfig


class ToneRenderer:
    revision = "tone"

    def __init__(self, seconds: float, level: float, pace: bool, stall_at: float | None, stall: float) -> None:
        self.seconds, self.level, self.pace = seconds, level, pace
        self.stall_at, self.stall = stall_at, stall

    def render(self, job: RenderJob, voices: Mapping[str, VoiceRecord], result: RenderResult) -> Iterator[list[bytes]]:
        framer = OpusFramer()
        started = time.monotonic()
        stalled = False
        position = 0
        for segment in job.segments:
            numbers = re.findall(r"\d+", segment.text.split("]")[-1])  # not the 1 of [S1]
            frequency = float(numbers[-1]) if numbers else 440.0
            t = np.arange(round(self.seconds * 48000)) / 48000
            tone = (self.level * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
            for start in range(0, len(tone), 9600):  # 200 ms batches
                if self.stall_at is not None and not stalled and position >= self.stall_at * 48000:
                    time.sleep(self.stall)
                    stalled, started = True, started + self.stall
                position += len(tone[start : start + 9600])
                if self.pace:
                    time.sleep(max(0.0, started + position / 48000 - 0.2 - time.monotonic()))
                yield framer.process(tone[start : start + 9600])
        yield framer.flush()
        result.samples, result.pre_skip = framer.samples, framer.encoder.lookahead


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--level", type=float, default=0.25)
    parser.add_argument("--pace", action="store_true")
    parser.add_argument("--stall-at", type=float)
    parser.add_argument("--stall", type=float, default=0.4)
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    renderer = ToneRenderer(args.seconds, args.level, args.pace, args.stall_at, args.stall)
    worker = Worker(
        redis.Redis.from_url(args.redis_url),
        redis.Redis.from_url(args.redis_url),
        renderer,
        WorkerConfig(block_ms=100),
        {"model": "tone", "device": "cpu", "dtype": "float32"},  # what tts_engine/__main__.py reports
    )
    install_signals(worker)
    with contextlib.suppress(ColdShutdown):
        worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
