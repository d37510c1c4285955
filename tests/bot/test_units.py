"""The bot's pure parts: the jitter buffer's contract with discord.py's player thread, and text cleaning."""

from __future__ import annotations

import re
import threading
import time

import pytest

from bot.text import TextRejected, TextRules, mentioned, speakable
from bot.voice import OPUS_SILENCE, JitterBuffer, StreamedOpusSource


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
