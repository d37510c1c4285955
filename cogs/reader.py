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

A message deleted before it is spoken (by its writer, or by a moderator) is not spoken (cogs/deletions.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot import lines, text
from bot.errors import REDIS_AWAY, REDIS_AWAY_MESSAGE, USER_ERRORS

if TYPE_CHECKING:
    from bot.client import DiaBot

log = logging.getLogger(__name__)

READ_TYPES = (discord.MessageType.default, discord.MessageType.reply)
NAME_AGAIN_SECONDS = 60.0  # a writer's next message within this is not introduced again


class Reader(commands.Cog):
    def __init__(self, bot: DiaBot) -> None:
        self.bot = bot
        self._last: dict[int, tuple[int, float]] = {}  # guild -> the writer of its last message read, and when
        # discord.py runs each message's handler as its own task: one at a time per guild, so that messages
        # written a moment apart are queued in the order they were written.
        self._turns: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)

    def _introduce(self, member: discord.Member) -> str | None:
        """The name to say before `member`'s message: none if their last one was just read."""
        writer, at = self._last.get(member.guild.id, (None, 0.0))
        if writer == member.id and time.monotonic() - at < NAME_AGAIN_SECONDS:
            return None
        return text.sayable_name(member.display_name)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        member = message.author
        if (
            not isinstance(member, discord.Member)  # a direct message, or a webhook's
            or member.bot
            or message.type not in READ_TYPES
            or not (message.content.strip() or message.attachments or message.stickers)
            or member.voice is None
            or member.voice.channel is None
        ):
            return
        async with self._turns[member.guild.id]:  # taken before any await: in the order the messages came
            try:
                reading = await self.bot.server_settings.reading(member.guild.id)
            except REDIS_AWAY as exc:  # not knowing the read channel, there is no one to tell
                log.warning(
                    "message %s (guild %s) not read: Redis did not answer: %s", message.id, member.guild.id, exc
                )
                return
            skip = reading.skip
            if reading.channel == message.channel.id and not (skip and message.content.lstrip().startswith(skip)):
                await self._read(message, member, reading.names)

    async def _read(self, message: discord.Message, member: discord.Member, names: bool) -> None:
        said_by = self._introduce(member) if names else None
        voice = message.flags.voice
        kinds = [text.attachment_kind(a.filename, a.content_type, voice_message=voice) for a in message.attachments]
        attached = text.attached(kinds + ["sticker"] * len(message.stickers))
        try:
            line = await lines.prepare(
                self.bot, member, message.content, message.channel.id, said_by=said_by, attached=attached
            )
            await lines.enqueue(self.bot, member, line, message.channel.id, message_id=message.id)
        except USER_ERRORS as exc:
            if not self.bot.deleted.has(member.guild.id, message.id):  # a note on a deleted message answers nothing
                await self._note(message, str(exc))
        except REDIS_AWAY as exc:
            log.warning("reading message %s (guild %s): Redis did not answer: %s", message.id, member.guild.id, exc)
            await self._note(message, REDIS_AWAY_MESSAGE)
        except Exception:
            log.exception("reading message %s (guild %s) failed", message.id, member.guild.id)
            await self._note(message, "something went wrong on my side; the bot's host can find it in the log")
        else:
            self._last[member.guild.id] = (member.id, time.monotonic())

    async def _note(self, message: discord.Message, why: str) -> None:
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
