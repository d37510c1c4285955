"""A guild's cast in Redis: characters, their moods, and the stored voices behind them. Torch-free.

One hash per guild (`dia:chars:{guild}`) maps each name, case-folded, to its record; each mood of a character
points at a stored voice (`dia:voice:{guild}:{voice id}`: transcript + DAC codes, written by a worker). A worker
stores a new voice as *pending*, with a TTL; a character adopts it by making it permanent in the same
transaction that writes the record, so a failed or abandoned creation leaves nothing behind once the TTL
passes. Every change is one optimistic WATCH/MULTI transaction on the guild's hash (redis-py's documented
pattern), so two moderators editing at once never half-apply anything.

Export files are JSON (codes base64, int16 little-endian), to move a cast between servers or bots.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, field
from typing import Any, NamedTuple, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from tts_engine.jobs import ContractError, VoiceRecord, _pack, _unpack, decode_voice, encode_voice, voice_key
from tts_engine.script import closest

EXPORT_FORMAT = "dia-voice-bot/characters"
EXPORT_VERSION = 1
DEFAULT = ""  # the mood name of a character's default voice
MAX_MOODS = 20  # beside the default voice: enough for any NPC, and /character show fits one embed
CHANNELS = 9
CODEBOOK = 1024  # DAC codes are 0..1023
MAX_VOICE_FRAMES = 30 * 87  # a 30 s clip at 86.1 frames/s
NAME = re.compile(r"[^\W_][\w \-]{0,31}")  # 1-32 letters, digits, spaces, - and _, starting with a letter/digit
_T = TypeVar("_T")


class CastError(Exception):
    """A change to the cast that cannot be made; `str()` is for the user."""


@dataclass(config=ConfigDict(frozen=True))
class MoodVoice:
    """Which stored voice a mood uses, with what the bot needs to plan lines without reading the codes."""

    voice_id: str
    transcript: str
    frames: int


@dataclass(config=ConfigDict(frozen=True))
class Character:
    name: str
    moods: dict[str, MoodVoice]  # DEFAULT ("") is the voice of [Name]; others are [Name:mood]
    description: str = ""
    created_by: int = 0
    created_at: float = field(default_factory=time.time)

    @property
    def mood_names(self) -> frozenset[str]:
        return frozenset(m for m in self.moods if m != DEFAULT)


_CHARACTER = TypeAdapter(Character)


def chars_key(guild_id: int) -> str:
    return f"dia:chars:{guild_id}"


def clean_name(name: str, what: str = "name") -> str:
    """`name` with spaces tidied, or `CastError` saying what a name may be."""
    tidy = " ".join(name.split())
    if not NAME.fullmatch(tidy):
        raise CastError(f"“{name[:40]}” cannot be a {what}: use 1-32 letters, digits, spaces, - or _")
    if what == "name" and tidy.upper() in ("S1", "S2"):
        raise CastError(f"{tidy} is one of Dia's own voices; pick another name")
    return tidy


def encode_character(character: Character) -> bytes:
    return _pack("character", asdict(character))


def decode_character(data: bytes) -> Character:
    try:
        return _CHARACTER.validate_python(_unpack("character", data))
    except ValidationError as exc:
        raise ContractError(f"malformed character: {exc.errors()[0]['msg']}") from None


class Cast:
    """The characters of one guild."""

    def __init__(self, redis: Redis, guild_id: int, *, cap: int = 200) -> None:
        self.redis, self.guild_id, self.cap = redis, guild_id, cap
        self.key = chars_key(guild_id)

    async def all(self) -> list[Character]:
        raw: Any = await self.redis.hgetall(self.key)
        return sorted((decode_character(v) for v in raw.values()), key=lambda c: c.name.casefold())

    async def get(self, name: str) -> Character | None:
        raw: Any = await self.redis.hget(self.key, name.casefold())
        return None if raw is None else decode_character(raw)

    async def moods(self) -> dict[str, frozenset[str]]:
        """Name -> moods, what the script parser needs."""
        return {c.name: c.mood_names for c in await self.all()}

    async def pending_voice(self, voice_id: str) -> VoiceRecord | None:
        raw: Any = await self.redis.get(voice_key(self.guild_id, voice_id))
        return None if raw is None else decode_voice(raw)

    async def create(
        self, name: str, voice_id: str, *, mood: str | None = None, description: str = "", created_by: int = 0
    ) -> Character:
        """A new character whose default voice (and `mood`, if given) is the pending voice `voice_id`."""
        name = clean_name(name)
        mood = clean_name(mood, "mood") if mood else None

        async def change(pipe: Pipeline) -> Character:
            await self._room_for_new(pipe, name)
            voice = await self._voice(pipe, voice_id)
            moods = {DEFAULT: voice} | ({mood: voice} if mood else {})
            character = Character(name, moods, description[:300], created_by)
            _multi(pipe)
            pipe.persist(voice_key(self.guild_id, voice_id))
            pipe.hset(self.key, name.casefold(), encode_character(character))
            return character

        return await self._transact(change)

    async def can_create(self, name: str) -> None:
        """Raise unless a character `name` can be made: asked before its voice is made, as that takes a while."""
        async with self.redis.pipeline() as pipe:
            await pipe.watch(self.key)  # runs the reads at once, as in a transaction (nothing is written)
            await self._room_for_new(pipe, clean_name(name))

    async def _room_for_new(self, pipe: Pipeline, name: str) -> None:
        taken: Any = await pipe.hget(self.key, name.casefold())
        if taken is not None:
            raise CastError(f"there is already a character named {decode_character(taken).name}")
        count = await pipe.hlen(self.key)
        if count >= self.cap:
            raise CastError(f"this server has as many characters as it may have ({count}); delete some first")

    async def can_add_mood(self, name: str, mood: str) -> Character:
        """The character, if it can take `mood`: asked before a voice is made for it, as that takes a while."""
        async with self.redis.pipeline() as pipe:
            await pipe.watch(self.key)  # runs the reads at once, as in a transaction (nothing is written)
            character = await self._existing(pipe, name)
        _room_for(character, clean_name(mood, "mood"))
        return character

    async def add_mood(self, name: str, mood: str, voice_id: str) -> Character:
        mood = clean_name(mood, "mood")

        async def change(pipe: Pipeline) -> Character:
            character = await self._existing(pipe, name)
            _room_for(character, mood)
            voice = await self._voice(pipe, voice_id)
            updated = Character(character.name, {**character.moods, mood: voice}, character.description,
                                character.created_by, character.created_at)  # fmt: skip
            _multi(pipe)
            pipe.persist(voice_key(self.guild_id, voice_id))
            pipe.hset(self.key, character.name.casefold(), encode_character(updated))
            return updated

        return await self._transact(change)

    async def remove_mood(self, name: str, mood: str) -> Character:
        async def change(pipe: Pipeline) -> Character:
            character = await self._existing(pipe, name)
            found = next((m for m in character.mood_names if m.casefold() == mood.strip().casefold()), None)
            if found is None:
                listed = ", ".join(sorted(character.mood_names)) or "none"
                raise CastError(f"{character.name} has no mood named {mood} (moods: {listed})")
            moods = {k: v for k, v in character.moods.items() if k != found}
            updated = Character(character.name, moods, character.description, character.created_by,
                                character.created_at)  # fmt: skip
            _multi(pipe)
            if all(v.voice_id != character.moods[found].voice_id for v in moods.values()):
                pipe.delete(voice_key(self.guild_id, character.moods[found].voice_id))
            pipe.hset(self.key, character.name.casefold(), encode_character(updated))
            return updated

        return await self._transact(change)

    async def rename(self, name: str, new_name: str) -> Character:
        new_name = clean_name(new_name)

        async def change(pipe: Pipeline) -> Character:
            character = await self._existing(pipe, name)
            taken: Any = await pipe.hget(self.key, new_name.casefold())
            if taken is not None and new_name.casefold() != character.name.casefold():
                raise CastError(f"there is already a character named {decode_character(taken).name}")
            renamed = Character(new_name, character.moods, character.description, character.created_by,
                                character.created_at)  # fmt: skip
            _multi(pipe)
            pipe.hdel(self.key, character.name.casefold())
            pipe.hset(self.key, new_name.casefold(), encode_character(renamed))
            return renamed

        return await self._transact(change)

    async def delete(self, name: str) -> Character:
        async def change(pipe: Pipeline) -> Character:
            character = await self._existing(pipe, name)
            _multi(pipe)
            pipe.hdel(self.key, character.name.casefold())
            pipe.delete(*{voice_key(self.guild_id, v.voice_id) for v in character.moods.values()})
            return character

        return await self._transact(change)

    async def export(self, names: list[str] | None = None, extra: dict[str, Any] | None = None) -> bytes:
        """The cast (or the named characters) as a JSON file with every voice's codes; `extra` are more fields of
        the file (the bot's pronunciations), which `import_` leaves to whoever added them."""
        characters = await self.all()
        if names is not None:
            wanted = {n.casefold() for n in names}
            characters = [c for c in characters if c.name.casefold() in wanted]
        ids = sorted({v.voice_id for c in characters for v in c.moods.values()})
        raw: Any = await self.redis.mget([voice_key(self.guild_id, v) for v in ids]) if ids else []
        records = {v: decode_voice(r) for v, r in zip(ids, raw, strict=True) if r is not None}
        entries = []
        for c in characters:
            moods = {
                mood: {"transcript": records[v.voice_id].transcript, "frames": records[v.voice_id].frames,
                       "channels": records[v.voice_id].channels,
                       "codes": base64.b64encode(records[v.voice_id].codes).decode()}
                for mood, v in c.moods.items() if v.voice_id in records
            }  # fmt: skip
            entries.append({"name": c.name, "description": c.description, "moods": moods})
        body = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "characters": entries, **(extra or {})}
        return json.dumps(body, indent=1).encode()

    async def import_(self, export: ExportFile, *, created_by: int = 0) -> list[Character]:
        """Add every character of an export file (`read_export`), or none: `CastError` names the problem."""
        entries = export.characters

        async def change(pipe: Pipeline) -> list[Character]:
            taken = [e[0] for e in entries if await pipe.hexists(self.key, e[0].casefold())]
            if taken:
                raise CastError("these characters already exist here: " + ", ".join(taken) + "; rename or delete them")
            count = await pipe.hlen(self.key)
            if count + len(entries) > self.cap:
                raise CastError(f"the file's characters ({len(entries)}) and this server's ({count}) are more "
                                f"than the {self.cap} it may have")  # fmt: skip
            _multi(pipe)
            made = []
            for name, description, moods in entries:
                voices = {}
                for mood, record in moods.items():
                    voice_id = uuid.uuid4().hex
                    pipe.set(voice_key(self.guild_id, voice_id), encode_voice(record))
                    voices[mood] = MoodVoice(voice_id, record.transcript, record.frames)
                character = Character(name, voices, description, created_by)
                pipe.hset(self.key, name.casefold(), encode_character(character))
                made.append(character)
            return made

        return await self._transact(change)

    async def _existing(self, pipe: Pipeline, name: str) -> Character:
        raw: Any = await pipe.hget(self.key, name.strip().casefold())
        if raw is None:
            everyone: Any = await pipe.hgetall(self.key)
            names = [decode_character(v).name for v in everyone.values()]
            close = closest(name, names)
            raise CastError(f"there is no character named {name}" + (f" (did you mean {close}?)" if close else ""))
        return decode_character(raw)

    async def _voice(self, pipe: Pipeline, voice_id: str) -> MoodVoice:
        raw: Any = await pipe.get(voice_key(self.guild_id, voice_id))
        if raw is None:
            raise CastError("the voice expired before it was kept; make it again")
        record = decode_voice(raw)
        return MoodVoice(voice_id, record.transcript, record.frames)

    async def _transact(self, change: Callable[[Pipeline], Awaitable[_T]]) -> _T:
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(self.key)
                    result = await change(pipe)
                    await pipe.execute()
                    return result
                except WatchError:
                    continue  # someone changed the cast meanwhile: read it again


