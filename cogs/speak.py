"""/say: a line of Dia speech, queued for the guild's voice channel."""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands
from redis.exceptions import RedisError

from bot import checks, takes
from bot.errors import UserFacingError, report, submit
from bot.text import TextRules, mentioned, script_items, speakable
from bot.voice import Line
from cogs.voice import _member
from tts_engine import jobs, scene
from tts_engine.characters import Cast
from tts_engine.scene import FRAMES_PER_SECOND, VoiceRef
from tts_engine.script import Turn

if TYPE_CHECKING:
    from bot.client import DiaBot

log = logging.getLogger(__name__)

PREVIEW = 80
MAX_SEGMENTS = 64  # what one job may carry (tts_engine/jobs.py)
SEEDS = 1_000_000  # a take's seed is below this: short enough to type back into /say


async def _names(guild: discord.Guild, text: str) -> Callable[[str, int], str | None]:
    """Display names of what `text` mentions. Members come from the cache, else one REST fetch each (the bot
    has no members intent, so most are not cached); `speakable` caps how many there may be."""
    names: dict[tuple[str, int], str] = {}
    for kind, snowflake in mentioned(text)[: TextRules().max_mentions]:
        if kind == "@":
            member = guild.get_member(snowflake)
            if member is None:
                with contextlib.suppress(discord.HTTPException):
                    member = await guild.fetch_member(snowflake)
            if member is not None:
                names[kind, snowflake] = member.display_name
        elif kind == "@&" and (role := guild.get_role(snowflake)) is not None:
            names[kind, snowflake] = role.name
        elif kind == "#" and (channel := guild.get_channel(snowflake)) is not None:
            names[kind, snowflake] = channel.name
    return lambda kind, snowflake: names.get((kind, snowflake))


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
        speed="Speaking speed from 0.75 (slower) to 1.5 (faster), pitch kept; default 1",
        seed="Hear a take again: the seed shown when it was spoken (with the same text)",
    )
    async def say(
        self,
        interaction: discord.Interaction,
        text: app_commands.Range[str, 1, 6000],
        export: bool = False,
        speed: app_commands.Range[float, 0.75, 1.5] = 1.0,
        seed: app_commands.Range[int, 0, SEEDS - 1] | None = None,
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
        await self._speak(interaction, message.content)

    async def _speak(
        self,
        interaction: discord.Interaction,
        text: str,
        *,
        export: bool = False,
        speed: float = 1.0,
        seed: int | None = None,
    ) -> None:
        member = _member(interaction)
        guild = member.guild
        settings = self.bot.settings
        checks.has_role(member, await self.bot.server_settings.role(guild.id, "required_role"))
        rules = TextRules(max_chars=settings.max_say_chars)
        names = await _names(guild, text) if len(text) <= rules.max_chars else (lambda kind, snowflake: None)
        spoken = speakable(text, names, rules)
        characters = await Cast(self.bot.redis, guild.id).all()
        moods = {c.name: c.mood_names for c in characters}
        # Text that names no speaker is the member's chosen voice (/myvoice), else the server's, else [S1].
        own = await self.bot.voice_choices.for_line(guild.id, member.id, moods)
        default = (own.name, own.mood) if own is not None else ("S1", None)
        items = script_items(spoken, moods, default=default)
        voices = {
            (c.name, mood or None): VoiceRef(v.voice_id, v.transcript, v.frames)
            for c in characters
            for mood, v in c.moods.items()
        }
        try:
            planned = scene.plan(items, voices)
        except ValueError as exc:  # a voice whose prompt leaves no room: the message names it
            raise UserFacingError(str(exc)) from None
        segments = tuple(jobs.Segment(text=p.text, voices=p.voices, pause_after=p.pause_after) for p in planned)
        if len(segments) > MAX_SEGMENTS:
            raise UserFacingError(f"that is {len(segments)} parts to render; at most {MAX_SEGMENTS}: split it up")
        max_tokens = round(settings.max_line_seconds * FRAMES_PER_SECOND) + 2
        params = jobs.RenderParams(max_tokens=max_tokens, seed=seed, speed=speed)
        # Every take gets a seed the user can give back; the worker caches each line under it, so asking for
        # it again replays that take exactly (tts_engine/worker.py).
        job = jobs.RenderJob(
            guild_id=guild.id,
            requester=member.id,
            segments=segments,
            params=params,
            channel_id=interaction.channel_id,
            export=export,
            render_seed=seed if seed is not None else secrets.randbelow(SEEDS),
        )
        preview = discord.utils.escape_markdown(" ".join(spoken.split()))
        preview = preview if len(preview) <= PREVIEW else preview[: PREVIEW - 1] + "…"
        if own is not None and any(isinstance(i, Turn) and (i.speaker, i.mood) == default for i in items):
            preview = f"(as {discord.utils.escape_markdown(own.tag)}) {preview}"
        await self.play(interaction, member, job, preview)

    async def play(
        self, interaction: discord.Interaction, member: discord.Member, job: jobs.RenderJob, preview: str
    ) -> None:
        """Queue `job` in the caller's voice channel and answer with where it is in the queue, its seed and a
        **Play again** button."""
        guild = member.guild
        channel = checks.caller_channel(member)
        checks.can_speak_in(channel, guild.me)
        player = self.bot.player(guild.id)
        checks.not_busy_elsewhere(player.channel(), channel, player.busy)
        await submit(self.bot.redis, job, self.bot.limits, timeout=2.0)  # well inside the 3 s to answer
        await interaction.response.defer(thinking=True)
        try:
            await player.connect(channel)
        except (TimeoutError, discord.ClientException) as exc:
            await jobs.cancel(self.bot.redis, job.job_id)  # never rendered for nobody
            raise UserFacingError(f"I could not join {channel.mention} ({exc or 'timed out'}); try again") from None
        assert interaction.channel_id is not None
        line = Line(job.job_id, member.id, interaction.channel_id, channel.id, preview, export=job.export)
        ahead = await player.enqueue(line)
        try:
            await takes.keep(self.bot.redis, job, preview)
            view: discord.ui.View = discord.ui.View(timeout=None).add_item(PlayAgain(job.job_id))
        except RedisError as exc:  # the line plays all the same; only its button is lost
            log.warning("could not keep take %s for Play again: %s", job.job_id, exc)
            view = discord.utils.MISSING
        where = "Speaking now" if ahead == 0 else f"Queued after {ahead} line{'s' if ahead > 1 else ''}"
        seed = job.render_seed
        again = f"-# seed {seed}: **Play again** below, or `/say` the same text with `seed:{seed}`, plays this take"
        await interaction.followup.send(f"🗣️ {where} in {channel.mention}: {preview}\n{again}", view=view)

    async def play_again(self, interaction: discord.Interaction, job_id: str) -> None:
        member = _member(interaction)
        checks.has_role(member, await self.bot.server_settings.role(member.guild.id, "required_role"))
        take = await takes.find(self.bot.redis, job_id)
        if take is None or take.job.guild_id != member.guild.id:
            days = takes.TAKE_TTL // 86_400
            raise UserFacingError(
                f"that take is more than {days} days old; `/say` its text with the seed shown to hear it again"
            )
        await self.play(interaction, member, take.again(member.id, interaction.channel_id), take.preview)

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
