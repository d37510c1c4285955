"""The bot's pure parts: the jitter buffer's contract with discord.py's player thread, text cleaning, and a player's
start and stop (a real Redis, no Discord)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeout

from bot import voice
from bot.playback import OPUS_SILENCE, JitterBuffer, StreamedOpusSource
from bot.retries import Retries
from bot.services import Line, Services
from bot.text import TextRejected, TextRules, attached, attachment_kind, mentioned, sayable_name, speakable
from bot.voice import GuildPlayer


def test_silence_on_underrun_and_the_end_only_after_the_end() -> None:
    buffer = JitterBuffer()
    source = StreamedOpusSource(buffer)
    assert source.is_opus()
    assert source.read() == OPUS_SILENCE and buffer.underruns == 1
    buffer.put([b"a", b"b"])
    buffer.end()
    assert [source.read(), source.read()] == [b"a", b"b"]
    assert source.read() == b"" and buffer.exhausted


def test_drop_ends_at_once() -> None:
    buffer = JitterBuffer()
    buffer.put([b"a", b"b"])
    buffer.drop()
    assert buffer.read() == b""


def test_read_never_waits_for_the_producer() -> None:
    """discord.py bursts to catch up after a blocking read; ours returns at once even under contention."""
    buffer = JitterBuffer()
    stop = threading.Event()

    def produce() -> None:
        while not stop.is_set():
            buffer.put([b"x"] * 10)
            time.sleep(0.0005)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        slowest = 0.0
        for _ in range(2000):
            start = time.perf_counter()
            buffer.read()
            slowest = max(slowest, time.perf_counter() - start)
    finally:
        stop.set()
        producer.join()
    assert slowest < 0.005  # far below the player's 20 ms frame


NAMES = {("@", 1): "Bram", ("@&", 2): "Guards", ("#", 3): "tavern"}


def names(kind: str, snowflake: int) -> str | None:
    return NAMES.get((kind, snowflake))


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("Ann", "Ann"),
        ("Zoë O'Brien-Smith", "Zoë O'Brien-Smith"),
        ("[S2] (laughs) Bob", "S2 laughs Bob"),  # neither a tag nor a cue comes in through a name
        ("✨ xX_Gamer_Xx ✨", "xX Gamer Xx"),
        ("B\u0336\u0337o\u0338b", "B o b"),  # zalgo's marks go
        ("🐉🐉", None),
        ("...", None),
        ("A" * 40, "A" * 32),
    ],
)
def test_a_name_is_said_with_its_letters_only(name: str, said: str | None) -> None:
    assert sayable_name(name) == said


@pytest.mark.parametrize(
    ("files", "said"),
    [
        ([], None),
        ([("cat.png", "image/png")], "an image"),
        ([("a.png", "image/png"), ("clip.mp4", "video/mp4"), ("b.gif", "image/gif")], "2 images and a video"),
        ([("song.mp3", "audio/mpeg"), ("x.bin", None), ("y", "application/pdf")], "an audio file and 2 files"),
        ([("SPOILER_ending.png", "image/png")], "a spoiler"),  # hidden as hidden text is: not even its kind
    ],
)
def test_what_a_message_carries_is_said_in_a_few_words(files: list[tuple[str, str | None]], said: str) -> None:
    assert attached([attachment_kind(name, kind) for name, kind in files]) == said


def test_a_voice_message_and_stickers_are_named() -> None:
    kinds = [attachment_kind("voice-message.ogg", "audio/ogg", voice_message=True), "sticker", "sticker"]
    assert attached(kinds) == "a voice message and 2 stickers"


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("[S1] Hi <@111111111111111111>", "[S1] Hi someone"),
        ("Hi <@!999999999999999999>", "Hi someone"),
        ("<a:party_parrot:123456789012345678> yay", "party parrot yay"),
        ("see https://x.org/a?b=c and <https://y.org>", "see a link and a link"),
        ("[S1] one\ttwo", "[S1] one two"),
        # Discord markdown: the words are read, the marks are not; hidden text stays hidden.
        ("[S1] **Hold** the *line*, __now__! ~~no~~ `code` _soft_", "[S1] Hold the line, now! no code soft"),
        ("***both*** __*mixed*__ **bold *inside* it**", "both mixed bold inside it"),
        ("> quoted\n# Heading\n-# small print\nplain", "quoted\nHeading\nsmall print\nplain"),
        ("see [the map](https://x.org/m) now", "see the map now"),
        ("the killer is ||the butler|| I think", "the killer is a spoiler I think"),
        ("run this:\n```py\nprint(1)\n```", "run this:\n a code block"),
        ("[S1] Ha! *(laughs)*", "[S1] Ha! (laughs)"),
        # Not markdown: names with underscores, arithmetic, a lone star.
        ("[Old_Tom] Hi [Guard_Captain] snake_case_name", "[Old_Tom] Hi [Guard_Captain] snake_case_name"),
        ("5 * 3 = 15, a*b*c", "5 * 3 = 15, a*b*c"),
    ],
)
def test_text_becomes_speakable(text: str, spoken: str) -> None:
    assert speakable(text, names) == spoken


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("at <t:1700000000:t>", "at 22:13 UTC"),
        ("on <t:1700000000:D>!", "on November 14, 2023!"),
        ("<t:1700000000>", "November 14, 2023 at 22:13 UTC"),
        ("<t:1700000000:F>", "Tuesday, November 14, 2023 at 22:13 UTC"),
        ("starts <t:1700010800:R>", "starts in 3 hours"),
        ("<t:1700003600:R> <t:1699999700:R> <t:1699913600:R>", "in an hour 5 minutes ago a day ago"),
        ("<t:1731536000:R>", "in a year"),
        ("<t:9999999999999:f>", "a date"),
        (
            "use </say:123456789012345678> or </character create:123456789012345678>",
            "use slash say or slash character create",
        ),
    ],
)
def test_timestamps_and_commands_are_read_as_discord_shows_them(text: str, spoken: str) -> None:
    assert speakable(text, names, now=1_700_000_000) == spoken


def test_known_mentions_become_names() -> None:
    text = "<@000000000000000001> guard <@&000000000000000002> in <#000000000000000003>"
    ids = {("@", 1): "Bram", ("@&", 2): "Guards", ("#", 3): "tavern"}
    assert mentioned(text) == list(ids)
    assert speakable(text, lambda k, i: ids.get((k, i))) == "Bram guard Guards in tavern"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "nothing to say"),
        ("x" * 2001, "2001 characters"),
        ("@here hi", "mass mentions"),
        ("a\x00b", "U+0000"),
        ("a\u202eb", "U+202E"),  # right-to-left override: invisible, and a known trick
        ("Z\u0300\u0301\u0302\u0303", "zalgo"),
    ],
)
def test_unspeakable_text_is_refused(text: str, message: str) -> None:
    with pytest.raises(TextRejected, match=re.escape(message)):
        speakable(text, names, TextRules(max_chars=2000))


def test_accents_are_not_zalgo() -> None:
    assert speakable("Café, naïve, Zoë, São Paulo, Ångström", names).startswith("Café")


class _Lines:
    """An in-memory LineStore."""

    def __init__(self) -> None:
        self.kept: list[str] = []

    async def save(self, guild_id: int, line: Line) -> None:
        self.kept.append(line.job_id)

    async def forget(self, guild_id: int, *lines: Line) -> None:
        for line in lines:
            if line.job_id in self.kept:  # LREM of an entry that is not there removes nothing
                self.kept.remove(line.job_id)

    async def forget_all(self, guild_id: int) -> None:
        self.kept.clear()


def _line(job_id: str) -> Line:
    return Line(job_id, requester=1, text_channel=2, voice_channel=3, preview="Hello")


class _StalledLines(_Lines):
    """A LineStore whose Redis takes no change until `back` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.back = False
        self.forgotten: list[list[str]] = []

    async def forget(self, guild_id: int, *lines: Line) -> None:
        self._answer()
        self.forgotten.append([line.job_id for line in lines])
        await super().forget(guild_id, *lines)

    async def forget_all(self, guild_id: int) -> None:
        self._answer()
        await super().forget_all(guild_id)

    def _answer(self) -> None:
        if not self.back:
            raise RedisTimeout("Timeout reading from socket")


