"""The emulator itself, against a tiny real discord.py client running in the test's own event loop.

The client is set up the way the bot points itself at the emulator (discord.http.Route.BASE,
DiscordWebSocket.DEFAULT_GATEWAY, a connector without TLS verification). Its commands have the shapes the
emulator must carry: a subcommand group with an attachment option, a subcommand with autocomplete, Views whose
buttons answer in each way a bot can, and several files on one message.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import discord
import pytest
import yarl
from discord import app_commands

from bot.errors import reply_privately
from tests.fakediscord import EPHEMERAL, FakeDiscord, Interaction, Message, Upload
from tests.fakediscord.limits import choices_problems, message_problems
from tests.fakediscord.model import Channel, Guild, Member
from tests.fakediscord.rest import command_problems

CLIP = b"RIFF" + bytes(range(256)) * 40
TAKES = {f"take{i}.ogg": b"OggS" + bytes([i]) * (1000 + i) for i in range(1, 4)}
MANIFEST = json.dumps({"takes": list(TAKES)}).encode()
NAMES = ("Bram", "Brenna", "Odile")
BUTTONS = ["why", "again", "note", "lock", "keep"]


def _takes() -> list[discord.File]:
    files = [discord.File(io.BytesIO(data), name) for name, data in TAKES.items()]
    return [*files, discord.File(io.BytesIO(MANIFEST), "takes.json")]


class Takes(discord.ui.View):
    """Buttons that answer in each way a bot can; every click is noted on the client."""

    def __init__(self) -> None:
        super().__init__(timeout=60)
        self.message: discord.Message | None = None

    @staticmethod
    def _note(interaction: discord.Interaction[Tiny], what: str) -> None:
        assert interaction.message is not None
        interaction.client.seen.append((what, interaction.message.id))

    @discord.ui.button(label="Why?", custom_id="why")
    async def why(self, interaction: discord.Interaction[Tiny], button: discord.ui.Button[Takes]) -> None:
        self._note(interaction, "why")  # CHANNEL_MESSAGE (4), private
        await interaction.response.send_message("Because.", ephemeral=True)

    @discord.ui.button(label="Again", custom_id="again")
    async def again(self, interaction: discord.Interaction[Tiny], button: discord.ui.Button[Takes]) -> None:
        self._note(interaction, "again")  # DEFERRED_CHANNEL_MESSAGE (5), then a follow-up
        await interaction.response.defer(thinking=True, ephemeral=True)
        await interaction.followup.send("Rendering again.")

    @discord.ui.button(label="Note", custom_id="note")
    async def note(self, interaction: discord.Interaction[Tiny], button: discord.ui.Button[Takes]) -> None:
        self._note(interaction, "note")  # DEFERRED_UPDATE (6): @original is now the clicked message
        await interaction.response.defer()
        await interaction.edit_original_response(content="Noted.")

    @discord.ui.button(label="Lock", custom_id="lock")
    async def lock(self, interaction: discord.Interaction[Tiny], button: discord.ui.Button[Takes]) -> None:
        self._note(interaction, "lock")  # DEFERRED_UPDATE, then an edit through the message the view is on
        await interaction.response.defer()
        for item in self.children:
            if isinstance(item, discord.ui.Button):
                item.disabled = True
        assert self.message is not None
        await self.message.edit(view=self)

    @discord.ui.button(label="Keep", custom_id="keep")
    async def keep(self, interaction: discord.Interaction[Tiny], button: discord.ui.Button[Takes]) -> None:
        self._note(interaction, "keep")  # UPDATE_MESSAGE (7): no buttons, no files
        await interaction.response.edit_message(content="Kept.", view=None, attachments=[])
        self.stop()


async def mood_add(interaction: discord.Interaction[Tiny], character: str, mood: str, clip: discord.Attachment) -> None:
    data = await clip.read()  # through discord.py's own CDN fetch
    interaction.client.seen.append(("mood add", (character, mood, clip.filename, clip.content_type, data)))
    echo = discord.File(io.BytesIO(data), "echo.wav")
    await interaction.response.send_message(f"{character} sounds {mood}.", file=echo, view=Takes())


async def show(interaction: discord.Interaction[Tiny], name: str) -> None:
    await interaction.response.send_message(f"Showing {name}.")


async def complete_names(interaction: discord.Interaction[Tiny], current: str) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=n, value=n) for n in NAMES if current.lower() in n.lower()]


async def render(interaction: discord.Interaction[Tiny], name: str) -> None:
    await interaction.response.defer(thinking=True)
    await interaction.edit_original_response(content=f"Rendered {len(TAKES)} takes for {name}.")
    view = Takes()
    view.message = await interaction.followup.send("Pick one.", files=_takes(), view=view, wait=True)


async def refuse(interaction: discord.Interaction[Tiny], name: str) -> None:
    await interaction.response.defer(thinking=True)  # public, as /say defers before joining a voice channel
    await reply_privately(interaction, f"I could not find {name}.")


async def slow(interaction: discord.Interaction[Tiny], name: str) -> None:
    await asyncio.sleep(3.2)
    try:
        await interaction.response.send_message(f"Found {name}, too late.")
    except discord.NotFound as exc:
        interaction.client.seen.append(("late", exc.code))


async def post(interaction: discord.Interaction[Tiny], name: str) -> None:
    assert isinstance(interaction.channel, discord.TextChannel)
    view = Takes()
    view.message = await interaction.channel.send(f"{name}: pick one.", files=_takes(), view=view)
    await interaction.response.send_message("Posted.", ephemeral=True)


async def say(interaction: discord.Interaction[Tiny], text: str) -> None:
    await interaction.response.send_message(text)


async def complete_speakers(interaction: discord.Interaction[Tiny], current: str) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=f"[{n}]", value=f"[{n}] ") for n in NAMES if f"[{n}]".startswith(current)]


Command = app_commands.Command[Any, ..., None]


def commands() -> list[app_commands.Group | Command]:
    """/character mood add, /character show|render|post, /say: made afresh for each client."""
    character = app_commands.Group(name="character", description="Characters")
    mood = app_commands.Group(name="mood", description="Moods", parent=character)
    mood.command(name="add", description="Add a mood clip")(mood_add)
    shown: Command = character.command(name="show", description="Show one")(show)
    shown.autocomplete("name")(complete_names)
    character.command(name="render", description="Render takes")(render)
    character.command(name="post", description="Post takes")(post)
    character.command(name="refuse", description="Defer publicly, then refuse privately")(refuse)
    character.command(name="slow", description="Answer after Discord's 3 s")(slow)
    spoken: Command = app_commands.Command(name="say", description="Say a line", callback=say)
    spoken.autocomplete("text")(complete_speakers)
    return [character, spoken]


class Tiny(discord.Client):
    """A minimal bot; `seen` notes what reached it."""

    def __init__(self, guild_id: int) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        super().__init__(intents=intents, connector=aiohttp.TCPConnector(ssl=False))
        self.guild_id = guild_id
        self.tree = app_commands.CommandTree(self)
        self.seen: list[tuple[str, Any]] = []

    async def setup_hook(self) -> None:
        guild = discord.Object(self.guild_id)
        for command in commands():
            self.tree.add_command(command, guild=guild)
        await self.tree.sync(guild=guild)


@dataclass
class Setup:
    discord: FakeDiscord
    guild: Guild
    text: Channel
    alice: Member
    client: Tiny

    async def slash(self, name: str, /, **options: Any) -> Interaction:
        return await self.discord.slash(self.guild, self.alice, self.text, name, **options)

    async def click(self, message: Any, custom_id: str) -> Interaction:
        return await self.discord.click(self.guild, self.alice, self.text, message, custom_id)

    async def rendered(self) -> tuple[Interaction, Message]:
        """/character render, once its follow-up with the takes is there."""
        interaction = await self.slash("character render", name="Bram")
        await interaction.wait(lambda i: len(i.followups) == 1)
        return interaction, interaction.followups[0]


@pytest.fixture
async def tiny(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Setup]:
    async with FakeDiscord() as fake:
        guild = fake.guild()
        text, alice = guild.text_channel(), guild.member("alice")
        settings = fake.settings()
        monkeypatch.setattr(discord.http.Route, "BASE", settings["DIA_DISCORD_API_BASE"])
        gateway = yarl.URL(settings["DIA_DISCORD_GATEWAY_URL"])
        monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", gateway)
        client = Tiny(guild.id)
        await client.login("emulated-token")
        runner = asyncio.create_task(client.connect(reconnect=False))
        try:
            await fake.ready_sent.wait()
            yield Setup(fake, guild, text, alice, client)
        finally:
            await client.close()
            await runner


async def test_a_subcommand_group_carries_an_uploaded_file(tiny: Setup) -> None:
    clip = Upload("bram.wav", CLIP, "audio/wav")
    reply = await (await tiny.slash("character mood add", character="Bram", mood="angry", clip=clip)).reply()
    assert reply["content"] == "Bram sounds angry." and reply["files"] == {"echo.wav": CLIP}
    assert tiny.client.seen == [("mood add", ("Bram", "angry", "bram.wav", "audio/wav", CLIP))]
    shown = await (await tiny.slash("character show", name="Odile")).reply()
    assert shown["content"] == "Showing Odile.", "an option called `name` is no clash for slash()"


async def test_every_file_of_a_follow_up_is_kept_and_served(tiny: Setup) -> None:
    interaction, takes = await tiny.rendered()
    assert interaction.deferred and interaction.original is not None
    assert interaction.original.content == "Rendered 3 takes for Bram.", "PATCH @original edits the placeholder"
    expected = {**TAKES, "takes.json": MANIFEST}
    assert takes.files == expected and interaction.replies()[-1]["files"] == expected
    assert [a.content_type for a in takes.attachments] == ["audio/ogg"] * 3 + ["application/json"]
    async with aiohttp.ClientSession() as session:
        for attachment in takes.attachments:
            async with session.get(attachment.url) as response:
                assert await response.read() == attachment.data


async def test_buttons_on_a_follow_up_reach_their_view(tiny: Setup) -> None:
    _, takes = await tiny.rendered()
    assert [b["custom_id"] for b in takes.buttons()] == BUTTONS
    why = await (await tiny.click(takes, "why")).reply()
    assert why["content"] == "Because." and why["flags"] & EPHEMERAL
    again = await tiny.click(takes, "again")
    again_reply = await again.reply()
    assert again.deferred and again_reply["content"] == "Rendering again."
    assert again_reply["flags"] & EPHEMERAL, "the first follow-up after a defer keeps the defer's visibility"
    noted = await (await tiny.click(takes, "note")).reply()
    assert noted["id"] == str(takes.id) and takes.content == "Noted." and len(takes.attachments) == 4
    await tiny.click(takes, "lock")
    await tiny.discord.wait_until(lambda: all(b.get("disabled") for b in takes.buttons()))
    with pytest.raises(ValueError, match="disabled"):
        await tiny.click(takes, "keep")
    assert tiny.client.seen == [(what, takes.id) for what in ("why", "again", "note", "lock")]


async def test_an_update_replaces_a_responses_buttons_and_files(tiny: Setup) -> None:
    clip = Upload("bram.wav", CLIP)
    reply = await (await tiny.slash("character mood add", character="Bram", mood="calm", clip=clip)).reply()
    keep = await tiny.click(reply, "keep")
    assert (await keep.reply())["content"] == "Kept."
    message = tiny.discord.message(reply)
    assert message.content == "Kept." and message.buttons() == [] and message.files == {}
    assert len(reply["components"][0]["components"]) == len(BUTTONS), "a reply is a snapshot"
    with pytest.raises(LookupError, match="keep"):
        await tiny.click(reply, "keep")


async def test_a_refusal_after_a_public_defer_stays_private(tiny: Setup) -> None:
    interaction = await tiny.slash("character refuse", name="Bram")
    await interaction.wait(lambda i: len(i.followups) == 1)
    assert interaction.original is not None and interaction.original.deleted, "the public placeholder is gone"
    (refusal,) = interaction.followups
    assert refusal.content == "I could not find Bram." and refusal.flags & EPHEMERAL


async def test_buttons_on_a_channel_message(tiny: Setup) -> None:
    assert (await (await tiny.slash("character post", name="Bram")).reply())["content"] == "Posted."
    (posted,) = await tiny.discord.wait_posted(tiny.text)
    assert posted.files == {**TAKES, "takes.json": MANIFEST}
    assert [c["custom_id"] for row in posted.components for c in row["components"]] == BUTTONS
    keep = await tiny.click(posted, "keep")
    assert (await keep.reply())["content"] == "Kept."
    assert posted.message is not None and posted.message.buttons() == [] and posted.content.endswith("pick one.")


async def test_autocomplete_returns_the_choices(tiny: Setup) -> None:
    where = (tiny.guild, tiny.alice, tiny.text)
    speakers = await tiny.discord.autocomplete(*where, "say", option="text", value="[Br")
    assert speakers == [{"name": "[Bram]", "value": "[Bram] "}, {"name": "[Brenna]", "value": "[Brenna] "}]
    names = await tiny.discord.autocomplete(*where, "character show", option="name", value="dil")
    assert names == [{"name": "Odile", "value": "Odile"}]


async def test_what_discord_refuses_is_refused(tiny: Setup) -> None:
    interaction = await tiny.slash("character show", name="Bram")
    await interaction.reply()
    callback = f"{discord.http.Route.BASE}/interactions/{interaction.id}/{interaction.token}/callback"
    async with aiohttp.ClientSession() as session:
        async with session.post(callback, json={"type": 4, "data": {"content": "again"}}) as response:
            assert response.status == 400 and (await response.json())["code"] == 40060
        async with session.get(f"{tiny.discord.store.base}/attachments/1/2/missing.wav") as response:
            assert response.status == 404


async def test_a_message_discord_would_refuse_is_refused(tiny: Setup) -> None:
    """Discord answers an over-long or empty message with a 400 and the member sees nothing: the emulator
    refuses it too, and a test waiting for that answer fails at once, saying why."""
    with pytest.raises(AssertionError, match=r"refused what the bot sent about /say: content: 2001 characters"):
        await (await tiny.slash("say", text="x" * 2001)).reply()
    with pytest.raises(AssertionError, match="Cannot send an empty message"):
        await (await tiny.slash("say", text="")).reply()
    assert tiny.discord.store.refused == [
        "/say's answer: content: 2001 characters, more than 2000",
        "/say's answer: Cannot send an empty message",
    ]
    assert (await (await tiny.slash("say", text="x" * 2000)).reply())["content"] == "x" * 2000


def test_message_limits() -> None:
    """Each of Discord's limits on a message and an autocomplete answer, at and past its edge."""
    button = {"type": 2, "style": 1, "label": "Keep", "custom_id": "keep"}
    row = {"type": 1, "components": [{**button, "custom_id": f"b{i}"} for i in range(5)]}
    fine = {"content": "x" * 2000, "embeds": [{"title": "t" * 256, "description": "d" * 4096}], "components": [row]}
    assert message_problems(fine, [], new=True) == []
    assert message_problems({}, [Upload("a.ogg", b"OggS")], new=True) == [], "a file alone is a message"
    assert message_problems({"content": ""}, [], new=False) == [], "an edit may leave the text empty"
    link = {"type": 2, "style": 5, "label": "Docs", "url": "https://example.com"}
    too_much = {
        "content": "x" * 2001,
        "embeds": [{"description": "d" * 4097, "footer": {"text": "f" * 2000}}],
        "components": [
            {"type": 1, "components": [{**button, "custom_id": f"b{i}"} for i in range(6)]},
            {"type": 1, "components": [{**button, "label": "l" * 81}, button, link]},
            {"type": 1, "components": [{"type": 3, "custom_id": "pick", "options": []}]},
        ],
    }
    assert message_problems(too_much, [Upload("big.ogg", bytes(10 * 2**20 + 1))], new=True) == [
        "content: 2001 characters, more than 2000",
        "embeds.0.description: 4097 characters, more than 4096",
        "embeds: 6097 characters in all, more than 6000",
        "components.0: 6 buttons, more than 5",
        "components.1.label: 81 characters, more than 80",
        "components.2.options: 0, not 1-25",
        "components: custom_id 'keep' is used twice",
        f"files: big.ogg is {10 * 2**20 + 1} bytes, more than {10 * 2**20}",
    ]
    choices = [{"name": f"c{i}", "value": f"c{i}"} for i in range(25)]
    assert choices_problems({"choices": choices}) == []
    assert choices_problems({"choices": [*choices, {"name": "", "value": "v" * 101}]}) == [
        "choices: 26, more than 25",
        "choices.25.name: 0 characters, not 1-100",
        "choices.25.value: 101 characters, more than 100",
    ]


