"""The Bot subclass: services injected by `__main__`, cogs loaded by name, slash commands synced on request.

Follows discord.py's examples/advanced_startup.py (dependencies injected, dev-guild sync in `setup_hook`) and
RoboDanny's bot.py (extensions named in one tuple; one broken cog is logged, not fatal). One error handler
serves every slash command (bot/errors.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import discord
import yarl
from discord.ext import commands
from redis.asyncio import Redis

from bot import checks
from bot.errors import on_app_command_error
from bot.lines import RecentDeletions
from bot.pronunciations import Pronunciations
from bot.retries import Retries
from bot.saved import RESUME_WINDOW, SavedQueues
from bot.server_settings import ServerSettingsStore
from bot.services import Services
from bot.text import counted
from bot.voice import GuildPlayer
from bot.voice_choices import VoiceChoices
from config.settings import BotSettings
from tts_engine.jobs import QueueLimits

log = logging.getLogger(__name__)

# Cogs arrive by name so the bot never imports them as modules.
EXTENSIONS: tuple[str, ...] = (
    "cogs.voice", "cogs.speak", "cogs.reader", "cogs.deletions", "cogs.characters", "cogs.myvoice", "cogs.pronounce",
    "cogs.settings", "cogs.help",
)  # fmt: skip


def point_discord_at(settings: BotSettings) -> None:
    """Aim discord.py's REST and gateway base URLs at `settings` (a local emulator in tests).

    Both are class attributes in discord.py 2.7, so this is process-wide: call it once, from the entry point.
    """
    discord.http.Route.BASE = settings.discord_api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)
    if not settings.uses_real_discord():
        log.warning(
            "talking to %s and %s instead of Discord (TLS verification %s): for testing only",
            settings.discord_api_base,
            settings.discord_gateway_url,
            "on" if settings.discord_voice_tls_verify else "off",
        )


class DiaBot(commands.Bot):
    """The bot. Everything it serves with is passed in; `setup_hook` loads cogs and syncs commands."""

    def __init__(
        self,
        *,
        settings: BotSettings,
        redis: Redis,
        extensions: Sequence[str] = EXTENSIONS,
        sync_global: bool = False,
        **options: Any,
    ) -> None:
        # A voice bot needs guilds (channels, permissions) and voice states (who is where); message content only
        # when the host lets servers have a read channel (a privileged intent, turned on in the developer portal).
        intents = discord.Intents.none()
        intents.guilds = True
        intents.voice_states = True
        intents.guild_messages = intents.message_content = settings.read_messages
        super().__init__(command_prefix=commands.when_mentioned, intents=intents, help_command=None, **options)
        self.settings = settings
        self.redis = redis
        self.limits = QueueLimits(
            guild_cap=settings.guild_queue_cap, rate_burst=settings.rate_burst, rate_per_minute=settings.rate_per_minute
        )
        self.players: dict[int, GuildPlayer] = {}
        self.saved = SavedQueues(redis)
        self.retries = Retries(within=RESUME_WINDOW)  # past it, a saved line lapses and its job's audio expires
        self.server_settings = ServerSettingsStore(
            redis, {"required_role": settings.required_role, "character_role": settings.character_role}
        )
        self.voice_choices = VoiceChoices(redis)
        self.pronunciations = Pronunciations(redis)
        self.deleted = RecentDeletions()  # heard by cogs/deletions.py, with the guild-messages intent
        self._resumed = False
        self._closing = False
        self.initial_extensions = tuple(extensions)
        self.sync_global = sync_global
        self.tree.on_error = on_app_command_error  # type: ignore[method-assign]

    def player(self, guild_id: int) -> GuildPlayer:
        """The guild's player, made on first use."""
        player = self.players.get(guild_id)
        if player is None:
            services = Services(
                self.redis,
                lambda: self.get_guild(guild_id),
                self.post,
                guild_id=guild_id,
                saved=self.saved,
                retries=self.retries,
                prebuffer_packets=self.settings.prebuffer_ms // 20,
                idle_timeout=self.settings.idle_timeout,
                stall_timeout=120.0,
            )
            player = self.players[guild_id] = GuildPlayer(services)
            if self._closing:  # a /say that arrives while the bot closes is saved for the next start
                player.close()
        return player

    async def post(self, channels: Sequence[int], content: str, file: discord.File | None) -> None:
        """A message in the first of `channels` the bot may post it in, mentioning users only (never roles or
        everyone). Asked first, so that a channel closed to the bot costs no refused request."""
        missing = []
        for channel_id in channels:
            channel = self.get_channel(channel_id)
            if not isinstance(
                channel, discord.TextChannel | discord.VoiceChannel | discord.StageChannel | discord.Thread
            ):
                missing.append(f"{channel_id} (gone)")
                continue
            lacking = checks.cannot_post(channel, channel.guild.me, file=file is not None)
            if lacking is not None:
                missing.append(f"{channel_id} ({lacking})")
                continue
            mentions = discord.AllowedMentions(everyone=False, roles=False, users=True)
            try:
                if file is None:
                    await channel.send(content, allowed_mentions=mentions)
                else:
                    await channel.send(content, file=file, allowed_mentions=mentions)
            except discord.HTTPException as exc:
                log.warning("posting to channel %s failed: %s", channel_id, exc)
            return
        log.warning("could post in none of the channels %s: %s", ", ".join(missing), content)

    async def setup_hook(self) -> None:
        for name in self.initial_extensions:
            try:
                await self.load_extension(name)
            except Exception:
                log.exception("failed to load extension %s; the bot runs without it", name)
        await self._sync_commands()

    async def _sync_commands(self) -> None:
        # Global sync is rate limited and takes up to an hour to show, so it runs only when asked (--sync).
        if self.settings.dev_guild_id is not None:
            guild = discord.Object(id=self.settings.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d slash commands to dev guild %d", len(synced), self.settings.dev_guild_id)
        if self.sync_global:
            synced = await self.tree.sync()
            log.info("synced %d slash commands globally (Discord may take up to an hour to show them)", len(synced))

    async def close(self) -> None:
        # Players first, while Redis and the gateway still answer; then discord.py's own goodbyes.
        self._closing = True
        await asyncio.gather(*(player.shutdown() for player in list(self.players.values())))
        await self.retries.close()
        await super().close()

    async def on_ready(self) -> None:
        assert self.user is not None
        log.info("logged in as %s (id %d) in %d guilds", self.user, self.user.id, len(self.guilds))
        if not self._resumed:
            self._resumed = True
            await self._resume()
            return
        # READY again: discord.py identified anew, as Discord refused to resume the session (a resume is
        # `on_resumed`). The bot's voice connections ended with the old session.
        await asyncio.gather(*(player.session_renewed() for player in list(self.players.values())))

    async def _resume(self) -> None:
        """Play the lines that were waiting when the bot last stopped (bot/saved.py)."""
        try:
            saved = await self.saved.load()
        except Exception as exc:
            log.warning("could not read the saved queues: %s", exc)
            return
        for guild_id, lines in saved.items():
            if self._closing:  # on_ready can come while the bot closes: the lines stay saved
                return
            if self.get_guild(guild_id) is None:  # the bot left that guild meanwhile
                await self.saved.forget_all(guild_id)
                continue
            waiting = self.player(guild_id).resume(lines)
            if not waiting:
                continue
            log.info("resuming %d saved lines in guild %d", waiting, guild_id)
            count = counted(waiting, "line")
            await self.post(lines[0].notes_to, f"▶️ Back after a restart: playing the {count} that waited.", None)

    async def on_disconnect(self) -> None:
        # discord.py reconnects the gateway by itself; until it has, playback pauses (GuildPlayer.adrift).
        for player in self.players.values():
            player.adrift()

    async def on_resumed(self) -> None:
        for player in self.players.values():
            player.ashore()

    async def on_guild_remove(self, guild: discord.Guild) -> None:
        """The bot was removed from `guild` (kicked, banned, or the server deleted; discord.py tells an outage apart,
        as `on_guild_unavailable`): its lines are dropped, so the worker renders nothing for nobody and a restart
        plays nothing there. The server's characters and settings stay, in case the bot is invited back."""
        log.info("removed from guild %d", guild.id)
        player = self.players.pop(guild.id, None)
        if player is not None:
            await player.forsake()
        client = guild.voice_client  # the guild is gone from discord.py's cache, so the player cannot find it
        if client is not None:
            await client.disconnect(force=True)

    async def on_voice_state_update(
        self, member: discord.Member, before: discord.VoiceState, after: discord.VoiceState
    ) -> None:
        player = self.players.get(member.guild.id)
        if player is None:
            return
        if self.user is not None and member.id == self.user.id:
            # discord.py's own reconnects pass through here too (it leaves and rejoins), so nothing is stopped:
            # the player notices when playback ends without a connection (GuildPlayer._play).
            if before.channel is not None and after.channel is None:
                log.info("left voice in guild %d", member.guild.id)
            await player.seat_changed(before, after)  # on a stage: moved to the audience, or back up
            return
        client = player.voice_client()
        if client is None or before.channel is None or before.channel.id != client.channel.id:
            return
        if not any(not m.bot for m in client.channel.members):
            log.info("everyone left %s; leaving too", client.channel)
            await player.leave()
