"""Where the bot may not post: a channel closed to it costs no refused request (the `discord` fixture fails a test
on any), notes on a line go to its voice channel's chat instead, and what needs a post says so up front."""

from __future__ import annotations

from tests.bot.conftest import World, private_text
from tests.fakediscord import MANAGE_GUILD
from tests.fakediscord.model import ATTACH_FILES, READ_MESSAGE_HISTORY, SEND_MESSAGES, SEND_MESSAGES_IN_THREADS


async def test_a_line_asked_for_where_the_bot_may_not_post(
    world: World, start_bot: object, tone_worker: object
) -> None:
    """Asked for in a channel the bot may only read, an exported line's file goes to the voice channel's chat; a
    line whose file could go nowhere is refused at once, saying which permission is missing where."""
    guild, discord = world.guild, world.discord
    readonly = guild.text_channel("rules", deny_bot=SEND_MESSAGES)
    crypt = guild.voice_channel("Crypt", deny_bot=ATTACH_FILES)
    guild.voice[world.bob.user.id] = crypt.id
    tone_worker("--seconds", "0.4")  # type: ignore[operator]
    await start_bot()  # type: ignore[operator]

    refused = await discord.slash(guild, world.bob, readonly, "say", text="[S1] 500", export=True)
    said = await private_text(refused)
    assert f"cannot post files in <#{readonly.id}> (I am missing Send Messages there)" in said, said
    assert f"nor in <#{crypt.id}>'s chat" in said, said
    assert discord.sessions(guild) == [], "nothing queued"

    reply = await discord.slash(guild, world.alice, readonly, "say", text="[S1] 600", export=True)
    assert "Speaking now" in str((await reply.reply())["content"])
    (posted,) = await discord.wait_posted(world.tavern)
    assert posted.content.startswith(f"🎧 <@{world.alice.user.id}>'s line") and posted.files, posted
    assert not [p for p in discord.posted if p.channel_id == readonly.id]


async def test_a_read_channel_the_bot_cannot_answer_in(world: World, start_bot: object, tone_worker: object) -> None:
    """The bot reads a channel where it may not reply: a message it does not speak gets no note (nothing is tried
    and refused), and `/settings` tells the managers why."""
    guild, discord = world.guild, world.discord
    world.alice.roles.append(guild.role("Game master", MANAGE_GUILD).id)
    tts = guild.text_channel("tts", deny_bot=READ_MESSAGE_HISTORY)
    tone_worker("--seconds", "0.4")  # type: ignore[operator]
    await start_bot(DIA_READ_MESSAGES="true")  # type: ignore[operator]
    chosen = await private_text(
        await discord.slash(guild, world.alice, world.text, "settings read-channel", channel=tts)
    )
    assert "I am missing Read Message History there, so a message that is not spoken gets no note" in chosen, chosen

    await discord.chat(guild, world.alice, tts, "[S1] Well met. (grins)")  # a mistake: not spoken
    await discord.chat(guild, world.alice, tts, "[S1] 700")
    await (await world.session()).wait_for(lambda s: len(s.audio()) >= 10, timeout=60)
    assert not discord.posted, "no note where the bot may not reply"


async def test_a_line_asked_for_in_a_thread(world: World, start_bot: object, tone_worker: object) -> None:
    """A campaign's session thread works like its channel: the exported file is posted in the thread. In a
    thread where the bot may not write (Send Messages in Threads denied on its channel), notes go to the voice
    channel's chat."""
    guild, discord = world.guild, world.discord
    session_thread = guild.thread(world.text)
    closed = guild.thread(guild.text_channel("archive", deny_bot=SEND_MESSAGES_IN_THREADS), "Old session")
    tone_worker("--seconds", "2")  # type: ignore[operator]
    await start_bot()  # type: ignore[operator]

    reply = await discord.slash(guild, world.alice, session_thread, "say", text="[S1] 600", export=True)
    assert "Speaking now" in str((await reply.reply())["content"])
    (posted,) = await discord.wait_posted(session_thread)
    assert posted.content.startswith(f"🎧 <@{world.alice.user.id}>'s line") and posted.files, posted

    reply = await discord.slash(guild, world.alice, closed, "say", text="[S1] 700")
    assert "Speaking now" in str((await reply.reply())["content"])
    voice = await world.session()
    await voice.wait_for(lambda s: len(s.audio()) >= 120, timeout=60)  # the first line's 100 packets, then this
    await discord.kick_bot(guild)
    (note,) = await discord.wait_posted(world.tavern)
    assert "I lost the voice connection" in note.content, note
