"""Making voices for characters through the workers: from an uploaded clip, or designed from candidates.

The bot holds no model: a clip goes to a worker as a job with `clip` (it cuts it to 5-10 s at a sentence end
and encodes it), and a design renders candidate lines with `keep_voice`, whose codes the worker keeps. Either
way the worker stores a *pending* voice that expires unless a character adopts it (tts_engine/characters.py),
so a user who walks away leaves nothing behind. The design view follows discord.py's examples/views/confirm.py.
"""

from __future__ import annotations

import asyncio
import io
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import discord
from redis.asyncio import Redis

from bot.errors import UserFacingError, reply_privately, submit
from tts_engine import job_events, jobs
from tts_engine.characters import Cast, CastError, Character
from tts_engine.jobs import CLIP_MAX_BYTES, RenderJob, RenderParams, Segment, VoiceRecord
from tts_engine.scene import FRAMES_PER_SECOND

log = logging.getLogger(__name__)

DESIGN_LINE = "Well met, traveler. The road is long and the night is cold, but there is room by my fire."
CANDIDATES = 3
MAX_TRANSCRIPT = 500


@dataclass(frozen=True)
class Requester:
    redis: Redis
    limits: jobs.QueueLimits
    guild_id: int
    user_id: int
    channel_id: int | None


def seconds(frames: int) -> float:
    return frames / FRAMES_PER_SECOND


async def _run(req: Requester, job: RenderJob) -> jobs.EndEvent:
    await submit(req.redis, job, req.limits, timeout=5.0)
    result = await job_events.outcome(req.redis, job.job_id, stall_timeout=180)
    if isinstance(result, jobs.ErrorEvent):
        raise UserFacingError(result.message)
    return result


async def voice_from_clip(req: Requester, clip: discord.Attachment, transcript: str) -> tuple[str, VoiceRecord]:
    """A pending voice made from `clip`: (voice id, what the worker kept of it)."""
    words = " ".join(transcript.split())
    if not words:
        raise UserFacingError("write what the clip says in `transcript`: Dia needs the words to copy a voice")
    if len(words) > MAX_TRANSCRIPT:
        raise UserFacingError(f"the transcript is {len(words)} characters; at most {MAX_TRANSCRIPT} (30 s of speech)")
    if clip.size > CLIP_MAX_BYTES:
        raise UserFacingError(f"the clip is {clip.size / 2**20:.1f} MiB; the limit is {CLIP_MAX_BYTES // 2**20} MiB")
    try:
        data = await clip.read()
    except discord.HTTPException as exc:
        raise UserFacingError(f"I could not download the clip ({exc.status}); upload it again") from None
    voice_id = uuid.uuid4().hex
    job = RenderJob(guild_id=req.guild_id, requester=req.user_id, segments=(Segment(text=words),),
                    channel_id=req.channel_id, clip=data, keep_voice=voice_id)  # fmt: skip
    try:
        await _run(req, job)
    except UserFacingError as exc:
        raise UserFacingError(f"that clip cannot be a voice: {exc}") from None
    record = await Cast(req.redis, req.guild_id).pending_voice(voice_id)
    if record is None:
        raise UserFacingError("the voice expired before it was kept; try again")
    return voice_id, record


async def design_candidates(req: Requester, line: str, *, max_seconds: float = 12.0) -> list[tuple[str, bytes]]:
    """(voice id, Ogg Opus of the line) for each of three new random voices saying `line`, each at most
    `max_seconds` long (a prompt over 10 s leaves little room for the lines it will prompt)."""
    text = "[S1] " + " ".join(line.split())
    made: list[tuple[str, RenderJob]] = []
    for _ in range(CANDIDATES):
        voice_id = uuid.uuid4().hex
        params = RenderParams(max_tokens=round(max_seconds * FRAMES_PER_SECOND), seed=secrets.randbelow(jobs.MAX_SEED))
        job = RenderJob(guild_id=req.guild_id, requester=req.user_id, segments=(Segment(text=text),), params=params,
                        channel_id=req.channel_id, export=True, keep_voice=voice_id)  # fmt: skip
        made.append((voice_id, job))
    ends = await asyncio.gather(*(_run(req, job) for _, job in made))
    candidates = []
    for (voice_id, _), end in zip(made, ends, strict=True):
        if end.ogg is None:
            raise UserFacingError("the worker sent no audio for a candidate voice; try again")
        candidates.append((voice_id, end.ogg))
    return candidates


Keep = Callable[[str], Awaitable[Character]]


class DesignView(discord.ui.View):
    """ "Keep 1/2/3" adopts that candidate's voice; "Try three more" renders a new set. Only for the designer."""

    def __init__(self, designer: int, voice_ids: list[str], keep: Keep, retry: Callable[[], Awaitable[None]]) -> None:
        super().__init__(timeout=15 * 60)  # pending voices live an hour; a quarter of it to choose is plenty
        self.designer, self.voice_ids, self.keep, self.retry = designer, voice_ids, keep, retry
        for index in range(len(voice_ids)):
            self.add_item(_KeepButton(index))
        self.add_item(_MoreButton())

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id == self.designer:
            return True
        await reply_privately(interaction, "⚠️ Only the person designing this voice can choose it.")
        return False


class _KeepButton(discord.ui.Button[DesignView]):
    def __init__(self, index: int) -> None:
        super().__init__(label=f"Keep {index + 1}", style=discord.ButtonStyle.success, custom_id=f"keep-{index}")
        self.index = index

    async def callback(self, interaction: discord.Interaction) -> None:
        view = self.view
        assert view is not None
        try:
            character = await view.keep(view.voice_ids[self.index])
        except CastError as exc:
            await reply_privately(interaction, f"⚠️ {str(exc)[:1].upper()}{str(exc)[1:]}.")
            return
        view.stop()
        done = f"🎭 Kept voice {self.index + 1} for **{discord.utils.escape_markdown(character.name)}**."
        await interaction.response.edit_message(content=done, view=None)


class _MoreButton(discord.ui.Button[DesignView]):
    def __init__(self) -> None:
        super().__init__(label="Try three more", style=discord.ButtonStyle.secondary, custom_id="more")

    async def callback(self, interaction: discord.Interaction) -> None:
        view = self.view
        assert view is not None
        view.stop()
        await interaction.response.edit_message(view=None)
        try:
            await view.retry()
        except UserFacingError as exc:
            await interaction.followup.send(f"⚠️ {str(exc)[:1].upper()}{str(exc)[1:]}.", ephemeral=True)


def candidate_files(candidates: list[tuple[str, bytes]]) -> list[discord.File]:
    return [discord.File(io.BytesIO(ogg), filename=f"voice-{i + 1}.ogg") for i, (_, ogg) in enumerate(candidates)]
