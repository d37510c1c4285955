"""/character end to end: the real bot, a real worker on the tiny checkpoints, the emulator, a real Redis.

A game master makes a character from a clip, designs another from three candidates, and a three-character
scene plays as one stream. Every mistake gets a clear private answer and leaves nothing behind in Redis.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from redis.asyncio import Redis

from tests.audio.test_clip import make_clip
from tests.bot.conftest import World, ended, rendered_packets
from tests.fakediscord import EPHEMERAL, MANAGE_GUILD, Upload
from tts_engine import jobs
from tts_engine.characters import Cast

OPUS_SILENCE = b"\xf8\xff\xfe"


def game_master(world: World) -> None:
    world.alice.roles.append(world.guild.role("Game master", MANAGE_GUILD).id)


async def answer(world: World, command: str, **options: Any) -> str:
    """What the bot finally told alice about `command` (after any "thinking…"), checked to be private."""
    interaction = await world.discord.slash(world.guild, world.alice, world.text, command, **options)
    await interaction.wait(lambda i: i._visible() is not None, timeout=120)
    reply = await interaction.reply()
    assert int(reply.get("flags") or 0) & EPHEMERAL, f"/{command} answers privately: {reply}"
    return str(reply["content"])


async def cast_state(redis: Redis) -> dict[str, Any]:
    """Characters and permanent voices: what must not change when a command fails."""
    state = {}
    for key in sorted(await redis.keys("dia:chars:*") + await redis.keys("dia:voice:*")):
        if await redis.ttl(key) == -1:
            state[key.decode()] = await redis.dump(key)
    return state


@pytest.mark.timeout(400)
async def test_a_cast_plays_a_scene(
    world: World, start_bot: Any, dia_worker: Any, redis: Redis, tmp_path: Path
) -> None:
    game_master(world)
    dia_worker()
    await start_bot(DIA_MAX_LINE_SECONDS="2", DIA_PREBUFFER_MS="1000", DIA_RATE_BURST="10")

    clip = make_clip(tmp_path, "bram.ogg", 6.0, "-c:a", "libopus").read_bytes()
    text = await answer(world, "character create", name="Bram", clip=Upload("bram.ogg", clip),
                        transcript="Welcome to my inn, traveler.", consent=True)  # fmt: skip
    assert "Bram** speaks with the voice of 6." in text and "Welcome to my inn, traveler." in text

    design = await world.discord.slash(
        world.guild, world.alice, world.text, "character design", name="Mira", description="a dry elven scout",
        sample_line="Keep your voice down.",
    )  # fmt: skip
    # The offer replaces the "thinking…" placeholder: the interaction's original message.
    await design.wait(lambda i: i.original is not None and bool(i.original.files), timeout=180)
    offer = design.original
    assert offer is not None and offer.ephemeral
    assert sorted(offer.files) == ["voice-1.ogg", "voice-2.ogg", "voice-3.ogg"]
    assert all(data[:4] == b"OggS" for data in offer.files.values())
    assert [b["custom_id"] for b in offer.buttons()] == ["keep-0", "keep-1", "keep-2", "more"]
    stranger = world.guild.member("stranger")
    refused = await world.discord.click(world.guild, stranger, world.text, offer, "keep-0")
    assert "Only the person designing this voice" in str((await refused.reply())["content"])
    kept = await world.discord.click(world.guild, world.alice, world.text, offer, "keep-1")
    assert "Kept voice 2 for **Mira**" in str((await kept.reply())["content"])
    assert world.discord.message(offer).buttons() == [], "the choice is made once"

    third = make_clip(tmp_path, "tom.wav", 4.0).read_bytes()
    await answer(world, "character create", name="Old Tom", clip=Upload("tom.wav", third),
                 transcript="That is my chair.", consent=True)  # fmt: skip
    cast = await Cast(redis, world.guild.id).all()
    assert [c.name for c in cast] == ["Bram", "Mira", "Old Tom"]
    mira = next(c for c in cast if c.name == "Mira")
    assert mira.description == "a dry elven scout" and mira.moods[""].transcript == "Keep your voice down."
    for voice in (v for c in cast for v in c.moods.values()):
        assert await redis.ttl(jobs.voice_key(world.guild.id, voice.voice_id)) == -1, "adopted voices stay"

    choices = await world.discord.autocomplete(world.guild, world.alice, world.text, "say", option="text", value="[Ol")
    assert [c["value"] for c in choices] == ["[Old Tom] "]

    earlier = {k.decode().rsplit(":", 1)[1] for k in await redis.keys("dia:out:*")}  # the voices' jobs
    scene = "[Bram] Hello there. [Mira] Hi. (pause 1s) [Old Tom] Welcome."
    reply = await world.say(scene)
    assert "Speaking now" in str(reply["content"])
    session = await world.session()
    await session.wait_for(ended, timeout=180)
    (sent,) = [packets for job, packets in (await rendered_packets(redis)).items() if job not in earlier]
    # The pause is digital silence, which libopus codes (CELT) as the very packet that fills an underrun, so the
    # two are told apart by count: from the first sound to the last, what was heard is what was sent, exactly.
    heard = [p.opus for p in session.packets]
    extra = heard.count(OPUS_SILENCE) - sent.count(OPUS_SILENCE)
    assert _sounding(heard) == _sounding(sent), f"one stream: every packet in order, each once ({extra} fillers)"
    # The written pause is there, as rendered silence: near-zero samples for most of its second (Opus smears
    # the edges of a silence over a few milliseconds).
    quiet = np.abs(session.pcm()[:, 0]) < 1e-3
    runs, run = [], 0
    for q in quiet:
        run = run + 1 if q else 0
        runs.append(run)
    assert max(runs) >= 0.85 * 48000


@pytest.mark.timeout(400)
async def test_mistakes_are_private_and_leave_nothing(
    world: World, start_bot: Any, dia_worker: Any, redis: Redis, tmp_path: Path
) -> None:
    game_master(world)
    dia_worker()
    await start_bot(DIA_MAX_CHARACTERS="1")
    good = make_clip(tmp_path, "good.wav", 5.0).read_bytes()
    await answer(world, "character create", name="Bram", clip=Upload("good.wav", good), transcript="Hello.",
                 consent=True)  # fmt: skip
    before = await cast_state(redis)

    async def refused(command: str, message: str, member: Any = None, **options: Any) -> None:
        who = member or world.alice
        interaction = await world.discord.slash(world.guild, who, world.text, command, **options)
        await interaction.wait(lambda i: i._visible() is not None, timeout=120)
        reply = await interaction.reply()
        assert int(reply.get("flags") or 0) & EPHEMERAL, reply
        assert message.lower() in str(reply["content"]).lower(), (command, reply["content"])
        assert await cast_state(redis) == before, f"{command} changed nothing"

    create = {"transcript": "Hello there.", "consent": True}
    long_clip = make_clip(tmp_path, "long.wav", 40.0).read_bytes()
    short_clip = make_clip(tmp_path, "short.wav", 1.0).read_bytes()
    await refused("character create", "already a character named Bram", name="bram", clip=Upload("a.wav", good),
                  **create)  # fmt: skip
    await refused("character create", "as many characters as it may have (1)", name="Mira",
                  clip=Upload("a.wav", good), **create)  # fmt: skip
    await refused("character mood add", "no character named Brom", character="Brom", mood="angry",
                  clip=Upload("a.wav", good), **create)  # fmt: skip
    await refused("character mood add", "that clip cannot be a voice: the file is not audio", character="Bram",
                  mood="angry", clip=Upload("a.wav", b"plain text, not audio" * 50), **create)  # fmt: skip
    await refused("character mood add", "that clip cannot be a voice: the clip is 40.0 s long", character="Bram",
                  mood="angry", clip=Upload("long.wav", long_clip), **create)  # fmt: skip
    await refused("character mood add", "that clip cannot be a voice: the clip is 1.0 s long", character="Bram",
                  mood="angry", clip=Upload("short.wav", short_clip), **create)  # fmt: skip
    await refused("character mood add", "the limit is 10 MiB", character="Bram", mood="angry",
                  clip=Upload("big.wav", b"\0" * (10 * 2**20 + 1)), **create)  # fmt: skip
    await refused("character mood add", "consent:True", character="Bram", mood="angry", clip=Upload("a.wav", good),
                  transcript="Hello.", consent=False)  # fmt: skip
    await refused("character create", "consent:True", name="Mira", clip=Upload("a.wav", good), transcript="Hello.",
                  consent=False)  # fmt: skip
    await refused("character design", "no character named Mira to give a mood; design it without a mood first",
                  name="Mira", description="a scout", mood="angry")  # fmt: skip
    await refused("character show", "no character named Mira", name="Mira")
    await refused("character export", "no character named Mira", name="Mira")
    await refused("character import", "the file is 16.0 MiB; an export file is at most 16 MiB",
                  file=Upload("cast.json", b" " * (16 * 2**20 + 1)))  # fmt: skip
    await refused("character mood add", "cannot be a mood", character="Bram", mood="!!", clip=Upload("a.wav", good),
                  **create)  # fmt: skip
    await refused("character delete", "needs the Manage Server permission", member=world.bob, name="Bram")
    await refused("character import", "not a character export", file=Upload("cast.json", b'{"format": 1}'))
    exported = json.loads(await Cast(redis, world.guild.id).export())
    exported["characters"][0]["moods"][""]["codes"] = "AAAA"
    await refused("character import", "Bram's voice in the file is damaged",
                  file=Upload("cast.json", json.dumps(exported).encode()))  # fmt: skip
    await refused("character import", "already exist here: Bram",
                  file=Upload("cast.json", await Cast(redis, world.guild.id).export()))  # fmt: skip
    await refused("say", "no character named Brom in this server (did you mean [Bram]?)", text="[Brom] Hi.")
    await refused("say", "Bram has no mood 'sad'", text="[Bram:sad] Hi.")
    # Voices the worker made for refused requests are pending: they expire on their own.
    for key in await redis.keys("dia:voice:*"):
        assert key.decode() in before or 0 < await redis.ttl(key) <= jobs.PENDING_VOICE_TTL


@pytest.mark.timeout(400)
async def test_design_again_then_list_show_rename_and_moods(
    world: World, start_bot: Any, dia_worker: Any, redis: Redis, tmp_path: Path
) -> None:
    game_master(world)
    dia_worker()
    await start_bot(DIA_MAX_LINE_SECONDS="1", DIA_RATE_BURST="10")
    empty = await world.discord.slash(world.guild, world.alice, world.text, "character list")
    assert "No characters yet" in str((await empty.reply())["content"])
    design = await world.discord.slash(world.guild, world.alice, world.text, "character design", name="Mira",
                                       description="a scout")  # fmt: skip
    await design.wait(lambda i: i.original is not None and bool(i.original.files), timeout=180)
    first = design.original
    assert first is not None
    more = await world.discord.click(world.guild, world.alice, world.text, first, "more")
    await more.wait(lambda i: bool(i.responses))
    assert world.discord.message(first).buttons() == [], "the first offer is closed"
    await design.wait(lambda i: bool(i.followups) and bool(i.followups[-1].files), timeout=180)
    second = design.followups[-1]
    assert second.ephemeral and sorted(second.files) == ["voice-1.ogg", "voice-2.ogg", "voice-3.ogg"]
    assert second.files != first.files, "three new voices"
    kept = await world.discord.click(world.guild, world.alice, world.text, second, "keep-2")
    assert "Kept voice 3 for **Mira**" in str((await kept.reply())["content"])

    listing = await world.discord.slash(world.guild, world.alice, world.text, "character list")
    (listed,) = (await listing.reply())["embeds"]
    assert listed["title"] == "Characters (1)" and "**Mira** (moods: none): a scout" in listed["description"], listed
    showing = await world.discord.slash(world.guild, world.alice, world.text, "character show", name="mira")
    (shown,) = (await showing.reply())["embeds"]
    assert shown["title"] == "Mira" and "**Mira**: a scout" in shown["description"], shown
    assert "“Well met, traveler." in shown["description"], shown
    renamed = await world.discord.slash(world.guild, world.alice, world.text, "character rename", name="Mira",
                                        new_name="Mira Swift")  # fmt: skip
    assert "Mira is now **Mira Swift**" in str((await renamed.reply())["content"])
    assert [c.name for c in await Cast(redis, world.guild.id).all()] == ["Mira Swift"]
    names = await world.discord.autocomplete(world.guild, world.alice, world.text, "character show", option="name",
                                             value="mi")  # fmt: skip
    assert [c["value"] for c in names] == ["Mira Swift"]
    names = await world.discord.autocomplete(world.guild, world.alice, world.text, "character mood remove",
                                             option="character", value="swift")  # fmt: skip
    assert [c["value"] for c in names] == ["Mira Swift"], "names containing what was typed come too"

    # A mood designed for the character, and another copied from a clip.
    angry = await world.discord.slash(world.guild, world.alice, world.text, "character design", name="mira swift",
                                      description="when crossed", mood="angry")  # fmt: skip
    await angry.wait(lambda i: i.original is not None and bool(i.original.files), timeout=180)
    assert angry.original is not None and "Three voices for Mira Swift (angry)" in angry.original.content
    kept = await world.discord.click(world.guild, world.alice, world.text, angry.original, "keep-0")
    assert "Kept voice 1 for **Mira Swift**" in str((await kept.reply())["content"])
    clip = make_clip(tmp_path, "calm.wav", 5.0).read_bytes()
    calm = await answer(world, "character mood add", character="Mira Swift", mood="calm",
                        clip=Upload("calm.wav", clip), transcript="All is well.", consent=True)  # fmt: skip
    assert "Mira Swift** has a new mood: `[Mira Swift:calm]` (5.0 s of your clip)" in calm, calm
    (mira,) = await Cast(redis, world.guild.id).all()
    assert sorted(mira.moods) == ["", "angry", "calm"] and mira.moods["calm"].transcript == "All is well."
    assert mira.description == "a scout", "a mood's design leaves the character's description alone"


def _sounding(packets: list[bytes]) -> list[bytes]:
    """From the first packet that is not silence to the last."""
    sound = [i for i, p in enumerate(packets) if p != OPUS_SILENCE]
    return packets[sound[0] : sound[-1] + 1]
