"""The read channel: what members in voice write in it is spoken, with the Message Content intent the host
turned on; everything else in the server is left alone."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from redis.asyncio import Redis

from bot import takes
from config.startup import EXIT_CONFIG
from tests.bot.conftest import BotProcess, World, ended, frame_frequencies, private_text
from tests.fakediscord import MANAGE_GUILD, FakeDiscord, Upload
from tests.fakediscord.messages import Message
from tests.fakediscord.model import Guild
from tests.fakediscord.server import MESSAGE_CONTENT
from tts_engine import jobs


async def test_messages_in_the_read_channel_are_spoken(
    world: World, start_bot: object, tone_worker: object, redis: Redis
) -> None:
    world.alice.roles.append(world.guild.role("Game master", MANAGE_GUILD).id)
    off_topic = world.guild.text_channel("off-topic")
    tone_worker("--seconds", "0.5")  # type: ignore[operator]
    await start_bot(DIA_READ_MESSAGES="true", DIA_READ_NOTE_SECONDS="4")  # type: ignore[operator]
    assert world.discord.intents & MESSAGE_CONTENT, "the bot asks for message content"
    chat, slash, guild = world.discord.chat, world.discord.slash, world.guild
    assert "Channel read aloud: none." in await private_text(
        await slash(guild, world.alice, world.text, "settings show")
    )
    await chat(guild, world.alice, world.text, "[S1] 300")  # no read channel yet

    assert "`skip` goes with a channel" in await private_text(
        await slash(guild, world.alice, world.text, "settings read-channel", skip="//")
    )
    chosen = await private_text(
        await slash(guild, world.alice, world.text, "settings read-channel", channel=world.text, skip="//")
    )
    assert f"Channel read aloud: <#{world.text.id}>, except messages that start with “//”;" in chosen, chosen
    await chat(guild, world.alice, world.text, "  // 800 (grins)")  # side talk: neither spoken nor answered
    await chat(guild, world.bob, world.text, "[S1] 400")  # bob is in no voice channel: only chatting
    await chat(guild, world.alice, off_topic, "[S1] 500")  # another channel
    await chat(guild, world.alice, world.text, "[S1] Well met. (grins)")
    (note,) = await world.discord.wait_posted(world.text)
    assert note.content.startswith("⚠️ Not spoken:") and "(grins) is not a sound Dia can make" in note.content
    assert note.message is not None and not note.message.deleted
    await chat(guild, world.alice, world.text, "[S1] 700")

    session = await world.session()
    await session.wait_for(lambda s: len(s.audio()) >= 25, timeout=60)
    await asyncio.sleep(1.0)  # anything queued before the 700 would have played first, and after it, by now
    heard = [f for f in frame_frequencies(session) if f is not None]
    assert heard and all(abs(f - 700) < 60 for f in heard), "only alice's line in the read channel is spoken"
    assert len(world.discord.posted) == 1, "one note, for the one mistake; nothing said about the rest"

    # The bot hears its own note in the read channel, as on Discord, and it is in voice now: still not read.
    assert world.bot_channel() == world.tavern.id
    await chat(guild, world.alice, world.text, "[S1] Well met again. (grins)")
    await world.discord.wait_posted(world.text, count=2)
    packets = len(session.audio())
    await asyncio.sleep(1.0)
    assert len(world.discord.posted) == 2 and len(session.audio()) == packets, "no note on a note, nothing spoken"

    # Choosing no channel stops the reading.
    assert "Channel read aloud: none." in await private_text(
        await slash(guild, world.alice, world.text, "settings read-channel")
    )
    assert await redis.hmget(f"dia:guild:{guild.id}:settings", ["read_channel", "read_skip"]) == [None, None]
    # The notes remove themselves after DIA_READ_NOTE_SECONDS.
    await world.discord.wait_until(lambda: all(p.message and p.message.deleted for p in world.discord.posted), 10)


async def test_reading_is_the_hosts_choice(world: World, start_bot: object) -> None:
    world.alice.roles.append(world.guild.role("Game master", MANAGE_GUILD).id)
    await start_bot()  # type: ignore[operator]
    assert not world.discord.intents & MESSAGE_CONTENT, "no privileged intent unless the host asks for it"
    refused = await private_text(
        await world.discord.slash(world.guild, world.alice, world.text, "settings read-channel", channel=world.text)
    )
    assert "DIA_READ_MESSAGES=true" in refused and "Message Content intent" in refused, refused


async def test_a_refused_intent_stops_the_bot_with_the_fix(
    discord: FakeDiscord, world: World, redis_server: str, tmp_path: Path
) -> None:
    discord.message_content_allowed = False  # not turned on in the developer portal
    bot = BotProcess(discord, redis_server, tmp_path / "bot.log", DIA_READ_MESSAGES="true")
    deadline = time.monotonic() + 60
    while bot.process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert await bot.stop() == EXIT_CONFIG, bot.log()
    assert "turn on Message Content Intent" in bot.log() and "DIA_READ_MESSAGES=false" in bot.log(), bot.log()


def tone_runs(frequencies: list[float | None]) -> list[int]:
    """The tones heard one after another, to the nearest 100 Hz: runs of at least 3 packets (the packets where one
    tone fades into the next have no clean pitch)."""
    runs: list[tuple[int, int]] = []
    for frequency in frequencies:
        if frequency is None:
            continue
        tone = round(frequency, -2)
        if runs and runs[-1][0] == tone:
            runs[-1] = (tone, runs[-1][1] + 1)
        else:
            runs.append((tone, 1))
    return [tone for tone, count in runs if count >= 3]


async def test_the_writer_is_named_when_another_wrote_before(
    world: World, start_bot: object, tone_worker: object
) -> None:
    """The tone worker sounds the last number of a segment, so "Lady 900 said, hello" is heard as 900 Hz and a
    plain "hello" as 440 (to the nearest 100: 400)."""
    world.alice.roles.append(world.guild.role("Game master", MANAGE_GUILD).id)
    world.alice.nick = "Lady 900 (laughs) ✨"  # a cue in a name is not one: only letters and digits are said
    world.bob.nick = "[S2] Sir 600"
    world.guild.voice[world.bob.user.id] = world.tavern.id
    tone_worker("--seconds", "0.4")  # type: ignore[operator]
    await start_bot(DIA_READ_MESSAGES="true")  # type: ignore[operator]
    chat, slash, guild = world.discord.chat, world.discord.slash, world.guild
    chosen = await private_text(
        await slash(guild, world.alice, world.text, "settings read-channel", channel=world.text)
    )
    assert f"Channel read aloud: <#{world.text.id}>; the writer's name is said first." in chosen, chosen
    heard: list[int] = []

    async def read(member: object, content: str, tone: int) -> None:
        await chat(guild, member, world.text, content)  # type: ignore[arg-type]
        heard.append(tone)
        live = await world.session()
        await live.wait_for(lambda s: tone_runs(frame_frequencies(s)) == heard, timeout=30)

    # The bot joins voice on the first message; the session exists from then on.
    await chat(guild, world.alice, world.text, "hello")
    heard.append(900)
    live = await world.session()
    await live.wait_for(lambda s: tone_runs(frame_frequencies(s)) == heard, timeout=60)
    await read(world.alice, "and hello again", 400)  # the same writer just now: no name
    await read(world.bob, "hi", 600)  # another writer: his name, in his voice before his own tags
    await read(world.alice, "welcome", 900)  # and back

    assert "without the writer's name" in await private_text(
        await slash(guild, world.alice, world.text, "settings read-channel", channel=world.text, names=False)
    )
    await read(world.bob, "bye", 400)
    assert "`names` goes with a channel" in await private_text(
        await slash(guild, world.alice, world.text, "settings read-channel", names=True)
    )
    assert not world.discord.posted, "nothing was refused"


async def queued(redis: Redis, guild: Guild, message: Message) -> None:
    """Wait until the message's line is queued (the bot saves each line it queues, with its message)."""
    deadline = time.monotonic() + 30
    while await saved_job(redis, guild, message) is None:
        assert time.monotonic() < deadline, await redis.lrange(f"dia:bot:lines:{guild.id}", 0, -1)
        await asyncio.sleep(0.02)


