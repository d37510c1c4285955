"""The script language: turns, cues, pauses, characters and moods, errors with positions, and planning."""

from __future__ import annotations

import pytest

from tts_engine.script import CUES, Pause, ScriptInvalid, ScriptLimits, Turn, parse, plan_dia

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