async def test_an_answer_after_3_s_is_refused(tiny: Setup) -> None:
    """Discord gives an interaction's first answer 3 s: later, the bot gets 10062, and a test that waits for the
    answer fails at once, saying why."""
    interaction = await tiny.slash("character slow", name="Bram")
    with pytest.raises(AssertionError, match=r"answered /character slow 3\.\d s after it was used, past Discord's 3 s"):
        await interaction.reply()
    for _ in range(200):  # the client hears of the refusal just after the test does
        if tiny.client.seen:
            break
        await asyncio.sleep(0.01)
    assert tiny.client.seen == [("late", 10062)] and not interaction.responses


def test_commands_discord_would_refuse_are_refused() -> None:
    """Discord refuses a whole sync over one bad field, which leaves a bot with no commands: the emulator does
    too, so every bot test checks the bot's real commands against these limits as it syncs them."""
    good = {"name": "say", "type": 1, "description": "Speak.", "options": [
        {"name": "text", "type": 3, "description": "What to say", "required": True},
        {"name": "speed", "type": 10, "description": "How fast"},
    ]}  # fmt: skip
    assert command_problems(good) == []
    assert command_problems({"name": "Speak message", "type": 3, "description": ""}) == [], "a menu may"
    bad = {"name": "Say", "type": 1, "description": "x" * 101, "options": [
        {"name": "speed", "type": 10, "description": ""},
        {"name": "text", "type": 3, "description": "What to say", "required": True},
    ]}  # fmt: skip
    assert command_problems(bad) == [
        "Say: name must be 1-32 lower-case letters, digits, - or _",
        "Say: description must be 1-100 characters, not 101",
        "Say: required options must come before optional ones",
        "Say speed: description must be 1-100 characters, not 0",
    ]
    group = {"name": "character", "type": 1, "description": "Cast", "options": [
        {"name": "mood", "type": 2, "description": "Moods", "options": [
            {"name": "add", "type": 1, "description": "d" * 100, "options": [
                {"name": "c", "type": 3, "description": "Which", "choices": [{"name": "a", "value": "a"}] * 26},
            ]},
        ]},
    ]}  # fmt: skip
    assert command_problems(group) == ["character mood add c: more than 25 choices"]
