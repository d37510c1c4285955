"""Voice playback: the worker's Opus packets straight into discord.py, one guild queue at a time.

An asyncio task fills the line's jitter buffer (bot/playback.py) from the job's event stream; playback starts
after a small pre-buffer (research/discord.md §3.4, §5). The bot does no audio processing: it forwards packets.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time

import discord

from bot.errors import UserFacingError
from bot.playback import JitterBuffer, StreamedOpusSource
from bot.services import Line, Services
from bot.voice_link import VoiceLink
from tts_engine import job_events, jobs

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 5.0  # seconds the bot's close waits for each player to stop


def _closing() -> bool:
    """Whether this task has been asked to stop (the bot is closing), whatever exception it is handling."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class GuildPlayer(VoiceLink):
    """Plays a guild's lines in order, one voice connection, leaving when idle."""

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        self._buffer: JitterBuffer | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False  # the bot is closing: lines are still saved, never played

    async def enqueue(self, line: Line) -> int:
        """Queue `line` (saved first, so a restart cannot lose it); returns how many lines play before it."""
        try:
            await self.services.saved.save(self.services.guild_id, line)
        except Exception as exc:
            # Playing matters more than remembering: a Redis hiccup here costs only the resume after a restart.
            log.warning("saving the queue of guild %d failed: %s", self.services.guild_id, exc)
        ahead = self.queued
        self.lines.append(line)
        self.held = False
        self._kick()
        return ahead

    def resume(self, lines: list[Line]) -> int:
        """Play lines saved before a restart (they are saved already); returns how many were not queued yet.

        discord.py serves slash commands while it still waits for the guilds before `on_ready`, so a line asked
        for in those seconds is both saved and queued by the time the saved queues are read: it must not play
        twice.
        """
        known = {line.job_id for line in self.lines} | ({self.current.job_id} if self.current else set())
        waiting = [line for line in lines if line.job_id not in known]
        self.lines.extend(waiting)
        self._kick()
        return len(waiting)

    def _kick(self) -> None:
        self._wake.set()
        if self._closed:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="guild-player")

    def _silence(self) -> Line | None:
        # Before any await: the line stops even while Redis, which hears of it next, does not answer.
        line = self.current
        if line is None:
            return None
        if self._buffer is not None:
            self._buffer.drop()
        client = self.voice_client()
        if client is not None:
            client.stop()
        return line

    async def leave(self) -> None:
        await self.stop()
        client = self.voice_client()
        if client is not None:
            await client.disconnect(force=True)

    async def forsake(self) -> None:
        """The bot left the guild: drop every line (the worker stops rendering them; none is saved for a restart)
        and play nothing more."""
        self.close()
        await self.stop()
        await self.shutdown()

    def close(self) -> None:
        """Play nothing more; `enqueue` still saves lines, for the next start."""
        self._closed = True
        self._wake.set()  # a player that missed its cancel (below) finds `_closed` at the top of its loop

    def _stopping(self) -> bool:
        # A method, not the attribute, in `_run`'s checks: the flag changes across awaits (mypy would narrow it).
        return self._closed

    async def shutdown(self) -> None:
        """The bot is closing: stop playing and end the task (queued jobs are left to expire)."""
        self.close()
        if self._buffer is not None:
            self._buffer.drop()
        task = self._task
        if task is None or task.done():
            return
        task.cancel()
        # Bounded: library code that swallows a cancel mid-line could otherwise hold the bot's close for the
        # length of a line (discord.py's close and asyncio.run's own cancel come after).
        await asyncio.wait({task}, timeout=SHUTDOWN_GRACE)
        if not task.done():
            log.warning("the player of guild %d did not stop in %.0f s", self.services.guild_id, SHUTDOWN_GRACE)
        elif not task.cancelled() and task.exception() is not None:
            log.warning("the player of guild %d ended with %r", self.services.guild_id, task.exception())

    async def _run(self) -> None:
        while not self._stopping():
            if not self.lines or self.held:
                self._wake.clear()
                try:
                    # Not asyncio.wait_for: on Python 3.11 it returns normally when a cancel lands just as the
                    # event is set, and the cancel is lost (CI saw a bot outlive SIGTERM by 30 s).
                    async with asyncio.timeout(self.services.idle_timeout):
                        await self._wake.wait()
                except TimeoutError:
                    if self.held:
                        return  # the lines stay for the next /say or /join
                    client = self.voice_client()
                    if client is not None and not self.lines:
                        log.info("leaving voice after %.0f s without lines", self.services.idle_timeout)
                        await client.disconnect(force=False)
                    if not self.lines:
                        return
                continue
            line = self.lines.popleft()
            over = True
            try:
                over = await self._play(line)
            except Exception:
                if _closing():
                    raise  # the bot is shutting down: never carry on with the next line
                log.exception("playing job %s failed", line.job_id)
            finally:
                self.current = None
                self.last_activity = time.monotonic()
            # Not reached when the bot shuts down mid-line: that line stays saved and plays again after a restart.
            if self._stopping():
                return
            if over:
                await self._unsave(self.services.saved.forget(self.services.guild_id, line), [line])

    async def _play(self, line: Line) -> bool:
        """Play `line` to its end: False if it waits at the front of the queue again (it could not start, or the
        gateway session was renewed under it)."""
        self.current = line
        self._rejoin, self._rejoin_to = False, None
        buffer = self._buffer = JitterBuffer()
        reader = job_events.JobAudio(self.services.redis, line.job_id, stall_timeout=self.services.stall_timeout)
        ready = asyncio.Event()
        feeder = asyncio.create_task(self._feed(reader, buffer, ready), name=f"feed-{line.job_id}")
        try:
            await ready.wait()
            if buffer.exhausted:  # cancelled or failed before any audio
                return True
            client = await self._voice_for(line)
            while client is not None:
                await self._play_on(client, buffer)
                if not self._rejoin or buffer.exhausted:
                    break
                # The gateway session was renewed under the line (`session_renewed`), or its voice connection hung
                # and was taken down (`watch`, `_connect`): the rest of it plays on a new one, from where it stopped.
                self._rejoin = False
                client = await self._voice_for(line)
            if client is None:
                return not self.held  # held: the line waits at the front again (_voice_for)
            if not buffer.exhausted and not client.is_connected():
                # discord.py reconnects on its own and the player thread waits for it; playback ending early
                # with no connection means it gave up (or the bot was kicked). Keep the rest of the queue.
                self.held = True
                waiting = f"; {len(self.lines)} more waiting, `/join` or `/say` to go on" if self.lines else ""
                await self.services.post(line.notes_to, f"🔇 I lost the voice connection{waiting}.", None)
        finally:
            buffer.drop()
            feeder.cancel()
            try:
                await feeder
            except asyncio.CancelledError:
                # The feeder's own end, which we asked for; but if the bot is closing and cancelled this task
                # while it waited here, that cancellation must go on, or the player would carry on to wait for
                # lines and the bot's close would wait for it for good.
                if _closing():
                    raise
            except Exception as exc:  # the line is over either way
                log.warning("reading job %s ended with %s", line.job_id, exc)
            self._buffer = None
        await self._report(line, reader.result)
        return True

    async def _play_on(self, client: discord.VoiceClient, buffer: JitterBuffer) -> None:
        """Play what `buffer` holds and will hold on `client`, until it ends or playback stops."""
        finished = asyncio.Event()
        loop = asyncio.get_running_loop()

        def after(error: Exception | None) -> None:
            if error is not None:
                log.warning("voice playback ended with %s", error)
            loop.call_soon_threadsafe(finished.set)

        if client.is_playing():
            client.stop()
        client.play(StreamedOpusSource(buffer), after=after)
        if self._paused():  # a line starts paused while nobody hears the bot
            client.pause()
        watch = asyncio.create_task(self.watch(client), name=f"watch-voice-{self.services.guild_id}")
        try:
            await finished.wait()
        finally:
            watch.cancel()

    async def _feed(self, reader: job_events.JobAudio, buffer: JitterBuffer, ready: asyncio.Event) -> None:
        try:
            async for batch in reader:
                buffer.put(batch)
                if len(buffer) >= self.services.prebuffer_packets:
                    ready.set()
        finally:
            buffer.end()
            ready.set()

    async def _voice_for(self, line: Line) -> discord.VoiceClient | None:
        """The voice connection to play `line` on, joining its channel if the bot is in none (after a restart, or
        a lost connection): None if it cannot. A line whose channel is gone is dropped; one that Discord would not
        let the bot join for waits with the rest, held, for the next /join or /say."""
        client = self.voice_client()
        if client is not None and client.is_connected():
            return client
        guild = self.services.guild()
        channel = guild.get_channel(line.voice_channel) if guild is not None else None
        channel, self._rejoin_to = self._rejoin_to or channel, None  # (where `watch` found the bot: it goes on there)
        if not isinstance(channel, discord.VoiceChannel | discord.StageChannel):
            await self.services.post(line.notes_to, "⚠️ The voice channel for your line is gone.", None)
            return None
        try:
            async with self.joined(channel) as client:
                return client
        except UserFacingError as exc:
            self.lines.appendleft(line)
            self.held = True
            waiting = f"your line waits, and {len(self.lines) - 1} more" if len(self.lines) > 1 else "your line waits"
            await self.services.post(
                line.notes_to, f"🔇 <@{line.requester}>, {exc} with `/join` or `/say` ({waiting}).", None
            )
            return None

    async def _report(self, line: Line, result: jobs.EndEvent | jobs.ErrorEvent | None) -> None:
        if isinstance(result, jobs.ErrorEvent):
            message = f"⚠️ <@{line.requester}>, your line was not spoken: {result.message}"
            await self.services.post(line.notes_to, message, None)
        elif isinstance(result, jobs.EndEvent) and line.export and not result.cancelled:
            if result.ogg is None:
                await self.services.post(line.notes_to, "⚠️ The line was too long to attach as a file.", None)
            else:
                file = discord.File(io.BytesIO(result.ogg), filename="line.ogg")
                await self.services.post(line.notes_to, f"🎧 <@{line.requester}>'s line: {line.preview}", file)
