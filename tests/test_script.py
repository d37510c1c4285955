"""The script language: turns, cues, pauses, characters and moods, errors with positions, and planning."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tts_engine.scene import (
    FRAMES_PER_SECOND,
    PlanLimits,
    PlannedSegment,
    VoiceRef,
    estimate_seconds,
    plan,
    prompt_transcript,
)
from tts_engine.script import CUES, Item, Pause, ScriptInvalid, ScriptLimits, Turn, parse, plan_dia

CHARACTERS = {"Bram": frozenset({"angry", "drunk"}), "Old Nell": frozenset()}


def test_a_dialogue_with_cues_and_a_pause() -> None:
    items = parse("[S1] Welcome, traveler! (laughs) [S2] Beware the woods. (pause 1.5s) [S1] Noted.")
    assert items == [
        Turn("S1", "Welcome, traveler! (laughs)", 0, cues=("laughs",)),
        Turn("S2", "Beware the woods.", 33),
        Pause(1.5, 56),
        Turn("S1", "Noted.", 69),
    ]


def test_text_without_a_tag_is_s1_and_spoken_parentheses_stay() -> None:
    assert parse("Hello (as always, I hope).") == [Turn("S1", "Hello (as always, I hope).", 0)]


def test_text_without_a_tag_can_be_another_default_speaker() -> None:
    items = parse("Hi. (pause 1s) Still me. [S2] Not me. [Bram] Me again.", characters=CHARACTERS,
                  default=("Bram", "angry"))  # fmt: skip
    assert items == [
        Turn("Bram", "Hi.", 0, "angry"), Pause(1.0, 4), Turn("Bram", "Still me.", 0, "angry"),
        Turn("S2", "Not me.", 25), Turn("Bram", "Me again.", 38),
    ]  # fmt: skip


def test_characters_and_moods_in_any_case() -> None:
    items = parse("[bram:ANGRY] Out! [Old Nell] Now now.", characters=CHARACTERS)
    assert [(t.speaker, t.mood) for t in items if isinstance(t, Turn)] == [("Bram", "angry"), ("Old Nell", None)]


def test_every_supported_cue_passes() -> None:
    text = " ".join(f"[S1] Hm ({cue})" for cue in CUES)
    assert len(parse(text, limits=ScriptLimits(max_turns=30))) == len(CUES)


@pytest.mark.parametrize(
    ("script", "position", "message"),
    [
        ("[S1 hello", 0, "this [ is never closed with ]"),
        ("hello)", 5, "this ) closes nothing"),
        ("[S1] hi (laughs", 8, "this ( is never closed"),
        ("[S1][S2] hi", 0, "[S1] says nothing"),
        ("[S1:happy] hi", 0, "has no moods"),
        ("[Brom] hi", 0, "no character named Brom in this server (did you mean [Bram]?)"),
        ("[brom] hi", 0, "no character named brom in this server (did you mean [Bram]?)"),  # whatever the case
        ("[Bram:sad] hi", 0, "Bram has no mood 'sad' (moods: angry, drunk)"),
        ("[S1] (laugh) ha", 5, "did you mean (laughs)?"),
        ("[S1] (smirks) ha", 5, "is not a sound Dia can make"),
        ("[S1] (pause 11s) ha", 5, "at most 10 s"),
        ("[S1] (pause later) ha", 5, "write it like (pause 1.5s)"),
        ("[#!] hi", 0, "is not a speaker"),
        ("", 0, "nothing to say"),
    ],
)
def test_mistakes_are_placed(script: str, position: int, message: str) -> None:
    with pytest.raises(ScriptInvalid) as caught:
        parse(script, characters=CHARACTERS)
    error = caught.value.errors[0]
    assert error.position == position and message in error.message


def test_all_mistakes_are_reported_at_once() -> None:
    with pytest.raises(ScriptInvalid) as caught:
        parse("[Nobody] hi (grins) and [S1 oops", characters=CHARACTERS)
    assert len(caught.value.errors) == 3
    assert str(caught.value).count("\n") == 2


def test_limits() -> None:
    with pytest.raises(ScriptInvalid, match="the limit is 100"):
        parse("a" * 101, limits=ScriptLimits(max_chars=100))
    with pytest.raises(ScriptInvalid, match="3 turns; the limit is 2"):
        parse("[S1] a [S2] b [S1] c", limits=ScriptLimits(max_turns=2))
    with pytest.raises(ScriptInvalid, match="3 non-verbal cues; at most 2"):
        parse("[S1] (sighs) a (sighs) b (sighs)", limits=ScriptLimits(max_cues_per_turn=2))


def test_planning_dia_turns() -> None:
    items = parse("[S1] Hi. (pause 1s) [S2] Yo. (pause 0.5s)(pause 0.5s) [S1] End. (pause 1s)")
    assert plan_dia(items) == [("[S1] Hi.", 1.0), ("[S2] Yo.", 1.0), ("[S1] End.", 1.0)]
    assert plan_dia(parse("(pause 2s) [S1] Late.")) == [("[S1] Late.", 0.0)]


def test_long_text_is_cut_at_sentences_within_the_budget() -> None:
    sentences = [f"This is sentence number {i}, quite a long one really." for i in range(30)]
    segments = plan_dia(parse("[S1] " + " ".join(sentences)), budget=300)
    assert all(len(text.encode()) <= 300 and text.startswith("[S1] ") for text, _ in segments)
    rejoined = " ".join(text.removeprefix("[S1] ") for text, _ in segments)
    assert rejoined == " ".join(sentences)


# --- The scene planner -------------------------------------------------------------------------------------

CAST: dict[str, frozenset[str]] = {
    "Bram": frozenset({"angry", "drunk"}),
    "Old Nell": frozenset(),
    "Mira": frozenset(),
    "Tobin": frozenset(),
    "Greta": frozenset(),
}
VOICES = {
    ("Bram", None): VoiceRef("v-bram", "I run this inn, and I run it well.", 430),
    ("Bram", "angry"): VoiceRef("v-bram-angry", "Out of my inn!", 300),  # [Bram:drunk] falls back to Bram's
    ("Old Nell", None): VoiceRef("v-nell", "Now now, dear, no need to shout.", 500),
    ("Mira", None): VoiceRef("v-mira", "Shadows are my trade.", 600),
    ("Tobin", None): VoiceRef("v-tobin", "Another round for everyone!", 450),
    ("Greta", None): VoiceRef("v-greta", "The forge never sleeps.", 520),
}
BY_ID = {voice.voice_id: voice for voice in VOICES.values()}
TAVERN = """[Bram] Welcome to the Prancing Pony, friends! Sit anywhere you like, the fire is warm tonight.
[Tobin] Another round for everyone! (laughs) [Mira] Not for me. I am working tonight. [Tobin] Suit yourself.
[Greta] Working? At this hour? [Old Nell] Leave the girl be, Greta. [Greta] Hmph.
[Bram:angry] Tobin, you still owe me for last week! [Tobin] Put it on my tab. (pause 1s)
[Mira] Quiet. Someone is at the door. [Greta] I hear nothing. [S1] Open up, in the name of the king!
[Bram] Not again. [Old Nell] Let them in, Bram. We have nothing to hide. [Bram:drunk] Speak for yourself."""


def _plan(script: str, voices: dict[tuple[str, str | None], VoiceRef] = VOICES) -> list[PlannedSegment]:
    return plan(parse(script, characters=CAST, limits=ScriptLimits(max_chars=20000)), voices)


def _tags(text: str) -> list[str]:
    return re.findall(r"\[(S[12])\]", text)


def _said(items: list[Item], voices: dict[tuple[str, str | None], VoiceRef]) -> list[tuple[str, str]]:
    """(who, word) for every word of the script: who is the voice id, or "dia" for Dia's random voices."""
    said = []
    for item in items:
        if isinstance(item, Turn):
            voice = voices.get((item.speaker, item.mood)) or voices.get((item.speaker, None))
            said += [(voice.voice_id if voice else "dia", word) for word in item.text.split()]
    return said


