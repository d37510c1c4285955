"""Whose voice speaks text that names no speaker: a member's own choice (`/myvoice`), else the server's
(`/settings voice`), else Dia's `[S1]`, new for every line.

A choice is a speaker tag of the server's cast, `Name` or `Name:mood`. Members' choices live in the hash
`dia:guild:{id}:voices` (a field per member); the server's is the `voice` field of its settings hash
(bot/server_settings.py), so `/settings reset` forgets it with the rest. The character commands keep them in
step with the cast: a rename moves the choices along, a deletion drops them. A choice whose character is gone
anyway (another release, an import race) is passed over when a line is spoken, never an error.

A member's speaking speed (`/myvoice speed`) is theirs too: the hash `dia:guild:{id}:speeds`, with no field for
the normal 1.0. It applies to each of their lines that asks for no speed of its own (the read channel's, and a
`/say` without `speed:`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError

from bot.errors import UserFacingError
from bot.server_settings import settings_key
from tts_engine.script import DIA_SPEAKERS, closest

SERVER_FIELD = "voice"


def _members_key(guild_id: int) -> str:
    return f"dia:guild:{guild_id}:voices"


def _speeds_key(guild_id: int) -> str:
    return f"dia:guild:{guild_id}:speeds"


@dataclass(frozen=True)
class Speaker:
    """A character's voice: the character, and one of its moods (None: its default voice)."""

    name: str
    mood: str | None = None

    @property
    def tag(self) -> str:
        return f"{self.name}:{self.mood}" if self.mood else self.name

    @classmethod
    def parse(cls, tag: str) -> Speaker:
        name, _, mood = tag.partition(":")
        return cls(name.strip(), mood.strip() or None)

    def resolve(self, cast: Mapping[str, frozenset[str]]) -> Speaker | None:
        """This speaker as the cast (name -> moods) spells it, in any case; None if it has no such voice."""
        name = next((n for n in cast if n.casefold() == self.name.casefold()), None)
        if name is None:
            return None
        if self.mood is None:
            return Speaker(name)
        mood = next((m for m in cast[name] if m.casefold() == self.mood.casefold()), None)
        return Speaker(name, mood) if mood is not None else None

    @classmethod
    def chosen(cls, typed: str, cast: Mapping[str, frozenset[str]]) -> Speaker:
        """The cast's voice a member typed as `Name` or `Name:mood`; a `UserFacingError` that says what exists
        otherwise."""
        speaker = cls.parse(typed)
        if speaker.name.upper() in DIA_SPEAKERS:
            raise UserFacingError(f"[{speaker.name.upper()}] is a new random voice for every line, not one to keep: "
                                  "pick a character, or `/myvoice clear` for Dia's voices")  # fmt: skip
        found = speaker.resolve(cast)
        if found is not None:
            return found
        character = Speaker(speaker.name).resolve(cast)
        if character is None:
            close = closest(speaker.name, cast)
            hint = f" (did you mean {close}?)" if close else " (`/character list` shows the cast)"
            raise UserFacingError(f"there is no character named {speaker.name} in this server{hint}")
        moods = ", ".join(sorted(cast[character.name])) or "none yet"
        raise UserFacingError(f"{character.name} has no mood '{speaker.mood}' (moods: {moods})")


@dataclass(frozen=True)
class Choices:
    member: Speaker | None
    server: Speaker | None
    speed: float = 1.0  # the member's (`/myvoice speed`)

    @property
    def voice(self) -> Speaker | None:
        """The voice of text that names no speaker: the member's, else the server's; None for Dia's `[S1]`."""
        return self.member or self.server

    def live(self, cast: Mapping[str, frozenset[str]]) -> Choices:
        """The choices the cast still has, as it spells them."""
        member, server = self.member and self.member.resolve(cast), self.server and self.server.resolve(cast)
        return Choices(member, server, self.speed)


class VoiceChoices:
    """Reads and changes members' and servers' voice choices."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def get(self, guild_id: int, member_id: int) -> Choices:
        """The member's choices (voice and speed) and the server's voice, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(_members_key(guild_id), str(member_id))
            pipe.hget(settings_key(guild_id), SERVER_FIELD)
            pipe.hget(_speeds_key(guild_id), str(member_id))
            own, server, speed = await pipe.execute()
        return Choices(_speaker(own), _speaker(server), float(speed) if speed else 1.0)

    async def server(self, guild_id: int) -> Speaker | None:
        value: Any = await self.redis.hget(settings_key(guild_id), SERVER_FIELD)
        return _speaker(value)

    async def for_line(self, guild_id: int, member_id: int, cast: Mapping[str, frozenset[str]]) -> Choices:
        """The choices for a member's line, without voices the cast no longer has."""
        return (await self.get(guild_id, member_id)).live(cast)

    async def choose_speed(self, guild_id: int, member_id: int, speed: float) -> None:
        if speed == 1.0:
            await self.redis.hdel(_speeds_key(guild_id), str(member_id))
        else:
            await self.redis.hset(_speeds_key(guild_id), str(member_id), repr(speed))

    async def choose(self, guild_id: int, member_id: int | None, speaker: Speaker | None) -> None:
        """A member's (`member_id`) or the server's (None) choice; `speaker` None forgets it."""
        key, field = (settings_key(guild_id), SERVER_FIELD) if member_id is None else _owner(guild_id, member_id)
        if speaker is None:
            await self.redis.hdel(key, field)
        else:
            await self.redis.hset(key, field, speaker.tag)

    async def renamed(self, guild_id: int, old: str, new: str) -> None:
        """Choices of character `old` follow it to its new name."""
        await self._change(guild_id, old, lambda s: Speaker(new, s.mood))

    async def removed(self, guild_id: int, name: str, mood: str | None = None) -> None:
        """Choices of a deleted character (or of one of its moods) are forgotten."""

        def forget(speaker: Speaker) -> Speaker | None:
            kept = mood is not None and (speaker.mood or "").casefold() != mood.casefold()
            return speaker if kept else None

        await self._change(guild_id, name, forget)

    async def _change(self, guild_id: int, name: str, change: Callable[[Speaker], Speaker | None]) -> None:
        members, settings = _members_key(guild_id), settings_key(guild_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(members, settings)  # a choice made meanwhile restarts the change
                    chosen: Any = await pipe.hgetall(members)
                    entries = [(members, f.decode(), v) for f, v in chosen.items()]
                    entries.append((settings, SERVER_FIELD, await pipe.hget(settings, SERVER_FIELD)))
                    pipe.multi()  # type: ignore[no-untyped-call]
                    for key, field, value in entries:
                        speaker = _speaker(value)
                        if speaker is None or speaker.name.casefold() != name.casefold():
                            continue
                        changed = change(speaker)
                        if changed is None:
                            pipe.hdel(key, field)
                        elif changed != speaker:
                            pipe.hset(key, field, changed.tag)
                    await pipe.execute()
                    return
                except WatchError:
                    continue


def speaker_choices(cast: Mapping[str, frozenset[str]], typed: str, limit: int = 25) -> list[str]:
    """The cast's voices (`Name`, then `Name:mood`) that start with what a member typed, in any case."""
    start = typed.strip().casefold()
    tags = [
        tag for name in sorted(cast, key=str.casefold) for tag in (name, *(f"{name}:{m}" for m in sorted(cast[name])))
    ]
    return [tag for tag in tags if tag.casefold().startswith(start)][:limit]


def _owner(guild_id: int, member_id: int) -> tuple[str, str]:
    return _members_key(guild_id), str(member_id)


def _speaker(value: bytes | None) -> Speaker | None:
    return Speaker.parse(value.decode()) if value else None
