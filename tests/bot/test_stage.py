"""Where the bot is heard, against the emulator: on a stage it steps up to speak; it pauses while it sits in the
audience or is server-muted (Discord forwards its audio to nobody then, which the emulator records as unheard), and
goes on once it is heard again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.bot.conftest import World, frame_frequencies, make_world, private_text
from tests.fakediscord import FakeDiscord
from tests.fakediscord.model import MUTE_MEMBERS, Channel, Overwrite
from tests.fakediscord.voice import VoiceSession

LINE = 151  # packets of a 3 s line: 144000 samples and the 312-sample codec delay in 960-sample frames
LINE_6S = 301  # and of a 6 s one
REACTION = 5  # packets (100 ms) the bot may send from the audience before it hears it was sent down


def near(frequency: float | None, target: float) -> bool:
    return frequency is not None and abs(frequency - target) < 60


def tone(session: VoiceSession, hz: float) -> int:
    """How many packets carried `hz`."""
    return sum(near(f, hz) for f in frame_frequencies(session))


def on_stage(discord: FakeDiscord, name: str = "Campaign", *, moderator: bool = True) -> World:
    """A world whose alice is on a stage, with the bot a stage moderator there (Mute Members) if `moderator`."""
    world = make_world(discord, name)
    world.guild.voice[world.alice.user.id] = world.guild.stage_channel().id
    if moderator:
        world.guild.members[discord.bot.id].roles.append(world.guild.role("Stage moderator", MUTE_MEMBERS).id)
    return world


def stage_id(world: World) -> int:
    return world.guild.voice[world.alice.user.id]


async def test_on_a_stage_the_bot_steps_up_to_speak(
    discord: FakeDiscord, start_bot: object, tone_worker: object
) -> None:
    """On a stage the bot joins the audience, where nobody hears it: it steps up to speak as it joins, which takes
    Mute Members there (a stage moderator's), and without that it says so at once."""
    world, other = on_stage(discord), on_stage(discord, "Other", moderator=False)
    tone_worker("--seconds", "0.6")  # type: ignore[operator]
    await start_bot()  # type: ignore[operator]

    refused = await discord.slash(other.guild, other.alice, other.text, "say", text="[S1] 500")
    said = await private_text(refused)
    assert f"<#{stage_id(other)}> is a stage" in said and "Mute Members" in said, said
    assert other.bot_channel() is None

    assert "Speaking now" in str((await world.say("[S1] 500"))["content"])
    session = await world.session()
    await session.wait_for(lambda s: len(s.audio()) >= 10, timeout=60)
    assert world.bot_channel() == stage_id(world) and discord.bot.id not in world.guild.suppressed
    (stepped_up,) = discord.spoke_up
    assert stepped_up < session.audio()[0].arrived, "heard from its first packet"
    assert not session.unheard()


async def test_sent_to_the_audience_the_bot_pauses_until_it_is_heard_again(
    discord: FakeDiscord, start_bot: object, tone_worker: object
) -> None:
    """A stage moderator moving the bot to the audience pauses it, mid-line or between lines: nothing more is
    spent on nobody. Invited back up, or stepping up again for a `/join`, it goes on where it stopped."""
    world = on_stage(discord)
    tone_worker("--seconds", "3")  # type: ignore[operator]
    await start_bot()  # type: ignore[operator]
    for hz in (500, 1500, 700):
        await world.say(f"[S1] {hz}")
    session = await world.session()

    async def sent_down() -> int:
        """The moderator sends the bot down: it says so, and sends nothing more. How many packets it had sent."""
        await discord.seat_bot(world.guild, speaker=False)
        (posted,) = await discord.wait_posted(world.text)
        assert f"moved me to the audience of <#{stage_id(world)}>" in posted.content, posted.content
        sent = len(session.audio())
        await asyncio.sleep(0.5)
        assert len(session.audio()) <= sent + 1, "paused"
        return sent

    await session.wait_for(lambda s: len(s.audio()) >= 20, timeout=60)
    await sent_down()
    queue = await (await discord.slash(world.guild, world.alice, world.text, "queue")).reply()
    assert "paused: I am in the stage's audience" in queue["embeds"][0]["title"], queue
    await discord.seat_bot(world.guild, speaker=True)  # invited back up
    await session.wait_for(lambda s: tone(s, 1500) >= 20, timeout=30)
    assert tone(session, 500) >= LINE - 3, "the paused line played on to its end"

    await sent_down()
    skipped = await discord.slash(world.guild, world.alice, world.text, "skip")
    assert "Skipped" in str((await skipped.reply())["content"])
    await asyncio.sleep(0.5)
    assert tone(session, 700) == 0, "the next line waits while the bot is in the audience"
    joined = str((await (await discord.slash(world.guild, world.alice, world.text, "join")).reply())["content"])
    assert "Joined" in joined and "Paused" not in joined, "stepped up again"
    await session.wait_for(
        lambda s: bool(s.speaking) and s.speaking[-1][1] == 0 and tone(s, 700) >= LINE - 3, timeout=30
    )
    assert len(discord.spoke_up) == 2 and discord.bot.id not in world.guild.suppressed
    assert len(session.unheard()) <= 2 * REACTION, "only what was on its way as the moderator acted went unheard"
    assert discord.sessions(world.guild) == [session], "paused and resumed in one voice connection"


@pytest.mark.parametrize("answered", [True, False])
async def test_dragged_onto_a_stage_the_bot_steps_up_or_pauses(
    world: World, start_bot: object, tone_worker: object, answered: bool
) -> None:
    """Arriving on a stage other than by its own join (a moderator drags it there; discord.py's reconnects also
    leave and join again), the bot sits in the audience: it steps up on its own. Where it cannot, it pauses and says
    why until a moderator there invites it to speak. Not `answered`, each drag's reconnect hangs, and the bot joins
    again on a fresh connection (bot/voice_link.py, `watch`), which puts it back in the stage's audience: where it
    cannot step up it pauses again and says so, and goes on once invited once more."""
    discord = world.discord
    moderated, bare = world.guild.stage_channel("Moderated"), world.guild.stage_channel("Bare")
    world.guild.members[discord.bot.id].roles.append(world.guild.role("Stage moderator", MUTE_MEMBERS).id)
    bare.overwrites.append(Overwrite(discord.bot.id, deny=MUTE_MEMBERS, member=True))  # no moderator there
    tone_worker("--seconds", "6")  # type: ignore[operator]
    await start_bot()  # type: ignore[operator]
    await world.say("[S1] 500")
    tavern = await world.session()
    await tavern.wait_for(lambda s: len(s.audio()) >= 10, timeout=60)

    # discord.py's reconnect after a drag hangs now and then under load too, and the bot then joins the stage again on
    # a fresh connection: the line may go on in a later session than the drag's, so a channel's sessions are counted
    # together, and a pause after a rejoin is answered with another invitation.
    def sent_in(channel: Channel, unheard: bool = False) -> int:
        sessions = [s for s in discord.sessions(world.guild) if s.channel_id == channel.id]
        return sum(len(s.unheard() if unheard else s.audio()) for s in sessions)

    async def until(done: Callable[[], bool]) -> None:
        async with asyncio.timeout(30):
            while not done():
                await asyncio.sleep(0.05)

    async def dragged(stage: Channel) -> None:
        await discord.move_bot(world.guild, stage, answered=answered)
        await until(lambda: any(s.channel_id == stage.id for s in discord.sessions(world.guild)))

    await dragged(moderated)
    await until(lambda: sent_in(moderated) >= 20)
    assert discord.spoke_up and sent_in(moderated, unheard=True) <= 1, "stepped up as it went on"

    await dragged(bare)
    (posted,) = await discord.wait_posted(world.text)
    assert f"I am in the audience of <#{bare.id}>" in posted.content and "could not step up" in posted.content
    await asyncio.sleep(0.5)
    paused = sent_in(bare)
    assert paused <= 1, "paused in the audience"
    await discord.seat_bot(world.guild, speaker=True)  # a moderator there invites it to speak

    def played_out() -> bool:
        sessions = discord.sessions(world.guild)
        last, total = sessions[-1], sum(len(s.audio()) for s in sessions)
        return bool(last.speaking) and last.speaking[-1][1] == 0 and total >= LINE_6S - 2

    invited = 1
    async with asyncio.timeout(30):
        while not played_out():  # the line played on to its end in each channel
            notes = [p.content for p in discord.posted if p.channel_id == world.text.id]
            if len(notes) > invited:  # joined again after a hung reconnect: back in the audience
                assert f"I am in the audience of <#{bare.id}>" in notes[-1], notes[-1]
                invited += 1
                await discord.seat_bot(world.guild, speaker=True)
            await asyncio.sleep(0.05)
    assert invited >= (1 if answered else 2)
    assert sent_in(bare) > paused + 10, "went on once invited to speak"
    assert sent_in(bare, unheard=True) <= 1


async def test_server_muted_the_bot_pauses_until_unmuted(world: World, start_bot: object, tone_worker: object) -> None:
    """A moderator's server mute silences the bot in any channel: it pauses and says so, a `/say` meanwhile waits
    behind the paused line (the bot cannot lift a moderator's mute), and once unmuted it goes on where it was."""
    discord = world.discord
    tone_worker("--seconds", "3")  # type: ignore[operator]
    await start_bot()  # type: ignore[operator]
    await world.say("[S1] 500")
    session = await world.session()
    await session.wait_for(lambda s: len(s.audio()) >= 20, timeout=60)
    await discord.mute_bot(world.guild, muted=True)
    (posted,) = await discord.wait_posted(world.text)
    assert f"A moderator server-muted me in <#{world.tavern.id}>" in posted.content, posted.content
    sent = len(session.audio())
    said = str((await world.say("[S1] 700"))["content"])
    assert "Queued after 1 line" in said and "Paused: I am server-muted" in said, said
    queue = await (await discord.slash(world.guild, world.alice, world.text, "queue")).reply()
    assert "paused: I am server-muted" in queue["embeds"][0]["title"], queue
    joined = await (await discord.slash(world.guild, world.alice, world.text, "join")).reply()
    assert "until a moderator unmutes me" in str(joined["content"]), joined
    await asyncio.sleep(0.5)
    assert len(session.audio()) <= sent + 1, "paused"
    await discord.mute_bot(world.guild, muted=False)
    await session.wait_for(lambda s: tone(s, 700) >= LINE - 3, timeout=30)
    assert tone(session, 500) >= LINE - 3, "the paused line played on to its end, then the next"
    assert len(session.unheard()) <= REACTION
