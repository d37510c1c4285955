"""A server's pronunciations (`/pronounce`): words Dia says wrong, respelled the way they should sound.

Dia reads bytes, not a dictionary, so a made-up name like "Xyrrith" comes out as it guesses; a respelling like
"Zeer-ith" fixes it for every line of the server. In the spirit of the word replacements of the TTS bots
(research/discord.md §1.6), applied to the spoken words of a parsed script only: speaker tags, cues like
`(laughs)` and pauses are never touched, and a respelling may not hold brackets or parentheses, so it cannot
forge one. Matching is whole-word and case-insensitive, the longest entry first ("Lord Vex" before "Vex").

Each server's entries are the hash `dia:guild:{id}:pronounce`: the case-folded word to `word\\0respelling`
(the word as first typed, for the list). A whole-cast `/character export` carries them too, as
`"pronunciations": [{"word": ..., "sounds_like": ...}]`, and `/character import` adds those a server lacks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
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
# Adds the entries whose words the server lacks (ARGV: cap, then field and value pairs), all or none: the number
# added, or -1 if that would make more than `cap`.
_ADD_MISSING_LUA = """
local missing = {}
for i = 2, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 0 then
    table.insert(missing, ARGV[i])
    table.insert(missing, ARGV[i + 1])
  end
end
if redis.call('HLEN', KEYS[1]) + #missing / 2 > tonumber(ARGV[1]) then
  return -1
end
if #missing > 0 then
  redis.call('HSET', KEYS[1], unpack(missing))
end
return #missing / 2
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
        self._add_missing = redis.register_script(_ADD_MISSING_LUA)

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

    async def add_missing(self, guild_id: int, entries: Sequence[Pronunciation]) -> int:
        """Add the entries for words the server does not respell yet, keeping its own for the others: how many
        were added. All or none: a `UserFacingError` if the server would have more than `cap`."""
        fields = {e.word.casefold(): _encoded(e) for e in entries}  # the file's last entry for a word wins
        args: list[str | int] = [self.cap, *(x for pair in fields.items() for x in pair)]
        added = int(await self._add_missing(keys=[_key(guild_id)], args=args))
        if added < 0:
            raise UserFacingError(
                f"the file's pronunciations would give this server more than {self.cap}; remove some first"
            )
        return added

    async def remove(self, guild_id: int, word: str) -> Pronunciation | None:
        """Forget the entry for `word` (any case); the entry it was, or None if there was none."""
        key, field = _key(guild_id), " ".join(word.split()).casefold()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(key, field)
            pipe.hdel(key, field)
            value, _ = await pipe.execute()
        return _decoded(value) if value is not None else None


def exported(entries: Iterable[Pronunciation]) -> list[dict[str, str]]:
    """The entries as a cast export file keeps them."""
    return [{"word": e.word, "sounds_like": e.sounds} for e in entries]


def from_export(extra: Mapping[str, Any]) -> list[Pronunciation]:
    """The pronunciations among a cast export file's other fields (`ExportFile.extra`; none if it has none),
    each checked as `/pronounce set` checks it; a `UserFacingError` names the first bad one."""
    listed = extra.get("pronunciations")
    if listed is None:
        return []
    if not isinstance(listed, list) or len(listed) > MAX_ENTRIES:
        raise UserFacingError(f"the file's pronunciations are not a list of at most {MAX_ENTRIES}")
    found = []
    for index, item in enumerate(listed):
        word, sounds = (item.get("word"), item.get("sounds_like")) if isinstance(item, dict) else (None, None)
        if not isinstance(word, str) or not isinstance(sounds, str):
            raise UserFacingError(f"pronunciation {index + 1} of the file has no word or no sounds_like")
        try:
            found.append(entry(word, sounds))
        except UserFacingError as exc:
            raise UserFacingError(f"pronunciation {index + 1} of the file (“{word[:MAX_WORD]}”): {exc}") from None
    return found


def _encoded(pronunciation: Pronunciation) -> str:
    return f"{pronunciation.word}\0{pronunciation.sounds}"


def _decoded(value: bytes) -> Pronunciation:
    word, _, sounds = value.decode().partition("\0")
    return Pronunciation(word, sounds)
