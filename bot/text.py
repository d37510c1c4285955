"""What a user typed into /say, made speakable or refused with a message that says what to change.

Pure functions (no discord import), in the spirit of Discord-TTS's `process_msg::clean`: mentions become the
names they point to, custom emoji their names, links "a link", timestamps (`<t:1700000000:R>`) the date or
"in 3 hours" they show, command mentions (`</say:id>`) "slash say"; mass mentions, invisible control characters,
zalgo text and over-long text are refused. The script itself (speakers, cues, pauses) is checked by
tts_engine.script, whose positions are turned into snippets a user can find.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from tts_engine.script import Item, ScriptInvalid, ScriptLimits, parse

_MENTION = re.compile(r"<(@!?|@&|#)(\d{15,21})>")
_EMOJI = re.compile(r"<a?:(\w{2,32}):\d{15,21}>")
# Discord's message formatting (discord.com/developers/docs/reference#message-formatting): a timestamp shows in
# each reader's own time zone, which a voice cannot, so times are said in UTC; a relative one needs no zone.
_TIMESTAMP = re.compile(r"<t:(-?\d{1,13})(?::([tTdDfFR]))?>")
_COMMAND = re.compile(r"</([\w-]{1,32}(?: [\w-]{1,32}){0,2}):\d{15,21}>")
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


def invisible(text: str) -> str | None:
    """The first invisible control or format character in `text` (a new line or tab is not one), if any: such
    characters could hide words or forge what Dia reads."""
    return next(
        (c for c in text if unicodedata.category(c) == "Cf" or (unicodedata.category(c) == "Cc" and c not in "\n\t")),
        None,
    )


def speakable(
    text: str, names: Callable[[str, int], str | None], rules: TextRules | None = None, now: float | None = None
) -> str:
    """`text` with mentions, emoji, timestamps and links turned into words; `TextRejected` for what cannot be
    spoken.

    `names(kind, id)` gives the display name of a member ("@"), role ("@&") or channel ("#"), or None; `now`
    (a Unix time, by default the clock's) is what relative timestamps count from.
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
    if (char := invisible(text)) is not None:
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
    now = time.time() if now is None else now
    text = _TIMESTAMP.sub(lambda m: _when(int(m.group(1)), m.group(2) or "f", now), text)
    text = _COMMAND.sub(lambda m: "slash " + m.group(1), text)
    text = _EMOJI.sub(lambda m: m.group(1).replace("_", " "), _unformat(text))
    return _URL.sub("a link", text).replace("\t", " ").strip()


def counted(count: int, noun: str) -> str:
    """ "1 line", "2 lines": `noun` takes an s unless there is exactly one."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def attachment_kind(filename: str, content_type: str | None, *, voice_message: bool = False) -> str:
    """What an attachment is, as a listener would want to hear it named. A spoiler file (SPOILER_ in its name)
    is only "a spoiler", as hidden text is (`speakable`): its kind would give it away."""
    if filename.startswith("SPOILER_"):
        return "spoiler"
    if voice_message:
        return "voice message"
    family = (content_type or "").partition("/")[0]
    return {"image": "image", "video": "video", "audio": "audio file"}.get(family, "file")


def attached(kinds: Sequence[str]) -> str | None:
    """What a message carries besides its text, said in a few words: "an image", "2 images and a sticker";
    `kinds` are `attachment_kind`s (and "sticker"), one per thing. None for nothing."""
    parts = [
        f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}" if count == 1 else counted(count, kind)
        for kind, count in Counter(kinds).items()  # in the order they first came
    ]
    return None if not parts else parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def sayable_name(name: str, limit: int = 32) -> str | None:
    """A display name as it can be said before someone's message: letters, digits and the marks inside names
    (' - .) only, so neither a script tag, a cue nor zalgo can come in through a name; None if nothing is left
    (a name of emoji, say)."""
    kept = [ch if unicodedata.category(ch)[0] in "LN" or ch in "'-." else " " for ch in name]
    words = "".join(kept).split()
    said = " ".join(words)[:limit].strip(" '-.")
    return said or None


def _when(seconds: int, style: str, now: float) -> str:
    """A timestamp as a listener would want to hear it: "in 3 hours", or a date and time in UTC."""
    if style == "R":
        return _relative(seconds - now)
    try:
        moment = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):  # beyond what a date can be
        return "a date"
    day = f"{moment:%B} {moment.day}, {moment.year}"
    clock = f"{moment:%H:%M} UTC"
    return {"t": clock, "T": clock, "d": day, "D": day, "F": f"{moment:%A}, {day} at {clock}"}.get(
        style, f"{day} at {clock}"
    )


def _relative(delta: float) -> str:
    """Like Discord's relative timestamps: "in 5 minutes", "2 days ago"."""
    size = abs(delta)
    if size < 45:
        return "now" if size < 1 else "in a few seconds" if delta > 0 else "a few seconds ago"
    units = (("year", 365.25 * 86400), ("month", 30.44 * 86400), ("day", 86400.0), ("hour", 3600.0))
    unit, length = next(((u, n) for u, n in units if size >= n * 0.9), ("minute", 60.0))
    count = max(1, round(size / length))
    amount = f"{'an' if unit == 'hour' else 'a'} {unit}" if count == 1 else f"{count} {unit}s"
    return f"in {amount}" if delta > 0 else f"{amount} ago"


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
