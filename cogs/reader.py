"""The read channel: what members in voice write in the channel a server chose (`/settings read-channel`) is
spoken as if they had used /say, in their `/myvoice` voice.

The TTS bots' "setup channel" (research/discord.md §1.6): for members who cannot or would rather not speak.
It needs the privileged Message Content intent, so a host turns it on with `DIA_READ_MESSAGES`. Someone who is
not in a voice channel is only chatting, and is left alone, as is a message that starts with the server's skip
prefix (`/settings read-channel ... skip:`); any other reason a message is not spoken is said in
a short reply that removes itself, as a message has no private answer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot import lines
from bot.errors import USER_ERRORS

if TYPE_CHECKING:
    from bot.client import DiaBot

log = logging.getLogger(__name__)

NOTE_SECONDS = 30.0  # how long a note about a message that was not spoken stays
READ_TYPES = (discord.MessageType.default, discord.MessageType.reply)


class Reader(commands.Cog):
    def __init__(self, bot: DiaBot) -> None:
        self.bot = bot

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        member = message.author
        if (
            not isinstance(member, discord.Member)  # a direct message, or a webhook's
            or member.bot
            or message.type not in READ_TYPES
            or not message.content.strip()
            or member.voice is None
            or member.voice.channel is None
        ):
            return
        channel, skip = await self.bot.server_settings.reading(member.guild.id)
        if channel != message.channel.id or (skip is not None and message.content.lstrip().startswith(skip)):
            return
        try:
            line = await lines.prepare(self.bot, member, message.content, message.channel.id)
            await lines.enqueue(self.bot, member, line, message.channel.id)
        except USER_ERRORS as exc:
            await self._note(message, str(exc))
        except Exception:
            log.exception("reading message %s (guild %s) failed", message.id, member.guild.id)
            await self._note(message, "something went wrong on my side; the bot's host can find it in the log")

    async def _note(self, message: discord.Message, text: str) -> None:
        try:
            await message.reply(f"⚠️ Not spoken: {text}", delete_after=NOTE_SECONDS, mention_author=False, silent=True)
        except discord.HTTPException as exc:
            log.warning("could not tell %s why message %s was not spoken: %s", message.author.id, message.id, exc)


async def setup(bot: DiaBot) -> None:
    await bot.add_cog(Reader(bot))
