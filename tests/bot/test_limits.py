"""A server at every cap still gets answers Discord takes.

The emulator refuses what Discord refuses (tests/fakediscord/limits.py: 2000 characters of text, 4096 of an embed's
description, 25 autocomplete choices of 100 characters, ...), and the `discord` fixture fails a test on any such
refusal. Here the cast, the moods and the queue are as full and their names and texts as long as the bot allows,
and every listing, each of its pages and every autocomplete is asked for.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from tests.bot.conftest import World
from tests.fakediscord import Interaction
from tts_engine.characters import DEFAULT, Character, MoodVoice, chars_key, encode_character
from tts_engine.jobs import VoiceRecord, encode_voice, voice_key

CHARACTERS, MOODS, QUEUE = 200, 20, 20  # DIA_MAX_CHARACTERS, moods a character may have, DIA_GUILD_QUEUE_CAP


def _name(i: int) -> str:
    return f"Character number {i:03} of many"[:32].ljust(32, "x")


async def _fill_the_cast(world: World, redis: Redis) -> str:
    """200 characters with the longest names and descriptions; the first has every mood, each with the longest
    name and transcript. Returns the first one's name."""
    voice = MoodVoice("v", "w" * 500, 860)
    record = VoiceRecord(voice.transcript, bytes(2 * 9 * voice.frames), voice.frames, 9)
    await redis.set(voice_key(world.guild.id, voice.voice_id), encode_voice(record))
    for i in range(CHARACTERS):
        moods = {DEFAULT: voice}
        if i == 0:
            moods |= {f"mood {m:02} " + "m" * 24: voice for m in range(MOODS)}
        character = Character(_name(i), moods, "d" * 300, world.alice.user.id)
        await redis.hset(chars_key(world.guild.id), character.name.casefold(), encode_character(character))
    return _name(0)


async def _every_page(world: World, interaction: Interaction) -> list[dict[str, Any]]:
    """The embeds of each page of a paged answer, turning ▶ until it is disabled."""
    reply = await interaction.reply()
    message = interaction.original
    assert reply["embeds"], (reply["content"], [p.content for p in world.discord.posted])
    assert message is not None
    pages = [message.embeds[0]]
    while message.buttons() and not message.buttons()[-1].get("disabled"):
        turned = await world.discord.click(
            world.guild, world.alice, world.text, message, message.buttons()[-1]["custom_id"]
        )
        await turned.reply()
        pages.append(message.embeds[0])
    return pages


async def test_a_full_server_gets_every_listing(
    world: World, start_bot: object, tone_worker: object, redis: Redis
) -> None:
    tone_worker("--seconds", "20", "--pace")  # type: ignore[operator]
    await start_bot(DIA_RATE_BURST=str(QUEUE))  # type: ignore[operator]
    first = await _fill_the_cast(world, redis)

    async def slash(command: str, /, **options: object) -> Interaction:
        return await world.discord.slash(world.guild, world.alice, world.text, command, **options)

    listed = await _every_page(world, await slash("character list"))
    assert len(listed) > 1 and sum(e["description"].count("\n") + 1 for e in listed) == CHARACTERS
    shown = await _every_page(world, await slash("character show", name=first))
    assert sum(e["description"].count("• mood") for e in shown) == MOODS
    (helped,) = (await (await slash("help")).reply())["embeds"]  # type: ignore[misc]
    assert f"and {CHARACTERS - 20} more" in helped["fields"][-1]["value"]

    names = await world.discord.autocomplete(world.guild, world.alice, world.text, "character show", option="name",
                                             value="")  # fmt: skip
    assert len(names) == 25
    tags = await world.discord.autocomplete(world.guild, world.alice, world.text, "say", option="text",
                                            value="x" * 60 + " [Char")  # fmt: skip
    assert tags and all(len(t["value"]) <= 100 for t in tags), "a choice past 100 characters is left out"

    # A full queue of the longest lines, each spoken as a character with a mood: /queue lists it all.
    line = f"[{first}:mood 00 {'m' * 24}] " + "*Why* _would_ ~~you~~ `say` " * 20
    for _ in range(QUEUE):
        said = str((await world.say(line))["content"])
        assert "🗣️" in said
    queued = await _every_page(world, await slash("queue"))
    assert sum(e["description"].count("\n") + 1 for e in queued) == QUEUE
