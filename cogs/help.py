"""/help and /status: how to write for the bot, and whether its voice workers are up, shown only to who asks.

The command list is read from the command tree, so it names every command the bot has (a test checks it against
what was synced); the sounds come from the script parser's own list, and the characters from the server's cast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.pages import paginate
from bot.text import counted
from tts_engine import jobs
from tts_engine.characters import Cast
from tts_engine.script import CUES

if TYPE_CHECKING:
    from bot.client import DiaBot

FIELD_CHARS = 1024  # what an embed field holds
SHOWN_CHARACTERS = 20
SHOWN_WORKERS = 10
# How a member finds the message menu, which has no slash to type.
MENU_PATH = "right-click a message (long-press on a phone) > Apps >"


def command_lines(tree: app_commands.CommandTree) -> list[str]:
    """One line per slash command or group (with its subcommands) and per message menu; /say and the menu that
    speaks first, as they are what most members come for."""
    lines = []
    for command in tree.get_commands(type=discord.AppCommandType.chat_input):
        name = f"`/{command.name}`"
        if isinstance(command, app_commands.Group):
            leaves = [c for c in command.walk_commands() if isinstance(c, app_commands.Command)]  # not subgroups
            leaves.sort(key=lambda c: c.qualified_name.count(" "))  # a subgroup's commands after the group's own
            name += f" ({', '.join(c.qualified_name.removeprefix(command.name + ' ') for c in leaves)})"
        managers = command.default_permissions is not None and command.default_permissions.manage_guild
        lines.append(f"{name}: {command.description}{' (Manage Server)' if managers else ''}")
    for menu in tree.get_commands(type=discord.AppCommandType.message):
        lines.append(f"**{menu.name}**: {MENU_PATH} {menu.name}, to speak that message as `/say` would.")
    return sorted(lines, key=lambda line: (not line.startswith("`/say`"), not line.startswith("**"), line))


class Help(commands.Cog):
    def __init__(self, bot: DiaBot) -> None:
        self.bot = bot

    @app_commands.command(name="help")
    @app_commands.guild_only()
    async def help(self, interaction: discord.Interaction) -> None:
        """How to make the bot speak: commands, voices, sounds, pauses and characters."""
        assert interaction.guild_id is not None
        cast = await Cast(self.bot.redis, interaction.guild_id).all()
        embed = discord.Embed(
            title="Dia voice bot",
            description=(
                "I speak what you write in your voice channel, with expressive voices, laughter and sighs:\n"
                "`/say [S1] Welcome, traveler! (laughs) [S2] Beware the woods.`"
            ),
            colour=discord.Colour.blurple(),
        )
        # Whole lines, in as many fields as they need.
        listed = [_fit(line) for line in command_lines(self.bot.tree)]
        for number, block in enumerate(paginate(listed, limit=FIELD_CHARS)):
            embed.add_field(name="Commands" if number == 0 else "Commands (continued)", value=block, inline=False)
        embed.add_field(
            name="Writing a line",
            value=(
                "`[S1]`, `[S2]`: two voices, new ones for every `/say`. Text with no tag is `[S1]`, or the "
                "character you chose with `/myvoice set`.\n"
                f"Sounds: {', '.join(f'({cue})' for cue in CUES)}.\n"
                "`(pause 1.5s)`, `(pause 500ms)`: silence, up to 10 s.\n"
                "**Play again** under a reply plays that take again; so does the same text with its `seed:`.\n"
                "Markdown is read as its words; `||spoilers||` stay hidden."
            ),
            inline=False,
        )
        if cast:
            names = ", ".join(f"`[{c.name}]`" for c in cast[:SHOWN_CHARACTERS])
            more = (
                f" and {len(cast) - SHOWN_CHARACTERS} more (`/character list`)" if len(cast) > SHOWN_CHARACTERS else ""
            )
            characters = f"This server's cast: {names}{more}. A mood is `[Name:mood]`."
        else:
            characters = "This server has none yet: `/character create` copies a voice from a clip, and "
            characters += "`/character design` finds a new one. Then `[Name]` speaks with it."
        embed.add_field(name="Characters", value=_fit(characters), inline=False)
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @app_commands.command(name="status")
    @app_commands.guild_only()
    async def status(self, interaction: discord.Interaction) -> None:
        """Whether the voice workers are up, how busy they are, and this server's queue."""
        assert interaction.guild_id is not None
        workers = await jobs.live_workers(self.bot.redis)
        if not workers:
            await interaction.response.send_message(
                "🔴 No voice worker is online, so nothing can be spoken now. The bot's host starts one with "
                "`python -m tts_engine worker` (or `make run`).",
                ephemeral=True,
            )
            return
        rendering = sum(len(w.get("current_jobs") or []) for w in workers)
        slots = sum(int(w.get("slots") or 1) for w in workers)
        waiting = max(0, await jobs.unfinished(self.bot.redis) - rendering)
        count = counted(len(workers), "voice worker")
        lines = [
            f"🟢 {count} online. Rendering: {counted(rendering, 'line')} ({slots} at most at once); waiting: {waiting}."
        ]
        # Numbered, not named: a worker's host name is the host's business, not every member's.
        for number, worker in enumerate(workers[:SHOWN_WORKERS], start=1):
            where = f"{worker.get('device', '?')}, {worker.get('dtype', '?')}"
            busy = f"rendering {len(worker.get('current_jobs') or [])} of {worker.get('slots', '?')}"
            lines.append(f"• worker {number} ({where}): {busy}, {int(worker.get('jobs_done') or 0):,} done")
        if len(workers) > SHOWN_WORKERS:
            lines.append(f"• and {len(workers) - SHOWN_WORKERS} more")
        player = self.bot.player(interaction.guild_id)
        here = f"in {current.mention}" if (current := player.channel()) is not None else "not in voice"
        queued = player.queued
        lines.append(f"This server: {here}, {counted(queued, 'line')} queued (`/queue` lists them).")
        await interaction.response.send_message("\n".join(lines), ephemeral=True)


def _fit(text: str, limit: int = FIELD_CHARS) -> str:
    """An embed field holds at most 1024 characters; the end is cut at a line or word, marked with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    return cut[: max(cut.rfind("\n"), cut.rfind(" "))] + "…"


async def setup(bot: DiaBot) -> None:
    await bot.add_cog(Help(bot))
