"""A restarted bot plays the lines that were waiting when it stopped (bot/saved.py), against the emulator."""

from __future__ import annotations

import asyncio
import json

from redis.asyncio import Redis

from bot.saved import SavedQueues
from bot.services import Line
from tests.bot.conftest import World, frame_frequencies
from tests.bot.test_commands import near
from tests.fakediscord.voice import VoiceSession
from tts_engine import jobs


async def _next_session(world: World, after: int, timeout: float = 60) -> VoiceSession:
    """The first voice session the bot identifies on after the first `after` sessions."""

    async def run() -> VoiceSession:
        while True:
            sessions = world.discord.sessions(world.guild)[after:]
            if sessions and sessions[0].identify is not None:
                return sessions[0]
            await asyncio.sleep(0.02)

    return await asyncio.wait_for(run(), timeout)


async def test_lines_that_waited_play_after_a_restart(
    world: World, start_bot: object, tone_worker: object, redis: Redis
) -> None:
    """Three lines queued; the bot stops during the first. The next bot posts that it is back and plays all
    three, the interrupted one again from its start, in their order; then nothing stays saved."""
    tone_worker("--seconds", "1.0")  # type: ignore[operator]
    bot = await start_bot()  # type: ignore[operator]
    for frequency in (500, 900, 1300):
        await world.say(f"[S1] {frequency}")
    first = await world.session()
    await first.wait_for(lambda s: len(s.audio()) >= 10, timeout=60)
    assert await bot.stop() == 0  # type: ignore[attr-defined]
    assert await redis.llen(f"dia:bot:lines:{world.guild.id}") == 3, "the playing line stays saved too"

    await start_bot()  # type: ignore[operator]
    second = await _next_session(world, after=1)
    (posted,) = await world.discord.wait_posted(world.text)
    assert "Back after a restart: playing the 3 lines that waited" in posted.content
    await second.wait_for(lambda s: sum(near(f, 1300) for f in frame_frequencies(s)) >= 40, timeout=60)
    heard = [f for f in frame_frequencies(second) if f]
    order = [next(i for i, f in enumerate(heard) if near(f, tone)) for tone in (500, 900, 1300)]
    assert order == sorted(order), f"played out of order: {order}"
    assert sum(near(f, 500) for f in heard) >= 45, "the interrupted line plays again from its start"
    for _ in range(100):
        if not await redis.exists(f"dia:bot:lines:{world.guild.id}"):
            break
        await asyncio.sleep(0.05)
    assert not await redis.exists(f"dia:bot:lines:{world.guild.id}"), "played lines are forgotten"


async def test_a_saved_line_whose_job_is_gone_is_dropped(redis: Redis) -> None:
    """At start-up only lines whose job still has audio or a place in the queue come back; unreadable entries
    are dropped with a warning, and a save/forget pair leaves nothing behind."""
    saved = SavedQueues(redis)
    kept, gone = Line("job-kept", 1, 10, 20, "kept"), Line("job-gone", 1, 10, 20, "gone")
    for line in (kept, gone):
        await saved.save(7, line)
    await redis.rpush("dia:bot:lines:7", b"not json")
    await redis.xadd(jobs.out_key("job-kept"), {b"e": b"x"})
    assert 0 < await redis.ttl("dia:bot:lines:7") <= 600
    loaded = await saved.load()
    assert [line.job_id for line in loaded[7]] == ["job-kept"]
    assert loaded[7][0].preview == "kept" and loaded[7][0].voice_channel == 20
    assert await redis.llen("dia:bot:lines:7") == 1
    await saved.forget(7, loaded[7][0])  # equal fields, a new queued_at: still found
    assert not await redis.exists("dia:bot:lines:7")


