"""A guild's voice connection: joining a channel, and whether playback may go on there.

Playback pauses while nobody would hear it: the bot sits in a stage's audience or is server-muted (bot/seat.py),
or the gateway connection is down. discord.py resumes the gateway session by itself, and the voice connection lives
on; when Discord refuses the resume, discord.py identifies anew, and the voice connection has ended with the old
session (discord-api-docs#2257) while discord.py forgets its voice client. When the voice connection itself drops (a
voice server going away, close code 4006), discord.py reconnects it, but its reconnect can hang for up to 30 s or
for good (`watch`): the bot then takes the connection down and joins again on a fresh one. The player
(bot/voice.py) builds on this with the playing itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import discord

from bot import checks, seat
from bot.errors import UserFacingError
from bot.line_queue import LineQueue
from bot.seat import Seat
from bot.services import Services

log = logging.getLogger(__name__)

JOIN_WITHIN = 20.0  # seconds discord.py's voice handshake may take before a join has failed
# After a failed handshake discord.py leaves twice, and the second time waits up to JOIN_WITHIN more for Discord to
# confirm a leave its voice client (removed by the first) never hears: a join gives up after this much in all.
GIVE_UP_JOIN_AFTER = JOIN_WITHIN + 2.0
LEAVE_WITHIN = 2.0  # seconds to wait for Discord to confirm a leave of a voice client discord.py has forgotten
# Seconds a voice connection may stay down under a playing line before the bot stops waiting for discord.py's own
# reconnect and joins again on a fresh client (`watch`); one that works takes a second or two.
RECONNECT_WITHIN = 5.0
WATCH_EVERY = 0.1  # seconds between looks at the voice connection while a line plays: at most 5 packets sent blind


class VoiceLink(LineQueue):
    """The voice connection of a guild's player, and whether it may play."""

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        self.last_activity = time.monotonic()
        # Set when the voice connection was lost for good mid-line (kicked, channel deleted, discord.py gave up
        # reconnecting): the queue waits for the next /say or /join instead of pulling the bot straight back.
        self.held = False
        # Why nobody hears the bot, while nobody does (bot/seat.py): a moderator moved it to a stage's audience or
        # server-muted it, or it could not step up on a stage. Playback pauses until it is heard again.
        self._unheard: Seat | None = None
        self._joining = False  # _connect() is joining a channel, and steps up on a stage itself
        self._client: discord.VoiceClient | None = None  # the one `_connect` made: discord.py may forget it
        # The line playing goes on, from where it stopped, on a voice client joined anew: the gateway session was
        # renewed under it (`session_renewed`), or its voice connection hung (`watch`, `_connect`).
        self._rejoin = False
        # Where that new client joins, when not the line's own channel: where the bot sat when `watch` took its
        # connection down (a moderator may have dragged it there, and discord.py's move hung).
        self._rejoin_to: discord.VoiceChannel | discord.StageChannel | None = None
        # The gateway connection is down: playback pauses until discord.py resumes the session (the voice connection
        # lives on) or starts a new one (it ended with the old, `session_renewed`), so nothing plays into the void.
        self._adrift = False
        self._voice_down = False  # the voice connection of the line playing dropped: paused until it is back (`watch`)
        # Held by whoever joins voice (`joined`), from the check that the bot is not busy elsewhere until their
        # line is queued: two /say at once would otherwise both join, the second tearing down the first's
        # half-made connection, or both pass the check and drag the bot between two channels.
        self._join_lock = asyncio.Lock()

    def _kick(self) -> None:
        """Wake the player: there are lines to play."""
        raise NotImplementedError

    @property
    def unheard(self) -> str | None:
        """Why and until when the bot pauses, if nobody hears it where it is."""
        return seat.unheard(self._unheard) if self._unheard is not None else None

    @property
    def paused_line(self) -> str:
        """The last line of `/say`'s and `/join`'s replies while the bot pauses because nobody hears it, else none."""
        return f"\n⏸️ Paused: {self.unheard}." if self._unheard is not None else ""

    def channel(self) -> discord.VoiceChannel | discord.StageChannel | None:
        """The voice channel the bot is connected to in this guild, if any."""
        client = self.voice_client()
        return client.channel if client is not None and client.is_connected() else None

    def voice_client(self) -> discord.VoiceClient | None:
        guild = self.services.guild()
        client = guild.voice_client if guild is not None else None
        return client if isinstance(client, discord.VoiceClient) else None

    @contextlib.asynccontextmanager
    async def joined(self, channel: discord.VoiceChannel | discord.StageChannel) -> AsyncIterator[discord.VoiceClient]:
        """Be in `channel` (join it, or move there) and let nobody else join until the block ends: the caller queues
        its line in it. The bot may have become busy elsewhere while the caller waited for its turn, which is
        checked again here; that and a join that fails are UserFacingErrors."""
        async with self._join_lock:
            checks.not_busy_elsewhere(self.channel(), channel, self.busy)
            try:
                async with asyncio.timeout(GIVE_UP_JOIN_AFTER):
                    client = await self._connect(channel)
            except (TimeoutError, discord.ClientException) as exc:
                raise UserFacingError(
                    f"I could not join {channel.mention} ({str(exc) or 'timed out'}); try again"
                ) from None
            yield client

    async def _connect(self, channel: discord.VoiceChannel | discord.StageChannel) -> discord.VoiceClient:
        client = self.voice_client()
        if client is not None and client.is_connected() and client.channel.id == channel.id:
            in_audience = self._unheard is not None and self._unheard is not Seat.MUTED
            if in_audience and isinstance(channel, discord.StageChannel) and await seat.step_up(channel):
                self._go_on()
            return client
        # discord.py's socket reader goes back into a 30 s select() on the UDP socket right after each IP
        # discovery, and a reconnect's new socket is not seen until that returns: a move (`move_to`) within 30 s
        # of joining, or a reconnect discord.py gave up on, hangs there and fails. A fresh client has a fresh one.
        if client is not None and client.is_connected():
            log.info("moving from %s to %s", client.channel, channel)
            await client.disconnect(force=True)
        elif client is not None:
            log.info("replacing a half-connected voice client in %s", channel.guild)
            if self.current is not None and (client.is_playing() or client.is_paused()):
                self._rejoin = True  # the line it was playing (or waiting to) plays on, on the new one
            await client.disconnect(force=True)
        self._joining = True
        try:
            connected: discord.VoiceProtocol = await channel.connect(
                timeout=JOIN_WITHIN, reconnect=True, self_deaf=True
            )
        finally:
            self._joining = False
        assert isinstance(connected, discord.VoiceClient)
        self._client = connected
        # On a stage the bot arrives in the audience (checks.can_speak_in made sure it may step up, but a rejoin
        # after a hung connection goes back where it was dragged, maybe a stage where it may not: it pauses there and
        # says so, unless it was paused already). A server mute goes with it from channel to channel: only a
        # moderator lifts it.
        me = channel.guild.me.voice
        if me is None or not me.mute:
            if not isinstance(channel, discord.StageChannel) or await seat.step_up(channel):
                self._go_on()
            elif self._unheard is None:
                await self._pause(channel, Seat.ARRIVED)
        self.last_activity = time.monotonic()
        if self.held:
            self.held = False
            self._kick()
        return connected

    def adrift(self) -> None:
        """The gateway connection dropped: pause until it is back (`ashore`, `session_renewed`)."""
        self._adrift = True
        client = self.voice_client()
        if client is not None and client.is_playing():
            client.pause()

    def ashore(self) -> None:
        """discord.py resumed the gateway session: the voice connection lived on, and playback goes on."""
        self._adrift = False
        self._resume_playback()

    async def session_renewed(self) -> None:
        """Discord started the bot's gateway session anew (it refused the resume, after an outage): the voice
        connection ended with the old session, and discord.py has forgotten its client. Left alone, that client
        gives up 20 s later and then leaves whatever channel the bot has joined meanwhile (or, if it was
        reconnecting already, holds its line forever), so it is taken down now, in whatever state it is. The line
        it cut off (paused since the gateway dropped) plays on from there once the player has joined the channel
        again (GuildPlayer._play)."""
        self._adrift = False
        client, self._client = self._client, None
        if client is None or client is self.voice_client():
            self._resume_playback()
            return
        log.info("the gateway session was renewed: rejoining voice in guild %d", self.services.guild_id)
        # Under the join lock: the old client's clean-up unregisters the guild's voice client, a new one included.
        async with self._join_lock:
            self._rejoin = self.current is not None
            # discord.py waits for Discord to confirm the leave, which the forgotten client never hears of.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LEAVE_WITHIN):
                    await client.disconnect(force=True)

    async def watch(self, client: discord.VoiceClient) -> None:
        """While a line plays on `client`: pause it the moment its voice connection drops, and go on once discord.py
        has reconnected; if it is still down after RECONNECT_WITHIN with the bot still seated in a voice channel,
        take the client down, so that the line plays on, from where it stopped, on a fresh one joined there
        (`_rejoin`, `_rejoin_to`). Cancelled when the line's playback ends.

        discord.py reconnects a dropped voice connection by itself (a voice server going away: close code 4006),
        but until its backoff is over (up to a few seconds) it counts itself connected, and its player sends the
        line on into the closed connection: hence the pause. And its socket reader sits in a select() of up to 30 s
        on the old UDP socket and sees the new one only once that returns, so the reconnect's IP discovery hangs
        until then; past its 20 s timeout it gives up and stays down, and the line with it. A bot that is not
        seated (kicked, its channel deleted) is left alone: discord.py ends the playback itself, and the queue
        waits for the next /join or /say."""
        loop = asyncio.get_running_loop()
        down_since: float | None = None
        try:
            while True:
                await asyncio.sleep(WATCH_EVERY)
                if self._adrift:  # a gateway outage: `session_renewed`'s to mend
                    down_since = None
                    continue
                if _voice_up(client):
                    down_since = None
                    if self._voice_down:
                        self._voice_down = False
                        self._resume_playback()
                    continue
                if down_since is None:
                    down_since = loop.time()
                    self._voice_down = True
                    if client.is_playing():
                        client.pause()
                seated = client.guild.me.voice
                if loop.time() - down_since < RECONNECT_WITHIN or seated is None or seated.channel is None:
                    continue
                # Shielded: the take-down ends the playback, whose end cancels this watch; it must not be cut short.
                await asyncio.shield(self._take_down(client))
                return
        finally:
            self._voice_down = False  # this client's: a line on another one starts unpaused

    async def _take_down(self, client: discord.VoiceClient) -> None:
        async with self._join_lock:  # not while a join replaces the client itself (`_connect`)
            if client.is_connected() or client is not self.voice_client():
                return  # back meanwhile, or replaced already
            log.info("the voice connection in guild %d has been down for %.0f s: joining again on a fresh one",
                     self.services.guild_id, RECONNECT_WITHIN)  # fmt: skip
            self._rejoin = self.current is not None
            seated = client.guild.me.voice
            where = seated.channel if seated is not None else None
            self._rejoin_to = where if isinstance(where, discord.VoiceChannel | discord.StageChannel) else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LEAVE_WITHIN):
                    await client.disconnect(force=True)

    async def seat_changed(self, before: discord.VoiceState, after: discord.VoiceState) -> None:
        """The bot's own voice state changed: pause while nobody hears it (in a stage's audience, server-muted) and
        go on once it is heard again (bot/seat.py)."""
        change, where = seat.seat_change(before, after), after.channel
        if change is Seat.HEARD:
            self._go_on()
        elif where is not None and (change is Seat.MUTED or change is Seat.SENT_DOWN):
            await self._pause(where, change)
        elif change is Seat.ARRIVED and isinstance(where, discord.StageChannel) and not self._joining:
            # Arrived on a stage, not by a join of ours: discord.py reconnected (it leaves and joins again), or a
            # moderator dragged the bot there. Either way it was meant to speak, unless it was paused already.
            paused = self._unheard is not None
            if not paused and not await seat.step_up(where):
                await self._pause(where, change)

    async def _pause(self, where: discord.VoiceChannel | discord.StageChannel, why: Seat) -> None:
        self._unheard = why
        client = self.voice_client()
        if client is not None and client.is_playing():
            client.pause()
        line = self.current or (self.lines[0] if self.lines else None)
        if line is not None:
            await self.services.post(line.notes_to, seat.paused_note(where, len(self.lines), why), None)

    def _go_on(self) -> None:
        """Heard again: the paused line plays on, and the queue after it."""
        if self._unheard is None:
            return
        self._unheard = None
        self._resume_playback()

    def _paused(self) -> bool:
        """Whether playback waits: nobody hears the bot where it is, or the gateway or voice connection is down."""
        return self._unheard is not None or self._adrift or self._voice_down

    def _resume_playback(self) -> None:
        client = self.voice_client()
        if not self._paused() and client is not None and client.is_paused():
            client.resume()


def _voice_up(client: discord.VoiceClient) -> bool:
    """Whether `client`'s voice connection is up: discord.py counts it connected, and its voice websocket (the aiohttp
    one inside discord.gateway.DiscordVoiceWebSocket) has not been closed. discord.py counts itself connected until
    its backoff is over, and opens its websockets without aiohttp's autoclose, so a socket Discord closed is not
    `closed` either: its close code, read with the close frame, is what tells."""
    socket = getattr(getattr(client, "ws", None), "ws", None)
    return client.is_connected() and socket is not None and not socket.closed and socket.close_code is None
