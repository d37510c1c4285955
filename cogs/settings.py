"""/settings: who may use the bot in this server, who may change its characters, the voice of text that names
no speaker, and the channel read aloud, chosen by its managers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import checks
from bot.errors import UserFacingError
from bot.server_settings import Choice, Reading, RoleRule
from bot.voice_choices import Speaker
from cogs.myvoice import voice_options
from tts_engine.characters import Cast

if TYPE_CHECKING:
    from bot.client import DiaBot


def _role_text(guild: discord.Guild, role: str | None, nobody: str) -> str:
    if role is None:
        return nobody
    found = checks.find_role(guild, role)
    return f"the **{discord.utils.escape_markdown(found.name)}** role" if found else f"the role {role} (not here)"


def _origin(rule: RoleRule) -> str:
    return "" if rule.own else " (the bot's default)"


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class Settings(commands.GroupCog, group_name="settings", group_description="The bot's settings for this server"):
    def __init__(self, bot: DiaBot) -> None:
        self.bot = bot
        super().__init__()

    def _manager(self, interaction: discord.Interaction) -> discord.Member:
        member = checks.server_member(interaction)
        checks.manages_server(member)  # Discord hides the commands from others, unless a server lets them see
        return member

    async def _describe(self, guild: discord.Guild) -> str:
        rules = await self.bot.server_settings.get(guild.id)
        use = _role_text(guild, rules.required_role.role, "everyone")
        edit = _role_text(guild, rules.character_role.role, "")
        edit = f"{edit} and Manage Server" if edit else "Manage Server"
        read = await self.bot.server_settings.reading(guild.id)
        reading = "none"
        if read.channel is not None:
            reading = f"<#{read.channel}>"
            if read.skip is not None:
                reading += f", except messages that start with “{discord.utils.escape_markdown(read.skip)}”"
            reading += "; the writer's name is said first" if read.names else "; without the writer's name"
            if not self.bot.settings.read_messages:
                reading += " (not read: the bot's host turned reading off)"
            channel = guild.get_channel_or_thread(read.channel)
            lacking = None if channel is None else checks.cannot_post(channel, guild.me, reply=True)
            if lacking is not None:
                reading += f" (I am missing {lacking} there, so a message that is not spoken gets no note saying why)"
        voice = await self.bot.voice_choices.server(guild.id)
        spoken = f"**{discord.utils.escape_markdown(voice.tag)}**" if voice else "Dia's `[S1]`, new for every line"
        return (
            f"Who may use the bot: {use}{_origin(rules.required_role)}.\n"
            f"Who may change characters: {edit}{_origin(rules.character_role)}.\n"
            f"Who speaks text that names no speaker: {spoken}, unless a member chose a voice with `/myvoice`.\n"
            f"Channel read aloud: {reading}."
        )

    async def _choose(self, interaction: discord.Interaction, choice: Choice, role: discord.Role | None) -> None:
        member = self._manager(interaction)
        if role is not None and role.is_default():
            role = None  # @everyone is every member: the same as no role
        await self.bot.server_settings.set_role(member.guild.id, choice, role.id if role is not None else None)
        await interaction.response.send_message(f"✅ {await self._describe(member.guild)}", ephemeral=True)

    @app_commands.command(name="show")
    async def show(self, interaction: discord.Interaction) -> None:
        """Who may use the bot and who may change characters here."""
        member = self._manager(interaction)
        await interaction.response.send_message(await self._describe(member.guild), ephemeral=True)

    @app_commands.command(name="role")
    @app_commands.describe(role="The role members need to use the bot (leave out to let everyone)")
    async def role(self, interaction: discord.Interaction, role: discord.Role | None = None) -> None:
        """Choose the role members need to use the bot here."""
        await self._choose(interaction, "required_role", role)

    @app_commands.command(name="character-role")
    @app_commands.describe(role="The role that may change characters besides Manage Server (leave out for none)")
    async def character_role(self, interaction: discord.Interaction, role: discord.Role | None = None) -> None:
        """Choose the role that may create, change and delete characters here."""
        await self._choose(interaction, "character_role", role)

    @app_commands.command(name="voice")
    @app_commands.describe(character="A character (or Name:mood) of this server; leave out for Dia's [S1]")
    async def voice(
        self, interaction: discord.Interaction, character: app_commands.Range[str, 1, 65] | None = None
    ) -> None:
        """Choose the voice of text that names no speaker, for members who did not pick one with /myvoice."""
        member = self._manager(interaction)
        speaker = None
        if character is not None:
            speaker = Speaker.chosen(character, await Cast(self.bot.redis, member.guild.id).moods())
        await self.bot.voice_choices.choose(member.guild.id, None, speaker)
        await interaction.response.send_message(f"✅ {await self._describe(member.guild)}", ephemeral=True)

    @voice.autocomplete("character")
    async def _characters(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await voice_options(self.bot.redis, interaction, current)

    @app_commands.command(name="read-channel")
    @app_commands.describe(
        channel="The channel or thread whose messages are read aloud (leave out to read none)",
        skip="Messages that start with this are not read, e.g. ! for other bots' commands or // for side talk",
        names="Say who wrote a message before it, when the one before was someone else's (default: yes)",
    )
    async def read_channel(
        self,
        interaction: discord.Interaction,
        channel: discord.TextChannel | discord.VoiceChannel | discord.StageChannel | discord.Thread | None = None,
        skip: app_commands.Range[str, 1, 8] | None = None,
        names: bool | None = None,
    ) -> None:
        """Read aloud what members in voice write in a channel, as if they had used /say."""
        member = self._manager(interaction)
        skip = (skip or "").strip() or None
        for option, given in (("skip", skip is not None), ("names", names is not None)):
            if given and channel is None:
                raise UserFacingError(f"`{option}` goes with a channel: choose the channel to read too")
        if channel is not None:
            if not self.bot.settings.read_messages:
                raise UserFacingError(
                    "the bot's host has not turned on reading messages: it needs DIA_READ_MESSAGES=true and the "
                    "Message Content intent on the bot's page in the Discord developer portal"
                )
            if not channel.permissions_for(member.guild.me).view_channel:
                raise UserFacingError(f"I cannot see {channel.mention}: give me View Channel there first")
        reading = Reading(channel.id, skip, names is not False) if channel is not None else Reading()
        await self.bot.server_settings.set_reading(member.guild.id, reading)
        await interaction.response.send_message(f"✅ {await self._describe(member.guild)}", ephemeral=True)

    @app_commands.command(name="reset")
    async def reset(self, interaction: discord.Interaction) -> None:
        """Go back to the bot's default settings for this server (roles, voice, no read channel)."""
        member = self._manager(interaction)
        await self.bot.server_settings.reset(member.guild.id)
        await interaction.response.send_message(f"↩️ {await self._describe(member.guild)}", ephemeral=True)


async def setup(bot: DiaBot) -> None:
    await bot.add_cog(Settings(bot))
