"""Audio work off the GPU thread: a serial lane keeps one line's work in order on a shared pool, and a
pipeline with a pool gives exactly the audio of one without."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tts_engine.audio.codec import Codec
from tts_engine.audio.lane import LaneError, SerialLane
from tts_engine.audio.pipeline import AudioPipeline, Chunk


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4, thread_name_prefix="test-audio") as executor:
        yield executor


def test_each_lane_keeps_its_order_while_lanes_share_the_pool(pool: ThreadPoolExecutor) -> None:
    lanes = [SerialLane[tuple[int, int]](pool) for _ in range(6)]
    running: dict[int, int] = dict.fromkeys(range(len(lanes)), 0)
    overlap = threading.Event()
    lock = threading.Lock()

    def work(lane: int, index: int) -> tuple[int, int]:
        with lock:
            running[lane] += 1
            if running[lane] > 1:
                overlap.set()  # two pieces of one lane at once: never allowed
        time.sleep(0.001 * (index % 3))
        with lock:
            running[lane] -= 1
        return lane, index

    taken: dict[int, list[tuple[int, int]]] = {lane: [] for lane in range(len(lanes))}
    for index in range(40):
        for number, lane in enumerate(lanes):
            lane.submit(lambda number=number, index=index: work(number, index))
            taken[number] += lane.take(wait=False)
    for number, lane in enumerate(lanes):
        taken[number] += lane.take(wait=True)
        assert taken[number] == [(number, index) for index in range(40)]
    assert not overlap.is_set()


def test_take_without_waiting_returns_what_is_done(pool: ThreadPoolExecutor) -> None:
    lane = SerialLane[int](pool)
    lane.submit(lambda: 1)
    lane.submit(lambda: 2)
    assert lane.take(wait=True) == [1, 2]
    assert lane.take(wait=True) == []
    gate = threading.Event()
    lane.submit(lambda: int(gate.wait(5)) * 3)
    assert lane.take(wait=False) == [], "the blocked piece is not done"
    gate.set()
    assert lane.take(wait=True) == [3]


def test_a_failure_reaches_the_caller_and_stops_the_lane(pool: ThreadPoolExecutor) -> None:
    lane = SerialLane[int](pool)
    ran_after: list[int] = []
    queued = threading.Event()

    def boom() -> int:
        queued.wait(5)  # fail only once the next piece is queued behind it
        raise ValueError("bad samples")

    lane.submit(boom)
    lane.submit(lambda: ran_after.append(1) or 1)
    queued.set()
    with pytest.raises(LaneError, match="bad samples") as raised:
        lane.take(wait=True)
    assert isinstance(raised.value.__cause__, ValueError)
    assert ran_after == [], "work queued behind a failure is dropped"
    with pytest.raises(LaneError):
        lane.submit(lambda: 2)


def _line(pipeline: AudioPipeline, codes: np.ndarray) -> tuple[list[Chunk], int]:
    """Two segments with a pause, pushed in pieces of 1, 3, 8, ... frames."""
    chunks: list[Chunk] = []
    sizes = [1, 3, 8, 2, 13, 5]
    start = 0
    for segment in (codes[:40], codes[40:]):
        start = 0
        for size in sizes * 10:
            if start >= len(segment):
                break
            chunks.append(pipeline.push_codes(segment[start : start + size]))
            start += size
        if segment is not codes[40:]:
            chunks.append(pipeline.pause(0.3))
    chunks.append(pipeline.finish())
    return chunks, pipeline.samples


def test_a_pooled_pipeline_makes_the_same_audio(codec: Codec, pool: ThreadPoolExecutor) -> None:
    codes = np.random.default_rng(0).integers(0, 1024, size=(90, codec.channels))
    alone_chunks, alone_samples = _line(AudioPipeline(codec, speed=1.25), codes)
    pooled_chunks, pooled_samples = _line(AudioPipeline(codec, speed=1.25, executor=pool), codes)
    first = next(i for i, chunk in enumerate(alone_chunks) if chunk.packets)
    assert pooled_chunks[first].packets == alone_chunks[first].packets, "the first packet is never held back"
    assert pooled_samples == alone_samples
    np.testing.assert_array_equal(
        np.concatenate([c.pcm for c in pooled_chunks]), np.concatenate([c.pcm for c in alone_chunks])
    )
    assert [p for c in pooled_chunks for p in c.packets] == [p for c in alone_chunks for p in c.packets]