async def test_lines_saved_before_an_upgrade_still_load_and_are_forgotten(redis: Redis) -> None:
    """An entry saved by a bot from before `Line.message_id` reads back with none, and its forget finds it; a line
    with a message keeps it across a restart, so deleting that message after the restart still takes it back."""
    saved = SavedQueues(redis)
    old = {"job_id": "job-old", "requester": 1, "text_channel": 10, "voice_channel": 20, "preview": "old"}
    await redis.rpush("dia:bot:lines:7", json.dumps({**old, "export": False}, sort_keys=True))
    await saved.save(7, Line("job-new", 1, 10, 20, "new", message_id=99))
    for job in ("job-old", "job-new"):
        await redis.xadd(jobs.out_key(job), {b"e": b"x"})
    loaded = await saved.load()
    assert [(line.job_id, line.message_id) for line in loaded[7]] == [("job-old", None), ("job-new", 99)]
    await saved.forget(7, *loaded[7])  # several at once, in one round trip
    assert not await redis.exists("dia:bot:lines:7"), "both entries were found again"


async def test_an_edited_line_is_saved_in_the_place_of_the_old(redis: Redis) -> None:
    """`replace` keeps the queue's order after a restart; a line whose save had failed is saved at the end."""
    saved = SavedQueues(redis)
    a, b, c = (Line(f"job-{name}", 1, 10, 20, name, message_id=i) for i, name in enumerate("abc"))
    for line in (a, b, c):
        await saved.save(7, line)
        await redis.xadd(jobs.out_key(line.job_id), {b"e": b"x"})
    edited = Line("job-b2", 1, 10, 20, "b, edited", message_id=1)
    await redis.xadd(jobs.out_key(edited.job_id), {b"e": b"x"})
    await redis.expire("dia:bot:lines:7", 5)
    await saved.replace(7, b, edited)
    assert [line.job_id for line in (await saved.load())[7]] == ["job-a", "job-b2", "job-c"]
    assert await redis.ttl("dia:bot:lines:7") > 500, "a change renews the queue's lapse"
    unsaved = Line("job-d", 1, 10, 20, "d", message_id=3)
    await saved.replace(7, unsaved, Line("job-d2", 1, 10, 20, "d, edited", message_id=3))
    assert [json.loads(raw)["job_id"] for raw in await redis.lrange("dia:bot:lines:7", 0, -1)] == [
        "job-a", "job-b2", "job-c", "job-d2"
    ]  # fmt: skip


async def test_lines_that_waited_for_a_voice_channel_discord_would_not_join(
    world: World, start_bot: object, tone_worker: object, redis: Redis
) -> None:
    """Restarted while Discord's voice does not answer: the bot cannot rejoin for the waiting lines, so it says so
    once and keeps them, in order, until a /join brings it in; then it plays them all."""
    tone_worker("--seconds", "0.6")  # type: ignore[operator]
    bot = await start_bot()  # type: ignore[operator]
    for frequency in (500, 900):
        await world.say(f"[S1] {frequency}")
    first = await world.session()
    await first.wait_for(lambda s: len(s.audio()) >= 5, timeout=60)
    assert await bot.stop() == 0  # type: ignore[attr-defined]

    world.discord.voice_answers = False
    await start_bot()  # type: ignore[operator]
    back, held = await world.discord.wait_posted(world.text, count=2, timeout=60)
    assert "playing the 2 lines that waited" in back.content
    assert held.content == (
        f"🔇 <@{world.alice.user.id}>, I could not join <#{world.tavern.id}> (timed out); try again with `/join` or "
        "`/say` (your line waits, and 1 more)."
    ), held.content
    queue = await world.discord.slash(world.guild, world.alice, world.text, "queue")
    assert str((await queue.reply())["embeds"]).count("[S1]") == 2, "both lines wait"
    assert await redis.llen(f"dia:bot:lines:{world.guild.id}") == 2, "and stay saved"

    world.discord.voice_answers = True
    await world.discord.slash(world.guild, world.alice, world.text, "join")
    second = await _next_session(world, after=1)
    await second.wait_for(lambda s: sum(near(f, 900) for f in frame_frequencies(s)) >= 20, timeout=60)
    heard = [f for f in frame_frequencies(second) if f]
    assert sum(near(f, 500) for f in heard) >= 20 and heard.index(next(f for f in heard if near(f, 900))) > 20
    assert len(world.discord.posted) == 2, "said once"
