"""A server's pronunciations (`/pronounce`): words Dia says wrong, respelled the way they should sound.

Dia reads bytes, not a dictionary, so a made-up name like "Xyrrith" comes out as it guesses; a respelling like
"Zeer-ith" fixes it for every line of the server. In the spirit of the word replacements of the TTS bots
(research/discord.md §1.6), applied to the spoken words of a parsed script only: speaker tags, cues like
`(laughs)` and pauses are never touched, and a respelling may not hold brackets or parentheses, so it cannot
forge one. Matching is whole-word and case-insensitive, the longest entry first ("Lord Vex" before "Vex").

Each server's entries are the hash `dia:guild:{id}:pronounce`: the case-folded word to `word\\0respelling`
(the word as first typed, for the list).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from redis.asyncio import Redis

from bot.errors import UserFacingError
from bot.text import invisible
from tts_engine.script import CUES, Item, Turn

MAX_ENTRIES = 200
MAX_WORD = 40
MAX_SOUNDS = 80
_FORBIDDEN = "[]()<>"  # speaker tags, cues and Discord markup
_CUE = re.compile(r"(\((?:" + "|".join(re.escape(c) for c in CUES) + r")\))", re.IGNORECASE)
# Adds an entry unless the server already has `cap` others; replacing an entry is always allowed.
_PUT_LUA = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('HLEN', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
"""


def _key(guild_id: int) -> str:
    return f"dia:guild:{guild_id}:pronounce"


@dataclass(frozen=True)
class Pronunciation:
    word: str  # as typed when it was added
    sounds: str  # what Dia reads in its place


def _checked(text: str, what: str, most: int) -> str:
    text = " ".join(text.split())
    if not any(c.isalnum() for c in text):
        raise UserFacingError(f"the {what} needs at least one letter or digit")
    if len(text) > most:
        raise UserFacingError(f"the {what} is {len(text)} characters; at most {most}")
    if bad := [c for c in text if c in _FORBIDDEN]:
        raise UserFacingError(f"the {what} cannot hold {bad[0]!r}: brackets and parentheses are script syntax")
    if (char := invisible(text)) is not None:  # after the join above, no new line or tab is left
        raise UserFacingError(f"the {what} holds an invisible control character (U+{ord(char):04X}): remove it")
    return text


def entry(word: str, sounds: str) -> Pronunciation:
    """A pronunciation from what a member typed, or a `UserFacingError` that says what to change."""
    return Pronunciation(_checked(word, "word", MAX_WORD), _checked(sounds, "respelling", MAX_SOUNDS))


class Respeller:
    """Replaces every whole-word occurrence of the entries' words, in any case, by their respellings."""

    def __init__(self, entries: Iterable[Pronunciation]) -> None:
        self.sounds = {e.word.casefold(): e.sounds for e in entries}
        words = sorted(self.sounds, key=len, reverse=True)
        self._pattern = (
            re.compile(r"(?<!\w)(?:" + "|".join(re.escape(w) for w in words) + r")(?!\w)", re.IGNORECASE)
            if words
            else None
        )

    def text(self, text: str) -> str:
        """`text` respelled, cues like `(laughs)` left as they are."""
        if self._pattern is None:
            return text
        pattern = self._pattern
        parts = _CUE.split(text)  # odd parts are the cues
        for i in range(0, len(parts), 2):
            parts[i] = pattern.sub(lambda m: self.sounds.get(m.group(0).casefold(), m.group(0)), parts[i])
        return "".join(parts)

    def script(self, items: Sequence[Item]) -> list[Item]:
        """The script with each turn's words respelled."""
        return [replace(i, text=self.text(i.text)) if isinstance(i, Turn) else i for i in items]


class Pronunciations:
    """Reads and changes the servers' pronunciations."""

    def __init__(self, redis: Redis, cap: int = MAX_ENTRIES) -> None:
        self.redis = redis
        self.cap = cap
        self._put = redis.register_script(_PUT_LUA)

    async def all(self, guild_id: int) -> list[Pronunciation]:
        """The server's entries, by word."""
        raw: Any = await self.redis.hgetall(_key(guild_id))
        return sorted((_decoded(value) for value in raw.values()), key=lambda e: e.word.casefold())

    async def respeller(self, guild_id: int) -> Respeller:
        return Respeller(await self.all(guild_id))

    async def set(self, guild_id: int, pronunciation: Pronunciation) -> None:
        """Add or replace the entry for its word; a `UserFacingError` when the server has `cap` already."""
        args: list[str | int] = [pronunciation.word.casefold(), _encoded(pronunciation), self.cap]
        if not await self._put(keys=[_key(guild_id)], args=args):
            raise UserFacingError(f"this server has {self.cap} pronunciations, the most it may have; remove some first")

    async def remove(self, guild_id: int, word: str) -> Pronunciation | None:
        """Forget the entry for `word` (any case); the entry it was, or None if there was none."""
        key, field = _key(guild_id), " ".join(word.split()).casefold()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(key, field)
            pipe.hdel(key, field)
            value, _ = await pipe.execute()
        return _decoded(value) if value is not None else None


def _encoded(pronunciation: Pronunciation) -> str:
    return f"{pronunciation.word}\0{pronunciation.sounds}"


def _decoded(value: bytes) -> Pronunciation:
    word, _, sounds = value.decode().partition("\0")
    return Pronunciation(word, sounds)