async def saved_job(redis: Redis, guild: Guild, message: Message) -> str | None:
    """The job of the message's line in the guild's saved queue, if it is there."""
    entries = [json.loads(raw) for raw in await redis.lrange(f"dia:bot:lines:{guild.id}", 0, -1)]
    return next((entry["job_id"] for entry in entries if entry.get("message_id") == message.id), None)


async def test_a_deleted_message_is_not_spoken(
    world: World, start_bot: object, tone_worker: object, redis: Redis
) -> None:
    """Deleting a message takes back its line: out of the queue if it waits (one deletion or a purge, whether its
    line was queued yet or not), stopped if it plays; a line spoken from the message menu too, and played again
    from its reply, and the replies no longer show the message."""
    world.alice.roles.append(world.guild.role("Game master", MANAGE_GUILD).id)
    world.guild.voice[world.bob.user.id] = world.tavern.id
    tone_worker("--seconds", "2.5")  # type: ignore[operator]
    await start_bot(DIA_READ_MESSAGES="true")  # type: ignore[operator]
    chat, guild, fake = world.discord.chat, world.guild, world.discord
    await private_text(
        await fake.slash(guild, world.alice, world.text, "settings read-channel", channel=world.text, names=False)
    )
    saved = f"dia:bot:lines:{guild.id}"

    await chat(guild, world.alice, world.text, "[S1] 700")
    session = await world.session()
    await session.wait_for(lambda s: tone_runs(frame_frequencies(s)) == [700], timeout=60)
    await chat(guild, world.bob, world.text, "[S1] 300")
    gone = await chat(guild, world.alice, world.text, "[S1] 500")  # behind the 300: time to take it back
    await queued(redis, guild, gone)
    await fake.delete(guild, gone)  # queued already: it leaves the queue
    purged = [
        await chat(guild, who, world.text, f"[S1] {tone}") for who, tone in [(world.alice, 600), (world.bob, 800)]
    ]
    await fake.delete(guild, *purged)  # at once: while they are still being read, most likely
    menu_line = fake.user_message(world.bob, world.text, "[S1] 200")
    shown = [await (await fake.message_command(guild, world.alice, world.text, "Speak message", menu_line)).reply()]
    (button,) = fake.message(shown[0]).buttons()  # type: ignore[arg-type]
    shown.append(await (await fake.click(guild, world.bob, world.text, shown[0], button["custom_id"])).reply())
    assert all("200" in str(reply["content"]) for reply in shown), shown
    replies = f"dia:replies:{guild.id}:{menu_line.id}"
    while await redis.scard(replies) < 2:  # both replies known (else the deletion finds one only as they are sent)
        await asyncio.sleep(0.02)
    await fake.delete(guild, menu_line)  # its line and its replay leave the queue; the replies stop showing it
    await fake.wait_until(lambda: all(fake.message(reply).content == takes.RETRACTED for reply in shown))
    assert not [c for reply in shown for c in fake.message(reply).walk()], "no Play again for a deleted message"
    assert not await redis.keys("dia:take:*") and not await redis.keys("dia:replies:*"), "nothing kept of it"

    playing = await chat(guild, world.alice, world.text, "[S1] 900")
    await chat(guild, world.bob, world.text, "[S1] 400")
    await session.wait_for(lambda s: tone_runs(frame_frequencies(s))[-1:] == [900], timeout=30)
    await fake.delete(guild, playing)  # it stops, and the next plays
    await session.wait_for(lambda s: tone_runs(frame_frequencies(s)) == [700, 300, 900, 400], timeout=30)
    await session.wait_for(ended, timeout=30)  # the 400 played to its end: forgotten from the saved queue
    await asyncio.sleep(2.0)  # time enough for a line taken back, had it been queued after the 400 instead
    frequencies = frame_frequencies(session)
    assert tone_runs(frequencies) == [700, 300, 900, 400], tone_runs(frequencies)
    cut = sum(1 for f in frequencies if f is not None and abs(f - 900) < 60)
    assert cut < 50, f"the deleted line stopped within a second, not after its 125 packets: {cut}"
    assert await redis.llen(saved) == 0, await redis.lrange(saved, 0, -1)
    assert not [p for p in fake.posted if p.channel_id == world.text.id and "Not spoken" in p.content]