def _room_for(character: Character, mood: str) -> None:
    if mood.casefold() in {m.casefold() for m in character.moods}:
        raise CastError(f"{character.name} already has a mood named {mood}; remove it first")
    if len(character.mood_names) >= MAX_MOODS:
        raise CastError(f"{character.name} has {MAX_MOODS} moods, the most a character may have; remove one first")


def _multi(pipe: Pipeline) -> None:
    """Start queueing the transaction's writes (redis-py leaves `multi` untyped)."""
    pipe.multi()  # type: ignore[no-untyped-call]


class ExportFile(NamedTuple):
    """An export file, read and checked: (name, description, mood -> voice) of each character, and the file's
    other fields (`extra` of `Cast.export`)."""

    characters: list[tuple[str, str, dict[str, VoiceRecord]]]
    extra: dict[str, Any]


def read_export(data: bytes) -> ExportFile:
    """An export file's characters, all checked (`CastError` names the first problem), and its other fields."""
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CastError(f"the file is not a character export (not JSON: {exc})") from None
    if not isinstance(body, dict) or body.get("format") != EXPORT_FORMAT:
        raise CastError("the file is not a character export of this bot (made by /character export)")
    if body.get("version") != EXPORT_VERSION:
        raise CastError(f"the file is export version {body.get('version')!r}; this bot reads {EXPORT_VERSION}")
    entries, seen = [], set()
    for index, entry in enumerate(body.get("characters") or []):
        where = f"character {index + 1}"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise CastError(f"{where} of the file has no name")
        name = clean_name(entry["name"])
        if name.casefold() in seen:
            raise CastError(f"the file has {name} twice")
        seen.add(name.casefold())
        moods_in = entry.get("moods")
        if not isinstance(moods_in, dict) or DEFAULT not in moods_in:
            raise CastError(f"{name} in the file has no default voice")
        if len(moods_in) - 1 > MAX_MOODS:
            raise CastError(f"{name} in the file has {len(moods_in) - 1} moods; a character may have {MAX_MOODS}")
        moods = {(clean_name(m, "mood") if m else DEFAULT): _voice_from_export(name, m, v) for m, v in moods_in.items()}
        description = entry.get("description")
        entries.append((name, description[:300] if isinstance(description, str) else "", moods))
    if not entries:
        raise CastError("the file has no characters")
    return ExportFile(entries, {k: v for k, v in body.items() if k not in {"format", "version", "characters"}})


