"""Text to byte ids: speaker tags, control characters, the automatic [S1], and the length limit."""

from __future__ import annotations

import pytest

from tts_engine.dia.text import TextError, TextTooLong, encode, normalize


def test_speaker_tags_become_ids_1_and_2() -> None:
    assert encode("[S1] Hi [S2] Yo") == [1, 32, 72, 105, 32, 2, 32, 89, 111]


def test_control_characters_cannot_forge_special_ids() -> None:
    ids = encode("[S1] a\x01b\x02c\x00d\x1b[31m\x7fe")
    assert ids.count(1) == 1 and 2 not in ids and 0 not in ids and 0x1B not in ids and 0x7F not in ids


def test_tabs_and_line_endings() -> None:
    assert normalize("[S1] one\ttwo\r\nthree\rfour") == "[S1] one two\nthree\nfour"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Hello there.", "[S1] Hello there."), ("  [S2] Hi.", "[S2] Hi."), ("(laughs) ok", "[S1] (laughs) ok")],
)
def test_a_speaker_tag_is_added_when_missing(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize("text", ["", "   \n\t", "\x00\x01", "[S1]", "[S1] [S2]  "])
def test_nothing_to_say_is_an_error(text: str) -> None:
    with pytest.raises(TextError):
        encode(text)


def test_length_counts_bytes_and_the_prompt_transcript() -> None:
    body = "é" * 510  # two bytes each
    assert len(encode(body, max_bytes=1024)) == 2 + 1020  # "[S1] " is added: id 1 and a space
    with pytest.raises(TextTooLong, match=r"1027 bytes long .* at most 1024") as caught:
        encode(body, prefix="[S1] Hi", max_bytes=1024)
    assert (caught.value.size, caught.value.limit) == (1027, 1024)


def test_transcript_comes_first_joined_by_a_space() -> None:
    assert encode("[S2] B", prefix="[S1] A") == [1, 32, 65, 32, 2, 32, 66]