def _player(redis: Redis, saved: _Lines | None = None, retries: Retries | None = None) -> GuildPlayer:
    async def post(channel: int, text: str, file: object) -> None: ...

    services = Services(
        redis, lambda: None, post, guild_id=1, saved=saved or _Lines(), retries=retries or Retries(),
        prebuffer_packets=1, idle_timeout=600, stall_timeout=5,
    )  # fmt: skip
    return GuildPlayer(services)


async def _ended(task: asyncio.Task[None] | None) -> bool:
    """Whether `task` ends within 2 s (not wait_for, which would cancel it on time-out and hide a hang)."""
    assert task is not None
    done, _ = await asyncio.wait({task}, timeout=2)
    task.cancel()
    return task in done


async def test_closing_while_a_line_winds_down_stops_the_player(redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bot closing cancels each player (GuildPlayer.shutdown). A cancel that lands while the player waits for
    its line's reader to wind down must end the player: it was taken for the reader's own end once, and the
    player went on to wait for more lines, so the bot's close waited for it for good (CI saw a bot outlive
    SIGTERM by 30 s)."""
    winding_down = asyncio.Event()

    async def slow_feed(self: GuildPlayer, reader: object, buffer: JitterBuffer, ready: asyncio.Event) -> None:
        buffer.end()  # no audio: the player's line is over at once, and it cancels this reader
        ready.set()
        try:
            await asyncio.Event().wait()
        finally:
            winding_down.set()
            await asyncio.sleep(5)  # a reader that takes its time to end

    monkeypatch.setattr(GuildPlayer, "_feed", slow_feed)
    player = _player(redis)
    player.resume([_line("job-1")])
    await asyncio.wait_for(winding_down.wait(), 5)
    task = player._task
    assert task is not None
    assert await _ended(asyncio.ensure_future(player.shutdown())), "the player went on after the bot closed"
    assert task.cancelled()


async def test_a_cancel_that_lands_as_the_player_wakes_still_stops_it(redis: Redis) -> None:
    """On Python 3.11, asyncio.wait_for returns normally when a cancel lands in the loop turn its awaitable
    finishes in: an idle player cancelled just as a line woke it went on waiting for lines."""
    player = _player(redis)
    player.resume([])  # starts the player, which waits idle for lines
    await asyncio.sleep(0.05)
    task = player._task
    assert task is not None and not task.done()
    player._wake.set()
    task.cancel()
    assert await _ended(task), "the cancel was lost"
    assert task.cancelled()


async def test_a_cancel_swallowed_mid_line_still_stops_the_player(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Library code under a line (a voice connect, a Redis read) can swallow a cancel: the bot's close must
    still end the player, and the cut line stays saved for the next start."""
    playing = asyncio.Event()

    async def swallowing_play(self: GuildPlayer, line: Line) -> None:
        self.current = line
        playing.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()

    monkeypatch.setattr(GuildPlayer, "_play", swallowing_play)
    saved = _Lines()
    player = _player(redis, saved)
    await player.enqueue(_line("job-1"))
    await player.enqueue(_line("job-2"))
    await asyncio.wait_for(playing.wait(), 5)
    closing = asyncio.ensure_future(player.shutdown())
    assert await _ended(closing), "the player went on after the bot closed"
    assert player._task is not None and player._task.done()
    assert saved.kept == ["job-1", "job-2"], "the cut line and the waiting one stay saved"
    await player.enqueue(_line("job-3"))  # a /say while the bot closes: saved, and nothing starts playing
    assert saved.kept[-1] == "job-3" and player._task.done()


