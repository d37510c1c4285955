"""What a user typed into /say, made speakable or refused with a message that says what to change.

Pure functions (no discord import), in the spirit of Discord-TTS's `process_msg::clean`: mentions become the
names they point to, custom emoji their names, links "a link"; mass mentions, invisible control characters,
zalgo text and over-long text are refused. The script itself (speakers, cues, pauses) is checked by
tts_engine.script, whose positions are turned into snippets a user can find.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tts_engine.script import Item, ScriptInvalid, ScriptLimits, parse

_MENTION = re.compile(r"<(@!?|@&|#)(\d{15,21})>")
_EMOJI = re.compile(r"<a?:(\w{2,32}):\d{15,21}>")
_URL = re.compile(r"<?https?://[^\s>]+>?")  # with or without Discord's <...> that suppresses the embed
# Discord markdown (support.discord.com, "Markdown Text 101"): what it formats is read, the marks are not.
_CODE_BLOCK = re.compile(r"```.*?```", re.DOTALL)
_SPOILER = re.compile(r"\|\|.+?\|\|", re.DOTALL)
_MASKED_LINK = re.compile(r"\[([^\[\]\n]+)\]\(<?https?://[^\s)>]+>?\)")
_LINE_MARK = re.compile(r"^[ \t]*(?:>>> |> |#{1,3} |-# )", re.MULTILINE)
# Emphasis needs a mark on each side that hugs its words; `_` also needs no letter outside it, as in Discord,
# so a character name like [Old_Tom] keeps its underscore.
_EMPHASIS = (
    re.compile(r"(\*\*|~~|`)(?=\S)(.+?)(?<=\S)\1"),
    re.compile(r"(?<![*\w])(\*)(?=[^\s*])(.+?)(?<=[^\s*])\*(?![*\w])"),
    re.compile(r"(?<!\w)(__?)(?=[^\s_])(.+?)(?<=[^\s_])\1(?!\w)"),
)


class TextRejected(ValueError):
    """The text cannot be spoken; `str()` tells the user what to change."""


@dataclass(frozen=True)
class TextRules:
    max_chars: int = 2000
    max_mentions: int = 5


def mentioned(text: str) -> list[tuple[str, int]]:
    """The (kind, id) of each mention in `text`: "@" member, "@&" role, "#" channel, to be resolved to names."""
    found = []
    for sigil, snowflake in _MENTION.findall(text):
        kind = "@&" if sigil == "@&" else "#" if sigil == "#" else "@"
        found.append((kind, int(snowflake)))
    return found


def speakable(text: str, names: Callable[[str, int], str | None], rules: TextRules | None = None) -> str:
    """`text` with mentions, emoji and links turned into words; `TextRejected` for what cannot be spoken.

    `names(kind, id)` gives the display name of a member ("@"), role ("@&") or channel ("#"), or None.
    """
    rules = rules or TextRules()
    text = text.strip()
    if not text:
        raise TextRejected("there is nothing to say: write the words to speak, e.g. `/say [S1] Hello there!`")
    if len(text) > rules.max_chars:
        raise TextRejected(
            f"that is {len(text)} characters; /say speaks at most {rules.max_chars} at a time: split it up"
        )
    if "@everyone" in text or "@here" in text:
        raise TextRejected("mass mentions (@everyone, @here) cannot be spoken: remove them")
    mentions = _MENTION.findall(text)
    if len(mentions) > rules.max_mentions:
        raise TextRejected(f"that is {len(mentions)} mentions; at most {rules.max_mentions} can be read out")
    for char in text:
        category = unicodedata.category(char)
        if (category == "Cc" and char not in "\n\t") or category == "Cf":
            code = f"U+{ord(char):04X}"
            raise TextRejected(f"the text holds invisible control characters (like {code}): remove them and try again")
    if _is_zalgo(text):
        raise TextRejected("that looks like zalgo text (letters buried in stacked marks): Dia cannot read it")

    def mention(match: re.Match[str]) -> str:
        sigil = match.group(1)
        kind = "@&" if sigil == "@&" else "#" if sigil == "#" else "@"
        name = names(kind, int(match.group(2)))
        return name if name is not None else {"@": "someone", "@&": "a role", "#": "a channel"}[kind]

    text = _MENTION.sub(mention, text)
    text = _EMOJI.sub(lambda m: m.group(1).replace("_", " "), _unformat(text))
    return _URL.sub("a link", text).replace("\t", " ").strip()


def _unformat(text: str) -> str:
    """Discord markdown read as a listener would want it: bold, italics, underline, strikethrough and inline code
    are their words; a masked link its label; quote, heading and subtext marks go. A code block is "a code
    block" and a spoiler "a spoiler": hidden text stays hidden, whoever asks to hear the message."""
    text = _CODE_BLOCK.sub(" a code block ", text)
    text = _SPOILER.sub("a spoiler", text)
    text = _MASKED_LINK.sub(lambda m: m.group(1), text)
    text = _LINE_MARK.sub("", text)
    previous = None
    while previous != text:  # nested marks, like ***both*** or __*both*__, come off a layer at a time
        previous = text
        for pattern in _EMPHASIS:
            text = pattern.sub(lambda m: m.group(2), text)
    return text


def _is_zalgo(text: str) -> bool:
    run = marks = letters = 0
    for char in text:
        if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me"):
            marks += 1
            run += 1
            if run > 3:  # more than three marks stacked on one letter
                return True
        else:
            run = 0
            letters += char.isalpha()
    return marks > 10 and marks > letters // 2


def script_items(
    text: str,
    characters: Mapping[str, frozenset[str]] | None = None,
    limits: ScriptLimits | None = None,
    default: tuple[str, str | None] = ("S1", None),
) -> list[Item]:
    """The parsed script, or `TextRejected` listing each mistake with a snippet of where it is; `default` speaks
    text before the first tag."""
    try:
        return parse(text, characters=characters, limits=limits, default=default)
    except ScriptInvalid as exc:
        lines = []
        for error in exc.errors[:5]:
            snippet = text[error.position : error.position + 16].split("\n")[0]
            lines.append(f"• near “{snippet}”: {error.message}")
        more = len(exc.errors) - 5
        if more > 0:
            lines.append(f"• and {more} more")
        raise TextRejected("the script has mistakes:\n" + "\n".join(lines)) from exc
