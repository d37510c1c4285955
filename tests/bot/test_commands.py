"""Slash commands against the emulator: queueing, skip/stop/leave, two guilds, and every check's message."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from redis.asyncio import Redis

from tests.bot.conftest import World, frame_frequencies, make_world, private_text
from tests.fakediscord import CONNECT, EPHEMERAL, MANAGE_CHANNELS, MANAGE_GUILD, SPEAK, FakeDiscord


def near(frequency: float | None, target: float) -> bool:
    """Within the resolution of one 20 ms frame (50 Hz) of `target`; test tones are 200 Hz apart or more."""
    return frequency is not None and abs(frequency - target) < 60


def _tones(world: World) -> object:
    async def heard() -> list[float | None]:
        return frame_frequencies(await world.session())

    return heard


async def test_queued_lines_play_in_order(world: World, start_bot: object, tone_worker: object) -> None:
    tone_worker("--seconds", "0.6")  # type: ignore[operator]
    await start_bot()  # type: ignore[operator]
    first = await world.say("[S1] 500")
    second = await world.say("[S1] 1500")
    assert "Speaking now" in str(first["content"]) and "Queued after 1 line" in str(second["content"])
    session = await world.session()
    await session.wait_for(lambda s: len(s.audio()) >= 2 * 31, timeout=60)
    heard = [f for f in frame_frequencies(session) if f is not None]
    assert near(heard[0], 500) and near(heard[-1], 1500)
    switch = next(i for i, f in enumerate(heard) if near(f, 1500))
    assert all(near(f, 500) for f in heard[:switch]) and all(near(f, 1500) for f in heard[switch:])


async def test_skip_stops_within_100_ms_and_plays_the_next(
    world: World, start_bot: object, tone_worker: object
) -> None:
    tone_worker("--seconds", "4", "--pace")  # type: ignore[operator]
    await start_bot()  # type: ignore[operator]
    await world.say("[S1] 500")
    await world.say("[S1] 1500")
    session = await world.session()
    await session.wait_for(lambda s: len(s.audio()) >= 25, timeout=60)
    skip = await world.discord.slash(world.guild, world.alice, world.text, "skip")
    await skip.reply()
    at_skip = len(session.packets)
    await session.wait_for(lambda s: any(f and near(f, 1500) for f in frame_frequencies(s)), timeout=30)
    heard = frame_frequencies(session)
    first_of_next = next(i for i, f in enumerate(heard) if f and near(f, 1500))
    old_after_skip = [f for f in heard[at_skip:first_of_next] if f and near(f, 500)]
    assert len(old_after_skip) <= 5, "the skipped line stops within 100 ms of audio"
    assert first_of_next < 4 * 50, "the first line did not play to its end"


async def test_stop_clears_the_queue(world: World, start_bot: object, tone_worker: object, redis: Redis) -> None:
    tone_worker("--seconds", "4", "--pace")  # type: ignore[operator]
    await start_bot()  # type: ignore[operator]
    for frequency in (500, 900, 1300):
        await world.say(f"[S1] {frequency}")
    session = await world.session()
    await session.wait_for(lambda s: len(s.audio()) >= 10, timeout=60)
    stop = await world.discord.slash(world.guild, world.alice, world.text, "stop")
    assert "3 lines dropped" in str((await stop.reply())["content"])
    await asyncio.sleep(1.5)
    heard = {round(f, -2) for f in frame_frequencies(session) if f}
    assert heard == {500}, "nothing after the stop"
    queue = await world.discord.slash(world.guild, world.alice, world.text, "queue")
    assert "Nothing is queued" in str((await queue.reply())["content"])


async def test_unsay_takes_back_the_caller_s_latest_line(
    world: World, start_bot: object, tone_worker: object, redis: Redis
) -> None:
    world.guild.voice[world.bob.user.id] = world.tavern.id
    tone_worker("--seconds", "4", "--pace")  # type: ignore[operator]
    await start_bot()  # type: ignore[operator]
    for member, frequency in ((world.alice, 500), (world.bob, 900), (world.alice, 1300), (world.bob, 1700)):
        await world.say(f"[S1] {frequency}", member)
    session = await world.session()
    await session.wait_for(lambda s: len(s.audio()) >= 10, timeout=60)
    saved = f"dia:bot:lines:{world.guild.id}"  # bot/saved.py: kept to play after a restart
    assert await redis.llen(saved) == 4

    async def unsay(member: object) -> str:
        interaction = await world.discord.slash(world.guild, member, world.text, "unsay")  # type: ignore[arg-type]
        return str((await interaction.reply())["content"])

    assert "Took back: [S1] 1300" in await unsay(world.alice), "the latest of hers, not the one playing"
    assert "Took back: [S1] 1700" in await unsay(world.bob)
    assert "Took back: [S1] 900" in await unsay(world.bob)
    assert "You have no line waiting or being spoken here" in await unsay(world.bob)
    assert "Stopped: [S1] 500" in await unsay(world.alice)
    await asyncio.sleep(1.5)
    heard = {round(f, -2) for f in frame_frequencies(session) if f}
    assert heard == {500}, "nothing taken back is spoken"
    assert await redis.llen(saved) == 0, "nor kept for after a restart"


async def test_leave_mid_line(world: World, start_bot: object, tone_worker: object) -> None:
    tone_worker("--seconds", "4", "--pace")  # type: ignore[operator]
    await start_bot()  # type: ignore[operator]
    await world.say("[S1] 700")
    session = await world.session()
    await session.wait_for(lambda s: len(s.audio()) >= 10, timeout=60)
    leave = await world.discord.slash(world.guild, world.alice, world.text, "leave")
    assert "Left" in str((await leave.reply())["content"])
    await asyncio.wait_for(session.closed.wait(), 10)
    assert world.bot_channel() is None


async def test_two_guilds_hear_only_their_own_lines(
    discord: FakeDiscord, start_bot: object, tone_worker: object
) -> None:
    north, south = make_world(discord, "North"), make_world(discord, "South")
    tone_worker("--seconds", "1")  # type: ignore[operator]
    await start_bot()  # type: ignore[operator]
    await asyncio.gather(north.say("[S1] 440"), south.say("[S1] 1760"))
    for world, frequency in ((north, 440), (south, 1760)):
        session = await world.session()
        await session.wait_for(lambda s: len(s.audio()) >= 51, timeout=60)
        heard = [f for f in frame_frequencies(session) if f]
        assert heard and all(abs(f - frequency) < 20 for f in heard)


async def test_export_posts_the_line_as_a_file(world: World, start_bot: object, tone_worker: object) -> None:
    tone_worker("--seconds", "1")  # type: ignore[operator]
    await start_bot()  # type: ignore[operator]
    await world.say("[S1] 800", export=True)
    (posted,) = await world.discord.wait_posted(world.text)
    assert list(posted.files) == ["line.ogg"] and posted.files["line.ogg"].startswith(b"OggS")
    assert "800" in posted.content


async def test_queue_lists_the_lines(world: World, start_bot: object, tone_worker: object) -> None:
    tone_worker("--seconds", "3", "--pace")  # type: ignore[operator]
    await start_bot(DIA_RATE_BURST="20")  # type: ignore[operator]
    await world.say("[S1] The first line 500.")
    await world.say("[S2] The second line 700.")
    # A full queue of long lines: more than one message's 2000 characters.
    long = [f"[S1] Line {n}: " + "a long line " * 8 for n in range(3, 21)]
    for text in long:
        await world.say(text)
    queue = await world.discord.slash(world.guild, world.alice, world.text, "queue")
    reply = await queue.reply()
    assert int(reply.get("flags") or 0) & EPHEMERAL
    (shown,) = reply["embeds"]
    assert shown["title"] == "Queue (20 lines)", shown
    rows = shown["description"].split("\n")
    assert rows[0] == f"🗣️ now: [S1] The first line 500. (<@{world.alice.user.id}>)"
    assert rows[1] == f"1. [S2] The second line 700. (<@{world.alice.user.id}>)"
    assert len(rows) == 20 and rows[-1].startswith("19. [S1] Line 20: a long line a long"), rows[-1]
    assert len(shown["description"]) > 2000, "more than a plain message could hold"


async def test_sigusr1_logs_what_each_task_waits_on(world: World, start_bot: object) -> None:
    bot = await start_bot()  # type: ignore[operator]
    bot.process.send_signal(signal.SIGUSR1)
    for _ in range(250):
        if "bot/__main__.py" in bot.log():  # the serving task's frame, at `await bot.start(...)`
            break
        await asyncio.sleep(0.02)
    assert "asyncio tasks pending" in bot.log() and "in _serve" in bot.log(), bot.log()
    assert bot.process.poll() is None, "the bot serves on"


def test_sigusr1_prints_what_each_worker_thread_runs(tone_worker: object) -> None:
    worker = tone_worker()  # type: ignore[operator]
    worker.process.send_signal(signal.SIGUSR1)
    for _ in range(250):
        if "Current thread" in worker.log_path.read_text(errors="replace"):
            break
        time.sleep(0.02)
    log = worker.log_path.read_text(errors="replace")
    assert "Current thread" in log and "tts_engine/worker.py" in log, log
    assert worker.process.poll() is None, "the worker serves on"


async def test_no_worker_online(world: World, start_bot: object) -> None:
    await start_bot()  # type: ignore[operator]
    interaction = await world.discord.slash(world.guild, world.alice, world.text, "say", text="[S1] Anyone?")
    assert "No voice worker is running" in await private_text(interaction)
    assert world.discord.sessions(world.guild) == [], "nothing joined for a line that cannot be spoken"


async def test_the_caller_must_be_in_voice(world: World, start_bot: object, tone_worker: object) -> None:
    tone_worker()  # type: ignore[operator]
    await start_bot()  # type: ignore[operator]
    interaction = await world.discord.slash(world.guild, world.bob, world.text, "say", text="[S1] Hi.")
    assert "Join a voice channel first" in await private_text(interaction)


@pytest.mark.parametrize(("deny", "missing"), [(CONNECT, "Connect permission"), (SPEAK, "Speak permission")])
async def test_missing_permissions_are_named(
    discord: FakeDiscord, start_bot: object, tone_worker: object, deny: int, missing: str
) -> None:
    world = make_world(discord)
    locked = world.guild.voice_channel("Locked", deny_bot=deny)
    world.guild.voice[world.alice.user.id] = locked.id
    tone_worker()  # type: ignore[operator]
    await start_bot()  # type: ignore[operator]
    interaction = await discord.slash(world.guild, world.alice, world.text, "say", text="[S1] Hi.")
    assert f"missing the {missing} there" in await private_text(interaction)


async def test_a_full_voice_channel_is_named(discord: FakeDiscord, start_bot: object, tone_worker: object) -> None:
    """Discord ignores a bot's join of a voice channel at its user limit, unless it has Manage Channels there: the
    bot says so at once instead of timing out, a channel that fills up with the bot inside still hears it, and a
    bot with Manage Channels joins a full one."""
    world, other = make_world(discord), make_world(discord, "Other")
    booth = world.guild.voice_channel("Booth", user_limit=1)
    world.guild.voice[world.alice.user.id] = booth.id
    pair = world.guild.voice_channel("Pair", user_limit=2)
    crew = other.guild.role("Stage crew", MANAGE_CHANNELS)
    other.guild.members[discord.bot.id].roles.append(crew.id)
    other_booth = other.guild.voice_channel("Booth", user_limit=1)
    other.guild.voice[other.alice.user.id] = other_booth.id
    tone_worker("--seconds", "0.6")  # type: ignore[operator]
    await start_bot()  # type: ignore[operator]

    for command, options in (("say", {"text": "[S1] 500"}), ("join", {})):
        refused = await discord.slash(world.guild, world.alice, world.text, command, **options)
        said = await private_text(refused)
        assert f"<#{booth.id}> is full (1 of 1)" in said and "Manage Channels" in said, said
    assert discord.refused_joins == [], "the bot did not try"

    await discord.join_voice(world.guild, world.bob, pair)
    assert "Speaking now" in str((await world.say("[S1] 500", world.bob))["content"])
    assert world.bot_channel() == pair.id  # the bot makes two of two
    assert "🗣️" in str((await world.say("[S1] 700", world.bob))["content"]), "inside, the bot is no newcomer"

    assert "Speaking now" in str((await other.say("[S1] 900"))["content"])
    await (await other.session()).wait_for(lambda s: len(s.audio()) >= 10, timeout=60)
    assert other.bot_channel() == other_booth.id and discord.refused_joins == []


async def test_lines_asked_for_at_the_same_moment(world: World, start_bot: object, tone_worker: object) -> None:
    """Two members /say at the same moment while the bot is in no voice channel: one join, both lines queued (the
    second must not tear down the first's half-made connection). From two channels, one of them is told the bot
    is busy in the other, and nothing drags it between them."""
    tone_worker("--seconds", "1")  # type: ignore[operator]
    await start_bot()  # type: ignore[operator]
    await world.discord.join_voice(world.guild, world.bob, world.tavern)
    slash = world.discord.slash
    both = await asyncio.gather(
        slash(world.guild, world.alice, world.text, "say", text="[S1] 500"),
        slash(world.guild, world.bob, world.text, "say", text="[S1] 900"),
    )
    said = sorted([str((await each.reply())["content"]) for each in both])
    assert "Queued after 1 line" in said[0] and "Speaking now" in said[1], said
    session = await world.session()
    await session.wait_for(lambda s: len(s.audio()) >= 2 * 50, timeout=60)
    assert len(world.discord.sessions(world.guild)) == 1, "one join"

    await world.discord.join_voice(world.guild, world.bob, world.cellar)
    await world.discord.join_voice(world.guild, world.alice, None)
    for _ in range(300):  # alone in voice, the bot leaves
        if world.bot_channel() is None:
            break
        await asyncio.sleep(0.1)
    await world.discord.join_voice(world.guild, world.alice, world.tavern)
    apart = await asyncio.gather(
        slash(world.guild, world.alice, world.text, "say", text="[S1] 500"),
        slash(world.guild, world.bob, world.text, "say", text="[S1] 900"),
    )
    replies = [(await each.reply(), each) for each in apart]
    spoken = [r for r, _ in replies if "Speaking now" in str(r.get("content"))]
    refused = [await private_text(each) for r, each in replies if "Speaking now" not in str(r.get("content"))]
    assert len(spoken) == 1 and len(refused) == 1 and "already speaking in" in refused[0], replies
    joined = world.bot_channel()
    await asyncio.sleep(1.5)
    assert world.bot_channel() == joined and len(world.discord.sessions(world.guild)) == 2, "never dragged across"


async def test_busy_in_another_channel(world: World, start_bot: object, tone_worker: object) -> None:
    tone_worker("--seconds", "4", "--pace")  # type: ignore[operator]
    await start_bot()  # type: ignore[operator]
    await world.say("[S1] 500")
    await world.discord.join_voice(world.guild, world.bob, world.cellar)
    interaction = await world.discord.slash(world.guild, world.bob, world.text, "say", text="[S1] Over here!")
    assert "already speaking in" in await private_text(interaction)


async def test_a_required_role(discord: FakeDiscord, start_bot: object, tone_worker: object) -> None:
    world = make_world(discord)
    bard = world.guild.role("Bard")
    world.bob.roles.append(bard.id)
    world.guild.voice[world.bob.user.id] = world.tavern.id
    tone_worker()  # type: ignore[operator]
    await start_bot(DIA_REQUIRED_ROLE="Bard")  # type: ignore[operator]
    refused = await discord.slash(world.guild, world.alice, world.text, "say", text="[S1] Hi.")
    assert "You need the Bard role" in await private_text(refused)
    allowed = await world.say("[S1] Hi.", member=world.bob)
    assert "Speaking now" in str(allowed["content"])


async def test_only_listeners_or_managers_control_playback(
    discord: FakeDiscord, start_bot: object, tone_worker: object
) -> None:
    world = make_world(discord)
    manager = world.guild.member("gm", world.guild.role("Game master", MANAGE_GUILD))
    tone_worker("--seconds", "4", "--pace")  # type: ignore[operator]
    await start_bot()  # type: ignore[operator]
    await world.say("[S1] 500")
    for command in ("skip", "stop", "leave"):
        refused = await discord.slash(world.guild, world.bob, world.text, command)
        assert "Only people in my voice channel" in await private_text(refused)
    allowed = await discord.slash(world.guild, manager, world.text, "skip")
    assert "Skipped" in str((await allowed.reply())["content"])


async def test_the_bot_leaves_an_empty_channel(world: World, start_bot: object, tone_worker: object) -> None:
    tone_worker("--seconds", "0.5")  # type: ignore[operator]
    await start_bot()  # type: ignore[operator]
    await world.say("[S1] 500")
    session = await world.session()
    await session.wait_for(lambda s: len(s.audio()) >= 26, timeout=60)
    await world.discord.join_voice(world.guild, world.alice, None)
    await asyncio.wait_for(session.closed.wait(), 10)


async def test_the_bot_leaves_when_idle(world: World, start_bot: object, tone_worker: object) -> None:
    tone_worker("--seconds", "0.5")  # type: ignore[operator]
    await start_bot(DIA_IDLE_TIMEOUT="1")  # type: ignore[operator]
    await world.say("[S1] 500")
    session = await world.session()
    await asyncio.wait_for(session.closed.wait(), 15)
    assert len(session.audio()) == 26, "it left after the line, not during it"


async def test_join_and_moving_to_another_channel(world: World, start_bot: object, tone_worker: object) -> None:
    """/join brings the bot into the caller's channel; a line asked for from another channel while none plays moves
    it there, and it speaks there."""
    tone_worker("--seconds", "0.5")  # type: ignore[operator]
    await start_bot()  # type: ignore[operator]
    fake = world.discord
    assert "I am not in a voice channel" in await private_text(
        await fake.slash(world.guild, world.alice, world.text, "leave")
    )
    joined = await (await fake.slash(world.guild, world.alice, world.text, "join")).reply()
    assert f"Joined <#{world.tavern.id}>" in str(joined["content"]) and world.bot_channel() == world.tavern.id
    await fake.join_voice(world.guild, world.bob, world.cellar)
    moved = await world.say("[S1] 900", member=world.bob)
    assert f"Speaking now in <#{world.cellar.id}>" in str(moved["content"]), moved
    session = await fake.session(world.guild)
    await session.wait_for(lambda s: len(s.audio()) >= 20, timeout=60)
    assert session.channel_id == world.cellar.id and world.bot_channel() == world.cellar.id
    heard = [f for f in frame_frequencies(session) if f is not None]
    assert heard and all(near(f, 900) for f in heard), heard
