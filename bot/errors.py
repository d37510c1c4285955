"""User mistakes and the one error handler, for app commands and for buttons (python-discord's ErrorHandler idea).

A `UserFacingError` (or a rejected text or job) becomes an ephemeral reply saying what to change. Redis not
answering (down, or stalled past the client's socket timeout, which `__main__` keeps inside Discord's 3 s to
answer) is no one's mistake: the user is told to try again and the host gets one warning. Anything else is a
bug: it is logged once with the command, guild and user, and the user gets a short apology.
"""

from __future__ import annotations

import asyncio
import logging

import discord
from discord import app_commands
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError as RedisFull
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.text import TextRejected
from tts_engine import jobs
from tts_engine.characters import CastError
from tts_engine.jobs import SubmitRejected

log = logging.getLogger(__name__)


class UserFacingError(Exception):
    """A mistake the user can fix; `str()` is shown to them, only to them."""


# What a user can fix: said to them as it is. Anything else is a bug.
USER_ERRORS = (UserFacingError, TextRejected, SubmitRejected, CastError)
# Redis away: a refused connection fails at once, a stall at the client's socket timeout.
REDIS_AWAY = (RedisConnectionError, RedisTimeoutError)
REDIS_AWAY_MESSAGE = "my database (Redis) is not answering; try again in a moment"
# Redis at its maxmemory (no eviction, Redis's default) refuses writes until its host gives it room.
REDIS_FULL_MESSAGE = "my database (Redis) is full, so I cannot keep anything new; the bot's host has to give it room"


async def submit(redis: Redis, job: jobs.RenderJob, limits: jobs.QueueLimits, *, timeout: float) -> None:
    """Queue `job`; a queue that does not answer in `timeout` s is a message for the user, not a hang."""
    try:
        async with asyncio.timeout(timeout):  # (not wait_for: on Python 3.11 it can lose a cancel, see bot/voice.py)
            await jobs.submit(redis, job, limits)
    except TimeoutError:
        raise UserFacingError(REDIS_AWAY_MESSAGE) from None


def _sentence(message: str) -> str:
    return message[:1].upper() + message[1:]


async def reply_privately(interaction: discord.Interaction, message: str) -> None:
    """An ephemeral reply, whether or not the interaction was already answered or deferred.

    After a public "thinking" defer (`/say` defers publicly, then joins the voice channel), Discord gives the
    follow-up that replaces the placeholder the defer's visibility, whatever the follow-up asks for; so the
    public placeholder is taken down first and the message goes out as a new, private one.
    """
    if not interaction.response.is_done():
        await interaction.response.send_message(message, ephemeral=True)
        return
    if interaction.response.type is discord.InteractionResponseType.deferred_channel_message:
        try:
            original = await interaction.original_response()
            if original.flags.loading and not original.flags.ephemeral:
                await original.delete()
        except discord.HTTPException:
            log.debug("no public placeholder to take down before a private reply", exc_info=True)
    await interaction.followup.send(message, ephemeral=True)


async def report(interaction: discord.Interaction, error: Exception, where: str) -> None:
    """Tell the user what went wrong with `where` (a command or a button), privately: their mistake as it is,
    anything else as a short apology, logged once with the guild and user."""
    if isinstance(error, USER_ERRORS):
        message = _sentence(str(error))
    elif isinstance(error, app_commands.CheckFailure):
        message = _sentence(str(error)) or "You cannot use this command here."
    elif isinstance(error, REDIS_AWAY):
        log.warning("%s: Redis did not answer (guild %s): %s", where, interaction.guild_id, error)
        message = _sentence(REDIS_AWAY_MESSAGE)
    elif isinstance(error, RedisFull):
        log.warning("%s: %s (guild %s)", where, jobs.REDIS_FULL_HINT, interaction.guild_id)
        message = _sentence(REDIS_FULL_MESSAGE)
    else:
        log.error("%s failed (guild %s, user %s)", where, interaction.guild_id, interaction.user.id, exc_info=error)
        message = "Something went wrong on my side; the bot's host can find the details in its log."
    try:
        await reply_privately(interaction, f"⚠️ {message}")
    except discord.HTTPException:
        log.warning("could not tell user %s about: %s", interaction.user.id, message)


async def on_app_command_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
    original = getattr(error, "original", error)
    command = interaction.command.qualified_name if interaction.command else "?"
    await report(interaction, original if isinstance(original, Exception) else error, f"/{command}")
