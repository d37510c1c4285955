"""/say: a line of Dia speech, queued for the guild's voice channel."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands
from redis.exceptions import RedisError

from bot import checks, lines, takes
from bot.errors import UserFacingError, report
from bot.text import counted
from tts_engine.characters import Cast

if TYPE_CHECKING:
    from bot.client import DiaBot

log = logging.getLogger(__name__)


AgainButton = discord.ui.Button[discord.ui.View]


class PlayAgain(discord.ui.DynamicItem[AgainButton], template=r"dia:again:(?P<job>[0-9a-f]{32})"):
    """The **Play again** button of a reply: queues that take again in the presser's voice channel, with the
    checks and limits of /say. Its custom id names the take, so the button works after a restart too."""

    def __init__(self, job_id: str) -> None:
        button: AgainButton = discord.ui.Button(
            label="Play again", emoji="🔁", style=discord.ButtonStyle.secondary, custom_id=f"dia:again:{job_id}"
        )
        super().__init__(button)
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> PlayAgain:
        return cls(match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        # discord.py only logs what a dynamic item raises: the user hears of it from the bot's one handler.
        try:
            bot = interaction.client
            cog = bot.get_cog(Speak.__cog_name__) if isinstance(bot, commands.Bot) else None
            if not isinstance(cog, Speak):
                raise UserFacingError("I am starting up or shutting down; try again in a moment")
            await cog.play_again(interaction, self.job_id)
        except Exception as exc:
            await report(interaction, exc, "Play again")


class Speak(commands.Cog):
    def __init__(self, bot: DiaBot) -> None:
        self.bot = bot
        # A context menu cannot be a decorated cog method (discord.py's FAQ): it is made here and added to the
        # tree while the cog is loaded.
        self.message_menu = app_commands.guild_only(
            app_commands.ContextMenu(name="Speak message", callback=self.speak_message)
        )

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.message_menu)
        self.bot.add_dynamic_items(PlayAgain)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.message_menu.name, type=self.message_menu.type)
        self.bot.remove_dynamic_items(PlayAgain)

    @app_commands.command(name="say")
    @app_commands.guild_only()
    @app_commands.describe(
        text="What to say, e.g. [S1] Welcome, traveler! (laughs) [S2] Beware the woods.",
        export="Also post the spoken line as an audio file when it is done",
        speed="From 0.75 (slower) to 1.5 (faster), pitch kept; default: yours (/myvoice speed), else 1",
        seed="Hear a take again: the seed shown when it was spoken (with the same text)",
    )
    async def say(
        self,
        interaction: discord.Interaction,
        text: app_commands.Range[str, 1, 6000],
        export: bool = False,
        speed: app_commands.Range[float, 0.75, 1.5] | None = None,
        seed: app_commands.Range[int, 0, lines.SEEDS - 1] | None = None,
    ) -> None:
        """Speak a line in your voice channel: [S1]/[S2] for voices, (laughs) and other sounds, (pause 1s)."""
        await self._speak(interaction, text, export=export, speed=speed, seed=seed)

    async def speak_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """The message menu's "Speak message": a message's text, read as `/say` would read it. A message can hold
        what a slash option cannot (new lines), so a game master can write a scene in a channel beforehand and
        play it from there with two clicks. Discord sends the content of the message the menu is used on, so no
        privileged intent is needed."""
        if not message.content.strip():
            raise UserFacingError("that message has no text to speak (only attachments, embeds or stickers)")
        await self._speak(interaction, message.content, message_id=message.id)

    async def _speak(
        self,
        interaction: discord.Interaction,
        text: str,
        *,
        export: bool = False,
        speed: float | None = None,
        seed: int | None = None,
        message_id: int | None = None,
    ) -> None:
        member = checks.server_member(interaction)
        line = await lines.prepare(
            self.bot, member, text, interaction.channel_id, export=export, speed=speed, seed=seed
        )
        await self.play(interaction, member, line, message_id=message_id)

    async def play(
        self,
        interaction: discord.Interaction,
        member: discord.Member,
        line: lines.Prepared,
        *,
        message_id: int | None = None,
    ) -> None:
        """Queue the line in the caller's voice channel and answer with where it is in the queue, its seed and a
        **Play again** button. `message_id`: the message the line speaks (the menu's), which takes it back if
        deleted."""
        assert interaction.channel_id is not None
        channel, ahead = await lines.enqueue(
            self.bot,
            member,
            line,
            interaction.channel_id,
            answer=lambda: interaction.response.defer(thinking=True),
            message_id=message_id,
        )
        job = line.job
        try:
            await takes.keep(self.bot.redis, job, line.preview, message_id)
            view: discord.ui.View = discord.ui.View(timeout=None).add_item(PlayAgain(job.job_id))
        except RedisError as exc:  # the line plays all the same; only its button is lost
            log.warning("could not keep take %s for Play again: %s", job.job_id, exc)
            view = discord.utils.MISSING
        player = self.bot.player(member.guild.id)
        where = f"Queued after {counted(ahead, 'line')}" if ahead else "Up next" if player.unheard else "Speaking now"
        seed = job.render_seed
        again = f"-# seed {seed}: **Play again** below, or `/say` the same text with `seed:{seed}`, plays this take"
        reply = await interaction.followup.send(
            f"🗣️ {where} in {channel.mention}: {line.preview}{player.paused_line}\n{again}", view=view, wait=True
        )
        if message_id is not None:
            await self._shows(member.guild.id, message_id, takes.Reply(reply.channel.id, reply.id, job.job_id))

    async def _shows(self, guild_id: int, message_id: int, reply: takes.Reply) -> None:
        """`reply` shows message `message_id`'s text: remembered, so that deleting the message clears it."""
        try:
            await takes.shown_in(self.bot.redis, guild_id, message_id, reply)
        except RedisError as exc:
            log.warning("could not remember reply %d to message %d: %s", reply.reply_id, message_id, exc)
            return
        if self.bot.deleted.has(guild_id, message_id):  # deleted while the reply was sent: it found no reply then
            await takes.retract(self.bot, self.bot.redis, guild_id, {message_id})

    async def play_again(self, interaction: discord.Interaction, job_id: str) -> None:
        member = checks.server_member(interaction)
        await lines.may_use(self.bot, member)
        take = await takes.find(self.bot.redis, job_id)
        if take is None or take.job.guild_id != member.guild.id:
            days = takes.TAKE_TTL // 86_400
            raise UserFacingError(
                f"that take is gone: it is more than {days} days old, or the message it spoke was deleted; `/say` its "
                "text with the seed shown to hear it again"
            )
        job = take.again(member.id, interaction.channel_id)
        await self.play(interaction, member, lines.Prepared(job, take.preview), message_id=take.message_id)

    @say.autocomplete("text")
    async def _speaker_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        """After an unclosed `[`, the characters (and moods) it may start. Discord caps a choice at 100
        characters, so this helps while the text is short, which is when tags are typed most."""
        start = current.rfind("[")
        if interaction.guild_id is None or start < 0 or "]" in current[start:]:
            return []
        typed = current[start + 1 :].casefold()
        choices = []
        for character in await Cast(self.bot.redis, interaction.guild_id).all():
            tags = [character.name, *(f"{character.name}:{m}" for m in sorted(character.mood_names))]
            for tag in tags:
                value = f"{current[:start]}[{tag}] "
                if tag.casefold().startswith(typed) and len(value) <= 100:
                    choices.append(app_commands.Choice(name=value, value=value))
        return choices[:25]


async def setup(bot: DiaBot) -> None:
    await bot.add_cog(Speak(bot))
