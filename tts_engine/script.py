"""The script language of /say, parsed into turns and pauses, with every error placed precisely. Torch-free.

    [S1] Welcome, traveler! (laughs) [S2] Beware the woods. (pause 1.5s) [Bram:angry] Out of my inn!

- Speakers: `[S1]` and `[S2]` are Dia's own voices; `[Name]` is a character of the server and `[Name:mood]`
  one of its moods. Text before the first tag is spoken by [S1], or by the caller's `default` speaker.
- Non-verbal cues: the 21 tags Dia's README lists, e.g. `(laughs)`, `(sighs)`, `(clears throat)`. A short
  lowercase stage direction that is not one of them, like `(grins)` or `(laugh)`, is an error that suggests
  the nearest supported cue; other text in parentheses, like `(as always, I hope)`, is simply spoken.
- Pauses: `(pause 1.5s)` or `(pause 500ms)`, up to 10 s: silence of that length.
Limits (characters, turns, cues per turn) have clear errors; nothing is cut silently.

Planning: `tts_engine.scene.plan` turns a parsed scene with characters into Dia render segments (two speakers
each, voice prompts, 5-20 s); `plan_dia` here is the simpler planner for scripts of [S1]/[S2] alone. Both cut
text with `pieces` and estimate its length at `CHARS_PER_SECOND`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

CUES = (
    "laughs", "clears throat", "sighs", "gasps", "coughs", "singing", "sings", "mumbles", "beep", "groans",
    "sniffs", "claps", "screams", "inhales", "exhales", "applause", "burps", "humming", "sneezes", "chuckle",
    "whistles",
)  # fmt: skip
DIA_SPEAKERS = ("S1", "S2")
# What a character may be called (tts_engine.characters.NAME: letters of any script, digits, spaces, - and _),
# plus the apostrophe of names like O'Brien.
_NAME = re.compile(r"[^\W_][\w '\-]{0,31}")
_PAUSE = re.compile(r"pause\s+(\d+(?:\.\d+)?)\s*(s|ms)", re.IGNORECASE)
_STAGE_DIRECTION = re.compile(r"[a-z]+(?: [a-z]+){0,2}")


@dataclass(frozen=True)
class ScriptLimits:
    max_chars: int = 4000
    max_turns: int = 64
    max_cues_per_turn: int = 4
    max_pause: float = 10.0


@dataclass(frozen=True)
class Turn:
    """One speaker's words: `text` is what Dia reads (cues kept as `(laughs)`), `position` where the tag was."""

    speaker: str
    text: str
    position: int
    mood: str | None = None
    cues: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pause:
    seconds: float
    position: int


Item = Turn | Pause


@dataclass(frozen=True)
class ScriptError:
    position: int  # character offset in the script
    message: str

    def __str__(self) -> str:
        return f"at character {self.position + 1}: {self.message}"