def _spoken(segments: list[PlannedSegment]) -> list[tuple[str, str]]:
    """(who, word) for every word of the segments, the tag of each turn read through the segment's voices."""
    spoken = []
    for segment in segments:
        for tag, words in re.findall(r"\[(S[12])\]([^\[]*)", segment.text):
            index = int(tag[1]) - 1
            who = segment.voices[index] if index < len(segment.voices) else "dia"
            spoken += [(who, word) for word in words.split()]
    return spoken


DEFAULTS = PlanLimits()


def _check(segment: PlannedSegment, by_id: dict[str, VoiceRef], limits: PlanLimits = DEFAULTS) -> None:
    """What every segment owes Dia: two speakers, alternating tags from [S1] on once the prompt is prepended,
    and the text and frame limits with their margins."""
    voices = [by_id[v] for v in segment.voices]
    prompt = prompt_transcript([v.transcript for v in voices])
    full = f"{prompt} {segment.text}" if voices else segment.text
    tags = _tags(segment.text)
    assert set(tags) <= {"S1", "S2"} and len(voices) <= 2 and segment.text.startswith("[S")
    assert all(a != b for a, b in itertools.pairwise(tags)), f"tags do not alternate: {segment.text}"
    assert _tags(full)[0] == "S1", f"the input does not begin with [S1]: {full}"
    assert len(full.encode()) <= limits.text_bytes - limits.byte_margin
    frames = segment.seconds * FRAMES_PER_SECOND * (1 + limits.frame_margin) + sum(v.frames for v in voices)
    assert frames <= limits.frames + 1e-6 and segment.seconds <= limits.max_seconds + 1e-9
    assert segment.seconds == pytest.approx(estimate_seconds(segment.text)) and 0 <= segment.pause_after <= 10


