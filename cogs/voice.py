"""/join, /leave, /skip, /stop and /queue: the voice channel and the guild's line queue."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import checks, lines
from bot.errors import UserFacingError
from bot.pages import send_pages
from bot.text import counted

if TYPE_CHECKING:
    from bot.client import DiaBot


class Voice(commands.Cog):
    def __init__(self, bot: DiaBot) -> None:
        self.bot = bot

    @app_commands.command(name="join")
    @app_commands.guild_only()
    async def join(self, interaction: discord.Interaction) -> None:
        """Bring the bot into your voice channel."""
        member = checks.server_member(interaction)
        await lines.may_use(self.bot, member)
        channel = checks.caller_channel(member)
        checks.can_speak_in(channel, member.guild.me)
        player = self.bot.player(member.guild.id)
        checks.not_busy_elsewhere(player.channel(), channel, player.busy)
        await interaction.response.defer(thinking=True)
        async with player.joined(channel):
            pass
        # Paused if server-muted (a mute goes along from channel to channel), or on a stage it could not step up on.
        joined = f"👋 Joined {channel.mention}. Use `/say` to make me speak."
        await interaction.followup.send(joined + player.paused_line)

    @app_commands.command(name="leave")
    @app_commands.guild_only()
    async def leave(self, interaction: discord.Interaction) -> None:
        """Make the bot leave the voice channel, dropping its queue."""
        member = checks.server_member(interaction)
        current = self.bot.player(member.guild.id).channel()
        if current is None:
            raise UserFacingError("I am not in a voice channel")
        checks.may_control(member, current)
        await self.bot.player(member.guild.id).leave()
        await interaction.response.send_message(f"👋 Left {current.mention}.")

    @app_commands.command(name="skip")
    @app_commands.guild_only()
    async def skip(self, interaction: discord.Interaction) -> None:
        """Stop the line being spoken and go on with the next one."""
        member = checks.server_member(interaction)
        player = self.bot.player(member.guild.id)
        checks.may_control(member, player.channel())
        skipped = await player.skip()
        if skipped is None:
            raise UserFacingError("nothing is being spoken right now")
        await interaction.response.send_message(f"⏭️ Skipped: {skipped.preview}")

    @app_commands.command(name="unsay")
    @app_commands.guild_only()
    async def unsay(self, interaction: discord.Interaction) -> None:
        """Take back your latest line: it leaves the queue, or stops if it is being spoken."""
        member = checks.server_member(interaction)
        taken = await self.bot.player(member.guild.id).withdraw(member.id)
        if taken is None:
            raise UserFacingError("you have no line waiting or being spoken here")
        line, playing = taken
        await interaction.response.send_message(
            f"↩️ {'Stopped' if playing else 'Took back'}: {line.preview}",
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @app_commands.command(name="stop")
    @app_commands.guild_only()
    async def stop(self, interaction: discord.Interaction) -> None:
        """Stop speaking and clear every queued line of this server."""
        member = checks.server_member(interaction)
        player = self.bot.player(member.guild.id)
        checks.may_control(member, player.channel())
        dropped = await player.stop()
        await interaction.response.send_message(f"⏹️ Stopped; {counted(dropped, 'line')} dropped.")

    @app_commands.command(name="queue")
    @app_commands.guild_only()
    async def queue(self, interaction: discord.Interaction) -> None:
        """Show what is being spoken and what comes next."""
        member = checks.server_member(interaction)
        player = self.bot.player(member.guild.id)
        if not player.busy:
            await interaction.response.send_message("Nothing is queued. Use `/say` to make me speak.", ephemeral=True)
            return
        rows = []
        if player.current is not None:
            rows.append(f"🗣️ now: {player.current.preview} (<@{player.current.requester}>)")
        rows += [f"{i}. {line.preview} (<@{line.requester}>)" for i, line in enumerate(player.lines, start=1)]
        # An embed: a full queue of long lines is more than a message's 2000 characters, and its mentions never ping.
        paused = f", paused: {player.unheard}" if player.unheard else ""
        await send_pages(interaction, f"Queue ({counted(len(rows), 'line')}{paused})", rows)


async def setup(bot: DiaBot) -> None:
    await bot.add_cog(Voice(bot))
