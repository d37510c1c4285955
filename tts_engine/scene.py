"""Scenes into render segments: the planner between the script language and Dia. Torch-free.

Dia speaks as [S1] and [S2] only, sounds best on 5-20 s of audio, reads at most 1024 bytes and writes at most
3072 frames, both counting the voice prompt it continues. `plan()` turns a parsed scene with any number of
characters into segments that keep all of that:

- A segment holds at most two speakers. A speaker is a voice: a character, one of its moods with a voice of
  its own (a mood without one speaks with the character's voice, and is then the same speaker), or one of
  Dia's random voices [S1]/[S2].
- Voiced speakers take the tags first, [S1] then [S2] in the order they first speak, and `voices` lists them in
  that order. The worker prepends `prompt_transcript()` of their transcripts ("[S1] ... [S2] ...") and their
  codes in the same order, so the whole input begins with [S1] and each tag continues its own voice. Dia's
  random voices take the tags left over. Consecutive lines of one speaker are one turn, so tags alternate.
- Lengths are estimated from text at `CHARS_PER_SECOND`. Turns of the same two speakers are merged up to
  about 20 s; a long turn is cut at sentence ends into even parts (at words, then characters, only when a
  sentence alone is too long); a pause ends a segment. Each segment's room shrinks by its prompts' transcript
  bytes and frames, and a voice whose prompt alone leaves no room is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from tts_engine.script import CHARS_PER_SECOND, DIA_SPEAKERS, Item, Pause, Turn, pieces, sentences

FRAMES_PER_SECOND = 44100 / 512  # DAC frames (Dia decoder steps) per second of audio
# Case-insensitive: a user who types [s1] in a clip's transcript means the tag, never the words.
_TAG = re.compile(r"\[S[12]\]", re.IGNORECASE)
_TAG_BYTES = len("[S1] ")


@dataclass(frozen=True)
class VoiceRef:
    """A stored voice as the planner needs it: its id, what its clip says, and the clip's length in frames."""

    voice_id: str
    transcript: str
    frames: int


@dataclass(frozen=True)
class PlannedSegment:
    """One render: Dia text tagged [S1]/[S2], the voice ids prompting it in tag order, the silence after it."""

    text: str
    voices: tuple[str, ...]
    pause_after: float
    seconds: float  # estimated audio length, prompt excluded


@dataclass(frozen=True)
class PlanLimits:
    max_seconds: float = 20.0  # Dia speeds up beyond ~20 s of audio
    text_bytes: int = 1024  # what Dia's encoder reads, prompt transcript included
    frames: int = 3072  # what Dia's decoder writes, prompt frames included
    # Room left in the text for the worker's own touches: another separator between prompt and text, or the
    # closing speaker tag Dia's guide recommends at the end.
    byte_margin: int = 32
    # Speech may run this much slower than estimated (a slow voice's prompt slows what follows): the estimate
    # is grown by it before it meets the frame limit, so the decoder never cuts a segment's end off.
    frame_margin: float = 0.25
    min_room_seconds: float = 2.0  # a voice leaving less room than this per segment would only speak fragments
    max_pause: float = 10.0


def prompt_transcript(transcripts: Sequence[str]) -> str:
    """The prompt text of a segment's voices in tag order: "[S1] first transcript [S2] second transcript".

    Tags inside a stored transcript are dropped, so it cannot change who speaks.
    """
    if len(transcripts) > len(DIA_SPEAKERS):
        raise ValueError(f"a segment has at most {len(DIA_SPEAKERS)} voices, not {len(transcripts)}")
    return " ".join(f"[{tag}] {untagged(t)}" for tag, t in zip(DIA_SPEAKERS, transcripts, strict=False))


def untagged(text: str) -> str:
    """`text` without [S1]/[S2] tags and with its spaces tidied: stored voices keep plain words and get their
    tag when used."""
    return " ".join(_TAG.sub(" ", text).split())


def estimate_seconds(text: str) -> float:
    """Estimated audio length of Dia text: its characters without tags, at `CHARS_PER_SECOND`."""
    return _spoken_chars(text) / CHARS_PER_SECOND


def _spoken_chars(text: str) -> int:
    return len(untagged(text))


@dataclass(frozen=True)
class _Speaker:
    key: str  # one voice is one speaker: "voice:<id>", or Dia's random "S1"/"S2"
    name: str  # as the script wrote it, for messages
    voice: VoiceRef | None = None


@dataclass(frozen=True)
class _Line:
    speaker: _Speaker
    text: str


@dataclass(frozen=True)
class _Room:
    bytes: int  # segment text bytes, tags included
    seconds: float  # estimated audio


def _room(voices: Sequence[VoiceRef], limits: PlanLimits) -> _Room:
    """What a segment prompted by `voices` may hold."""
    # The engine reads "<prompt transcript> <text>" (a space between), and counts the prompt's frames.
    prompt_bytes = len(prompt_transcript([v.transcript for v in voices]).encode()) + 1 if voices else 0
    frames_left = (limits.frames - sum(v.frames for v in voices)) / (1 + limits.frame_margin)
    seconds = min(limits.max_seconds, frames_left / FRAMES_PER_SECOND)
    return _Room(limits.text_bytes - limits.byte_margin - prompt_bytes, seconds)


def _speaker(turn: Turn, voices: Mapping[tuple[str, str | None], VoiceRef]) -> _Speaker:
    if turn.speaker in DIA_SPEAKERS:
        return _Speaker(turn.speaker, turn.speaker)
    name = turn.speaker if turn.mood is None else f"{turn.speaker}:{turn.mood}"
    voice = voices.get((turn.speaker, turn.mood)) or voices.get((turn.speaker, None))
    if voice is None:
        raise ValueError(f"[{name}] has no voice to speak with")
    return _Speaker(f"voice:{voice.voice_id}", name, voice)


