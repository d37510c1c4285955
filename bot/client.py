"""The Bot subclass: services injected by `__main__`, cogs loaded by name, slash commands synced on request.

Follows discord.py's examples/advanced_startup.py (dependencies injected, dev-guild sync in `setup_hook`) and
RoboDanny's bot.py (extensions named in one tuple; one broken cog is logged, not fatal).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import discord
import yarl
from discord.ext import commands
from redis.asyncio import Redis

from config.settings import BotSettings

log = logging.getLogger(__name__)

# Cogs arrive by name so the bot never imports them as modules; the command issues add theirs here.
EXTENSIONS: tuple[str, ...] = ()


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
        # A voice bot needs guilds (channels, permissions) and voice states (who is where); no message content.
        intents = discord.Intents.none()
        intents.guilds = True
        intents.voice_states = True
        super().__init__(command_prefix=commands.when_mentioned, intents=intents, help_command=None, **options)
        self.settings = settings
        self.redis = redis
        self.initial_extensions = tuple(extensions)
        self.sync_global = sync_global

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

    async def on_ready(self) -> None:
        assert self.user is not None
        log.info("logged in as %s (id %d) in %d guilds", self.user, self.user.id, len(self.guilds))
