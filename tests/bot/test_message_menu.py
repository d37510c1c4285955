"""The message menu's "Speak message": a member's message, spoken as /say would speak it, from its context menu."""

from __future__ import annotations

from tests.bot.conftest import World, frame_frequencies, private_text
from tests.fakediscord import EPHEMERAL, Upload


async def test_a_message_is_spoken_from_its_menu(world: World, start_bot: object, tone_worker: object) -> None:
    tone_worker("--seconds", "0.6")  # type: ignore[operator]
    await start_bot()  # type: ignore[operator]
    # Written by bob (who is not in voice), spoken by alice; new lines and markdown, as a scene is written.
    scene = world.discord.user_message(world.bob, world.text, "> **Act I**\n[S1] The bell\nrings at *700*")
    interaction = await world.discord.message_command(world.guild, world.alice, world.text, "Speak message", scene)
    reply = await interaction.reply()
    assert not int(reply.get("flags") or 0) & EPHEMERAL, "the channel sees what is being spoken"
    content = str(reply["content"])
    assert f"Speaking now in <#{world.tavern.id}>: Act I [S1] The bell rings at 700" in content, content
    assert "-# seed " in content
    session = await world.session()
    await session.wait_for(lambda s: len(s.audio()) >= 25, timeout=60)
    heard = [f for f in frame_frequencies(session) if f is not None]
    assert heard and all(abs(f - 700) < 60 for f in heard), heard


async def test_a_message_that_cannot_be_spoken_says_why(world: World, start_bot: object, tone_worker: object) -> None:
    tone_worker()  # type: ignore[operator]
    await start_bot()  # type: ignore[operator]
    menu = world.discord.message_command
    picture = world.discord.user_message(world.bob, world.text, "", Upload("map.png", b"\x89PNG\r\n\x1a\n"))
    assert "has no text to speak" in await private_text(
        await menu(world.guild, world.alice, world.text, "Speak message", picture)
    )
    mistake = world.discord.user_message(world.bob, world.text, "[S1] Well met. (grins)")
    assert "(grins) is not a sound Dia can make" in await private_text(
        await menu(world.guild, world.alice, world.text, "Speak message", mistake)
    )
    # The same checks as /say: bob is in no voice channel.
    fine = world.discord.user_message(world.alice, world.text, "[S1] Hello.")
    assert "voice channel" in await private_text(await menu(world.guild, world.bob, world.text, "Speak message", fine))
    assert world.bot_channel() is None, "nothing was spoken"
