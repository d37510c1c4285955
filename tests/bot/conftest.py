"""The whole bot path: the emulator, a real `python -m bot`, a real worker, a real redis-server.

The bot and workers run as subprocesses exactly as users start them; the emulator runs in the test's event
loop, so a test reads like a user's session: someone joins a voice channel and runs /say.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.fakediscord import EPHEMERAL, FakeDiscord, Guild, Interaction, Member, VoiceSession
from tests.fakediscord.model import Channel
from tests.helpers import TOKEN, env_without_settings
from tests.queue.workers import WorkerProcess
from tts_engine import job_events, jobs


class BotProcess:
    """`python -m bot` against the emulator."""

    def __init__(self, discord: FakeDiscord, redis_url: str, log: Path, **settings: str) -> None:
        guild = next(iter(discord.guilds))
        env = env_without_settings(
            DIA_DISCORD_TOKEN=TOKEN, DIA_REDIS_URL=redis_url, DIA_DEV_GUILD_ID=str(guild), **discord.settings(),
            **settings,
        )  # fmt: skip
        self.discord, self.log_path = discord, log
        self._readies = discord.readies  # a bot started after another is ready at the next READY, not the last
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot"], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def ready(self, timeout: float = 60) -> BotProcess:
        deadline = time.monotonic() + timeout
        # Commands are synced once the cogs are loaded; READY comes after the gateway is opened.
        while "say" not in self.discord.commands or self.discord.readies == self._readies:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the bot did not start:\n{self.log()}")
            await asyncio.sleep(0.02)
        return self

    async def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then wait without blocking the loop: the emulator must answer the bot's goodbyes."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if self.process.poll() is None:
                # Still up: have it log what each task waits on (bot/__main__.py), so the failure says why.
                self.process.send_signal(signal.SIGUSR1)
                await asyncio.sleep(1)
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


class ToneWorker:
    """The real worker loop with a sine renderer (tests/bot/tone_worker.py)."""

    def __init__(self, redis_url: str, log: Path, *args: str) -> None:
        self.log_path = log
        self._log = log.open("wb")
        argv = [sys.executable, "-m", "tests.bot.tone_worker", "--redis-url", redis_url, *args]
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env_without_settings())

    def wait_ready(self, timeout: float = 60) -> ToneWorker:
        deadline = time.monotonic() + timeout
        while "waiting for jobs" not in self.log_path.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("tone worker did not start:\n" + self.log_path.read_text(errors="replace"))
            time.sleep(0.02)
        return self

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._log.close()


@dataclass
class World:
    """One guild with a text channel, two voice channels and two members: alice in the Tavern, bob not in voice."""

    discord: FakeDiscord
    guild: Guild
    text: Channel
    tavern: Channel
    cellar: Channel
    alice: Member
    bob: Member

    async def say(self, text: str, member: Member | None = None, **options: object) -> dict[str, object]:
        """Run /say as `member` (alice) and return the first reply the member sees."""
        interaction = await self.discord.slash(self.guild, member or self.alice, self.text, "say", text=text, **options)
        return await interaction.reply()

    async def session(self) -> VoiceSession:
        return await self.discord.session(self.guild)

    def bot_channel(self) -> int | None:
        """The voice channel the bot is in, as the emulator's gateway knows it."""
        return self.guild.voice.get(self.discord.bot.id)


def make_world(discord: FakeDiscord, name: str = "Campaign") -> World:
    guild = discord.guild(name)
    text, tavern, cellar = guild.text_channel(), guild.voice_channel("Tavern"), guild.voice_channel("Cellar")
    alice, bob = guild.member("alice"), guild.member("bob")
    guild.voice[alice.user.id] = tavern.id
    return World(discord, guild, text, tavern, cellar, alice, bob)


@pytest.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake
    # Discord answers such a body with a 400 and the user sees nothing; a test that wants one clears the list.
    assert not fake.store.refused, "the bot sent what Discord refuses:\n" + "\n".join(fake.store.refused)


@pytest.fixture
def world(discord: FakeDiscord) -> World:
    return make_world(discord)


@pytest.fixture
async def start_bot(discord: FakeDiscord, redis_server: str, redis: Redis, tmp_path: Path) -> AsyncIterator[object]:
    """Start the bot (after the world is built, as its guilds arrive at login); stopped at the end."""
    started: list[BotProcess] = []

    async def start(**settings: str) -> BotProcess:
        bot = BotProcess(discord, redis_server, tmp_path / f"bot{len(started)}.log", **settings)
        started.append(bot)
        return await bot.ready()

    yield start
    for bot in started:
        assert await bot.stop() == 0, "the bot stops cleanly on SIGTERM:\n" + bot.log()


@pytest.fixture
def tone_worker(redis_server: str, tmp_path: Path) -> Iterator[object]:
    started: list[ToneWorker] = []

    def start(*args: str) -> ToneWorker:
        worker = ToneWorker(redis_server, tmp_path / f"tone{len(started)}.log", *args)
        started.append(worker)
        return worker.wait_ready()

    yield start
    for worker in started:
        worker.close()


@pytest.fixture
def dia_worker(redis_server: str, tiny_dia: Path, tiny_dac: Path, tmp_path: Path) -> Iterator[object]:
    started: list[WorkerProcess] = []

    def start(**settings: str) -> WorkerProcess:
        worker = WorkerProcess(redis_server, tiny_dia, tiny_dac, tmp_path / f"dia{len(started)}.log", **settings)
        started.append(worker)
        return worker.wait_ready()

    yield start
    for worker in started:
        worker.close()


async def rendered_packets(redis: Redis) -> dict[str, list[bytes]]:
    """Each job's packets as its worker sent them (last attempt), from the output streams in Redis."""
    found = {}
    for key in await redis.keys("dia:out:*"):
        job_id = key.decode().rsplit(":", 1)[1]
        attempts: dict[int, list[bytes]] = {}
        with contextlib.suppress(job_events.JobStalled):  # a cancelled job may end without more events
            async for _, event in job_events.events(redis, job_id, block_ms=10, stall_timeout=0.5):
                if isinstance(event, jobs.AudioEvent):
                    attempts.setdefault(event.attempt, []).extend(event.packets)
        found[job_id] = attempts[max(attempts)] if attempts else []
    return found


async def private_text(interaction: Interaction) -> str:
    """The text of the first reply, which must be shown only to the member who asked (ephemeral)."""
    reply = await interaction.reply()
    assert int(reply.get("flags") or 0) & EPHEMERAL, f"shown only to its user: {reply}"
    return str(reply["content"])


def ended(session: VoiceSession) -> bool:
    """The bot said it stopped speaking after having spoken (it also says "not speaking" when it connects)."""
    speaking = session.speaking
    return len(speaking) >= 2 and speaking[-1][1] == 0 and any(flag for _, flag in speaking)


def frame_frequencies(session: VoiceSession) -> list[float | None]:
    """The dominant frequency of each received packet (`VoiceSession.frequencies`)."""
    return session.frequencies()
