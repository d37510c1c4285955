"""Whether the bot is heard where it sits in voice: not from a stage's audience, and not while server-muted.

Discord seats everyone who joins a stage in its audience (their voice state's `suppress`), a bot included, and
forwards the audience's audio to nobody. Stepping up to speak takes Mute Members there (checks.can_speak_in asks
before joining). A stage moderator can move the bot back to the audience at any time ("Move to Audience"), and
invite it up again, which for a bot takes effect at once (discord-api-docs, resources/voice: "Modify Current
User Voice State" and "Modify User Voice State"). A moderator's server mute (`mute`) silences it in any channel,
across moves, until they unmute it. The player (bot/voice_link.py) pauses while the bot is unheard, so no line is spent
on nobody.
"""

from __future__ import annotations

import enum
import logging

import discord

from bot.text import counted

log = logging.getLogger(__name__)


class Seat(enum.Enum):
    """What a change of the bot's own voice state means for its playback."""

    HEARD = enum.auto()  # heard now: up on the stage (stepped up, or invited), or in a channel that is no stage
    SENT_DOWN = enum.auto()  # a stage moderator moved it from the stage into the audience
    ARRIVED = enum.auto()  # it arrived in a stage's audience: it joined, discord.py reconnected, or it was dragged
    MUTED = enum.auto()  # a moderator server-muted it (or it arrived muted)


def seat_change(before: discord.VoiceState, after: discord.VoiceState) -> Seat | None:
    """What the bot's voice state going from `before` to `after` means; None if nothing for playback changed."""
    if after.channel is None:
        return None  # out of voice: the player hears of it when playback ends (GuildPlayer._play)
    moved = before.channel is None or before.channel.id != after.channel.id
    if after.mute:
        return Seat.MUTED if moved or not before.mute else None
    if not isinstance(after.channel, discord.StageChannel) or not after.suppress:
        return Seat.HEARD
    if moved:
        return Seat.ARRIVED
    return Seat.SENT_DOWN if not before.suppress or before.mute else None


async def step_up(stage: discord.StageChannel) -> bool:
    """Step up to speak on `stage`, where the bot is; whether it did."""
    try:
        await stage.guild.me.edit(suppress=False)
    except discord.HTTPException as exc:
        log.warning("could not step up to speak on the stage %s: %s", stage, exc)
        return False
    return True


def unheard(why: Seat) -> str:
    """Why nobody hears the bot and until when, for the replies of `/queue`, `/say` and `/join` while it pauses for
    `why`."""
    if why is Seat.MUTED:
        return "I am server-muted, so nobody hears me until a moderator unmutes me"
    return "I am in the stage's audience, so nobody hears me until a stage moderator invites me to speak"


def paused_note(where: discord.VoiceChannel | discord.StageChannel, waiting: int, why: Seat) -> str:
    """What the bot says when it pauses for `why` in `where`, `waiting` lines not played yet."""
    lines = f" ({counted(waiting, 'line')} waiting)" if waiting else ""
    if why is Seat.MUTED:
        return (
            f"🔇 A moderator server-muted me in {where.mention}, so nobody hears me, and I paused{lines}. Unmute me "
            "to go on; `/stop` drops the queue."
        )
    if why is Seat.SENT_DOWN:
        return (
            f"🔇 A stage moderator moved me to the audience of {where.mention}, where nobody hears me, so I paused"
            f"{lines}. Invite me to speak, or use `/join` or `/say`, to go on; `/stop` drops the queue."
        )
    return (
        f"🔇 I am in the audience of {where.mention}, where nobody hears me, and could not step up to speak, so I "
        f"paused{lines}. A stage moderator can invite me to speak."
    )
