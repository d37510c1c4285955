"""/myvoice: the character voice a member's lines are spoken in where they name no speaker.

Like the per-user voice of the TTS bots (research/discord.md §1.6), drawn from the server's cast: with
`/myvoice set Bram`, `/say Hello!` is `[Bram] Hello!`, while `[S1]`, `[S2]` and other tags speak as they say.
`/myvoice speed` is how fast a member's lines are spoken unless a `/say` asks for a speed of its own, like the
TTS bots' per-user speaking rate; it is what the read channel, which has no options, needs most.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands
from redis.asyncio import Redis

from bot import checks, lines
from bot.voice_choices import Choices, Speaker, speaker_choices
from tts_engine.characters import Cast

if TYPE_CHECKING:
    from bot.client import DiaBot


async def voice_options(redis: Redis, interaction: discord.Interaction, typed: str) -> list[app_commands.Choice[str]]:
    """The server's character voices that start with what was typed, for a `character` option."""
    assert interaction.guild_id is not None
    cast = await Cast(redis, interaction.guild_id).moods()
    return [app_commands.Choice(name=tag, value=tag) for tag in speaker_choices(cast, typed)]


def pace(speed: float) -> str:
    """How fast a member's lines are spoken, as a sentence."""
    if speed == 1.0:
        return "Your lines are spoken at the normal speed."
    return f"Your lines are spoken at {speed:g} times the normal speed."


def describe(choices: Choices) -> str:
    """Who speaks a member's untagged text, and why."""
    if choices.member is not None:
        return f"your own choice, **{discord.utils.escape_markdown(choices.member.tag)}**"
    if choices.server is not None:
        return f"the server's voice, **{discord.utils.escape_markdown(choices.server.tag)}** (`/settings voice`)"
    return "Dia's `[S1]`, a new voice for every line"


class MyVoice(commands.GroupCog, group_name="myvoice", group_description="Your voice where a line names no speaker"):
    def __init__(self, bot: DiaBot) -> None:
        self.bot = bot
        super().__init__()

    async def _member(self, interaction: discord.Interaction) -> discord.Member:
        member = checks.server_member(interaction)
        await lines.may_use(self.bot, member)
        return member

    @app_commands.command(name="set")
    @app_commands.describe(character="A character of this server, or Name:mood for one of its moods")
    async def set_(self, interaction: discord.Interaction, character: app_commands.Range[str, 1, 65]) -> None:
        """Speak your lines in a character's voice where they name no speaker."""
        member = await self._member(interaction)
        cast = await Cast(self.bot.redis, member.guild.id).moods()
        speaker = Speaker.chosen(character, cast)
        await self.bot.voice_choices.choose(member.guild.id, member.id, speaker)
        name = discord.utils.escape_markdown(speaker.tag)
        await interaction.response.send_message(
            f"🎙️ Text you do not give a speaker is spoken by **{name}**: `/say Hello!` is `/say [{speaker.tag}] "
            "Hello!`. `[S1]`, `[S2]` and character tags speak as they say.",
            ephemeral=True,
        )

    @app_commands.command(name="clear")
    async def clear(self, interaction: discord.Interaction) -> None:
        """Go back to the server's voice (or Dia's [S1]) for your lines."""
        member = await self._member(interaction)
        await self.bot.voice_choices.choose(member.guild.id, member.id, None)
        choices = await self.bot.voice_choices.get(member.guild.id, member.id)
        await interaction.response.send_message(
            f"↩️ Text you do not give a speaker is spoken by {describe(choices)}.", ephemeral=True
        )

    @app_commands.command(name="show")
    async def show(self, interaction: discord.Interaction) -> None:
        """Who speaks your lines where they name no speaker."""
        member = await self._member(interaction)
        cast = await Cast(self.bot.redis, member.guild.id).moods()
        choices = await self.bot.voice_choices.for_line(member.guild.id, member.id, cast)
        await interaction.response.send_message(
            f"🎙️ Text you do not give a speaker is spoken by {describe(choices)}. {pace(choices.speed)}",
            ephemeral=True,
        )

    @app_commands.command(name="speed")
    @app_commands.describe(speed="From 0.75 (slower) to 1.5 (faster), pitch kept; 1 is normal")
    async def speed(self, interaction: discord.Interaction, speed: app_commands.Range[float, 0.75, 1.5]) -> None:
        """How fast your lines are spoken, unless a /say gives its own speed."""
        member = await self._member(interaction)
        speed = round(speed, 2)
        await self.bot.voice_choices.choose_speed(member.guild.id, member.id, speed)
        await interaction.response.send_message(
            f"⏩ {pace(speed)} A `/say` with `speed:` still speaks at the speed it asks for.", ephemeral=True
        )

    @set_.autocomplete("character")
    async def _characters(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await voice_options(self.bot.redis, interaction, current)


async def setup(bot: DiaBot) -> None:
    await bot.add_cog(MyVoice(bot))