def _render(lines: Sequence[_Line]) -> tuple[str, tuple[VoiceRef, ...]]:
    """Dia text of `lines` and its voices in tag order: voiced speakers first, each group by first line."""
    seen: dict[str, _Speaker] = {}
    for line in lines:
        seen.setdefault(line.speaker.key, line.speaker)
    cast = [s for s in seen.values() if s.voice] + [s for s in seen.values() if not s.voice]
    assert len(cast) <= len(DIA_SPEAKERS), "the planner closes a segment before a third speaker"
    tags = {s.key: tag for s, tag in zip(cast, DIA_SPEAKERS, strict=False)}
    turns: list[tuple[str, str]] = []
    for line in lines:
        tag = tags[line.speaker.key]
        if turns and turns[-1][0] == tag:  # one speaker again: one turn, so the tags alternate
            turns[-1] = (tag, f"{turns[-1][1]} {line.text}")
        else:
            turns.append((tag, line.text))
    text = " ".join(f"[{tag}] {words}" for tag, words in turns)
    return text, tuple(s.voice for s in cast if s.voice is not None)


def _balanced(text: str, budget: int) -> list[str]:
    """`text` in as few pieces of at most `budget` bytes as sentences allow, of even length: a long turn
    cut greedily would end in a stub, and Dia sounds off on very short text."""
    size = len(text.encode())
    if size <= budget:
        return [text]
    count = -(-size // budget)
    for target in range(-(-size // count), budget, max(1, budget // 20)):
        parts = pieces(text, target)
        if len(parts) <= count:
            return parts
    return pieces(text, budget)


@dataclass
class _Planner:
    limits: PlanLimits
    segments: list[PlannedSegment] = field(default_factory=list)
    lines: list[_Line] = field(default_factory=list)  # the segment being filled

    def pause(self, seconds: float) -> None:
        if self.lines:
            self._close(seconds)
        elif self.segments:  # pauses in a row add up; a pause before any speech is dropped: pauses separate speech
            last = self.segments[-1]
            self.segments[-1] = replace(last, pause_after=min(self.limits.max_pause, last.pause_after + seconds))

    def turn(self, speaker: _Speaker, text: str) -> None:
        budget = self._piece_budget(speaker)
        if len({line.speaker.key for line in self.lines} | {speaker.key}) > len(DIA_SPEAKERS):
            self._close()
        if self.lines:
            text = self._fill(speaker, text)
            if not text:
                return
            self._close()
        parts = _balanced(text, budget)
        for index, part in enumerate(parts):  # each fits a segment of its own; the last stays open for more
            self.lines.append(_Line(speaker, part))
            if index < len(parts) - 1:
                self._close()

    def finish(self) -> list[PlannedSegment]:
        if self.lines:
            self._close()
        return self.segments

    def _fill(self, speaker: _Speaker, text: str) -> str:
        """Add the turn's leading sentences that still fit the open segment; what is left of the turn."""
        parts = sentences(text)
        taken = 0
        while taken < len(parts) and self._fits([*self.lines, _Line(speaker, " ".join(parts[: taken + 1]))]):
            taken += 1
        if taken:
            self.lines.append(_Line(speaker, " ".join(parts[:taken])))
        return " ".join(parts[taken:])

    def _fits(self, lines: Sequence[_Line]) -> bool:
        text, voices = _render(lines)
        room = _room(voices, self.limits)
        return len(text.encode()) <= room.bytes and _spoken_chars(text) <= room.seconds * CHARS_PER_SECOND

    def _piece_budget(self, speaker: _Speaker) -> int:
        """Bytes of one piece of `speaker`'s turn, so that it fits a segment on its own."""
        voices = [] if speaker.voice is None else [speaker.voice]
        room = _room(voices, self.limits)
        # Bytes >= characters, so a piece within the byte budget is within the seconds too.
        budget = min(room.bytes - _TAG_BYTES, int(room.seconds * CHARS_PER_SECOND))
        if budget < self.limits.min_room_seconds * CHARS_PER_SECOND:
            raise ValueError(_no_room(speaker, self.limits))
        return budget

    def _close(self, pause: float = 0.0) -> None:
        text, voices = _render(self.lines)
        voice_ids = tuple(v.voice_id for v in voices)
        self.segments.append(PlannedSegment(text, voice_ids, min(pause, self.limits.max_pause), estimate_seconds(text)))
        self.lines = []


def _no_room(speaker: _Speaker, limits: PlanLimits) -> str:
    voice = speaker.voice
    if voice is None:
        return f"[{speaker.name}] has no room to speak within these limits"
    return (
        f"the voice of [{speaker.name}] leaves no room to speak: its prompt is {voice.frames} frames (Dia writes "
        f"at most {limits.frames}) and its transcript {len(voice.transcript.encode())} bytes (Dia reads at most "
        f"{limits.text_bytes}); give it a shorter clip"
    )


def plan(
    items: Sequence[Item], voices: Mapping[tuple[str, str | None], VoiceRef], *, limits: PlanLimits | None = None
) -> list[PlannedSegment]:
    """Render segments of a parsed scene, in order.

    `voices` maps (character name, mood or None) to its voice; a mood without a voice of its own falls back
    to (name, None). A character with no voice at all, or a voice whose prompt leaves no room for speech,
    is a `ValueError` naming it.
    """
    planner = _Planner(limits or PlanLimits())
    for item in items:
        if isinstance(item, Pause):
            planner.pause(item.seconds)
            continue
        # The parser never leaves a tag in a turn's text; a hand-built Turn must not forge a speaker change either.
        text = untagged(item.text)
        if text:
            planner.turn(_speaker(item, voices), text)
    return planner.finish()
