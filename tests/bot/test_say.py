"""/say end to end: the real bot, a real worker and Redis, the emulator receiving and decoding the audio."""

from __future__ import annotations

import asyncio
import re
import time

import numpy as np
import pytest
from redis.asyncio import Redis

from tests.bot.conftest import World, ended, frame_frequencies, rendered_packets
from tests.fakediscord import OPUS_SILENCE
from tts_engine import job_events, jobs


async def test_say_plays_the_rendered_line(world: World, start_bot: object, dia_worker: object, redis: Redis) -> None:
    dia_worker()  # type: ignore[operator]
    # A short line, all of it buffered before playback starts: how fast a loaded CPU renders is not what this
    # test is about (underruns are: test_a_stalled_worker_gives_silence_not_a_burst).
    await start_bot(DIA_MAX_LINE_SECONDS="4", DIA_PREBUFFER_MS="5000")  # type: ignore[operator]
    interaction = await world.discord.slash(world.guild, world.alice, world.text, "say", text="[S1] Hello there.")
    reply = await interaction.reply()
    assert interaction.responses[0][0] - interaction.sent < 3.0, "an interaction must be answered within 3 s"
    assert interaction.deferred and "Speaking now" in str(reply["content"])
    session = await world.session()
    await session.wait_for(ended, timeout=90)
    (sent,) = (await rendered_packets(redis)).values()
    audio = [p.opus for p in session.packets if p.opus != OPUS_SILENCE]
    assert audio == sent, "the bot forwards the worker's packets unchanged, in order, each once"
    silence = len(session.packets) - len(audio)
    assert silence <= 10, "at most a few silence frames (the 5 discord.py sends at the end, rare underruns)"
    assert all((b.seq - a.seq) % 65536 == 1 for a, b in zip(session.packets, session.packets[1:], strict=False))
    assert {b.timestamp - a.timestamp for a, b in zip(session.packets, session.packets[1:], strict=False)} == {960}
    assert session.mode == "aead_xchacha20_poly1305_rtpsize"
    assert np.abs(session.pcm()).max() > 0.01, "the decoded line is not silence"


async def test_a_tone_arrives_intact(world: World, start_bot: object, tone_worker: object) -> None:
    tone_worker("--seconds", "1.5", "--level", "0.25")  # type: ignore[operator]
    await start_bot()  # type: ignore[operator]
    await world.say("[S1] 1000")
    session = await world.session()
    await session.wait_for(ended, timeout=60)
    pcm = session.pcm()[:, 0]
    loud = np.flatnonzero(np.abs(pcm) > 0.05)
    body = pcm[loud[0] + 2400 : loud[-1] - 2400]
    spectrum = np.abs(np.fft.rfft(body * np.hanning(len(body))))
    assert np.fft.rfftfreq(len(body), 1 / 48000)[np.argmax(spectrum)] == pytest.approx(1000, abs=2)
    assert np.sqrt(np.mean(body**2)) == pytest.approx(0.25 / np.sqrt(2), rel=0.1)  # -1 dB at most


async def test_a_stalled_worker_gives_silence_not_a_burst(world: World, start_bot: object, tone_worker: object) -> None:
    tone_worker("--seconds", "3", "--pace", "--stall-at", "1.0", "--stall", "0.8")  # type: ignore[operator]
    await start_bot()  # type: ignore[operator]
    await world.say("[S1] 600")
    session = await world.session()
    await session.wait_for(ended, timeout=60)
    kinds = ["silence" if p.opus == OPUS_SILENCE else "audio" for p in session.packets]
    first, last = kinds.index("audio"), len(kinds) - 1 - kinds[::-1].index("audio")
    gap = kinds[first:last].count("silence")
    assert gap >= 10, "the buffer ran dry during the stall and filled it with silence frames"
    assert kinds.count("audio") == 3 * 50 + 1, "no audio lost (3 s plus the encoder lookahead)"
    frequencies = [f for f in frame_frequencies(session) if f is not None]
    assert all(abs(f - 600) < 20 for f in frequencies)


async def test_a_take_plays_again_from_its_seed(
    world: World, start_bot: object, dia_worker: object, redis: Redis
) -> None:
    """Each /say shows its seed; the same text with that seed replays the take from the worker's cache, and with
    another speed renders the same take faster."""
    dia_worker()  # type: ignore[operator]
    await start_bot(DIA_MAX_LINE_SECONDS="2", DIA_PREBUFFER_MS="5000")  # type: ignore[operator]
    text = "[S1] Once more, with feeling."
    first = await world.say(text)
    found = re.search(r"`seed:(\d+)`", str(first["content"]))
    assert found is not None, first
    seed = int(found[1])
    again = await world.say(text, seed=seed)
    faster = await world.say(text, seed=seed, speed=1.5)
    assert f"seed {seed}:" in str(again["content"]) and f"seed {seed}:" in str(faster["content"])
    takes = await _takes(redis, 3)
    session = await world.session()
    await session.wait_for(lambda s: len(s.audio()) >= sum(len(p) for _, p in takes), timeout=60)
    cached = [(end, played) for end, played in takes if end.cached]
    fresh = [(end, played) for end, played in takes if not end.cached]
    assert len(cached) == 1 and len(fresh) == 2, [end for end, _ in takes]
    (end, played), (slow, fast) = cached[0], sorted(fresh, key=lambda take: -take[0].seconds)
    assert slow[1] and played == slow[1] and end.seconds == slow[0].seconds, (
        "the replay is the first take, packet for packet"
    )
    assert fast[0].seconds == pytest.approx(slow[0].seconds / 1.5, abs=0.06), "the same take at 1.5 times the speed"


async def _takes(redis: Redis, count: int) -> list[tuple[jobs.EndEvent, list[bytes]]]:
    """The end and packets of each of `count` jobs, once all have ended."""
    deadline = time.monotonic() + 60
    while len(keys := await redis.keys("dia:out:*")) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    ends = [await job_events.outcome(redis, key.decode().rsplit(":", 1)[1], stall_timeout=60) for key in keys]
    assert all(isinstance(end, jobs.EndEvent) for end in ends), ends
    packets = await rendered_packets(redis)
    return [(end, packets[key.decode().rsplit(":", 1)[1]]) for end, key in zip(ends, keys, strict=True)]
