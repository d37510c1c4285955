"""Text to Dia's byte-level ids: UTF-8 bytes, with `[S1]` -> 1 and `[S2]` -> 2.

Ids follow nari-labs/dia `_encode_text` and transformers' DiaTokenizer (vocab 256, offset 0, 0 = pad).
Two rules of our own make user text safe:
- control characters are removed before the tags are mapped (tabs become spaces, CR/CRLF become newlines,
  every other byte below 0x20 and DEL is dropped), so no user text can forge the pad or speaker ids;
- text that does not start with a speaker tag gets `[S1] ` in front, since Dia expects to begin with one;
- over-long text is an error naming its size, never silently truncated.
"""

from __future__ import annotations

import re

SPEAKER_IDS = {"[S1]": 1, "[S2]": 2}
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
_LEADING_TAG = re.compile(r"\[S[12]\]")


class TextError(ValueError):
    """The text cannot be spoken as given; `str()` says why in words a user understands."""


class TextTooLong(TextError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"the text is {size} bytes long (voice prompt transcript included) but Dia reads at most {limit}: "
            "shorten it or split it into several lines"
        )
        self.size = size
        self.limit = limit


def normalize(text: str) -> str:
    """`text` without control characters and surrounding whitespace, starting with a speaker tag."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    text = _CONTROL.sub("", text).strip()
    if not text:
        raise TextError("the text is empty")
    if _LEADING_TAG.match(text) is None:
        text = "[S1] " + text
    if not _LEADING_TAG.sub("", text).strip():
        raise TextError("the text has speaker tags but nothing to say")
    return text


def encode(text: str, *, prefix: str | None = None, max_bytes: int = 1024) -> list[int]:
    """Byte ids of `prefix` (a voice prompt's transcript) and `text`, joined by a space.

    Raises `TextError` for empty text and `TextTooLong` beyond `max_bytes`.
    """
    spoken = normalize(text)
    if prefix is not None:
        spoken = normalize(prefix) + " " + spoken
    data = spoken.encode("utf-8")
    for tag, value in SPEAKER_IDS.items():
        data = data.replace(tag.encode(), bytes([value]))
    if len(data) > max_bytes:
        raise TextTooLong(len(data), max_bytes)
    return list(data)
