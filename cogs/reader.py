"""The read channel: what members in voice write in the channel a server chose (`/settings read-channel`) is
spoken as if they had used /say, in their `/myvoice` voice.

The TTS bots' "setup channel" (research/discord.md §1.6): for members who cannot or would rather not speak.
It needs the privileged Message Content intent, so a host turns it on with `DIA_READ_MESSAGES`. Someone who is
not in a voice channel is only chatting, and is left alone, as is a message that starts with the server's skip
prefix (`/settings read-channel ... skip:`); any other reason a message is not spoken is said in
a short reply that removes itself, as a message has no private answer.

Unless the server turned it off (`names:False`), the writer's name is said first ("Ann said, ...") when the
message before was someone else's or a while ago, as the TTS bots' "xsaid" does: in a busy channel listeners
otherwise cannot tell who wrote what, as members who chose no voice all sound alike. What a message carries
besides its text is said after it, in a few words ("Attached: an image."), as listeners cannot see it; a
message of files only is "Ann sent an image."

A message deleted before it is spoken (by its writer, or by a moderator) is not spoken (cogs/deletions.py). One
edited before its line starts is read again in that line's place (`lines.requeue`), so a fixed typo is never
heard; one that was not spoken for a mistake is read once fixed. The bot remembers the messages it read for this
(`Heard`), so edits are followed until a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot import checks, lines, text
from bot.errors import REDIS_AWAY, REDIS_AWAY_MESSAGE, USER_ERRORS
from bot.server_settings import Reading

if TYPE_CHECKING:
    from bot.client import DiaBot

log = logging.getLogger(__name__)

READ_TYPES = (discord.MessageType.default, discord.MessageType.reply)
NAME_AGAIN_SECONDS = 60.0  # a writer's next message within this is not introduced again
HEARD_PER_GUILD = 200  # messages remembered for their edits: more than a server's queue can hold


@dataclass
class Heard:
    """A message the read channel read: what it said, the name said before it, and its line's job (None when
    it was not spoken, and a note said why)."""

    said: tuple[str, tuple[int, ...]]
    said_by: str | None
    job_id: str | None = None


def _said(message: discord.Message) -> tuple[str, tuple[int, ...]]:
    # What a reading depends on. An edit can change the text and drop attachments; an edit that only adds a
    # link's preview (Discord edits the message to add its embed) changes neither.
    return message.content, tuple(attachment.id for attachment in message.attachments)


def _has_something(message: discord.Message) -> bool:
    """Whether there is anything to read: text, files or stickers."""
    return bool(message.content.strip() or message.attachments or message.stickers)


class Reader(commands.Cog):
    def __init__(self, bot: DiaBot) -> None:
        self.bot = bot
        self._last: dict[int, tuple[int, float]] = {}  # guild -> the writer of its last message read, and when
        # discord.py runs each message's handler as its own task: one at a time per guild, so that messages
        # written a moment apart are queued in the order they were written. Edits take their turn too.
        self._turns: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        # guild -> the latest messages read, for their edits (a line waits for at most a queue's worth of them)
        self._heard: defaultdict[int, OrderedDict[int, Heard]] = defaultdict(OrderedDict)

    def _introduce(self, member: discord.Member) -> str | None:
        """The name to say before `member`'s message: none if their last one was just read."""
        writer, at = self._last.get(member.guild.id, (None, 0.0))
        if writer == member.id and time.monotonic() - at < NAME_AGAIN_SECONDS:
            return None
        return text.sayable_name(member.display_name)

    async def _reading(self, message: discord.Message, guild_id: int) -> Reading | None:
        """The server's read-channel settings if it reads `message` (in its read channel, without the skip
        prefix); else None."""
        try:
            reading = await self.bot.server_settings.reading(guild_id)
        except REDIS_AWAY as exc:  # not knowing the read channel, there is no one to tell
            log.warning("message %s (guild %s) not read: Redis did not answer: %s", message.id, guild_id, exc)
            return None
        skip = reading.skip
        if reading.channel != message.channel.id or (skip and message.content.lstrip().startswith(skip)):
            return None
        return reading

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        member = message.author
        if (
            not isinstance(member, discord.Member)  # a direct message, or a webhook's
            or member.bot
            or message.type not in READ_TYPES
            or not _has_something(message)
            or member.voice is None
            or member.voice.channel is None
        ):
            return
        async with self._turns[member.guild.id]:  # taken before any await: in the order the messages came
            reading = await self._reading(message, member.guild.id)
            if reading is not None:
                said_by = self._introduce(member) if reading.names else None
                await self._read(message, member, Heard(_said(message), said_by))

    @commands.Cog.listener()
    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        """An edited message is read again, in its line's place, if that line still waits: a typo fixed in time is
        not spoken. One that was not spoken for a mistake (a note said why) is read now that it is fixed."""
        message, member = payload.message, payload.message.author
        if not isinstance(member, discord.Member) or member.bot:
            return
        # Looked up in its turn: the message may still wait for the messages before it to be read.
        async with self._turns[member.guild.id]:
            heard = self._heard[member.guild.id].get(message.id)
            if heard is None or heard.said == _said(message):
                return  # not one the read channel read, or only its link preview came
            player = self.bot.players.get(member.guild.id)
            if heard.job_id is not None and (player is None or player.waiting(heard.job_id) is None):
                return  # spoken already, or being spoken: too late to change
            if not _has_something(message) or await self._reading(message, member.guild.id) is None:
                # Emptied, or now starts with the skip prefix (or the read channel moved): no longer to be spoken.
                await self._taken_back(member.guild.id, heard.job_id)
                self._heard[member.guild.id].pop(message.id, None)
                return
            log.info("message %s was edited: reading it again", message.id)
            await self._read(message, member, Heard(_said(message), heard.said_by), replacing=heard.job_id)

    async def _read(
        self, message: discord.Message, member: discord.Member, heard: Heard, *, replacing: str | None = None
    ) -> None:
        """Read `message` aloud: queued at the end, or in the place of the waiting line of job `replacing`."""
        voice = message.flags.voice
        kinds = [text.attachment_kind(a.filename, a.content_type, voice_message=voice) for a in message.attachments]
        attached = text.attached(kinds + ["sticker"] * len(message.stickers))
        guild_id = member.guild.id
        self._remember(guild_id, message.id, heard)
        try:
            line = await lines.prepare(
                self.bot, member, message.content, message.channel.id, said_by=heard.said_by, attached=attached
            )
            if replacing is None:
                await lines.enqueue(self.bot, member, line, message.channel.id, message_id=message.id)
            elif not await lines.requeue(self.bot, line, replacing):
                heard.job_id = replacing  # it started playing meanwhile: the old words it is
                return
            heard.job_id = line.job.job_id
        except USER_ERRORS as exc:
            await self._taken_back(guild_id, replacing)
            if not self.bot.deleted.has(guild_id, message.id):  # a note on a deleted message answers nothing
                await self._note(message, str(exc))
        except REDIS_AWAY as exc:
            await self._taken_back(guild_id, replacing)
            log.warning("reading message %s (guild %s): Redis did not answer: %s", message.id, guild_id, exc)
            await self._note(message, REDIS_AWAY_MESSAGE)
        except Exception:
            log.exception("reading message %s (guild %s) failed", message.id, guild_id)
            await self._note(message, "something went wrong on my side; the bot's host can find it in the log")
        else:
            if replacing is None:
                self._last[guild_id] = (member.id, time.monotonic())

    def _remember(self, guild_id: int, message_id: int, heard: Heard) -> None:
        recent = self._heard[guild_id]
        recent[message_id] = heard
        recent.move_to_end(message_id)
        while len(recent) > HEARD_PER_GUILD:
            recent.popitem(last=False)

    async def _taken_back(self, guild_id: int, job_id: str | None) -> None:
        # An edit that is not to be spoken takes back the line of the words it replaced.
        player = self.bot.players.get(guild_id)
        if job_id is not None and player is not None and await player.withdraw_line(job_id) is not None:
            log.info("an edited message is not read: its line %s is taken back", job_id)

    async def _note(self, message: discord.Message, why: str) -> None:
        channel, guild = message.channel, message.guild
        if guild is not None and isinstance(channel, discord.abc.GuildChannel | discord.Thread):
            lacking = checks.cannot_post(channel, guild.me, reply=True)
            if lacking is not None:  # `/settings show` tells the managers
                log.info("message %s not spoken (%s); no note: missing %s in its channel", message.id, why, lacking)
                return
        try:
            await message.reply(
                f"⚠️ Not spoken: {why}",
                delete_after=self.bot.settings.read_note_seconds,
                mention_author=False,
                silent=True,
            )
        except discord.HTTPException as exc:
            log.warning("could not tell %s why message %s was not spoken: %s", message.author.id, message.id, exc)


async def setup(bot: DiaBot) -> None:
    await bot.add_cog(Reader(bot))