def _short_is_forced(segments: list[PlannedSegment], index: int) -> bool:
    """A segment under 5 s is fine where a pause, the end, or a third speaker ended it."""
    if segments[index].pause_after or index == len(segments) - 1:
        return True
    speakers = {who for who, _ in _spoken(segments[index : index + 2])}
    return len(speakers) > 2


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        pytest.param(
            "[Bram] Welcome, friend. [Old Nell] Thank you, Bram. [Bram] Sit, sit.",
            [("[S1] Welcome, friend. [S2] Thank you, Bram. [S1] Sit, sit.", ("v-bram", "v-nell"), 0.0)],
            id="two characters",
        ),
        pytest.param(
            "[S1] Who goes there? [Bram] Only me.",
            [("[S2] Who goes there? [S1] Only me.", ("v-bram",), 0.0)],
            id="a voice takes [S1], so its prompt opens the input",
        ),
        pytest.param("[S2] Hi there. [S1] Hello.", [("[S1] Hi there. [S2] Hello.", (), 0.0)], id="no voices"),
        pytest.param("[Bram] One. [Bram] Two.", [("[S1] One. Two.", ("v-bram",), 0.0)], id="one speaker, one turn"),
        pytest.param(
            "[Bram] Calm now. [Bram:angry] OUT!",
            [("[S1] Calm now. [S2] OUT!", ("v-bram", "v-bram-angry"), 0.0)],
            id="a mood with its own voice is another speaker",
        ),
        pytest.param(
            "[Bram:drunk] Hic. [Bram] Sorry.", [("[S1] Hic. Sorry.", ("v-bram",), 0.0)], id="a mood falls back"
        ),
        pytest.param(
            "(pause 2s) [Bram] Hi. (pause 1s)(pause 0.5s) [Old Nell] Yes. (pause 9s) (pause 9s)",
            [("[S1] Hi.", ("v-bram",), 1.5), ("[S1] Yes.", ("v-nell",), 10.0)],
            id="pauses end segments, add up to 10 s, and none leads",
        ),
        pytest.param(
            "[Bram] One. [Mira] Two. [Bram] Three. [Tobin] Four. [Mira] Five.",
            [
                ("[S1] One. [S2] Two. [S1] Three.", ("v-bram", "v-mira"), 0.0),
                ("[S1] Four. [S2] Five.", ("v-tobin", "v-mira"), 0.0),
            ],
            id="a third speaker starts a segment",
        ),
        pytest.param(
            "[Bram] Hello. [S1] Hi. [S2] Hey.",
            [("[S1] Hello. [S2] Hi.", ("v-bram",), 0.0), ("[S1] Hey.", (), 0.0)],
            id="Dia's two voices are two speakers",
        ),
    ],
)
def test_planning_scenes(script: str, expected: list[tuple[str, tuple[str, ...], float]]) -> None:
    segments = _plan(script)
    assert [(s.text, s.voices, s.pause_after) for s in segments] == expected
    for segment in segments:
        _check(segment, BY_ID)