async def test_what_a_message_carries_is_said(
    world: World, start_bot: object, tone_worker: object, redis: Redis
) -> None:
    """Files and stickers are said in a few words after the text (a spoiler file only as "a spoiler"), and a
    message of files only is "Sir 600 sent an image."; the tone worker sounds the last number of each line."""
    world.alice.roles.append(world.guild.role("Game master", MANAGE_GUILD).id)
    world.guild.voice[world.bob.user.id] = world.tavern.id
    world.bob.nick = "Sir 600"
    tone_worker("--seconds", "3")  # type: ignore[operator]
    await start_bot(DIA_READ_MESSAGES="true")  # type: ignore[operator]
    chat, guild, fake = world.discord.chat, world.guild, world.discord
    await private_text(await fake.slash(guild, world.alice, world.text, "settings read-channel", channel=world.text))
    await chat(guild, world.alice, world.text, "[S1] 700")
    session = await world.session()
    await session.wait_for(lambda s: tone_runs(frame_frequencies(s)) == [700], timeout=60)

    png = b"\x89PNG\r\n\x1a\n"
    picture = await chat(guild, world.bob, world.text, "", Upload("map.png", png))
    files = Upload("a.png", png), Upload("notes.txt", b"..."), Upload("SPOILER_twist.ogg", b"OggS")
    files_and_text = await chat(guild, world.bob, world.text, "look 300", *files, stickers=["Wave 999"])
    for message in (picture, files_and_text):  # both behind the 700
        await queued(redis, guild, message)
    queue = await fake.slash(guild, world.alice, world.text, "queue")
    rows = (await queue.reply())["embeds"][0]["description"].split("\n")
    bob = f"(<@{world.bob.user.id}>)"
    assert rows[1:] == [
        f"1. Sir 600 sent an image. {bob}",
        f"2. look 300 Attached: an image, a file, a spoiler and a sticker. {bob}",  # his again: no name
    ], rows
    await session.wait_for(lambda s: tone_runs(frame_frequencies(s)) == [700, 600, 300], timeout=30)
    assert not fake.posted, "nothing was refused"


