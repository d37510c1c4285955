"""/pronounce: the server's respellings of words Dia says wrong, applied to every line (bot/pronunciations.py).

Changed by those who may change the cast (the character role, or Manage Server): the names they make up are
what Dia most often gets wrong. Anyone who may use the bot may read the list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import checks, lines
from bot.errors import UserFacingError
from bot.pages import send_pages
from bot.pronunciations import MAX_SOUNDS, MAX_WORD, Pronunciation, entry

if TYPE_CHECKING:
    from bot.client import DiaBot


def _shown(pronunciation: Pronunciation) -> str:
    word, sounds = (discord.utils.escape_markdown(t) for t in (pronunciation.word, pronunciation.sounds))
    return f"**{word}** → {sounds}"


class Pronounce(commands.GroupCog, group_name="pronounce", group_description="How Dia should say words it gets wrong"):
    def __init__(self, bot: DiaBot) -> None:
        self.bot = bot
        super().__init__()

    async def _editor(self, interaction: discord.Interaction) -> discord.Member:
        member = checks.server_member(interaction)
        await lines.may_edit(self.bot, member, doing="changing pronunciations")
        return member

    @app_commands.command(name="set")
    @app_commands.describe(
        word="The word or name as people write it, e.g. Xyrrith (matched whole, in any case)",
        sounds_like="How to say it, spelled as it sounds, e.g. Zeer-ith",
    )
    async def set_(
        self,
        interaction: discord.Interaction,
        word: app_commands.Range[str, 1, MAX_WORD],
        sounds_like: app_commands.Range[str, 1, MAX_SOUNDS],
    ) -> None:
        """Say a word the way it should sound, in every line of this server."""
        member = await self._editor(interaction)
        pronunciation = entry(word, sounds_like)
        await self.bot.pronunciations.set(member.guild.id, pronunciation)
        await interaction.response.send_message(
            f"🗣️ From now on {_shown(pronunciation)} in every line. Try it with `/say {pronunciation.word}`.",
        )

    @app_commands.command(name="remove")
    @app_commands.describe(word="A word of /pronounce list")
    async def remove(self, interaction: discord.Interaction, word: app_commands.Range[str, 1, MAX_WORD]) -> None:
        """Let Dia say a word its own way again."""
        member = await self._editor(interaction)
        removed = await self.bot.pronunciations.remove(member.guild.id, word)
        if removed is None:
            raise UserFacingError(f"there is no pronunciation for “{word}”: `/pronounce list` shows them")
        word = discord.utils.escape_markdown(removed.word)
        await interaction.response.send_message(f"🗣️ Dia says **{word}** its own way again.")

    @app_commands.command(name="list")
    async def list_(self, interaction: discord.Interaction) -> None:
        """The words this server respells, and how."""
        member = checks.server_member(interaction)
        await lines.may_use(self.bot, member)
        found = await self.bot.pronunciations.all(member.guild.id)
        if not found:
            await interaction.response.send_message(
                "This server respells no words yet: `/pronounce set Xyrrith Zeer-ith` adds one.", ephemeral=True
            )
            return
        await send_pages(interaction, f"Pronunciations ({len(found)})", [_shown(p) for p in found])

    @remove.autocomplete("word")
    async def _words(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        if interaction.guild_id is None:
            return []
        wanted = current.strip().casefold()
        words = [p.word for p in await self.bot.pronunciations.all(interaction.guild_id)]
        return [app_commands.Choice(name=w, value=w) for w in words if w.casefold().startswith(wanted)][:25]


async def setup(bot: DiaBot) -> None:
    await bot.add_cog(Pronounce(bot))
