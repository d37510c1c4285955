"""What Discord refuses in a message the bot sends, and in its autocomplete answers: the limits a bot meets only
in production otherwise, since Discord answers 400 (50035 Invalid Form Body, or 50006 for an empty message)
and the user sees nothing.

From discord-api-docs: resources/message.mdx (content 2000 characters; at most 10 embeds and 10 files; an empty
message is refused), resources/message.mdx#embed-object-embed-limits (title 256, description 4096, 25 fields of
256/1024, footer 2048, author 256, 6000 in all), components/reference.mdx (5 action rows of 5 buttons or one
select; custom ids of 1-100 characters, unique in the message; button labels 80; select options 1-25 of 100 and
placeholders 150), interactions/receiving-and-responding.mdx (at most 25 autocomplete choices, names of 1-100
characters, string values of at most 100) and reference.mdx (10 MiB uploads without boosts).
"""

from __future__ import annotations

from typing import Any

from tests.fakediscord.model import Upload

CONTENT = 2000
EMBEDS, EMBED_TOTAL = 10, 6000
EMBED_FIELDS = {"title": 256, "description": 4096}
FIELDS, FIELD_NAME, FIELD_VALUE = 25, 256, 1024
FOOTER, AUTHOR = 2048, 256
ROWS, ROW_BUTTONS = 5, 5
CUSTOM_ID, BUTTON_LABEL = 100, 80
SELECT_OPTIONS, OPTION_TEXT, PLACEHOLDER = 25, 100, 150
FILES, FILE_BYTES = 10, 10 * 2**20
CHOICES, CHOICE_NAME, CHOICE_VALUE = 25, 100, 100

EMPTY = "Cannot send an empty message"  # code 50006, not 50035

ACTION_ROW, BUTTON, LINK = 1, 2, 5
SELECTS = {3, 5, 6, 7, 8}


def message_problems(body: dict[str, Any], uploads: list[Upload], *, new: bool) -> list[str]:
    """Why Discord would refuse this message body (POST `new`, else an edit); empty if it would take it."""
    problems = []
    content = body.get("content") or ""
    if len(content) > CONTENT:
        problems.append(f"content: {len(content)} characters, more than {CONTENT}")
    problems += _embed_problems(body.get("embeds") or [])
    problems += _component_problems(body.get("components") or [])
    if len(uploads) > FILES:
        problems.append(f"files: {len(uploads)}, more than {FILES}")
    problems += [
        f"files: {u.filename} is {len(u.data)} bytes, more than {FILE_BYTES}"
        for u in uploads
        if len(u.data) > FILE_BYTES
    ]
    empty = not (content or body.get("embeds") or body.get("components") or uploads or body.get("sticker_ids"))
    if new and empty:
        problems.append(EMPTY)
    return problems


def choices_problems(data: dict[str, Any]) -> list[str]:
    """Why Discord would refuse an autocomplete answer (callback type 8)."""
    choices = data.get("choices") or []
    problems = [f"choices: {len(choices)}, more than {CHOICES}"] if len(choices) > CHOICES else []
    for i, choice in enumerate(choices):
        name, value = str(choice.get("name", "")), choice.get("value")
        if not 1 <= len(name) <= CHOICE_NAME:
            problems.append(f"choices.{i}.name: {len(name)} characters, not 1-{CHOICE_NAME}")
        if isinstance(value, str) and len(value) > CHOICE_VALUE:
            problems.append(f"choices.{i}.value: {len(value)} characters, more than {CHOICE_VALUE}")
    return problems


def _embed_problems(embeds: list[dict[str, Any]]) -> list[str]:
    problems = [f"embeds: {len(embeds)}, more than {EMBEDS}"] if len(embeds) > EMBEDS else []
    total = 0
    for i, embed in enumerate(embeds):
        texts = [(key, str(embed.get(key) or ""), most) for key, most in EMBED_FIELDS.items()]
        texts.append(("footer.text", str((embed.get("footer") or {}).get("text") or ""), FOOTER))
        texts.append(("author.name", str((embed.get("author") or {}).get("name") or ""), AUTHOR))
        fields = embed.get("fields") or []
        if len(fields) > FIELDS:
            problems.append(f"embeds.{i}.fields: {len(fields)}, more than {FIELDS}")
        for j, field in enumerate(fields):
            texts.append((f"fields.{j}.name", str(field.get("name") or ""), FIELD_NAME))
            texts.append((f"fields.{j}.value", str(field.get("value") or ""), FIELD_VALUE))
        for key, text, most in texts:
            total += len(text)
            if len(text) > most:
                problems.append(f"embeds.{i}.{key}: {len(text)} characters, more than {most}")
    if total > EMBED_TOTAL:
        problems.append(f"embeds: {total} characters in all, more than {EMBED_TOTAL}")
    return problems


def _component_problems(rows: list[dict[str, Any]]) -> list[str]:
    problems = [f"components: {len(rows)} rows, more than {ROWS}"] if len(rows) > ROWS else []
    for i, row in enumerate(rows):
        inside = row.get("components") or []
        if row.get("type") != ACTION_ROW:
            problems.append(f"components.{i}: a top-level component must be an action row")
        elif not inside:
            problems.append(f"components.{i}: an empty action row")
        elif any(c.get("type") in SELECTS for c in inside) and len(inside) > 1:
            problems.append(f"components.{i}: a select must be alone in its row")
        elif len(inside) > ROW_BUTTONS:
            problems.append(f"components.{i}: {len(inside)} buttons, more than {ROW_BUTTONS}")
        problems += [f"components.{i}.{p}" for c in inside for p in _item_problems(c)]
    ids = [c["custom_id"] for row in rows for c in row.get("components") or [] if "custom_id" in c]
    problems += [f"components: custom_id {d!r} is used twice" for d in sorted({d for d in ids if ids.count(d) > 1})]
    return problems


def _item_problems(item: dict[str, Any]) -> list[str]:
    problems = []
    kind, custom_id = item.get("type"), item.get("custom_id")
    if kind == BUTTON and item.get("style") == LINK:
        if custom_id is not None or not item.get("url"):
            problems.append("a link button has a url and no custom_id")
    elif not isinstance(custom_id, str) or not 1 <= len(custom_id) <= CUSTOM_ID:
        problems.append(f"custom_id {custom_id!r}: not 1-{CUSTOM_ID} characters")
    if kind == BUTTON and len(item.get("label") or "") > BUTTON_LABEL:
        problems.append(f"label: {len(item['label'])} characters, more than {BUTTON_LABEL}")
    if kind == BUTTON and not (item.get("label") or item.get("emoji")):
        problems.append("a button needs a label or an emoji")
    if kind in SELECTS:
        if len(item.get("placeholder") or "") > PLACEHOLDER:
            problems.append(f"placeholder: more than {PLACEHOLDER} characters")
        options = item.get("options") or []
        if kind == 3 and not 1 <= len(options) <= SELECT_OPTIONS:
            problems.append(f"options: {len(options)}, not 1-{SELECT_OPTIONS}")
        for j, option in enumerate(options):
            for key in ("label", "value", "description"):
                if len(option.get(key) or "") > OPTION_TEXT:
                    problems.append(f"options.{j}.{key}: more than {OPTION_TEXT} characters")
    return problems