async def test_an_edited_message_is_read_again_in_its_place(
    world: World, start_bot: object, tone_worker: object, redis: Redis
) -> None:
    """A message edited while its line waits is read again, and its new line keeps the old one's place; an edit
    that only adds a link's preview changes nothing; a message that was not spoken for a mistake is read once
    its writer fixes it; an edit to the skip prefix takes the line back; a line spoken already stays spoken."""
    world.alice.roles.append(world.guild.role("Game master", MANAGE_GUILD).id)
    world.guild.voice[world.bob.user.id] = world.tavern.id
    tone_worker("--seconds", "4")  # type: ignore[operator]
    await start_bot(DIA_READ_MESSAGES="true")  # type: ignore[operator]
    chat, edit, guild, fake = world.discord.chat, world.discord.edit, world.guild, world.discord
    await private_text(
        await fake.slash(guild, world.alice, world.text, "settings read-channel", channel=world.text, skip="//",
                         names=False)
    )  # fmt: skip
    first = await chat(guild, world.alice, world.text, "[S1] 700")
    session = await world.session()
    await session.wait_for(lambda s: tone_runs(frame_frequencies(s)) == [700], timeout=60)

    typo = await chat(guild, world.bob, world.text, "[S1] 300")
    behind = await chat(guild, world.alice, world.text, "[S1] 500 see https://example.com")
    for message in (typo, behind):
        await queued(redis, guild, message)
    old_job, behind_job = await saved_job(redis, guild, typo), await saved_job(redis, guild, behind)
    await edit(guild, world.bob, typo, content="[S1] 400")
    deadline = time.monotonic() + 30
    while await saved_job(redis, guild, typo) in (old_job, None):
        assert time.monotonic() < deadline, await redis.lrange(f"dia:bot:lines:{guild.id}", 0, -1)
        await asyncio.sleep(0.02)
    rows = (await (await fake.slash(guild, world.alice, world.text, "queue")).reply())["embeds"][0]["description"]
    assert "400" in rows and "300" not in rows and rows.index("400") < rows.index("500"), rows
    await edit(guild, world.alice, behind, embeds=[{"type": "link", "url": "https://example.com"}])

    mistake = await chat(guild, world.alice, world.text, "[S1] 800 (grins)")  # read after the preview's edit
    (note,) = await fake.wait_posted(world.text)
    assert "(grins) is not a sound Dia can make" in note.content, note.content
    assert await saved_job(redis, guild, behind) == behind_job, "a link's preview is no reason to read it again"
    await edit(guild, world.alice, mistake, content="[S1] 800")
    await queued(redis, guild, mistake)
    second_thoughts = await chat(guild, world.bob, world.text, "[S1] 200")
    await queued(redis, guild, second_thoughts)
    await edit(guild, world.bob, second_thoughts, content="// [S1] 200")
    while await saved_job(redis, guild, second_thoughts) is not None:
        await asyncio.sleep(0.02)

    await session.wait_for(lambda s: tone_runs(frame_frequencies(s)) == [700, 400, 500, 800], timeout=60)
    await session.wait_for(ended, timeout=30)
    await edit(guild, world.alice, first, content="[S1] 900")  # spoken already: it stays as it was
    await asyncio.sleep(2.0)  # time enough for anything queued by mistake to start
    assert tone_runs(frame_frequencies(session)) == [700, 400, 500, 800], tone_runs(frame_frequencies(session))
    assert await redis.llen(f"dia:bot:lines:{guild.id}") == 0
    assert [p.content for p in fake.posted if p.channel_id == world.text.id] == [note.content], "one note only"


