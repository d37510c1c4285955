"""A local Discord emulator for tests: gateway v10, the REST subset the bot uses, voice gateway v8 over TLS
and UDP. The real discord.py client connects to it; tests drive it like users and inspect what it received."""

from tests.fakediscord.model import CONNECT, MANAGE_GUILD, SPEAK, Channel, Guild, Member
from tests.fakediscord.server import EPHEMERAL, FakeDiscord, Interaction
from tests.fakediscord.voice import OPUS_SILENCE, Packet, VoiceSession

__all__ = [
    "CONNECT", "EPHEMERAL", "MANAGE_GUILD", "OPUS_SILENCE", "SPEAK", "Channel", "FakeDiscord", "Guild",
    "Interaction", "Member", "Packet", "VoiceSession",
]  # fmt: skip
