"""The cast store on a real redis-server: every change whole or not at all, pending voices adopted or expired."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import numpy as np
import pytest
from redis.asyncio import Redis

from tts_engine import jobs
from tts_engine.characters import DEFAULT, MAX_MOODS, Cast, CastError, chars_key, clean_name, read_export

GUILD = 77


async def pending(
    redis: Redis, voice_id: str, transcript: str = "Welcome to my inn.", frames: int = 430, guild: int = GUILD
) -> str:
    """A voice as a worker leaves it: stored with a TTL, waiting for a character."""
    codes = np.random.default_rng(frames).integers(0, 1024, size=(frames, 9)).astype("<i2")
    record = jobs.VoiceRecord(transcript=transcript, codes=codes.tobytes(), frames=frames, channels=9)
    await redis.set(jobs.voice_key(guild, voice_id), jobs.encode_voice(record), ex=jobs.PENDING_VOICE_TTL)
    return voice_id


def vid(n: int) -> str:
    return f"{n:032x}"


async def snapshot(redis: Redis) -> dict[bytes, Any]:
    keys = sorted(await redis.keys("dia:*"))
    return {k: (await redis.dump(k), await redis.ttl(k)) for k in keys}


async def test_create_adopts_the_pending_voice(redis: Redis) -> None:
    cast = Cast(redis, GUILD)
    character = await cast.create("Bram", await pending(redis, vid(1)), mood="calm", created_by=5)
    assert character.name == "Bram" and set(character.moods) == {DEFAULT, "calm"}
    assert character.moods[DEFAULT].voice_id == vid(1) and character.moods[DEFAULT].frames == 430
    assert await redis.ttl(jobs.voice_key(GUILD, vid(1))) == -1, "kept for good"
    assert (await cast.get("bram")) == character, "names are found in any case"
    assert await cast.moods() == {"Bram": frozenset({"calm"})}


@pytest.mark.parametrize(
    ("name", "message"),
    [("", "cannot be a name"), ("a" * 33, "cannot be a name"), ("Bram!", "cannot be a name"),
     ("s1", "one of Dia's own voices"), ("_x", "cannot be a name")],
)  # fmt: skip
async def test_names_are_checked(redis: Redis, name: str, message: str) -> None:
    with pytest.raises(CastError, match=message):
        await Cast(redis, GUILD).create(name, await pending(redis, vid(1)))
    assert await redis.hlen(chars_key(GUILD)) == 0


def test_names_allow_letters_digits_spaces_dashes_underscores() -> None:
    assert clean_name("  Old   Bram_2-the  Elder ") == "Old Bram_2-the Elder"
    assert clean_name("Éowyn") == "Éowyn"


async def test_duplicate_cap_and_expired_voice_leave_nothing(redis: Redis) -> None:
    cast = Cast(redis, GUILD, cap=2)
    await cast.create("Bram", await pending(redis, vid(1)))
    before = await snapshot(redis)
    with pytest.raises(CastError, match="already a character named Bram"):
        await cast.create("BRAM", await pending(redis, vid(2)))
    assert await redis.ttl(jobs.voice_key(GUILD, vid(2))) > 0, "the unused voice still expires"
    await redis.delete(jobs.voice_key(GUILD, vid(2)))
    with pytest.raises(CastError, match="expired before it was kept"):
        await cast.create("Mira", vid(3))
    assert await snapshot(redis) == before
    await cast.create("Mira", await pending(redis, vid(4)))
    with pytest.raises(CastError, match=r"has as many characters as it may have \(2\)"):
        await cast.create("Tom", await pending(redis, vid(5)))
    assert [c.name for c in await cast.all()] == ["Bram", "Mira"]


async def test_two_creations_of_one_name_at_once(redis: Redis) -> None:
    cast = Cast(redis, GUILD)
    ids = [await pending(redis, vid(i)) for i in range(1, 9)]
    results = await asyncio.gather(*(cast.create("Bram", i) for i in ids), return_exceptions=True)
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, CastError) for r in results if isinstance(r, BaseException))
    assert len(await cast.all()) == 1


async def test_moods_rename_delete(redis: Redis) -> None:
    cast = Cast(redis, GUILD)
    await cast.create("Bram", await pending(redis, vid(1)))
    bram = await cast.add_mood("bram", "Angry", await pending(redis, vid(2), "Out of my inn!", 300))
    assert bram.mood_names == {"Angry"} and await redis.ttl(jobs.voice_key(GUILD, vid(2))) == -1
    with pytest.raises(CastError, match="already has a mood named angry"):
        await cast.add_mood("Bram", "angry", await pending(redis, vid(3)))
    with pytest.raises(CastError, match="no mood named sad"):
        await cast.remove_mood("Bram", "sad")
    with pytest.raises(CastError, match=r"no character named Brom \(did you mean Bram\?\)"):
        await cast.add_mood("Brom", "sad", await pending(redis, vid(4)))
    bram = await cast.remove_mood("Bram", "ANGRY")
    assert bram.mood_names == set() and not await redis.exists(jobs.voice_key(GUILD, vid(2)))

    await cast.create("Mira", await pending(redis, vid(5)))
    with pytest.raises(CastError, match="already a character named Mira"):
        await cast.rename("Bram", "mira")
    renamed = await cast.rename("Bram", "Old Bram")
    assert renamed.moods == bram.moods and await cast.get("Bram") is None
    assert (await cast.rename("old bram", "OLD BRAM")).name == "OLD BRAM", "a change of case is a rename too"

    deleted = await cast.delete("old bram")
    assert not await redis.exists(jobs.voice_key(GUILD, deleted.moods[DEFAULT].voice_id))
    assert [c.name for c in await cast.all()] == ["Mira"]


async def test_a_character_has_at_most_max_moods(redis: Redis) -> None:
    cast = Cast(redis, GUILD)
    await cast.create("Bram", await pending(redis, vid(1)))
    for n in range(MAX_MOODS):
        await cast.add_mood("Bram", f"mood{n}", await pending(redis, vid(100 + n)))
    with pytest.raises(CastError, match=f"Bram has {MAX_MOODS} moods, the most"):
        await cast.can_add_mood("bram", "one more")
    with pytest.raises(CastError, match=f"Bram has {MAX_MOODS} moods, the most"):
        await cast.add_mood("Bram", "one more", await pending(redis, vid(99)))
    with pytest.raises(CastError, match="already has a mood named MOOD3"):
        await cast.can_add_mood("Bram", "MOOD3")
    with pytest.raises(CastError, match=r"no character named Brom \(did you mean Bram\?\)"):
        await cast.can_add_mood("Brom", "sad")
    await cast.remove_mood("Bram", "mood0")
    assert (await cast.can_add_mood("Bram", "one more")).name == "Bram", "room again"

    body = json.loads(await cast.export())
    body["characters"][0]["moods"]["extra"] = body["characters"][0]["moods"]["mood1"]
    body["characters"][0]["moods"]["extra2"] = body["characters"][0]["moods"]["mood1"]
    with pytest.raises(CastError, match=f"Bram in the file has {MAX_MOODS + 1} moods; a character may have"):
        await Cast(redis, GUILD + 1).import_(read_export(json.dumps(body).encode()))


async def test_export_then_import_elsewhere(redis: Redis) -> None:
    cast = Cast(redis, GUILD)
    await cast.create("Bram", await pending(redis, vid(1)), created_by=5)
    await cast.add_mood("Bram", "angry", await pending(redis, vid(2), "Out!", 200))
    await cast.create("Mira", await pending(redis, vid(3), "Hello.", 300))
    data = await cast.export()
    other = Cast(redis, GUILD + 1)
    made = await other.import_(read_export(data), created_by=9)
    assert [c.name for c in made] == ["Bram", "Mira"]
    for original, copy in zip(await cast.all(), await other.all(), strict=True):
        assert original.name == copy.name and set(original.moods) == set(copy.moods)
        for mood in original.moods:
            a = await redis.get(jobs.voice_key(GUILD, original.moods[mood].voice_id))
            b = await redis.get(jobs.voice_key(GUILD + 1, copy.moods[mood].voice_id))
            assert a == b, "the same transcript and codes"
    with pytest.raises(CastError, match="already exist here: Bram, Mira"):
        await other.import_(read_export(data))
    only = json.loads(await cast.export(["mira"]))
    assert [c["name"] for c in only["characters"]] == ["Mira"]


def _broken(data: bytes, change: Any) -> bytes:
    body = json.loads(data)
    change(body)
    return json.dumps(body).encode()


def _codes(body: dict[str, Any], values: np.ndarray) -> None:
    body["characters"][0]["moods"][""]["codes"] = base64.b64encode(values.astype("<i2").tobytes()).decode()


CORRUPT = [
    (lambda d: b"\x89PNG not json", "not JSON"),
    (lambda d: b'{"format": "something else"}', "not a character export of this bot"),
    (lambda d: _broken(d, lambda b: b.update(version=99)), "export version 99"),
    (lambda d: _broken(d, lambda b: b.update(characters=[])), "has no characters"),
    (lambda d: _broken(d, lambda b: b["characters"][0].update(name="S2")), "one of Dia's own voices"),
    (lambda d: _broken(d, lambda b: b["characters"].append(b["characters"][0])), "has Bram twice"),
    (lambda d: _broken(d, lambda b: b["characters"][0]["moods"].pop("")), "no default voice"),
    (lambda d: _broken(d, lambda b: b["characters"][0]["moods"][""].update(codes="%%%")), "damaged"),
    (lambda d: _broken(d, lambda b: b["characters"][0]["moods"][""].update(frames=5)), "damaged"),
    (lambda d: _broken(d, lambda b: _codes(b, np.full((430, 9), 2000))), "codes outside 0-1023"),
    (lambda d: _broken(d, lambda b: _codes(b, np.full((430, 9), -1))), "codes outside 0-1023"),
    (lambda d: _broken(d, lambda b: b["characters"][0]["moods"][""].update(channels=4)), "expected up to"),
]


@pytest.mark.parametrize(("corrupt", "message"), CORRUPT)
async def test_a_corrupt_import_writes_nothing(redis: Redis, corrupt: Any, message: str) -> None:
    cast = Cast(redis, GUILD)
    await cast.create("Bram", await pending(redis, vid(1)))
    await cast.create("Mira", await pending(redis, vid(2)))
    data = corrupt(await cast.export())
    target = Cast(redis, GUILD + 1)
    before = await snapshot(redis)
    with pytest.raises(CastError, match=message):
        await target.import_(read_export(data))
    assert await snapshot(redis) == before


async def test_import_beyond_the_cap_writes_nothing(redis: Redis) -> None:
    cast = Cast(redis, GUILD)
    for i in range(3):
        await cast.create(f"Npc {i}", await pending(redis, vid(i + 1)))
    target = Cast(redis, GUILD + 1, cap=4)
    await target.create("Local", await pending(redis, vid(9), guild=GUILD + 1))
    await target.create("Other", await pending(redis, vid(10), guild=GUILD + 1))
    before = await snapshot(redis)
    with pytest.raises(
        CastError, match=r"the file.s characters \(3\) and this server.s \(2\) are more than the 4 it may have"
    ):
        await target.import_(read_export(await cast.export()))
    assert await snapshot(redis) == before