class ScriptInvalid(ValueError):
    """The script has mistakes; `errors` lists each with its position, `str()` is one line per error."""

    def __init__(self, errors: list[ScriptError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


@dataclass
class _Builder:
    characters: Mapping[str, frozenset[str]]
    limits: ScriptLimits
    items: list[Item] = field(default_factory=list)
    errors: list[ScriptError] = field(default_factory=list)
    speaker: str = "S1"
    mood: str | None = None
    tag_at: int = 0
    words: list[str] = field(default_factory=list)
    cues: list[str] = field(default_factory=list)
    tagged: bool = False  # the current turn was opened by a speaker tag (not the implicit [S1])

    def close_turn(self, *, explicit_end: bool) -> None:
        """End the words gathered so far as a turn; a tag or the end of the script ends it explicitly."""
        text = " ".join("".join(self.words).split())
        if text:
            if len(self.cues) > self.limits.max_cues_per_turn:
                self.errors.append(ScriptError(self.tag_at, f"[{self.speaker}] has {len(self.cues)} non-verbal "
                                   f"cues; at most {self.limits.max_cues_per_turn} per turn sound right"))  # fmt: skip
            self.items.append(Turn(self.speaker, text, self.tag_at, self.mood, tuple(self.cues)))
        elif explicit_end and self.tagged and not isinstance(self.items[-1:] and self.items[-1], Pause):
            self.errors.append(ScriptError(self.tag_at, f"[{self.speaker}] says nothing"))
        self.words, self.cues = [], []


def parse(
    script: str,
    *,
    characters: Mapping[str, frozenset[str]] | None = None,
    limits: ScriptLimits | None = None,
    default: tuple[str, str | None] = ("S1", None),
) -> list[Item]:
    """Turns and pauses of `script`, or `ScriptInvalid` listing every mistake found.

    `characters` maps each character name of the server (any case) to its moods; `default` is the speaker (and
    mood) of text before the first tag, as the caller checked it against `characters`.
    """
    limits = limits or ScriptLimits()
    known = {name.casefold(): (name, moods) for name, moods in (characters or {}).items()}
    if len(script) > limits.max_chars:
        raise ScriptInvalid([ScriptError(limits.max_chars, f"the script is {len(script)} characters long; "
                                         f"the limit is {limits.max_chars}")])  # fmt: skip
    b = _Builder(characters or {}, limits, speaker=default[0], mood=default[1])
    i = 0
    while i < len(script):
        char = script[i]
        if char in "[(":
            close = "]" if char == "[" else ")"
            end = script.find(close, i + 1)
            other = script.find(char, i + 1)
            if end < 0 or (0 <= other < end):
                b.errors.append(ScriptError(i, f"this {char} is never closed with {close}"))
                b.words.append(script[i])
                i += 1
                continue
            inner = script[i + 1 : end]
            if char == "[":
                _speaker_tag(b, inner, i, known)
            else:
                _parenthesis(b, inner, i)
            i = end + 1
            continue
        if char in "])":
            b.errors.append(ScriptError(i, f"this {char} closes nothing"))
        else:
            b.words.append(char)
        i += 1
    b.close_turn(explicit_end=True)
    turns = sum(isinstance(item, Turn) for item in b.items)
    if not turns and not b.errors:
        b.errors.append(ScriptError(0, "there is nothing to say"))
    if turns > limits.max_turns:
        b.errors.append(ScriptError(0, f"the script has {turns} turns; the limit is {limits.max_turns}"))
    if b.errors:
        raise ScriptInvalid(b.errors)
    return b.items


def closest(name: str, names: Iterable[str]) -> str | None:
    """The one of `names` most like `name`, as `names` spells it; None if none is close. Case does not count, as
    in names: "brom" is close to "Bram"."""
    spelled = {n.casefold(): n for n in names}
    found = difflib.get_close_matches(name.casefold(), list(spelled), n=1)
    return spelled[found[0]] if found else None


def _speaker_tag(b: _Builder, inner: str, position: int, known: dict[str, tuple[str, frozenset[str]]]) -> None:
    b.close_turn(explicit_end=True)
    name, _, mood = inner.partition(":")
    name, mood = name.strip(), mood.strip()
    b.tagged, b.tag_at = True, position
    if name.upper() in DIA_SPEAKERS:
        if mood:
            b.errors.append(ScriptError(position, f"[{name}] is one of Dia's own voices and has no moods"))
        b.speaker, b.mood = name.upper(), None
        return
    if not _NAME.fullmatch(name):
        b.errors.append(ScriptError(position, f"[{inner}] is not a speaker: use [S1], [S2] or a character's name"))
        return
    entry = known.get(name.casefold())
    if entry is None:
        names = [canonical for canonical, _ in known.values()]
        close = closest(name, names)
        hint = f" (did you mean [{close}]?)" if close else " (create it with /character create, or use [S1]/[S2])"
        b.errors.append(ScriptError(position, f"there is no character named {name} in this server{hint}"))
        b.speaker, b.mood = name, None
        return
    canonical, moods = entry
    b.speaker, b.mood = canonical, None
    if mood:
        if mood.casefold() not in {m.casefold() for m in moods}:
            listed = ", ".join(sorted(moods)) or "none yet"
            b.errors.append(ScriptError(position, f"{canonical} has no mood '{mood}' (moods: {listed})"))
        else:
            b.mood = next(m for m in moods if m.casefold() == mood.casefold())


def _parenthesis(b: _Builder, inner: str, position: int) -> None:
    stripped = " ".join(inner.split())
    pause = _PAUSE.fullmatch(stripped)
    if pause is not None:
        seconds = float(pause.group(1)) / (1000 if pause.group(2).lower() == "ms" else 1)
        if not 0 < seconds <= b.limits.max_pause:
            b.errors.append(ScriptError(position, f"a pause lasts more than 0 s and at most {b.limits.max_pause:g} s"))
        b.close_turn(explicit_end=False)
        b.items.append(Pause(seconds, position))
        return
    if stripped.lower().startswith("pause"):
        b.errors.append(ScriptError(position, f"({inner}) is not a pause: write it like (pause 1.5s) or (pause 500ms)"))
        return
    if stripped in CUES:
        b.cues.append(stripped)
        b.words.append(f" ({stripped}) ")
        return
    if _STAGE_DIRECTION.fullmatch(stripped):
        close = difflib.get_close_matches(stripped, CUES, n=1, cutoff=0.6)
        hint = f"did you mean ({close[0]})?" if close else "Dia knows " + ", ".join(f"({c})" for c in CUES[:8]) + ", …"
        b.errors.append(ScriptError(position, f"({stripped}) is not a sound Dia can make: {hint}"))
        return
    b.words.append(f"({inner})")  # ordinary words in parentheses are spoken


_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")
# Dia speaks about 15 characters a second: conversational English runs ~150 words a minute at ~6 characters a
# word with its space. (The 600 bytes plan_dia used to allow, "10-20 s", assumed 30-60 characters a second: at
# 15 that is 40 s, past the 20 s where Dia speeds up and past the 35.7 s its decoder can write.) Dia tends to
# talk fast rather than slow (its users report hurried speech), so this rate overestimates lengths if anything,
# which is the safe side for the 20 s and frame limits; the scene planner keeps a margin for slower voices.
CHARS_PER_SECOND = 15.0
SEGMENT_BYTES = round(20 * CHARS_PER_SECOND)  # about 20 s of speech: Dia sounds best between 5 and 20 s


def sentences(text: str) -> list[str]:
    """`text` cut after each sentence end (. ! ? …); joined by spaces they give back text with single spaces."""
    return _SENTENCE_END.split(text)


def pieces(text: str, budget: int) -> list[str]:
    """`text` cut at sentence ends into pieces of at most `budget` UTF-8 bytes (a longer sentence at words)."""
    parts: list[str] = []
    current = ""
    for sentence in sentences(text):
        for word_group in _fit(sentence, budget):
            joined = f"{current} {word_group}".strip()
            if current and len(joined.encode()) > budget:
                parts.append(current)
                current = word_group
            else:
                current = joined
    if current:
        parts.append(current)
    return parts


def _fit(sentence: str, budget: int) -> list[str]:
    if len(sentence.encode()) <= budget:
        return [sentence]
    groups, current = [], ""
    for word in (chunk for whole in sentence.split() for chunk in _cut(whole, budget)):
        joined = f"{current} {word}".strip()
        if current and len(joined.encode()) > budget:
            groups.append(current)
            current = word
        else:
            current = joined
    return [*groups, current] if current else groups


def _cut(word: str, budget: int) -> list[str]:
    """A word longer than `budget` bytes in chunks that fit: Dia could not read it whole anyway."""
    if len(word.encode()) <= budget:
        return [word]
    chunks, current, size = [], "", 0
    for char in word:
        width = len(char.encode())
        if current and size + width > budget:
            chunks.append(current)
            current, size = "", 0
        current, size = current + char, size + width
    return [*chunks, current]


def plan_dia(items: list[Item], *, budget: int = SEGMENT_BYTES) -> list[tuple[str, float]]:
    """Render segments for a script of [S1]/[S2] turns: (Dia text, pause after it in seconds).

    Turns are joined until a segment would pass `budget` bytes or a pause ends it; a long turn is cut at
    sentence ends. A pause before any speech is dropped: pauses separate speech.
    """
    segments: list[tuple[str, float]] = []
    current = ""
    for item in items:
        if isinstance(item, Pause):
            if current:
                segments.append((current, item.seconds))
                current = ""
            elif segments:
                text, pause = segments[-1]
                segments[-1] = (text, min(10.0, pause + item.seconds))
            continue
        if item.speaker not in DIA_SPEAKERS:
            raise ValueError(f"{item.speaker} is a character; characters are planned by plan()")
        for piece in pieces(item.text, budget - 6):
            tagged = f"[{item.speaker}] {piece}"
            if current and len(f"{current} {tagged}".encode()) > budget:
                segments.append((current, 0.0))
                current = tagged
            else:
                current = f"{current} {tagged}".strip()
    if current:
        segments.append((current, 0.0))
    return segments
