"""The bot's pure parts: the jitter buffer's contract with discord.py's player thread, and text cleaning."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import pytest
from redis.asyncio import Redis

from bot.text import TextRejected, TextRules, mentioned, speakable
from bot.voice import OPUS_SILENCE, GuildPlayer, JitterBuffer, Line, Services, StreamedOpusSource


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
    ("text", "spoken"),
    [
        ("[S1] Hi <@111111111111111111>", "[S1] Hi someone"),
        ("Hi <@!999999999999999999>", "Hi someone"),
        ("<a:party_parrot:123456789012345678> yay", "party parrot yay"),
        ("see https://x.org/a?b=c and <https://y.org>", "see a link and a link"),
        ("[S1] one\ttwo", "[S1] one two"),
    ],
)
def test_text_becomes_speakable(text: str, spoken: str) -> None:
    assert speakable(text, names) == spoken


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

    async def save(self, guild_id: int, line: Line) -> None: ...
    async def forget(self, guild_id: int, line: Line) -> None: ...
    async def forget_all(self, guild_id: int) -> None: ...


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

    async def post(channel: int, text: str, file: object) -> None: ...

    services = Services(
        redis, lambda: None, post, guild_id=1, saved=_Lines(), prebuffer_packets=1, idle_timeout=600,
        stall_timeout=5,
    )  # fmt: skip
    player = GuildPlayer(services)
    player.resume([Line("job-1", requester=1, text_channel=2, voice_channel=3, preview="Hello")])
    await asyncio.wait_for(winding_down.wait(), 5)
    task = player._task
    assert task is not None
    closing = asyncio.ensure_future(player.shutdown())
    done, _ = await asyncio.wait({closing}, timeout=2)  # (wait_for would cancel it on time-out, hiding the hang)
    try:
        assert closing in done, "the player went on after the bot closed"
        assert task.cancelled()
    finally:
        task.cancel()
        closing.cancel()
