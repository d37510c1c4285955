"""The gateway connection drops under a playing line: discord.py resumes the session, or Discord refuses and it
identifies anew, which ends the bot's voice connection with the old session (discord-api-docs#2257); or the host's
network goes away for a while, voice with it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.bot.conftest import World, ended, frame_frequencies
from tests.bot.test_commands import near
from tests.fakediscord import VoiceSession

TONE_PACKETS = 150  # a 3 s tone line, 20 ms a packet


async def _until(holds: Callable[[], bool], timeout: float = 30) -> None:
    """Poll: gateway sessions change nothing the bot posts, which the emulator's own waits wake on."""
    async with asyncio.timeout(timeout):
        while not holds():
            await asyncio.sleep(0.05)


async def _two_lines_playing(world: World, start_bot: object, tone_worker: object) -> VoiceSession:
    """Two 3 s lines queued (500 Hz, then 900 Hz), the first 0.6 s into playing: its voice session."""
    tone_worker("--seconds", "3.0")  # type: ignore[operator]
    await start_bot()  # type: ignore[operator]
    await world.say("[S1] 500")
    await world.say("[S1] 900")
    session = await world.session()
    await session.wait_for(lambda s: len(s.audio()) >= 30, timeout=60)
    return session


def _heard(session: VoiceSession, tone: float) -> int:
    return sum(near(f, tone) for f in frame_frequencies(session) if f)


async def test_a_resumed_gateway_session_loses_nothing(world: World, start_bot: object, tone_worker: object) -> None:
    """Discord asks the bot to reconnect mid-line (op 7), as it does every so often: the session resumes, the
    voice connection lives on, and both lines play whole on it."""
    session = await _two_lines_playing(world, start_bot, tone_worker)
    await world.discord.reconnect_gateway()
    await _until(lambda: world.discord.resumes == 1)
    await session.wait_for(lambda s: _heard(s, 900) >= TONE_PACKETS - 2, timeout=60)
    assert _heard(session, 500) >= TONE_PACKETS - 2 and session.unheard() == []
    assert world.discord.sessions(world.guild) == [session] and world.discord.posted == []


async def test_a_renewed_gateway_session_rejoins_and_plays_on(
    world: World, start_bot: object, tone_worker: object
) -> None:
    """The gateway drops mid-line and Discord ends the session: the bot pauses at once, so nothing is sent into
    the ended voice connection, and once identified anew it joins again and plays the line on from where it paused
    (none of it lost, none of it twice), then the next."""
    old = await _two_lines_playing(world, start_bot, tone_worker)
    readies = world.discord.readies
    await world.discord.end_session()
    await _until(lambda: world.discord.readies == readies + 1)
    await _until(lambda: len(world.discord.sessions(world.guild)) == 2)
    new = world.discord.sessions(world.guild)[1]
    assert new.channel_id == world.tavern.id
    await new.wait_for(lambda s: _heard(s, 900) >= TONE_PACKETS - 2, timeout=60)
    assert old.unheard() == [], "nothing was sent into the ended connection"
    assert _heard(old, 500) >= 30 and _heard(new, 500) > 0
    assert TONE_PACKETS - 2 <= _heard(old, 500) + _heard(new, 500) <= TONE_PACKETS + 2, "on from where it paused"
    assert world.bot_channel() == world.tavern.id and world.discord.posted == []


async def test_a_renewed_session_between_lines(world: World, start_bot: object, tone_worker: object) -> None:
    """Discord ends the session while the bot sits in voice with nothing to say: it is out of voice afterwards (its
    voice state went with the session), says nothing, and the next /say joins again and plays."""
    tone_worker("--seconds", "0.6")  # type: ignore[operator]
    await start_bot()  # type: ignore[operator]
    await world.say("[S1] 500")
    old = await world.session()
    await old.wait_for(ended, timeout=60)
    readies = world.discord.readies
    await world.discord.end_session()
    await _until(lambda: world.discord.readies == readies + 1)
    await asyncio.sleep(3)  # the old voice client is taken down at READY; nothing rejoins with nothing to play
    assert world.bot_channel() is None and len(world.discord.sessions(world.guild)) == 1

    assert "Speaking now" in str((await world.say("[S1] 900"))["content"])
    await _until(lambda: len(world.discord.sessions(world.guild)) == 2)
    new = world.discord.sessions(world.guild)[1]
    await new.wait_for(lambda s: _heard(s, 900) >= 25, timeout=60)
    assert old.unheard() == [] and world.discord.posted == []


@pytest.mark.timeout(240)  # discord.py's gateway backoff is random, and doubles with each refused try
@pytest.mark.parametrize("session_kept", [True, False])
async def test_a_network_outage_mid_line(
    world: World, start_bot: object, tone_worker: object, session_kept: bool
) -> None:
    """The bot's host loses its network mid-line: gateway and voice connections break without a word, and nothing
    gets through until it is back. discord.py's voice reconnect fails meanwhile (it cannot ask the gateway to join)
    and never tries again. Once the gateway session resumes, or a new one starts (Discord ended the old one, with
    the bot's voice state), the line plays on from where it paused (none of it twice), then the next."""
    old = await _two_lines_playing(world, start_bot, tone_worker)
    readies = world.discord.readies
    await world.discord.network_outage(12, session_kept=session_kept)
    await _until(lambda: world.discord.resumes + world.discord.readies > readies, timeout=120)
    await _until(lambda: sum(_heard(s, 900) for s in world.discord.sessions(world.guild)) >= TONE_PACKETS - 2, 90)
    sessions = world.discord.sessions(world.guild)
    heard = sum(_heard(s, 500) for s in sessions)
    # Paused within bot/voice_link.py's WATCH_EVERY of the break: a few packets went out into it, lost.
    unheard = sum(len(s.unheard()) for s in sessions)
    assert unheard <= 8 and TONE_PACKETS - 2 - unheard <= heard <= TONE_PACKETS + 2, "on from where it paused"
    assert _heard(old, 500) >= 30 and world.bot_channel() == world.tavern.id and world.discord.posted == []
