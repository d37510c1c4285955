"""A message deleted before it is spoken is not spoken, and the bot stops showing it.

Whether its writer or a moderator deleted it, one message or a purge (MESSAGE_DELETE_BULK): a line that speaks
it (the read channel's, the Speak-message menu's) leaves the queue, or stops if it plays, and the menu's
replies that show its text say it was deleted instead, without their **Play again** button (bot/takes.py).
Deletions reach the bot with the guild-messages intent, which it asks for only with `DIA_READ_MESSAGES`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot import takes

if TYPE_CHECKING:
    from bot.client import DiaBot

log = logging.getLogger(__name__)


class Deletions(commands.Cog):
    def __init__(self, bot: DiaBot) -> None:
        self.bot = bot

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        if payload.guild_id is not None:
            await self.deleted(payload.guild_id, {payload.message_id})

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        if payload.guild_id is not None:
            await self.deleted(payload.guild_id, payload.message_ids)

    async def deleted(self, guild_id: int, message_ids: Collection[int]) -> None:
        # Remembered before any await: a line being prepared meanwhile is taken back once queued (bot/lines.py).
        self.bot.deleted.add(guild_id, message_ids)
        player = self.bot.players.get(guild_id)  # none: nothing was queued in this guild
        if player is not None:
            for line in await player.withdraw_messages(message_ids):
                log.info("message %s was deleted: its line %s is taken back", line.message_id, line.job_id)
        await takes.retract(self.bot, self.bot.redis, guild_id, message_ids)


async def setup(bot: DiaBot) -> None:
    await bot.add_cog(Deletions(bot))