def test_a_five_character_tavern_scene() -> None:
    items = parse(TAVERN, characters=CAST)
    segments = plan(items, VOICES)
    assert len({who for who, _ in _said(items, VOICES)}) == 7  # five characters, a mood, and Dia's [S1]
    assert _spoken(segments) == _said(items, VOICES), "every word, in order, by the voice that was cast for it"
    for index, segment in enumerate(segments):
        _check(segment, BY_ID)
        assert segment.seconds >= 5 or _short_is_forced(segments, index), segment
    assert [s.pause_after for s in segments].count(1.0) == 1


def test_a_long_turn_is_cut_at_sentence_ends_into_even_parts() -> None:
    sentences = [f"This is sentence number {i}, quite a long one really." for i in range(30)]
    segments = _plan("[Old Nell] Hm. [Bram] " + " ".join(sentences) + " [Old Nell] Indeed.")
    assert len(segments) == 6
    assert segments[0].text.startswith("[S1] Hm. [S2] This is sentence number 0,"), "the short line is not alone"
    assert segments[-1].text.endswith("[S2] Indeed.") and segments[-1].voices == ("v-bram", "v-nell")
    for segment in segments:
        _check(segment, BY_ID)
        assert 5 <= segment.seconds <= 20
        assert re.search(r"really\.( \[S2\] Indeed\.)?$", segment.text), "cut at a sentence end"
    words = [w for s in segments for w in re.sub(r"\[S[12]\]", "", s.text).split()]
    assert words == ["Hm.", *" ".join(sentences).split(), "Indeed."]


def test_a_sentence_too_long_is_cut_at_words_and_a_word_too_long_at_characters() -> None:
    segments = _plan("[S1] " + " ".join(["word"] * 200) + " " + "é" * 400)
    for segment in segments:
        _check(segment, BY_ID)
    joined = "".join("".join(re.sub(r"\[S[12]\]", "", s.text).split()) for s in segments)
    assert joined == "word" * 200 + "é" * 400


def test_big_prompts_shrink_the_segments() -> None:
    big: dict[tuple[str, str | None], VoiceRef] = {
        ("Bram", None): VoiceRef("big-a", "Aye. " * 80, 1100),  # 400 bytes, 12.8 s
        ("Mira", None): VoiceRef("big-b", "No. " * 100, 1100),
    }
    script = " ".join(f"[{name}] This is line {i} of the argument, and it goes on." for i, name in
                      zip(range(12), ["Bram", "Mira"] * 6, strict=True))  # fmt: skip
    segments = _plan(script, big)
    by_id = {v.voice_id: v for v in big.values()}
    assert len(segments) > 1 and any(len(s.voices) == 2 for s in segments)
    assert max(s.seconds for s in segments) < 8.2  # (3072 - 2200) / 1.25 / 86.1: two lines, where 20 s fit six
    for segment in segments:
        _check(segment, by_id)
    solo = _plan("[Bram] " + " ".join(["Long words go on and on."] * 20), big)
    assert all(s.seconds <= 18.4 for s in solo)  # (3072 - 1100) frames / 1.25 margin / 86.1 = 18.3 s at most
    for segment in solo:
        _check(segment, by_id)


