"""Messages the bot sends (channel messages, interaction responses, follow-ups) and the files on them.

Each message is kept in its current state, so a test sees what a member would see now: an edit (PATCH, or an
UPDATE_MESSAGE callback) changes content, components and attachments in place. As in API v10, an edit that
lists `attachments` keeps only the listed ones plus the new uploads; one that does not list them keeps all.

Attachments are served over the emulator's own HTTP port at their payload `url`: discord.py's
`Attachment.read()` fetches exactly that url with the bot's session (`HTTPClient.get_from_cdn`), and plain
http on 127.0.0.1 leaves no TLS or host check to fail.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import BodyPartReader, web

from tests.fakediscord.limits import EMPTY
from tests.fakediscord.model import Upload, snowflake

EPHEMERAL = 1 << 6
LOADING = 1 << 7  # a deferred response's "is thinking…" placeholder
BUTTON = 2


@dataclass
class Attachment:
    """A stored file, served at `url`."""

    id: int
    filename: str
    data: bytes
    content_type: str
    url: str
    ephemeral: bool = False

    def payload(self) -> dict[str, Any]:
        return {"id": str(self.id), "filename": self.filename, "size": len(self.data), "url": self.url,
                "proxy_url": self.url, "content_type": self.content_type, "ephemeral": self.ephemeral}  # fmt: skip


@dataclass
class Message:
    """A message the bot sent, as it looks now."""

    id: int
    channel_id: int
    author: dict[str, Any]
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    flags: int = 0
    type: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # webhook_id, interaction_metadata
    edited: bool = False
    deleted: bool = False

    @property
    def files(self) -> dict[str, bytes]:
        """Attachment bytes by filename, in upload order."""
        return {a.filename: a.data for a in self.attachments}

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    def walk(self) -> Iterator[dict[str, Any]]:
        """Every component, inside action rows and (components v2) containers and section accessories."""
        return _walk(self.components)

    def buttons(self) -> list[dict[str, Any]]:
        return [c for c in self.walk() if c.get("type") == BUTTON]

    def component(self, custom_id: str) -> dict[str, Any] | None:
        return next((c for c in self.walk() if c.get("custom_id") == custom_id), None)

    def payload(self) -> dict[str, Any]:
        """The message as the REST API and gateway return it."""
        edited = "2026-01-01T00:00:01+00:00" if self.edited else None
        return {
            "id": str(self.id), "channel_id": str(self.channel_id), "author": self.author, "content": self.content,
            "timestamp": "2026-01-01T00:00:00+00:00", "edited_timestamp": edited, "tts": False,
            "mention_everyone": False, "mentions": [], "mention_roles": [], "pinned": False, "type": self.type,
            "attachments": [a.payload() for a in self.attachments], "embeds": self.embeds,
            "components": self.components, "flags": self.flags, **self.extra,
        }  # fmt: skip

    def snapshot(self) -> dict[str, Any]:
        """The payload as it is now, plus `files` (filename -> bytes); later edits do not change it."""
        return {**copy.deepcopy(self.payload()), "files": dict(self.files)}


def _walk(components: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for component in components:
        yield component
        yield from _walk(component.get("components") or [])
        if isinstance(component.get("accessory"), dict):
            yield component["accessory"]


@dataclass
class Posted:
    """A channel message the bot posted, as it was then; `message` is the same message as it is now."""

    channel_id: int
    content: str
    files: dict[str, bytes]
    at: float
    components: list[dict[str, Any]] = field(default_factory=list)
    message: Message | None = None


MessageRef = Message | Posted | Mapping[str, Any] | int


class Store:
    """Every message and file the emulator holds; `base` (http://127.0.0.1:PORT) is set once it listens."""

    def __init__(self, author: dict[str, Any]) -> None:
        self.author = author
        self.base = ""
        self.messages: dict[int, Message] = {}
        self.attachments: dict[int, Attachment] = {}
        self.posted: list[Posted] = []
        self.changed = asyncio.Event()
        # What Discord would have refused: bodies over its limits (tests/fakediscord/limits.py), and posts to a server
        # the bot was removed from. A bot test fails on any it did not expect.
        self.refused: list[str] = []

    def refuse(self, where: str, problems: list[str]) -> web.Response | None:
        """Discord's 400 for a body with these problems, noted in `refused`; None if there are none."""
        if not problems:
            return None
        self.refused.append(f"{where}: {'; '.join(problems)}")
        if problems == [EMPTY]:
            return error(400, 50006, EMPTY)
        return error(400, 50035, "Invalid Form Body: " + "; ".join(problems))

    def attach(self, channel_id: int, upload: Upload, *, ephemeral: bool = False) -> Attachment:
        attachment_id = snowflake()
        url = f"{self.base}/attachments/{channel_id}/{attachment_id}/{quote(upload.filename)}"
        attachment = Attachment(attachment_id, upload.filename, upload.data, upload.mime(), url, ephemeral)
        self.attachments[attachment_id] = attachment
        return attachment

    def create(
        self,
        channel_id: int,
        body: dict[str, Any],
        uploads: list[Upload],
        *,
        author: dict[str, Any] | None = None,
        **extra: Any,
    ) -> Message:
        """A new message, by the bot unless `author` (a user payload) says otherwise."""
        kind = 20 if "interaction_metadata" in extra else 0  # CHAT_INPUT_COMMAND for interaction messages
        flags = int(body.get("flags") or 0)
        message = Message(snowflake(), channel_id, author or self.author, flags=flags, type=kind)
        message.extra = extra
        self._apply(message, body, uploads)
        self.messages[message.id] = message
        self._touch()
        return message

    def post(self, channel_id: int, body: dict[str, Any], uploads: list[Upload]) -> Message:
        """A channel message (POST /channels/{id}/messages), also kept as a `Posted` record."""
        message = self.create(channel_id, body, uploads)
        snapshot = message.snapshot()
        self.posted.append(
            Posted(channel_id, message.content, message.files, time.monotonic(), snapshot["components"], message)
        )
        return message

    def edit(self, message: Message, body: dict[str, Any], uploads: list[Upload]) -> Message:
        if body.get("flags") is not None:
            # Visibility is fixed when a message is created; an edit can change only the other flags.
            message.flags = (message.flags & EPHEMERAL) | (int(body["flags"]) & ~EPHEMERAL)
        message.flags &= ~LOADING
        message.edited = True
        self._apply(message, body, uploads)
        self._touch()
        return message

    def delete(self, message: Message) -> None:
        message.deleted = True
        self._touch()

    def get(self, ref: MessageRef) -> Message:
        """The live message behind a `Message`, a `Posted` record, a reply dict (its "id") or an id."""
        if isinstance(ref, Message):
            return ref
        if isinstance(ref, Posted):
            assert ref.message is not None
            return ref.message
        message_id = int(ref["id"]) if isinstance(ref, Mapping) else ref
        return self.messages[message_id]

    async def serve(self, request: web.Request) -> web.Response:
        """GET /attachments/{channel}/{id}/{filename}: the bytes, as Discord's CDN would."""
        attachment = self.attachments.get(int(request.match_info["id"]))
        if attachment is None:
            return web.Response(status=404, text="asset not found")
        return web.Response(body=attachment.data, headers={"Content-Type": attachment.content_type})

    def _apply(self, message: Message, body: dict[str, Any], uploads: list[Upload]) -> None:
        if "content" in body:
            message.content = body["content"] or ""
        if "embeds" in body:
            message.embeds = body["embeds"] or []
        if "components" in body:
            message.components = body["components"] or []
        listed = body.get("attachments")
        kept = message.attachments
        if listed is not None:
            # Existing attachments are listed by their snowflake; new uploads by their multipart index.
            ids = {str(a.get("id")) for a in listed}
            kept = [a for a in message.attachments if str(a.id) in ids]
        message.attachments = kept + [self.attach(message.channel_id, u) for u in uploads]

    def _touch(self) -> None:
        self.changed.set()


async def read_body(request: web.Request) -> tuple[dict[str, Any], list[Upload]]:
    """A JSON body, or a multipart one (payload_json plus files) as discord.py sends attachments."""
    if not request.content_type.startswith("multipart/"):
        text = await request.text()
        return (json.loads(text) if text else {}), []
    reader = await request.multipart()
    body: dict[str, Any] = {}
    uploads: list[Upload] = []
    async for part in reader:
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "payload_json":
            body = json.loads(await part.text())
            continue
        # discord.py labels every file application/octet-stream; Discord itself sniffs the real type.
        declared = part.headers.get("Content-Type", "")
        content_type = None if declared in ("", "application/octet-stream") else declared
        uploads.append(Upload(part.filename or part.name or "file", bytes(await part.read()), content_type))
    return body, uploads


def json_response(data: Any, status: int = 200) -> web.Response:
    # discord.py parses a body as JSON only when the content type is exactly application/json.
    return web.Response(body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"})


def error(status: int, code: int, message: str) -> web.Response:
    """An API error as Discord shapes it; discord.py raises HTTPException/NotFound/Forbidden with it."""
    return json_response({"message": message, "code": code}, status=status)
