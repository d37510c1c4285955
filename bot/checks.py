"""The questions every voice command asks first, each failing with a precise `UserFacingError`."""

from __future__ import annotations

import discord

from bot.errors import UserFacingError

VoiceChannel = discord.VoiceChannel | discord.StageChannel


def server_member(interaction: discord.Interaction) -> discord.Member:
    """The caller, as a member of the server the command was used in."""
    if not isinstance(interaction.user, discord.Member) or interaction.guild is None:
        raise UserFacingError("this command works in a server, not in direct messages")
    return interaction.user


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
    if isinstance(channel, discord.StageChannel) and not permissions.mute_members:
        # On a stage the bot joins the audience, where nobody hears it; stepping up to speak takes Mute Members.
        raise UserFacingError(
            f"{channel.mention} is a stage, and I can speak there only as a stage moderator: a moderator can give "
            "me the Mute Members permission there"
        )
    # Discord ignores a bot's join of a full channel (no answer at all: the connect would time out) unless the bot
    # has Manage Channels there (discord-api-docs, topics/voice-connections). The bot counts toward the limit.
    inside = len(channel.voice_states)
    limit = channel.user_limit
    if limit and me.id not in channel.voice_states and inside >= limit and not permissions.manage_channels:
        raise UserFacingError(
            f"{channel.mention} is full ({inside} of {limit}), and Discord lets me into a full channel only with the "
            "Manage Channels permission there: someone has to leave first, or a moderator can raise the limit"
        )


Postable = discord.abc.GuildChannel | discord.Thread


def cannot_post(channel: Postable, me: discord.Member, *, file: bool = False, reply: bool = False) -> str | None:
    """The permission the bot lacks to post in `channel` (with a file, or as a reply), if any: Discord refuses such
    a post (resources/message, "Create Message"). A thread takes Send Messages in Threads instead."""
    permissions = channel.permissions_for(me)
    send = permissions.send_messages_in_threads if isinstance(channel, discord.Thread) else permissions.send_messages
    needed = [
        ("View Channel", permissions.view_channel),
        ("Send Messages in Threads" if isinstance(channel, discord.Thread) else "Send Messages", send),
        ("Attach Files", permissions.attach_files or not file),
        ("Read Message History", permissions.read_message_history or not reply),
    ]
    return next((name for name, granted in needed if not granted), None)


def can_post_export(where: Postable | None, voice: VoiceChannel, me: discord.Member) -> None:
    """An exported line's file is posted where it was asked for, else in its voice channel's chat (bot.post): the
    bot may post a file in one of them."""
    lacking = "View Channel" if where is None else cannot_post(where, me, file=True)
    if lacking is None or cannot_post(voice, me, file=True) is None:
        return
    here = "this channel" if where is None else where.mention
    raise UserFacingError(
        f"`export` posts the line as a file once it is spoken, and I cannot post files in {here} (I am missing "
        f"{lacking} there) nor in {voice.mention}'s chat: leave export off, or ask a moderator for that permission"
    )


def not_busy_elsewhere(current: VoiceChannel | None, wanted: VoiceChannel, busy: bool) -> None:
    if current is not None and current.id != wanted.id and busy:
        raise UserFacingError(
            f"I am already speaking in {current.mention}: join that channel, or wait until its lines are done"
        )


def find_role(guild: discord.Guild, spec: str) -> discord.Role | None:
    """The role `spec` names: a role id, else a role name."""
    if spec.isdigit() and (role := guild.get_role(int(spec))) is not None:
        return role
    return discord.utils.get(guild.roles, name=spec)


def _holds(member: discord.Member, spec: str) -> bool:
    return any(role.name == spec or str(role.id) == spec for role in member.roles)


def has_role(member: discord.Member, required: str | None) -> None:
    """`required` is a role name or id that users need; None lets everyone in."""
    if required is None or _holds(member, required):
        return
    role = find_role(member.guild, required)
    if role is None:  # deleted since it was chosen, or the host's role, which this server never had
        raise UserFacingError(
            f"using this bot here needs the {required} role, which this server does not have; "
            "someone with Manage Server can choose another with /settings role"
        )
    raise UserFacingError(f"you need the {role.name} role to use this bot here")


def may_edit_characters(member: discord.Member, role: str | None, doing: str = "changing characters") -> None:
    """Characters (and pronunciations) are changed by people with Manage Server, or with the server's character
    role."""
    if member.guild_permissions.manage_guild or (role is not None and _holds(member, role)):
        return
    found = find_role(member.guild, role) if role is not None else None
    needed = f"the {found.name} role or " if found is not None else ""
    raise UserFacingError(f"{doing} needs {needed}the Manage Server permission")


def manages_server(member: discord.Member) -> None:
    if not member.guild_permissions.manage_guild:
        raise UserFacingError("changing the bot's settings for this server needs the Manage Server permission")


def may_control(member: discord.Member, current: VoiceChannel | None) -> None:
    """Skip, stop and leave are for people in the bot's channel, or who manage the server."""
    if member.guild_permissions.manage_guild:
        return
    if current is None or member.voice is None or member.voice.channel is None or member.voice.channel.id != current.id:
        raise UserFacingError("only people in my voice channel (or with Manage Server) can do that")
