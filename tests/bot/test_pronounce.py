"""/pronounce: a server's respellings reach what Dia reads, never its tags or cues; who may change them."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.errors import UserFacingError
from bot.pages import paginate
from bot.pronunciations import Pronunciation, Pronunciations, Respeller, entry, exported, from_export
from tests.bot.conftest import World, private_text
from tests.bot.test_my_voice import add_character, take_of
from tests.fakediscord import EPHEMERAL, MANAGE_GUILD, Upload
from tts_engine.characters import Cast
from tts_engine.script import Pause, Turn, parse


def test_whole_words_in_any_case_longest_first() -> None:
    respell = Respeller(
        [Pronunciation("Vex", "Vecks"), Pronunciation("Lord Vex", "Lord Veeks"), entry("D&D", "D and D")]
    )
    assert (
        respell.text("vex, VEX! Lord Vex met Vexa and LORD   vex.")
        == "Vecks, Vecks! Lord Veeks met Vexa and LORD   Vecks."
    )
    assert respell.text("We play d&d tonight") == "We play D and D tonight"
    assert Respeller([]).text("vex") == "vex"


def test_cues_tags_and_pauses_are_left_alone() -> None:
    respell = Respeller([Pronunciation("laughs", "laffs"), Pronunciation("Bram", "Brahm")])
    items = parse("[Bram] Bram laughs (laughs) (pause 1s) [S2] (LAUGHS) no", characters={"Bram": frozenset()})
    respelled = respell.script(items)
    turns = [i for i in respelled if isinstance(i, Turn)]
    assert [t.text for t in turns] == ["Brahm laffs (laughs)", "(LAUGHS) no"]
    assert [t.speaker for t in turns] == ["Bram", "S2"] and any(isinstance(i, Pause) for i in respelled)


@pytest.mark.parametrize(
    ("word", "sounds", "message"),
    [
        ("--", "x", "the word needs at least one letter or digit"),
        ("Xyr", "[S2] gotcha", "the respelling cannot hold '['"),
        ("Xyr", "Zeer (laughs)", "cannot hold '('"),
        ("Xyr\u200b", "Zeer", "the word holds an invisible control character (U+200B)"),
        ("x" * 41, "y", "the word is 41 characters; at most 40"),
    ],
)
def test_bad_entries_say_what_to_change(word: str, sounds: str, message: str) -> None:
    with pytest.raises(UserFacingError, match=re.escape(message)):
        entry(word, sounds)


async def test_the_store_caps_replaces_and_removes(redis: Redis) -> None:
    store = Pronunciations(redis, cap=2)
    await store.set(1, entry("Xyrrith", "Zeer-ith"))
    await store.set(1, entry("Vex", "Vecks"))
    await store.set(1, entry("xyrrith", "Zeer-rith"))  # a replacement, not a third entry
    with pytest.raises(UserFacingError, match="has 2 pronunciations, the most it may have"):
        await store.set(1, entry("Orc", "Ork"))
    await store.set(2, entry("Orc", "Ork"))  # another server has its own
    assert await store.all(1) == [Pronunciation("Vex", "Vecks"), Pronunciation("xyrrith", "Zeer-rith")]
    assert await store.remove(1, "  VEX ") == Pronunciation("Vex", "Vecks")
    assert await store.remove(1, "vex") is None
    assert [p.word for p in await store.all(1)] == ["xyrrith"]


async def test_a_respelled_word_is_what_the_worker_reads(
    world: World, start_bot: object, tone_worker: object, redis: Redis
) -> None:
    await add_character(redis, world.guild.id, "Xyrrith")
    world.alice.roles.append(world.guild.role("Game master", MANAGE_GUILD).id)  # known to the bot at its login
    tone_worker("--seconds", "0.3")  # type: ignore[operator]
    await start_bot(DIA_RATE_BURST="10")  # type: ignore[operator]
    slash = world.discord.slash

    async def reply(member: Any, command: str, **options: Any) -> dict[str, Any]:
        return await (await slash(world.guild, member, world.text, command, **options)).reply()

    async def private(member: Any, command: str, **options: Any) -> str:
        return await private_text(await slash(world.guild, member, world.text, command, **options))

    # Changing them is for the cast's editors; anyone may read them.
    assert "Changing pronunciations needs the Manage Server permission" in await private(
        world.bob, "pronounce set", word="Xyrrith", sounds_like="660"
    )
    assert "respells no words yet" in await private(world.bob, "pronounce list")
    assert "cannot hold '['" in await private(world.alice, "pronounce set", word="Xyrrith", sounds_like="[S2] 660")
    said = await reply(world.alice, "pronounce set", word="xyrrith", sounds_like="660")
    assert "**xyrrith** → 660" in said["content"] and not int(said.get("flags") or 0), said
    await reply(world.alice, "pronounce set", word="Tom", sounds_like="Tohm")

    # The spoken words are respelled, the character tag of the same name is not; the reply shows what was typed.
    said = await world.say("[Xyrrith] I am XYRRITH (laughs) [S2] Hail Xyrrith the Great")
    assert "I am XYRRITH" in str(said["content"]), said
    segments = (await take_of(world, said, redis)).segments
    assert "I am 660 (laughs)" in segments[0].text and "Hail 660 the Great" in segments[0].text, segments
    assert "[S1]" in segments[0].text and "Xyrrith" not in segments[0].text.replace("[Xyrrith]", "")

    listed = (await reply(world.bob, "pronounce list"))["embeds"][0]
    assert listed["title"] == "Pronunciations (2)" and listed["description"] == "**Tom** → Tohm\n**xyrrith** → 660"
    choices = await world.discord.autocomplete(
        world.guild, world.alice, world.text, "pronounce remove", option="word", value=""
    )
    assert [c["value"] for c in choices] == ["Tom", "xyrrith"]
    assert "its own way again" in (await reply(world.alice, "pronounce remove", word="XYRRITH"))["content"]
    assert "There is no pronunciation for “Xyrrith”" in await private(world.alice, "pronounce remove", word="Xyrrith")
    said = await world.say("Hail Xyrrith 550")
    assert "Hail Xyrrith 550" in (await take_of(world, said, redis)).segments[0].text


async def test_an_import_adds_what_the_server_lacks_all_or_none(redis: Redis) -> None:
    store = Pronunciations(redis, cap=3)
    await store.set(1, entry("Xyrrith", "Zeer-ith"))
    file = [entry("XYRRITH", "Ksi-rith"), entry("Vex", "Vecks"), entry("Orc", "Ork")]
    with pytest.raises(UserFacingError, match="would give this server more than 3"):
        await store.add_missing(1, [*file, entry("Elf", "Elf")])
    assert [p.word for p in await store.all(1)] == ["Xyrrith"], "nothing added"
    assert await store.add_missing(1, file) == 2
    assert await store.all(1) == [Pronunciation("Orc", "Ork"), Pronunciation("Vex", "Vecks"),
                                  Pronunciation("Xyrrith", "Zeer-ith")]  # fmt: skip
    assert await store.add_missing(1, file) == 0, "a full server may still import what it has"


@pytest.mark.parametrize(
    ("listed", "message"),
    [
        ({"word": "Vex"}, "pronunciation 1 of the file has no word or no sounds_like"),
        ({"word": "Vex", "sounds_like": "[S2] Vecks"}, "pronunciation 1 of the file (“Vex”): the respelling cannot"),
        ("Vex", "pronunciation 1 of the file has no word"),
    ],
)
def test_a_files_pronunciations_are_checked_as_typed_ones(listed: Any, message: str) -> None:
    with pytest.raises(UserFacingError, match=re.escape(message)):
        from_export({"pronunciations": [listed]})
    assert from_export({}) == [] and from_export({"notes": "x"}) == []
    assert from_export({"pronunciations": exported([entry("Vex", "Vecks")])}) == [Pronunciation("Vex", "Vecks")]


async def test_the_cast_export_carries_the_pronunciations(world: World, start_bot: object, redis: Redis) -> None:
    await add_character(redis, world.guild.id, "Bram")
    world.alice.roles.append(world.guild.role("Game master", MANAGE_GUILD).id)
    await start_bot()  # type: ignore[operator]
    store, gid = Pronunciations(redis), world.guild.id
    await store.set(gid, entry("Xyrrith", "Zeer-ith"))
    await store.set(gid, entry("Vex", "Vecks"))

    async def reply(command: str, **options: Any) -> Any:
        interaction = await world.discord.slash(world.guild, world.alice, world.text, command, **options)
        await interaction.wait(lambda i: i._visible() is not None, timeout=60)
        return interaction

    whole = await reply("character export")
    assert "The cast, voices included, and this server's 2 pronunciations" in str((await whole.reply())["content"])
    data = whole.original.files["characters.json"]
    assert json.loads(data)["pronunciations"] == [{"word": "Vex", "sounds_like": "Vecks"},
                                                 {"word": "Xyrrith", "sounds_like": "Zeer-ith"}]  # fmt: skip
    one = await reply("character export", name="Bram")
    assert json.loads(one.original.files["characters.json"])["pronunciations"] == [], "only with the whole cast"

    # A bad pronunciation refuses the whole file before any character is added.
    await Cast(redis, gid).delete("Bram")
    damaged = json.loads(data)
    damaged["pronunciations"][1]["sounds_like"] = "Zeer (laughs)"
    refused = await reply("character import", file=Upload("cast.json", json.dumps(damaged).encode()))
    assert "Pronunciation 2 of the file (“Xyrrith”)" in str((await refused.reply())["content"])
    assert await Cast(redis, gid).all() == []

    # The server's own respelling of a word stays; what it lacks is added.
    await store.remove(gid, "Vex")
    await store.set(gid, entry("Xyrrith", "Ksi-rith"))
    imported = await reply("character import", file=Upload("cast.json", data))
    said = str((await imported.reply())["content"])
    assert "Imported 1 character: **Bram**" in said, said
    assert "And 1 pronunciation; this server keeps its own for 1 other word." in said, said
    assert await store.all(gid) == [Pronunciation("Vex", "Vecks"), Pronunciation("Xyrrith", "Ksi-rith")]


def test_rows_are_packed_into_pages_whole() -> None:
    rows = [f"row {i:02} " + "x" * 40 for i in range(30)]  # 47 characters each
    pages = paginate(rows, limit=200)
    assert [page.split("\n") for page in pages] == [rows[i : i + 4] for i in range(0, 30, 4)]
    assert all(len(page) <= 200 for page in pages)
    assert paginate(["y" * 300], limit=200) == ["y" * 199 + "…"]
    assert paginate([], limit=200) == [""]


async def test_a_long_list_turns_its_pages(world: World, start_bot: object, redis: Redis) -> None:
    await start_bot()  # type: ignore[operator]
    store = Pronunciations(redis)
    words = [f"Word{i:03}" for i in range(200)]
    for word in words:
        await store.set(world.guild.id, entry(word, f"{word} " + "spelled out " * 5))
    interaction = await world.discord.slash(world.guild, world.bob, world.text, "pronounce list")
    reply = await interaction.reply()
    assert int(reply.get("flags") or 0) & EPHEMERAL
    message = world.discord.message(reply)
    seen: list[str] = []
    footers = []
    while True:
        (embed,) = message.embeds
        assert embed["title"] == "Pronunciations (200)" and len(embed["description"]) <= 4096
        seen += [row.split("**")[1] for row in embed["description"].split("\n")]
        footers.append(embed["footer"]["text"])
        back, forward = message.buttons()
        assert back.get("disabled", False) == (len(footers) == 1)
        if forward.get("disabled"):
            break
        turned = await world.discord.click(world.guild, world.bob, world.text, message, forward["custom_id"])
        await turned.reply()
    assert seen == words, "every entry once, in order"
    pages = len(footers)
    assert pages > 1 and footers == [f"Page {n} of {pages}" for n in range(1, pages + 1)]
    turned = await world.discord.click(world.guild, world.bob, world.text, message, back["custom_id"])
    await turned.reply()
    assert message.embeds[0]["footer"]["text"] == f"Page {pages - 1} of {pages}"