def _voice_from_export(name: str, mood: str, body: Any) -> VoiceRecord:
    what = f"{name}'s {'mood ' + mood if mood else 'voice'} in the file"
    try:
        codes = base64.b64decode(body["codes"], validate=True)
        record = VoiceRecord(str(body["transcript"]), codes, int(body["frames"]), int(body["channels"]))
    except (KeyError, TypeError, ValueError, ValidationError) as exc:
        raise CastError(f"{what} is damaged ({type(exc).__name__})") from None
    if record.channels != CHANNELS or not 0 < record.frames <= MAX_VOICE_FRAMES:
        raise CastError(f"{what} has {record.frames} frames of {record.channels} channels; expected up to "
                        f"{MAX_VOICE_FRAMES} of {CHANNELS}")  # fmt: skip
    if len(codes) != record.frames * record.channels * 2:
        raise CastError(f"{what} is damaged (its codes do not fill {record.frames} frames)")
    values = struct.unpack(f"<{len(codes) // 2}h", codes)  # not numpy: the bot's install has none
    if min(values) < 0 or max(values) >= CODEBOOK:
        raise CastError(f"{what} is damaged (codes outside 0-{CODEBOOK - 1})")
    if not 0 < len(record.transcript) <= 1000:
        raise CastError(f"{what} has no usable transcript")
    return record
