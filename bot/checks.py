"""The questions every voice command asks first, each failing with a precise `UserFacingError`."""

from __future__ import annotations

import discord

from bot.errors import UserFacingError

VoiceChannel = discord.VoiceChannel | discord.StageChannel


def caller_channel(member: discord.Member) -> VoiceChannel:
    """The voice channel the caller is in."""
    channel = member.voice.channel if member.voice is not None else None
    if channel is None:
        raise UserFacingError("join a voice channel first: I speak in the channel you are in")
    return channel


def can_speak_in(channel: VoiceChannel, me: discord.Member) -> None:
    """The bot may connect to and speak in `channel`, else which permission is missing."""
    permissions = channel.permissions_for(me)
    # Without Connect, discord.py reports Speak as missing too; Connect is then the one to grant.
    missing = "Connect" if not permissions.connect else "Speak" if not permissions.speak else None
    if missing is not None:
        raise UserFacingError(f"I cannot speak in {channel.mention}: I am missing the {missing} permission there")


def not_busy_elsewhere(current: VoiceChannel | None, wanted: VoiceChannel, busy: bool) -> None:
    if current is not None and current.id != wanted.id and busy:
        raise UserFacingError(
            f"I am already speaking in {current.mention}: join that channel, or wait until its lines are done"
        )


def has_role(member: discord.Member, required: str | None) -> None:
    """`required` is a role name or id that users need; None lets everyone in."""
    if required is None:
        return
    if any(role.name == required or str(role.id) == required for role in member.roles):
        return
    raise UserFacingError(f"you need the {required} role to use this bot here")


def may_control(member: discord.Member, current: VoiceChannel | None) -> None:
    """Skip, stop and leave are for people in the bot's channel, or who manage the server."""
    if member.guild_permissions.manage_guild:
        return
    if current is None or member.voice is None or member.voice.channel is None or member.voice.channel.id != current.id:
        raise UserFacingError("only people in my voice channel (or with Manage Server) can do that")
