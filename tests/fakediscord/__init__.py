"""A local Discord emulator for tests: gateway v10, the REST subset the bot uses, voice gateway v8 over TLS
and UDP. The real discord.py client connects to it; tests drive it like users (slash commands, button clicks,
autocomplete, file uploads) and inspect what it received."""

from tests.fakediscord.interactions import Interaction
from tests.fakediscord.messages import Attachment, Message, Posted
from tests.fakediscord.model import CONNECT, MANAGE_CHANNELS, MANAGE_GUILD, SPEAK, Channel, Guild, Member, Role, Upload
from tests.fakediscord.server import EPHEMERAL, FakeDiscord
from tests.fakediscord.voice import OPUS_SILENCE, Packet, VoiceSession

__all__ = [
    "CONNECT", "EPHEMERAL", "MANAGE_CHANNELS", "MANAGE_GUILD", "OPUS_SILENCE", "SPEAK", "Attachment", "Channel",
    "FakeDiscord", "Guild", "Interaction", "Member", "Message", "Packet", "Posted", "Role", "Upload", "VoiceSession",
]  # fmt: skip
