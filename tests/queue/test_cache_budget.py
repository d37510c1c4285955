"""The render cache's byte budget, on a real redis-server: the oldest takes go first, expired ones leave the
index, and the running total always equals the sizes it sums (tts_engine/worker_store.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import redis as sync_redis

from tts_engine.worker_store import CACHE_BYTES, CACHE_INDEX, CACHE_SIZES, WorkerStore

HOUR_MS = 3_600_000


@pytest.fixture
def client(redis_server: str, redis: object) -> Iterator[sync_redis.Redis]:  # `redis` empties database 0 first
    sync = sync_redis.Redis.from_url(redis_server)
    yield sync
    sync.close()


def _value(size: int) -> dict[str, Any]:
    return {"packets": [b"x" * size]}


def _stored(client: sync_redis.Redis) -> tuple[list[str], int, int]:
    """The indexed keys, oldest first; the running total; the sum of the recorded sizes."""
    keys = [k.decode() for k in client.zrange(CACHE_INDEX, 0, -1)]
    total = int(client.get(CACHE_BYTES) or 0)
    return keys, total, sum(int(v) for v in client.hvals(CACHE_SIZES))


def test_the_oldest_go_until_a_new_take_fits(client: sync_redis.Redis) -> None:
    store = WorkerStore(client, "w1")
    entry = len(msgpack.packb({"v": 0, "cache": _value(1000)}, use_bin_type=True))
    budget = 3 * entry + 10
    for name in "abc":
        assert store.cache_put(f"dia:cache:{name}", _value(1000), ttl_ms=HOUR_MS, max_bytes=budget)
        time.sleep(0.002)  # distinct index scores
    keys, total, summed = _stored(client)
    assert keys == ["dia:cache:a", "dia:cache:b", "dia:cache:c"] and total == summed >= 3 * 1000

    assert store.cache_put("dia:cache:d", _value(1000), ttl_ms=HOUR_MS, max_bytes=budget)
    keys, total, summed = _stored(client)
    assert keys == ["dia:cache:b", "dia:cache:c", "dia:cache:d"] and total == summed <= budget
    assert client.get("dia:cache:a") is None and store.cache_get("dia:cache:d") == _value(1000)
    time.sleep(0.002)  # b's new score is later than d's, not a tie (ties go by name: b before d)

    # Putting a key again replaces it (it becomes the newest) without counting it twice.
    assert store.cache_put("dia:cache:b", _value(500), ttl_ms=HOUR_MS, max_bytes=budget)
    keys, total, summed = _stored(client)
    assert keys == ["dia:cache:c", "dia:cache:d", "dia:cache:b"] and total == summed

    # A take bigger than the whole budget is refused and evicts nothing.
    assert not store.cache_put("dia:cache:huge", _value(budget), ttl_ms=HOUR_MS, max_bytes=budget)
    assert _stored(client)[0] == keys


def test_expired_takes_leave_the_index_and_the_total(client: sync_redis.Redis) -> None:
    """Whatever TTL each was written with."""
    store = WorkerStore(client, "w1")
    assert store.cache_put("dia:cache:old", _value(2000), ttl_ms=50, max_bytes=10**6)
    time.sleep(0.1)
    assert client.get("dia:cache:old") is None  # Redis expired the value itself
    assert store.cache_put("dia:cache:new", _value(100), ttl_ms=HOUR_MS, max_bytes=10**6)
    keys, total, summed = _stored(client)
    assert keys == ["dia:cache:new"] and total == summed < 2000


def test_a_cache_written_before_the_total_existed_is_counted_once(client: sync_redis.Redis) -> None:
    """A Redis from an older release holds the index (by time written) and sizes but no total: the first put
    sums them once, and its entries count as expired."""
    now_ms = int(time.time() * 1000)
    for name, size in (("a", 700), ("b", 800)):
        client.set(f"dia:cache:{name}", b"x" * size, px=HOUR_MS)
        client.zadd(CACHE_INDEX, {f"dia:cache:{name}": now_ms - 1000})
        client.hset(CACHE_SIZES, f"dia:cache:{name}", size)
    store = WorkerStore(client, "w1")
    assert store.cache_put("dia:cache:c", _value(100), ttl_ms=HOUR_MS, max_bytes=10**6)
    keys, total, summed = _stored(client)
    assert keys == ["dia:cache:c"] and total == summed < 700 and client.get("dia:cache:a") is None
