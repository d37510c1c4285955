"""From a member's text to a line in the guild's queue: the one path of /say, the Speak-message menu, the
Play again button and the read channel.

`prepare` makes the text speakable, parses it with the server's cast and the member's voice, respells the
server's `/pronounce` words and plans the render job; `enqueue` checks the voice channels, queues the job and
the line. Either raises a user-facing error (bot/errors.py) that says what to change, before anything is
queued. Deleting the message a line speaks takes the line back (cogs/deletions.py); `RecentDeletions` covers a
message deleted before its line was queued. `requeue` puts an edited message's new line in its old one's place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

import discord

from bot import checks
from bot.errors import UserFacingError, submit
from bot.services import Line
from bot.text import TextRules, mentioned, script_items, speakable
from tts_engine import jobs, scene
from tts_engine.characters import Cast
from tts_engine.scene import FRAMES_PER_SECOND, VoiceRef
from tts_engine.script import Turn

if TYPE_CHECKING:
    from bot.checks import VoiceChannel
    from bot.client import DiaBot

PREVIEW = 80
MAX_SEGMENTS = 64  # what one job may carry (tts_engine/jobs.py)
SEEDS = 1_000_000  # a take's seed is below this: short enough to type back into /say
SUBMIT_WITHIN = 2.0  # seconds a line's submit may take: well inside the 3 s an interaction has to answer
RECENT_DELETIONS = 200  # per guild: more than a bulk delete (100) and the messages waiting to be prepared


@dataclasses.dataclass(frozen=True)
class Prepared:
    job: jobs.RenderJob
    preview: str  # what the reply and /queue show of it


class RecentDeletions:
    """The latest messages deleted in each guild. A message can be deleted while its line is prepared or waits
    for the messages before it, when there is no line yet to take back: `enqueue` looks here once it is queued."""

    def __init__(self) -> None:
        self._ids: defaultdict[int, deque[int]] = defaultdict(lambda: deque(maxlen=RECENT_DELETIONS))

    def add(self, guild_id: int, message_ids: Iterable[int]) -> None:
        self._ids[guild_id].extend(message_ids)

    def has(self, guild_id: int, message_id: int) -> bool:
        ids = self._ids.get(guild_id)
        return ids is not None and message_id in ids


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


async def may_use(bot: DiaBot, member: discord.Member) -> None:
    """Raise unless `member` has the role the server (or the host) requires to use the bot."""
    checks.has_role(member, await bot.server_settings.role(member.guild.id, "required_role"))


async def may_edit(bot: DiaBot, member: discord.Member, doing: str = "changing characters") -> None:
    """Raise unless `member` may change the server's cast and pronunciations: the server's character role, else
    Manage Server."""
    checks.may_edit_characters(member, await bot.server_settings.role(member.guild.id, "character_role"), doing)


async def prepare(
    bot: DiaBot,
    member: discord.Member,
    text: str,
    channel_id: int | None,
    *,
    export: bool = False,
    speed: float | None = None,
    seed: int | None = None,
    said_by: str | None = None,
    attached: str | None = None,
) -> Prepared:
    """The render job for `member`'s `text`; messages about it go to the text channel `channel_id`. `speed`
    None is the member's own (`/myvoice speed`). The read channel's message also has `said_by` (a name from
    `text.sayable_name`), said first in the member's voice ("Ann said, ..."), and `attached` (from
    `text.attached`), said last ("Attached: an image."); with `attached`, `text` may be empty ("Ann sent an
    image.")."""
    guild = member.guild
    settings = bot.settings
    await may_use(bot, member)
    rules = TextRules(max_chars=settings.max_say_chars)
    if attached and not text.strip():  # a message of files only
        spoken = f"{said_by} sent {attached}." if said_by else f"Attached: {attached}."
        said_by = None  # said already
    else:
        names = await _names(guild, text) if len(text) <= rules.max_chars else (lambda kind, snowflake: None)
        spoken = speakable(text, names, rules) + (f" Attached: {attached}." if attached else "")
    characters = await Cast(bot.redis, guild.id).all()
    moods = {c.name: c.mood_names for c in characters}
    # Text that names no speaker is the member's chosen voice (/myvoice), else the server's, else [S1].
    chosen = await bot.voice_choices.for_line(guild.id, member.id, moods)
    own = chosen.voice
    default = (own.name, own.mood) if own is not None else ("S1", None)
    script = f"{said_by} said, {spoken}" if said_by else spoken  # before any tag: in the member's voice
    items = script_items(script, moods, default=default)
    items = (await bot.pronunciations.respeller(guild.id)).script(items)  # the words only: tags and cues stay
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
    params = jobs.RenderParams(max_tokens=max_tokens, seed=seed, speed=chosen.speed if speed is None else speed)
    # Every take gets a seed the user can give back; the worker caches each line under it, so asking for
    # it again replays that take exactly (tts_engine/worker.py).
    job = jobs.RenderJob(
        guild_id=guild.id,
        requester=member.id,
        segments=segments,
        params=params,
        channel_id=channel_id,
        export=export,
        render_seed=seed if seed is not None else secrets.randbelow(SEEDS),
    )
    preview = discord.utils.escape_markdown(" ".join(spoken.split()))
    preview = preview if len(preview) <= PREVIEW else preview[: PREVIEW - 1] + "…"
    if own is not None and any(isinstance(i, Turn) and (i.speaker, i.mood) == default for i in items):
        preview = f"(as {discord.utils.escape_markdown(own.tag)}) {preview}"
    return Prepared(job, preview)


async def enqueue(
    bot: DiaBot,
    member: discord.Member,
    line: Prepared,
    text_channel: int,
    *,
    answer: Callable[[], Awaitable[object]] | None = None,
    message_id: int | None = None,
) -> tuple[VoiceChannel, int]:
    """Queue `line` in `member`'s voice channel: (that channel, how many lines play before it). `answer` is
    called once the job is queued and before joining voice, which can take seconds: an interaction defers
    there, within its 3 s. `message_id` is the message the line speaks, if any: deleting it takes the line back,
    and a message deleted already is an error (after `answer`)."""
    guild, job = member.guild, line.job
    channel = checks.caller_channel(member)
    checks.can_speak_in(channel, guild.me)
    if job.export:
        checks.can_post_export(guild.get_channel_or_thread(text_channel), channel, guild.me)
    player = bot.player(guild.id)
    checks.not_busy_elsewhere(player.channel(), channel, player.busy)
    await submit(bot.redis, job, bot.limits, timeout=SUBMIT_WITHIN)
    if answer is not None:
        await answer()
    queued = Line(
        job.job_id, member.id, text_channel, channel.id, line.preview, export=job.export, message_id=message_id
    )
    try:
        async with player.joined(channel):  # one line at a time from joining to queueing
            ahead = await player.enqueue(queued)
    except UserFacingError:
        await jobs.cancel(bot.redis, job.job_id)  # never rendered for nobody
        raise
    # Checked before any await, so the line cannot have started: deleted before it was queued, the deletion found
    # no line to take back then.
    if message_id is not None and bot.deleted.has(guild.id, message_id):
        await player.withdraw_messages({message_id})
        raise UserFacingError("that message was deleted before it was spoken")
    return channel, ahead


async def requeue(bot: DiaBot, line: Prepared, old_job_id: str) -> bool:
    """Queue `line` in the place of the waiting line of job `old_job_id`, as the message it speaks was edited:
    False, with nothing queued, if that line no longer waits (it started playing meanwhile, or was taken back)."""
    player = bot.player(line.job.guild_id)
    old = player.waiting(old_job_id)
    if old is None:
        return False
    # The server's queue does not grow (the old job is cancelled next): a queue at its cap takes the edit too.
    limits = dataclasses.replace(bot.limits, guild_cap=bot.limits.guild_cap + 1)
    await submit(bot.redis, line.job, limits, timeout=SUBMIT_WITHIN)
    if await player.replace(old_job_id, dataclasses.replace(old, job_id=line.job.job_id, preview=line.preview)):
        return True
    await jobs.cancel(bot.redis, line.job.job_id)  # never rendered for nobody
    return False