async def test_an_edit_at_the_queue_cap_replaces_its_line(
    world: World, start_bot: object, tone_worker: object, redis: Redis
) -> None:
    """An edit does not add to the server's queue, so a queue at its cap takes it too."""
    world.alice.roles.append(world.guild.role("Game master", MANAGE_GUILD).id)
    world.guild.voice[world.bob.user.id] = world.tavern.id
    tone_worker("--seconds", "3", "--pace")  # type: ignore[operator]
    await start_bot(DIA_READ_MESSAGES="true", DIA_GUILD_QUEUE_CAP="2")  # type: ignore[operator]
    chat, guild, fake = world.discord.chat, world.guild, world.discord
    await private_text(
        await fake.slash(guild, world.alice, world.text, "settings read-channel", channel=world.text, names=False)
    )
    await chat(guild, world.alice, world.text, "[S1] 700")
    session = await world.session()
    await session.wait_for(lambda s: tone_runs(frame_frequencies(s)) == [700], timeout=60)
    typo = await chat(guild, world.bob, world.text, "[S1] 300")
    await queued(redis, guild, typo)
    assert await redis.zcard(jobs.guild_queue_key(guild.id)) == 2, "the queue is at its cap"
    await fake.edit(guild, world.bob, typo, content="[S1] 400")
    await session.wait_for(lambda s: tone_runs(frame_frequencies(s)) == [700, 400], timeout=60)
    assert not fake.posted, "nothing was refused"


async def test_a_thread_read_aloud(world: World, start_bot: object, tone_worker: object) -> None:
    """A campaign's session thread can be the read channel: what members in voice write in the thread is spoken,
    and its channel is left alone."""
    world.alice.roles.append(world.guild.role("Game master", MANAGE_GUILD).id)
    thread = world.guild.thread(world.text)
    tone_worker("--seconds", "0.5")  # type: ignore[operator]
    await start_bot(DIA_READ_MESSAGES="true")  # type: ignore[operator]
    chat, slash, guild = world.discord.chat, world.discord.slash, world.guild
    chosen = await private_text(await slash(guild, world.alice, world.text, "settings read-channel", channel=thread))
    assert f"Channel read aloud: <#{thread.id}>" in chosen, chosen
    await chat(guild, world.alice, world.text, "[S1] 300")  # the thread's channel: only chatting
    await chat(guild, world.alice, thread, "[S1] 700")
    session = await world.session()
    await session.wait_for(lambda s: len(s.audio()) >= 20, timeout=60)
    await asyncio.sleep(0.5)
    heard = [f for f in frame_frequencies(session) if f is not None]
    assert heard and all(abs(f - 700) < 60 for f in heard), "only the thread is read"
