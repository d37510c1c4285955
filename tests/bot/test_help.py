"""/help against the emulator: every command the bot synced, every sound, and the server's own cast."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from tests.bot.conftest import World, private_text
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
    assert sum(len(f["name"]) + len(f["value"]) for f in embed["fields"]) + len(embed["description"]) <= 6000
    # The command list takes as many fields as it needs, in order.
    fields["Commands"] = "\n".join(f["value"] for f in embed["fields"] if f["name"].startswith("Commands"))
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

    def descriptions(entry: dict[str, object], path: str) -> list[tuple[str, str]]:
        found = [(path, str(entry.get("description", "")))]
        for option in entry.get("options") or []:  # type: ignore[attr-defined]
            found += descriptions(option, f"{path} {option['name']}")
        return found

    # discord.py cuts a description over Discord's 100 characters at a word, ending it with "…": members would
    # see half a sentence. (What Discord itself refuses, the emulator's sync refuses.)
    cut = [(path, d) for name, c in synced.items() for path, d in descriptions(c, name) if d.endswith("…")]
    assert not cut, cut
    assert "/character create" in fields["Characters"], "a server without characters is told how to make one"

    voice = MoodVoice("v1", "[S1] Welcome.", 300)
    for name in ("Bram", "Old Tom"):
        await redis.hset(
            chars_key(world.guild.id), name.casefold(), encode_character(Character(name, {DEFAULT: voice}))
        )
    assert "`[Bram]`, `[Old Tom]`" in (await _help(world))["Characters"]


async def test_status_tells_whether_workers_are_up_and_busy(
    world: World, start_bot: object, tone_worker: object
) -> None:
    await start_bot()  # type: ignore[operator]

    async def status() -> str:
        return await private_text(await world.discord.slash(world.guild, world.bob, world.text, "status"))

    assert "No voice worker is online" in await status()
    tone_worker("--seconds", "8", "--pace")  # type: ignore[operator]
    await world.say("[S1] 500")
    deadline = time.monotonic() + 20
    while "Rendering: 1 line " not in (shown := await status()):  # workers report what they do every 2 s
        assert time.monotonic() < deadline, shown
        await asyncio.sleep(0.2)
    assert "🟢 1 voice worker online" in shown and "waiting: 0" in shown, shown
    assert "• worker 1 (cpu, float32): rendering 1 of 1, 0 done" in shown, shown
    assert f"This server: in <#{world.tavern.id}>, 1 line queued" in shown, shown
