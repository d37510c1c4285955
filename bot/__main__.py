"""`python -m bot`: build settings, connect to Redis, log in to Discord, serve until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from config.logs import configure_logging, log_tasks
from config.settings import BotSettings, SettingsError, load_settings
from config.startup import EXIT_CONFIG, EXIT_OK, StartupError, fail

# A command that waits on Redis still answers within Discord's 3 s when Redis stalls (bot/errors.py). The bot's
# blocking reads (a job's audio, tts_engine/job_events.py) block for 1 s, well under it.
REDIS_ANSWER_S = 2.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot", description="The Dia voice bot's Discord process.")
    parser.add_argument("--env-file", type=Path, help="settings file (default: .env when present)")
    parser.add_argument(
        "--sync", action="store_true", help="sync slash commands globally (Discord may take up to an hour)"
    )
    return parser


async def _serve(settings: BotSettings, *, sync_global: bool) -> None:
    import aiohttp
    import discord

    from bot.client import DiaBot, point_discord_at
    from tts_engine import jobs

    point_discord_at(settings)
    try:
        redis = await jobs.connect(settings.require_redis_url(), socket_timeout=REDIS_ANSWER_S)
    except jobs.RedisUnavailable as exc:
        raise StartupError(str(exc)) from exc
    connector = None if settings.discord_voice_tls_verify else aiohttp.TCPConnector(ssl=False)
    try:
        async with DiaBot(settings=settings, redis=redis, sync_global=sync_global, connector=connector) as bot:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, lambda: asyncio.ensure_future(bot.close()))
            # `kill -USR1` logs what every task waits on: the way to see why a bot does not stop or answer.
            loop.add_signal_handler(signal.SIGUSR1, log_tasks, logging.getLogger("bot"))
            await bot.start(settings.discord_token.get_secret_value())
    except discord.LoginFailure as exc:
        raise StartupError(
            f"Discord rejected DIA_DISCORD_TOKEN ({exc}): reset the token on your application's Bot page "
            "at https://discord.com/developers/applications and update .env",
            EXIT_CONFIG,
        ) from exc
    except discord.PrivilegedIntentsRequired as exc:
        raise StartupError(
            "Discord refused the Message Content intent, which DIA_READ_MESSAGES=true asks for: turn on "
            "Message Content Intent on your application's Bot page at https://discord.com/developers/applications, "
            "or set DIA_READ_MESSAGES=false",
            EXIT_CONFIG,
        ) from exc
    except (aiohttp.ClientConnectionError, TimeoutError) as exc:
        raise StartupError(f"cannot reach Discord at {settings.discord_api_base}: {exc or type(exc).__name__}") from exc
    finally:
        await redis.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    try:
        settings = load_settings(BotSettings, options.env_file)
        settings.require_redis_url()
    except SettingsError as exc:
        return fail(exc, EXIT_CONFIG)
    configure_logging(settings.log_level)
    try:
        asyncio.run(_serve(settings, sync_global=options.sync))
    except StartupError as exc:
        return fail(exc, exc.exit_code)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
