"""/help against the emulator: every command the bot synced, every sound, and the server's own cast."""

from __future__ import annotations

from redis.asyncio import Redis

from tests.bot.conftest import World
from tests.fakediscord import EPHEMERAL
from tts_engine.characters import DEFAULT, Character, MoodVoice, chars_key, encode_character
from tts_engine.script import CUES


async def _help(world: World) -> dict[str, str]:
    interaction = await world.discord.slash(world.guild, world.bob, world.text, "help")
    reply = await interaction.reply()
    assert int(reply.get("flags") or 0) & EPHEMERAL, "help is shown only to who asked"
    (embed,) = reply["embeds"]  # type: ignore[misc]
    fields = {field["name"]: field["value"] for field in embed["fields"]}
    assert all(len(value) <= 1024 for value in fields.values()), "Discord refuses a longer embed field"
    return fields


async def test_help_names_every_command_and_sound(world: World, start_bot: object, redis: Redis) -> None:
    await start_bot()  # type: ignore[operator]
    fields = await _help(world)
    synced = world.discord.commands
    for name, command in synced.items():
        shown = f"`/{name}" if command.get("type", 1) == 1 else f"**{name}**"
        assert shown in fields["Commands"], f"{name} is missing from /help"
    subcommands = [o["name"] for o in synced["character"]["options"]]
    assert all(sub in fields["Commands"] for sub in subcommands if sub != "mood")
    assert "mood add, mood remove" in fields["Commands"]
    assert fields["Commands"].startswith("`/say`: Speak a line"), "what most members come for comes first"
    assert all(f"({cue})" in fields["Writing a line"] for cue in CUES)
    assert "/character create" in fields["Characters"], "a server without characters is told how to make one"

    voice = MoodVoice("v1", "[S1] Welcome.", 300)
    for name in ("Bram", "Old Tom"):
        await redis.hset(
            chars_key(world.guild.id), name.casefold(), encode_character(Character(name, {DEFAULT: voice}))
        )
    assert "`[Bram]`, `[Old Tom]`" in (await _help(world))["Characters"]
