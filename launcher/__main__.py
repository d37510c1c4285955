"""`python -m launcher` (what `make run` runs): Redis, one worker and the bot on this machine, in one terminal.

Every setting is checked before anything starts, so a missing token is one line and nothing to clean up.
Without DIA_REDIS_URL it starts the embedded Redis (launcher/embedded_redis.py) and hands its URL to the
others. Ctrl-C or SIGTERM stops everything it started; a second Ctrl-C stops it at once. If one process
exits on its own, the rest are stopped and the launcher exits non-zero.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from config.settings import BotSettings, RunSettings, SettingsError, WorkerSettings, load_settings
from config.startup import EXIT_CONFIG, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, fail
from launcher.embedded_redis import (
    EmbeddedRedisError,
    find_redis_server,
    server_command,
    socket_url,
    wait_until_ready,
)
from launcher.supervisor import Supervisor

SERVICES = ("redis", "worker", "bot")
_MODULES = {"worker": ("tts_engine", "worker"), "bot": ("bot",)}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m launcher", description="Run Redis, a worker and the bot.")
    parser.add_argument(
        "--services",
        default=",".join(SERVICES),
        help="comma-separated subset of redis,worker,bot (default: all; redis only when DIA_REDIS_URL is unset)",
    )
    parser.add_argument("--env-file", type=Path, help="settings file (default: .env when present)")
    return parser


def _check_settings(services: set[str], env_file: Path | None) -> RunSettings:
    run = load_settings(RunSettings, env_file)
    if "worker" in services:
        load_settings(WorkerSettings, env_file)
    if "bot" in services:
        load_settings(BotSettings, env_file)
    if run.redis_url is None and "redis" not in services:
        raise SettingsError("DIA_REDIS_URL is not set and --services leaves out redis: set one or the other")
    return run


def main(argv: Sequence[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    services = {name.strip() for name in options.services.split(",") if name.strip()}
    if not services or not services <= set(SERVICES):
        return fail(f"--services takes a comma-separated subset of {','.join(SERVICES)}", EXIT_USAGE)
    try:
        settings = _check_settings(services, options.env_file)
    except SettingsError as exc:
        return fail(exc, EXIT_CONFIG)
    if settings.redis_url is not None:
        services.discard("redis")  # the configured Redis is someone else's to run

    stop, force = threading.Event(), threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        (force if stop.is_set() else stop).set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    supervisor = Supervisor(color=sys.stdout.isatty())
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    extra = ["--env-file", str(options.env_file.resolve())] if options.env_file else []
    code = EXIT_OK
    try:
        if "redis" in services:
            process = supervisor.start("redis", server_command(find_redis_server(), settings.data_dir), env)
            env["DIA_REDIS_URL"] = socket_url(settings.data_dir)
            wait_until_ready(env["DIA_REDIS_URL"], process)
            supervisor.say("launcher", f"redis is ready at {env['DIA_REDIS_URL']}")
        for name in ("worker", "bot"):
            if name in services and not stop.is_set():
                supervisor.start(name, [sys.executable, "-m", *_MODULES[name], *extra], env)
        supervisor.say("launcher", "running; press Ctrl-C to stop")
        exited = supervisor.wait_first_exit(stop)
        if exited is not None:
            returncode = exited.process.returncode
            supervisor.say("launcher", f"{exited.name} exited with code {returncode}; stopping the rest")
            code = returncode if returncode > 0 else 1
    except EmbeddedRedisError as exc:
        code = fail(exc, EXIT_UNAVAILABLE)
    finally:
        supervisor.stop_all(force=force)
    supervisor.say("launcher", "stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