@pytest.mark.parametrize(
    ("voice", "message"),
    [
        (VoiceRef("huge", "Hi.", 3000), r"\[Bram\] leaves no room to speak: its prompt is 3000 frames"),
        (VoiceRef("wordy", "x" * 1000, 100), r"its transcript 1000 bytes"),
    ],
)
def test_a_prompt_that_leaves_no_room_is_refused(voice: VoiceRef, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _plan("[Bram] Hello.", {("Bram", None): voice})


def test_a_character_without_a_voice_is_named() -> None:
    with pytest.raises(ValueError, match=r"\[Mira\] has no voice"):
        _plan("[Bram] Hi. [Mira] Hello.", {("Bram", None): VOICES["Bram", None]})
    with pytest.raises(ValueError, match=r"\[Bram:drunk\] has no voice"):
        _plan("[Bram:drunk] Hic.", {("Bram", "angry"): VOICES["Bram", "angry"]})


def test_the_prompt_transcript_gives_each_tag_its_voice() -> None:
    assert prompt_transcript(["I run this inn.", " Shadows\n are my trade. "]) == (
        "[S1] I run this inn. [S2] Shadows are my trade."
    )
    assert prompt_transcript(["[S2] Sneaky."]) == "[S1] Sneaky."
    with pytest.raises(ValueError, match="at most 2 voices"):
        prompt_transcript(["a", "b", "c"])


# --- Properties ---------------------------------------------------------------------------------------------

FRAGMENTS = ["[S1]", "[S2]", "[Bram]", "[bram:ANGRY]", "[Bram:", "[Nobody]", "[Old Nell]", "(laughs)", "(laugh)",
             "(pause 1s)", "(pause 11s)", "(pause", "(as always)", "(", ")", "[", "]", ":", "\n", " ", "é", "漢",
             "😀", ".", "\x00"]  # fmt: skip
PROPERTY = settings(max_examples=200, deadline=None, database=None)


@PROPERTY
@given(
    script=st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=6), max_size=40).map("".join),
    characters=st.just(CHARACTERS)
    | st.dictionaries(st.text(max_size=12), st.frozensets(st.text(max_size=8), max_size=3), max_size=3),
)
def test_parse_raises_only_script_invalid(script: str, characters: dict[str, frozenset[str]]) -> None:
    try:
        items = parse(script, characters=characters)
    except ScriptInvalid as exc:
        assert exc.errors and all(0 <= e.position <= len(script) for e in exc.errors)
    else:
        assert items and all(item.text for item in items if isinstance(item, Turn))


TAGS = ["[S1]", "[S2]", "[Bram]", "[Bram:angry]", "[Bram:drunk]", "[Old Nell]", "[Mira]", "[Tobin]", "[Greta]"]
WORD = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789',.!?-…éß漢😀"), min_size=1, max_size=12)
TURN = st.tuples(
    st.sampled_from(TAGS),
    st.lists(WORD | st.sampled_from(["Well.", "Yes!", "Why?"]), min_size=1, max_size=60),
    st.sampled_from(["", "", " (laughs)", " (sighs) (pause 0.5s)", " (pause 0.5s)", " (pause 4s)"]),
)


def _script(turns: list[tuple[str, list[str], str]]) -> str:
    return " ".join(f"{tag} {' '.join(words)}{ending}" for tag, words, ending in turns)


def _voices(transcripts: list[str], frames: list[int]) -> dict[tuple[str, str | None], VoiceRef]:
    keys = list(VOICES)
    return {key: VoiceRef(f"v{i}", transcripts[i], frames[i]) for i, key in enumerate(keys)}


@PROPERTY
@given(
    turns=st.lists(TURN, min_size=1, max_size=16),
    transcripts=st.lists(st.text(st.characters(codec="ascii"), min_size=1, max_size=200), min_size=6, max_size=6),
    frames=st.lists(st.integers(1, 900), min_size=6, max_size=6),
)
def test_planning_keeps_every_word_in_order_within_limits(
    turns: list[tuple[str, list[str], str]], transcripts: list[str], frames: list[int]
) -> None:
    voices = _voices(transcripts, frames)
    items = parse(_script(turns), characters=CAST, limits=ScriptLimits(max_chars=20000))
    segments = plan(items, voices)
    assert _spoken(segments) == _said(items, voices)
    by_id = {v.voice_id: v for v in voices.values()}
    for segment in segments:
        _check(segment, by_id)


@PROPERTY
@given(
    turns=st.lists(TURN, min_size=1, max_size=8),
    transcripts=st.lists(st.text(min_size=1, max_size=400), min_size=6, max_size=6),
    frames=st.lists(st.integers(1, 3100), min_size=6, max_size=6),
)
def test_big_prompts_are_refused_or_planned_within_limits(
    turns: list[tuple[str, list[str], str]], transcripts: list[str], frames: list[int]
) -> None:
    voices = _voices(transcripts, frames)
    items = parse(_script(turns), characters=CAST, limits=ScriptLimits(max_chars=20000))
    try:
        segments = plan(items, voices)
    except ValueError as exc:
        assert "leaves no room to speak" in str(exc)
        return
    assert "".join(w for _, w in _spoken(segments)) == "".join(w for _, w in _said(items, voices))
    by_id = {v.voice_id: v for v in voices.values()}
    for segment in segments:
        _check(segment, by_id)
