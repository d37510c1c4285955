"""/myvoice and /settings voice: who speaks text that names no speaker, kept in step with the cast."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from bot import takes
from tests.bot.conftest import World, private_text
from tests.fakediscord import MANAGE_GUILD
from tts_engine import jobs
from tts_engine.characters import DEFAULT, Character, MoodVoice, chars_key, encode_character

FRAMES = 100


async def add_character(redis: Redis, guild_id: int, name: str, *moods: str) -> dict[str, str]:
    """A character written straight to Redis, with a stored voice per mood; its voice id by mood."""
    voices = {}
    for mood in (DEFAULT, *moods):
        voice_id = f"{name}{mood}".casefold().replace(" ", "")
        record = jobs.VoiceRecord(f"I am {name}.", bytes(FRAMES * 9 * 2), FRAMES, 9)
        await redis.set(jobs.voice_key(guild_id, voice_id), jobs.encode_voice(record))
        voices[mood] = voice_id
    moods_ = {mood: MoodVoice(v, f"I am {name}.", FRAMES) for mood, v in voices.items()}
    await redis.hset(chars_key(guild_id), name.casefold(), encode_character(Character(name, moods_)))
    return voices


async def take_of(world: World, reply: dict[str, Any], redis: Redis) -> jobs.RenderJob:
    """The job a /say reply queued, as its Play again button keeps it."""
    (button,) = world.discord.message(reply).buttons()
    take = await takes.find(redis, button["custom_id"].removeprefix("dia:again:"))
    assert take is not None
    return take.job


async def test_untagged_text_speaks_in_the_chosen_voice(
    world: World, start_bot: object, tone_worker: object, redis: Redis
) -> None:
    bram = await add_character(redis, world.guild.id, "Bram", "angry")
    mira = await add_character(redis, world.guild.id, "Mira")
    world.alice.roles.append(world.guild.role("Game master", MANAGE_GUILD).id)
    world.guild.voice[world.bob.user.id] = world.tavern.id  # before the bot starts: its guild shows him there
    tone_worker("--seconds", "0.3")  # type: ignore[operator]
    await start_bot(DIA_RATE_BURST="10")  # type: ignore[operator]
    slash = world.discord.slash

    async def private(member: Any, command: str, **options: Any) -> str:
        return await private_text(await slash(world.guild, member, world.text, command, **options))

    async def public(command: str, **options: Any) -> str:
        return str((await (await slash(world.guild, world.alice, world.text, command, **options)).reply())["content"])

    # Any member picks a voice of the cast, in any case; mistakes say what exists.
    choices = await world.discord.autocomplete(
        world.guild, world.bob, world.text, "myvoice set", option="character", value="b"
    )
    assert [c["value"] for c in choices] == ["Bram", "Bram:angry"]
    assert "did you mean Bram?" in await private(world.bob, "myvoice set", character="Brom")
    assert "Bram has no mood 'sad' (moods: angry)" in await private(world.bob, "myvoice set", character="bram:sad")
    assert "new random voice for every line" in await private(world.bob, "myvoice set", character="s2")
    assert "spoken by **Bram:angry**" in await private(world.bob, "myvoice set", character="bram:ANGRY")
    assert "Dia's `[S1]`" in await private(world.alice, "myvoice show")
    assert "did you mean Mira?" in await private(world.alice, "settings voice", character="Mora")
    assert "names no speaker: **Mira**" in await private(world.alice, "settings voice", character="mira")
    assert "the server's voice, **Mira**" in await private(world.alice, "myvoice show")

    # alice's untagged text is the server's voice; bob's is his own; tags speak as they say.
    said = await world.say("440")
    assert "(as Mira) 440" in str(said["content"]), said
    assert [s.voices for s in (await take_of(world, said, redis)).segments] == [(mira[DEFAULT],)]
    said = await world.say("550 [S2] 660", world.bob)
    assert "(as Bram:angry) 550 [S2] 660" in str(said["content"]), said
    assert [s.voices for s in (await take_of(world, said, redis)).segments] == [(bram["angry"],)]
    said = await world.say("[S1] 770", world.bob)
    assert "(as" not in str(said["content"]) and (await take_of(world, said, redis)).segments[0].voices == ()

    # The choices follow the cast: a rename carries them along, a removed mood or character drops them.
    assert "is now **Brannoc**" in await public("character rename", name="bram", new_name="Brannoc")
    assert "your own choice, **Brannoc:angry**" in await private(world.bob, "myvoice show")
    assert "has moods: none" in await public("character mood remove", character="Brannoc", mood="angry")
    assert "the server's voice, **Mira**" in await private(world.bob, "myvoice show")
    assert "Deleted **Mira**" in await public("character delete", name="Mira")
    assert "Dia's `[S1]`" in await private(world.bob, "myvoice show")
    assert "names no speaker: Dia's `[S1]`" in await private(world.alice, "settings show")
    assert not await redis.hgetall(f"dia:guild:{world.guild.id}:voices"), "nothing stale is left"

    await private(world.bob, "myvoice set", character="Brannoc")
    assert "Dia's `[S1]`" in await private(world.bob, "myvoice clear")
    assert "Dia's `[S1]`" in await private(world.bob, "myvoice show")
    # The server's voice is one of its settings: /settings reset forgets it with the rest.
    assert "names no speaker: **Brannoc**" in await private(world.alice, "settings voice", character="brannoc")
    assert "names no speaker: Dia's `[S1]`" in await private(world.alice, "settings reset")


async def test_a_members_speed_applies_where_a_line_asks_for_none(
    world: World, start_bot: object, tone_worker: object, redis: Redis
) -> None:
    world.guild.voice[world.bob.user.id] = world.tavern.id
    tone_worker("--seconds", "0.3")  # type: ignore[operator]
    await start_bot(DIA_RATE_BURST="10")  # type: ignore[operator]

    async def private(member: Any, command: str, **options: Any) -> str:
        return await private_text(await world.discord.slash(world.guild, member, world.text, command, **options))

    async def speed_of(text: str, member: Any = None, **options: Any) -> float:
        return (await take_of(world, await world.say(text, member, **options), redis)).params.speed

    assert "normal speed" in await private(world.alice, "myvoice show")
    assert "at 1.25 times the normal speed" in await private(world.alice, "myvoice speed", speed=1.25)
    assert "at 1.25 times the normal speed" in await private(world.alice, "myvoice show")
    assert await speed_of("440") == 1.25
    assert await speed_of("550", speed=0.8) == 0.8, "a /say's own speed wins"
    assert await speed_of("660", world.bob) == 1.0, "another member's lines keep theirs"
    assert "normal speed" in await private(world.alice, "myvoice speed", speed=1.0)
    assert await speed_of("770") == 1.0
    assert not await redis.hgetall(f"dia:guild:{world.guild.id}:speeds"), "the normal speed is no entry"
