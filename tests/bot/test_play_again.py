"""A reply's **Play again** button: the same take, queued again by whoever presses it, after a restart too."""

from __future__ import annotations

import asyncio
import uuid

import msgpack
from redis.asyncio import Redis

from bot import takes
from tests.bot.conftest import World, frame_frequencies, private_text
from tests.fakediscord import EPHEMERAL
from tts_engine import jobs


async def test_a_take_plays_again_from_its_button(
    world: World, start_bot: object, tone_worker: object, redis: Redis
) -> None:
    tone_worker("--seconds", "0.5")  # type: ignore[operator]
    bot = await start_bot()  # type: ignore[operator]
    reply = await world.say("[S1] The bell rings at 800", speed=1.25)
    (button,) = world.discord.message(reply).buttons()  # type: ignore[arg-type]
    assert button["label"] == "Play again" and button["custom_id"].startswith("dia:again:"), button
    job_id = button["custom_id"].removeprefix("dia:again:")
    first = await takes.find(redis, job_id)
    assert first is not None and first.job.requester == world.alice.user.id
    assert 0 < await redis.ttl(f"dia:take:{job_id}") <= takes.TAKE_TTL
    await (await world.session()).wait_for(lambda s: len(s.audio()) >= 20, timeout=60)

    # The button names its take, so a restarted bot still answers it.
    assert await bot.stop() == 0  # type: ignore[attr-defined]
    await start_bot()  # type: ignore[operator]
    click = world.discord.click
    assert "voice channel" in await private_text(
        await click(world.guild, world.bob, world.text, reply, button["custom_id"])
    )

    await world.discord.join_voice(world.guild, world.bob, world.tavern)
    again = await (await click(world.guild, world.bob, world.text, reply, button["custom_id"])).reply()
    assert not int(again.get("flags") or 0) & EPHEMERAL, "the channel sees what is played again"
    assert "The bell rings at 800" in str(again["content"]) and f"seed {first.job.render_seed}" in str(again["content"])
    (next_button,) = world.discord.message(again).buttons()  # type: ignore[arg-type]
    second = await takes.find(redis, next_button["custom_id"].removeprefix("dia:again:"))
    assert second is not None and second.job.job_id != first.job.job_id
    assert second.job.requester == world.bob.user.id, "bob asked for it: his rate limit, his name on errors"
    assert (second.job.segments, second.job.render_seed) == (first.job.segments, first.job.render_seed), "same take"
    assert second.job.params.speed == 1.25, "at the speed it was asked for"

    # The restarted bot joins the Tavern anew: a second voice session.
    await world.discord.wait_until(lambda: sum(s.identify is not None for s in world.discord.sessions(world.guild)) > 1)
    session = await world.session()
    await session.wait_for(lambda s: len(s.audio()) >= 20, timeout=60)
    heard = [f for f in frame_frequencies(session) if f is not None]
    assert heard and all(abs(f - 800) < 60 for f in heard), heard

    # Once the take is gone (a week later), the button says how to hear it again.
    await redis.delete(f"dia:take:{job_id}")
    gone = await private_text(await click(world.guild, world.bob, world.text, reply, button["custom_id"]))
    assert "more than 7 days old" in gone and "seed" in gone, gone


async def test_a_take_knows_its_message_and_its_replies_are_claimed_once(redis: Redis) -> None:
    """A take keeps the message it speaks; one kept before takes had messages reads as none. A deleted message's
    replies are handed out once, however many ask (a deletion, and a reply that saw it while being sent), and
    their takes go with them."""
    job = jobs.RenderJob(guild_id=7, requester=1, segments=(jobs.Segment(text="[S1] Hi."),))
    await takes.keep(redis, job, "Hi.", message_id=42)
    found = await takes.find(redis, job.job_id)
    assert found is not None and found.message_id == 42 and found.job == job and found.preview == "Hi."
    older = {"job": jobs.encode_job(job), "preview": "Hi."}
    await redis.set(f"dia:take:{job.job_id}", msgpack.packb(older, use_bin_type=True))
    found = await takes.find(redis, job.job_id)
    assert found is not None and found.message_id is None

    await takes.keep(redis, job, "Hi.", message_id=42)
    shown = [takes.Reply(5, 100 + n, job.job_id if n == 0 else uuid.uuid4().hex) for n in range(2)]
    for reply in shown:
        await takes.shown_in(redis, 7, 42, reply)
    await takes.shown_in(redis, 7, 43, takes.Reply(5, 200, uuid.uuid4().hex))
    first, second = await asyncio.gather(takes.claim(redis, 7, {42}), takes.claim(redis, 7, {42, 44}))
    assert sorted(first + second, key=lambda r: r.reply_id) == shown and not (first and second), (first, second)
    assert await takes.find(redis, job.job_id) is None, "the take of a deleted message is gone"
    assert [r.reply_id for r in await takes.claim(redis, 7, {43})] == [200], "another message's replies stay"
