"""/character: a server's cast of NPC voices, made from clips or designed, with moods, export and import."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import casting, checks, lines, pronunciations
from bot.errors import UserFacingError
from bot.pages import send_pages
from bot.text import counted
from tts_engine.characters import DEFAULT, Cast, Character, clean_name, read_export
from tts_engine.jobs import VoiceRecord

if TYPE_CHECKING:
    from bot.client import DiaBot

EXPORT_LIMIT = 8 * 2**20  # bytes; Discord lets a bot upload at least 10 MiB
IMPORT_LIMIT = 2 * EXPORT_LIMIT  # bytes: room for an export saved again with indentation
CONSENT = "confirm with consent:True that the person whose voice this is agreed to have it copied"


def _name(character: Character) -> str:
    return f"**{discord.utils.escape_markdown(character.name)}**"


def _moods(character: Character) -> str:
    return ", ".join(sorted(character.mood_names)) or "none"


class Characters(commands.GroupCog, group_name="character", group_description="The server's cast of voices"):
    mood = app_commands.Group(name="mood", description="Other voices of a character, e.g. angry or whispering")

    def __init__(self, bot: DiaBot) -> None:
        self.bot = bot
        super().__init__()

    # ---- helpers ---------------------------------------------------------------------------------------------

    def _cast(self, guild_id: int) -> Cast:
        return Cast(self.bot.redis, guild_id, cap=self.bot.settings.max_characters)

    async def _editor(self, interaction: discord.Interaction) -> discord.Member:
        """The caller, if they may change the cast: the server's character role, else Manage Server."""
        member = checks.server_member(interaction)
        await lines.may_edit(self.bot, member)
        return member

    def _requester(self, interaction: discord.Interaction, member: discord.Member) -> casting.Requester:
        return casting.Requester(self.bot.redis, self.bot.limits, member.guild.id, member.id, interaction.channel_id)

    async def _voice_from_clip(
        self, interaction: discord.Interaction, member: discord.Member, clip: discord.Attachment, transcript: str
    ) -> tuple[str, VoiceRecord]:
        """A pending voice made from the clip by a worker, answering privately meanwhile (it takes a moment)."""
        await interaction.response.defer(thinking=True, ephemeral=True)
        return await casting.voice_from_clip(self._requester(interaction, member), clip, transcript)

    # ---- commands --------------------------------------------------------------------------------------------

    @app_commands.command(name="create")
    @app_commands.describe(
        name="The character's name, used as [Name] in /say (1-32 letters, digits, spaces, - or _)",
        clip="3-30 s of the voice alone (wav, mp3, ogg, flac, m4a or webm); the best 5-10 s are kept",
        transcript="Exactly what the clip says",
        consent="True confirms that the person whose voice this is agreed to have it copied",
        mood="Also file this voice as a mood, e.g. calm",
    )
    async def create(
        self,
        interaction: discord.Interaction,
        name: app_commands.Range[str, 1, 32],
        clip: discord.Attachment,
        transcript: app_commands.Range[str, 1, 500],
        consent: bool,
        mood: app_commands.Range[str, 1, 32] | None = None,
    ) -> None:
        """Make a character whose voice is copied from a short clip."""
        member = await self._editor(interaction)
        if not consent:
            raise UserFacingError(CONSENT)
        cast = self._cast(member.guild.id)
        name = clean_name(name)
        await cast.can_create(name)  # before the voice is made
        voice_id, record = await self._voice_from_clip(interaction, member, clip, transcript)
        character = await cast.create(name, voice_id, mood=mood, created_by=member.id)
        kept = f"{casting.seconds(record.frames):.1f} s of your clip (“{record.transcript}”)"
        await interaction.followup.send(
            f"🎭 {_name(character)} speaks with the voice of {kept}. Try it: `/say [{character.name}] Hello there!`",
            ephemeral=True,
        )

    @app_commands.command(name="design")
    @app_commands.describe(
        name="The character's name, used as [Name] in /say",
        description="Who they are, kept with the character (Dia picks voices by chance, not from words)",
        sample_line="What the candidates say (5-10 s of speech works best)",
        mood="Design a mood of an existing character instead, e.g. angry",
    )
    async def design(
        self,
        interaction: discord.Interaction,
        name: app_commands.Range[str, 1, 32],
        description: app_commands.Range[str, 1, 300],
        sample_line: app_commands.Range[str, 1, 300] | None = None,
        mood: app_commands.Range[str, 1, 32] | None = None,
    ) -> None:
        """Hear three new voices say a line and keep the one that fits."""
        member = await self._editor(interaction)
        cast = self._cast(member.guild.id)
        name = clean_name(name)
        if mood is None:
            await cast.can_create(name)  # before the voice is made
        elif (existing := await cast.get(name)) is None:
            raise UserFacingError(f"there is no character named {name} to give a mood; design it without a mood first")
        else:
            name = existing.name  # as the cast writes it, not as typed
            await cast.can_add_mood(name, mood)
        await interaction.response.defer(thinking=True, ephemeral=True)
        requester = self._requester(interaction, member)
        line = sample_line or casting.DESIGN_LINE
        max_seconds = min(12.0, self.bot.settings.max_line_seconds)

        async def keep(voice_id: str) -> Character:
            if mood is None:
                return await cast.create(name, voice_id, description=description, created_by=member.id)
            return await cast.add_mood(name, mood, voice_id)

        async def offer() -> None:
            candidates = await casting.design_candidates(requester, line, max_seconds=max_seconds)
            view = casting.DesignView(member.id, [v for v, _ in candidates], keep, offer)
            await interaction.followup.send(
                ephemeral=True,
                content=f"🎙️ Three voices for {discord.utils.escape_markdown(name)}{f' ({mood})' if mood else ''}: "
                "listen, then keep one.",
                files=casting.candidate_files(candidates),
                view=view,
            )

        await offer()

    @app_commands.command(name="list")
    async def list_(self, interaction: discord.Interaction) -> None:
        """Show the server's characters."""
        member = checks.server_member(interaction)
        characters = await self._cast(member.guild.id).all()
        if not characters:
            await interaction.response.send_message("No characters yet: make one with `/character create` or "
                                                    "`/character design`.", ephemeral=True)  # fmt: skip
            return
        rows = [f"{_name(c)} (moods: {_moods(c)})" + (f": {c.description}" if c.description else "")
                for c in characters]  # fmt: skip
        await send_pages(interaction, f"Characters ({len(characters)})", rows)

    @app_commands.command(name="show")
    @app_commands.describe(name="Which character")
    async def show(self, interaction: discord.Interaction, name: str) -> None:
        """Show a character's voices and what each was made from."""
        member = checks.server_member(interaction)
        character = await self._cast(member.guild.id).get(name)
        if character is None:
            raise UserFacingError(f"there is no character named {name}")
        rows = [_name(character) + (f": {character.description}" if character.description else "")]
        for mood, voice in sorted(character.moods.items()):
            label = "voice" if mood == DEFAULT else f"mood {mood}"
            rows.append(f"• {label}: {casting.seconds(voice.frames):.1f} s, “{voice.transcript[:120]}”")
        rows.append(f"Made by <@{character.created_by}>.")
        await send_pages(interaction, character.name, rows)

    @app_commands.command(name="rename")
    @app_commands.describe(name="Which character", new_name="Its new name")
    async def rename(
        self, interaction: discord.Interaction, name: str, new_name: app_commands.Range[str, 1, 32]
    ) -> None:
        """Give a character another name (lines already queued keep their voice)."""
        member = await self._editor(interaction)
        character = await self._cast(member.guild.id).rename(name, new_name)
        await self.bot.voice_choices.renamed(member.guild.id, name, character.name)
        await interaction.response.send_message(f"🎭 {discord.utils.escape_markdown(name)} is now {_name(character)}.")

    @app_commands.command(name="delete")
    @app_commands.describe(name="Which character")
    async def delete(self, interaction: discord.Interaction, name: str) -> None:
        """Delete a character and its voices."""
        member = await self._editor(interaction)
        character = await self._cast(member.guild.id).delete(name)
        await self.bot.voice_choices.removed(member.guild.id, character.name)
        await interaction.response.send_message(f"🗑️ Deleted {_name(character)} and its voices.")

    @mood.command(name="add")
    @app_commands.describe(
        character="Which character",
        mood="The mood's name, used as [Name:mood] in /say",
        clip="3-30 s of the voice in this mood",
        transcript="Exactly what the clip says",
        consent="True confirms that the person whose voice this is agreed to have it copied",
    )
    async def mood_add(
        self,
        interaction: discord.Interaction,
        character: str,
        mood: app_commands.Range[str, 1, 32],
        clip: discord.Attachment,
        transcript: app_commands.Range[str, 1, 500],
        consent: bool,
    ) -> None:
        """Give a character another voice from a clip (for a mood, use /character design with mood:)."""
        member = await self._editor(interaction)
        if not consent:
            raise UserFacingError(CONSENT)
        cast = self._cast(member.guild.id)
        await cast.can_add_mood(character, mood)  # before the clip is turned into a voice
        voice_id, record = await self._voice_from_clip(interaction, member, clip, transcript)
        updated = await cast.add_mood(character, mood, voice_id)
        await interaction.followup.send(
            ephemeral=True,
            content=f"🎭 {_name(updated)} has a new mood: `[{updated.name}:{mood.strip()}]` "
            f"({casting.seconds(record.frames):.1f} s of your clip).",
        )

    @mood.command(name="remove")
    @app_commands.describe(character="Which character", mood="The mood to remove")
    async def mood_remove(self, interaction: discord.Interaction, character: str, mood: str) -> None:
        """Remove one of a character's moods."""
        member = await self._editor(interaction)
        updated = await self._cast(member.guild.id).remove_mood(character, mood)
        await self.bot.voice_choices.removed(member.guild.id, updated.name, mood.strip())
        await interaction.response.send_message(f"🎭 {_name(updated)} has moods: {_moods(updated)}.")

    @app_commands.command(name="export")
    @app_commands.describe(name="Only this character (default: the whole cast)")
    async def export(self, interaction: discord.Interaction, name: str | None = None) -> None:
        """Download the cast as a file that /character import reads on another server."""
        member = checks.server_member(interaction)
        cast = self._cast(member.guild.id)
        if name is not None and await cast.get(name) is None:
            raise UserFacingError(f"there is no character named {name}")
        # The whole cast carries the server's pronunciations too: its names often need them.
        words = await self.bot.pronunciations.all(member.guild.id) if name is None else []
        data = await cast.export([name] if name else None, {"pronunciations": pronunciations.exported(words)})
        if len(data) > EXPORT_LIMIT:
            raise UserFacingError("the cast is too big for one file; export characters one at a time with name:")
        file = discord.File(io.BytesIO(data), filename="characters.json")
        what = f", and this server's {len(words)} pronunciations" if words else ""
        await interaction.response.send_message(f"📦 The cast, voices included{what}:", file=file, ephemeral=True)

    @app_commands.command(name="import")
    @app_commands.describe(file="A file made by /character export")
    async def import_(self, interaction: discord.Interaction, file: discord.Attachment) -> None:
        """Add the characters of an export file to this server (all of them, or none)."""
        member = await self._editor(interaction)
        if file.size > IMPORT_LIMIT:
            limit = IMPORT_LIMIT // 2**20
            raise UserFacingError(f"the file is {file.size / 2**20:.1f} MiB; an export file is at most {limit} MiB")
        await interaction.response.defer(thinking=True, ephemeral=True)
        data = await file.read()
        export = read_export(data)
        words = pronunciations.from_export(export.extra)  # checked before any character is added
        made = await self._cast(member.guild.id).import_(export, created_by=member.id)
        said = f"📦 Imported {counted(len(made), 'character')}: {', '.join(_name(c) for c in made)}"
        if words:
            try:
                added = await self.bot.pronunciations.add_missing(member.guild.id, words)
                kept = len({w.word.casefold() for w in words}) - added
                said += f"\n🗣️ And {counted(added, 'pronunciation')}"
                said += f"; this server keeps its own for {counted(kept, 'other word')}." if kept else "."
            except UserFacingError as exc:
                said += f"\n⚠️ but not the file's pronunciations: {exc}"
        await interaction.followup.send(said, ephemeral=True)

    @show.autocomplete("name")
    @rename.autocomplete("name")
    @delete.autocomplete("name")
    @export.autocomplete("name")
    @mood_add.autocomplete("character")
    @mood_remove.autocomplete("character")
    async def _name_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        """Character names starting with what was typed, then names containing it."""
        if interaction.guild_id is None:
            return []
        names = [c.name for c in await self._cast(interaction.guild_id).all()]
        wanted = current.strip().casefold()
        hits = [n for n in names if n.casefold().startswith(wanted)] + [
            n for n in names if wanted and wanted in n.casefold() and not n.casefold().startswith(wanted)
        ]
        return [app_commands.Choice(name=n, value=n) for n in hits[:25]]


async def setup(bot: DiaBot) -> None:
    await bot.add_cog(Characters(bot))