async def test_resuming_skips_lines_already_queued(redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """discord.py serves /say before on_ready: a line asked for then is saved and queued when the saved queues
    are read, and must play once."""
    playing = asyncio.Event()

    async def endless_play(self: GuildPlayer, line: Line) -> None:
        self.current = line
        playing.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(GuildPlayer, "_play", endless_play)
    player = _player(redis)
    await player.enqueue(_line("now"))
    await player.enqueue(_line("next"))
    await asyncio.wait_for(playing.wait(), 5)
    assert player.resume([_line("old"), _line("now"), _line("next")]) == 1
    assert [line.job_id for line in player.lines] == ["next", "old"]
    await player.shutdown()


async def test_a_player_that_will_not_stop_does_not_hold_the_close(
    redis: Redis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    playing, released = asyncio.Event(), asyncio.Event()

    async def stubborn_play(self: GuildPlayer, line: Line) -> None:
        playing.set()
        while not released.is_set():  # library code that swallows every cancel, for the length of a line
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(60)

    monkeypatch.setattr(GuildPlayer, "_play", stubborn_play)
    monkeypatch.setattr(voice, "SHUTDOWN_GRACE", 0.2)
    player = _player(redis)
    await player.enqueue(_line("job-1"))
    await asyncio.wait_for(playing.wait(), 5)
    assert await _ended(asyncio.ensure_future(player.shutdown()))
    assert "did not stop in" in caplog.text
    task = player._task
    assert task is not None and not task.done()
    released.set()
    task.cancel()
    assert await _ended(task), "the player stops at its next check once the line lets it"


async def test_a_removal_redis_missed_lands_once_it_answers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    retries = Retries(first=0.01, longest=0.02, within=5)
    tries: list[float] = []

    async def change() -> None:
        tries.append(time.monotonic())
        if len(tries) < 4:
            raise RedisConnectionError("Connection refused")

    retries.add("forgetting job-1", change)
    assert retries.pending == 1
    for _ in range(200):
        if not retries.pending:
            break
        await asyncio.sleep(0.01)
    assert len(tries) == 4 and retries.pending == 0
    assert "forgetting job-1: done, Redis answered again (try 4)" in caplog.text

    async def never() -> None:
        raise RedisTimeout("Timeout reading from socket")

    gives_up = Retries(first=0.01, longest=0.01, within=0.05)
    gives_up.add("dropping job-2", never)
    for _ in range(200):
        if not gives_up.pending:
            break
        await asyncio.sleep(0.01)
    assert gives_up.pending == 0 and "gave up dropping job-2 after" in caplog.text
    closing = Retries(first=60)
    closing.add("forgetting job-3", never)
    await asyncio.wait_for(closing.close(), 1)
    assert closing.pending == 0


async def test_a_stop_redis_missed_forgets_exactly_its_lines_later(redis: Redis) -> None:
    """/stop while Redis takes no writes: the whole saved queue cannot be cleared. Tried again once Redis is back,
    only the dropped lines are forgotten, as a line saved since must stay."""
    saved = _StalledLines()
    retries = Retries(first=0.01, longest=0.02, within=5)
    player = _player(redis, saved, retries)
    saved.kept = ["job-1", "job-2"]
    player.lines.extend([_line("job-1"), _line("job-2")])  # waiting; the player is not started
    assert await player.stop() == 2 and not player.lines
    assert saved.kept == ["job-1", "job-2"] and retries.pending == 1
    saved.kept.append("job-3")  # queued meanwhile, saved by a Redis that answers again
    saved.back = True
    for _ in range(200):
        if not retries.pending:
            break
        await asyncio.sleep(0.01)
    assert saved.forgotten == [["job-1", "job-2"]] and saved.kept == ["job-3"]
