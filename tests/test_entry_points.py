"""`python -m bot` and `python -m tts_engine`: they start, and fail with one clear line, never a traceback."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from config.startup import EXIT_CONFIG, EXIT_UNAVAILABLE
from tests.helpers import TOKEN, env_without_settings, free_port
from tts_engine.jobs import RedisUnavailable, connect, redact_url


def run_module(cwd: Path, *args: str, timeout: float = 60, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env=env_without_settings(**settings),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_error_line(done: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    for fragment in fragments:
        assert fragment in last


def test_bot_without_token_prints_one_line(tmp_path: Path) -> None:
    done = run_module(tmp_path, "bot")
    assert_one_error_line(done, EXIT_CONFIG, "DIA_DISCORD_TOKEN is not set", "discord.com/developers")
    assert done.stderr.count("\n") == 1
    assert done.stdout == ""


def test_bot_without_redis_url_says_how_to_get_one(tmp_path: Path) -> None:
    done = run_module(tmp_path, "bot", DIA_DISCORD_TOKEN=TOKEN)
    assert_one_error_line(done, EXIT_CONFIG, "DIA_REDIS_URL is not set", "make run")
    assert done.stderr.count("\n") == 1


def test_bot_reads_its_env_file(tmp_path: Path) -> None:
    (tmp_path / "bot.env").write_text("DIA_DEV_GUILD_ID=abc\n")
    done = run_module(tmp_path, "bot", "--env-file", "bot.env", DIA_DISCORD_TOKEN=TOKEN)
    assert_one_error_line(done, EXIT_CONFIG, "DIA_DEV_GUILD_ID", "'abc'")


def test_bot_reports_unreachable_discord(tmp_path: Path, redis_server: str) -> None:
    port = free_port()  # nothing listens there
    done = run_module(
        tmp_path,
        "bot",
        DIA_DISCORD_TOKEN=TOKEN,
        DIA_REDIS_URL=redis_server,
        DIA_DISCORD_API_BASE=f"http://127.0.0.1:{port}/api/v10",
        DIA_DISCORD_GATEWAY_URL=f"ws://127.0.0.1:{port}",
    )
    assert_one_error_line(done, EXIT_UNAVAILABLE, f"cannot reach Discord at http://127.0.0.1:{port}/api/v10")
    assert "for testing only" in done.stderr  # the override warning


@pytest.fixture
async def rejecting_discord() -> AsyncIterator[str]:
    """A REST endpoint that answers every request the way Discord answers a revoked token."""

    async def unauthorized(request: web.Request) -> web.Response:
        return web.json_response({"message": "401: Unauthorized", "code": 0}, status=401)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", unauthorized)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/api/v10"
    finally:
        await runner.cleanup()


async def test_bot_reports_a_rejected_token(tmp_path: Path, redis_server: str, rejecting_discord: str) -> None:
    env = env_without_settings(
        DIA_DISCORD_TOKEN=TOKEN, DIA_REDIS_URL=redis_server, DIA_DISCORD_API_BASE=rejecting_discord
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    done = subprocess.CompletedProcess(["bot"], process.returncode or 0, out.decode(), err.decode())
    assert_one_error_line(done, EXIT_CONFIG, "Discord rejected DIA_DISCORD_TOKEN", "reset the token")


def test_worker_with_bad_dtype_prints_one_line(tmp_path: Path) -> None:
    done = run_module(tmp_path, "tts_engine", "worker", "--redis-url", "redis://localhost", DIA_DTYPE="fp8")
    assert_one_error_line(done, EXIT_CONFIG, "DIA_DTYPE", "'fp8'")
    assert done.stderr.count("\n") == 1


def test_worker_flags_override_settings(tmp_path: Path) -> None:
    done = run_module(tmp_path, "tts_engine", "--redis-url", "redis://localhost", "--device", "tpu")
    assert_one_error_line(done, EXIT_CONFIG, "DIA_DEVICE must be auto, cpu, cuda, cuda:N or mps (got 'tpu')")


def test_worker_reports_a_model_it_cannot_find(tmp_path: Path, redis_server: str) -> None:
    done = run_module(tmp_path, "tts_engine", "worker", DIA_REDIS_URL=redis_server, DIA_MODEL=str(tmp_path / "none"))
    assert_one_error_line(done, EXIT_UNAVAILABLE, "model folder", "does not exist")


def test_worker_reports_unreachable_redis(tmp_path: Path) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    done = run_module(tmp_path, "tts_engine", "worker", DIA_REDIS_URL=url)
    assert_one_error_line(done, EXIT_UNAVAILABLE, "cannot reach Redis at redis://:***@127.0.0.1")
    assert "hunter2" not in done.stderr


def test_worker_starts_and_stops_on_sigterm(tmp_path: Path, redis_server: str, tiny_dia: Path, tiny_dac: Path) -> None:
    """With the engine settings a worker passes on set too (DIA_DEPENDENT_LAUNCHES has no effect on the CPU, but
    the engine takes it)."""
    with subprocess.Popen(
        [sys.executable, "-m", "tts_engine", "worker"],
        cwd=tmp_path,
        env=env_without_settings(
            DIA_REDIS_URL=redis_server,
            DIA_MODEL=str(tiny_dia),
            DIA_CODEC=str(tiny_dac),
            DIA_DEVICE="cpu",
            DIA_DEPENDENT_LAUNCHES="false",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "waiting for jobs" in line:
                break
        assert any("connected to Redis" in line for line in lines), lines
        assert "waiting for jobs" in lines[-1], lines
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


async def test_connect_answers_or_raises_one_line(redis_server: str) -> None:
    client = await connect(redis_server)
    try:
        assert await client.ping()
    finally:
        await client.aclose()
    with pytest.raises(RedisUnavailable, match=r"^cannot reach Redis at redis://127\.0\.0\.1:\d+/0: "):
        await connect(f"redis://127.0.0.1:{free_port()}/0", timeout=2)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:pw@host:1/0", "redis://:***@host:1/0"),
        ("rediss://user:p%40ss@host/0", "rediss://user:***@host/0"),
        ("unix:///tmp/redis.sock", "unix:///tmp/redis.sock"),
    ],
)
def test_redact_url_hides_passwords(url: str, shown: str) -> None:
    assert redact_url(url) == shown
