"""Workers that make voices (tiny checkpoints, real redis-server): from a user's clip, or kept from a render.

What they store is pending: it expires unless a character adopts it, so a failed or abandoned voice leaves
nothing behind. Bad clips become a clear error event and store nothing.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from redis.asyncio import Redis

from tests.audio.test_clip import make_clip
from tests.queue.workers import WorkerProcess, collect, database, fresh_worker
from tts_engine import jobs
from tts_engine.jobs import EndEvent, ErrorEvent, RenderJob, RenderParams, Segment
from tts_engine.renderer import voice_prompt

GUILD = 31
_users = itertools.count(5000)


@pytest.fixture(scope="module")
def voice_url(redis_server: str) -> str:
    return database(redis_server, 4)


@pytest.fixture(scope="module")
def voice_worker(
    voice_url: str, tiny_dia: Path, tiny_dac: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    worker = fresh_worker(voice_url, tiny_dia, tiny_dac, tmp_path_factory.mktemp("v") / "worker.log")
    yield worker
    worker.close()


@pytest.fixture
async def shared(voice_url: str, voice_worker: WorkerProcess) -> Iterator[Redis]:  # type: ignore[misc]
    client = Redis.from_url(voice_url)
    yield client
    await client.aclose()


def clip_job(data: bytes, transcript: str) -> RenderJob:
    return RenderJob(guild_id=GUILD, requester=next(_users), segments=(Segment(text=transcript),), clip=data,
                     keep_voice=uuid.uuid4().hex)  # fmt: skip


async def test_a_clip_becomes_a_pending_voice(shared: Redis, tmp_path: Path) -> None:
    data = make_clip(tmp_path, "bram.ogg", 7.0, "-c:a", "libopus").read_bytes()
    job = clip_job(data, "[S1] Welcome to my inn, traveler.")
    await jobs.submit(shared, job)
    events = await collect(shared, job.job_id)
    assert isinstance(events[-1], EndEvent) and not any(isinstance(e, jobs.AudioEvent) for e in events)
    assert job.keep_voice is not None
    key = jobs.voice_key(GUILD, job.keep_voice)
    voice = jobs.decode_voice(await shared.get(key))
    assert voice.transcript == "Welcome to my inn, traveler.", "stored without tags; it gets one when used"
    assert voice.channels == 9 and abs(voice.frames - 7.0 * 44100 / 512) <= 3
    assert 0 < await shared.ttl(key) <= jobs.PENDING_VOICE_TTL


@pytest.mark.parametrize(
    ("name", "seconds", "transcript", "message"),
    [
        ("long.wav", 22.0, "One long breath with no sentence end and no pause at all", "cannot tell where to cut it"),
        ("long.wav", 22.0, "Well met, traveler. The road is long. Sit by my fire.", "could not find a pause"),
        ("short.wav", 1.0, "Hi.", "needs at least 3 s of speech"),
        ("noise.bin", 0.0, "Hi.", "not audio"),
    ],
)
async def test_a_bad_clip_is_a_clear_error_and_stores_nothing(
    shared: Redis, tmp_path: Path, name: str, seconds: float, transcript: str, message: str
) -> None:
    data = make_clip(tmp_path, name, seconds).read_bytes() if seconds else b"\x00\x01not audio at all" * 100
    job = clip_job(data, transcript)
    await jobs.submit(shared, job)
    events = await collect(shared, job.job_id)
    assert isinstance(events[-1], ErrorEvent) and events[-1].code == "bad_input"
    assert message in events[-1].message.lower()
    assert job.keep_voice is not None and not await shared.exists(jobs.voice_key(GUILD, job.keep_voice))


async def test_a_designed_line_keeps_its_own_codes(shared: Redis) -> None:
    voice_id = uuid.uuid4().hex
    params = RenderParams(max_tokens=120, temperature=0.0, seed=11)
    job = RenderJob(guild_id=GUILD, requester=next(_users), segments=(Segment(text="[S1] Well met."),),
                    params=params, export=True, keep_voice=voice_id)  # fmt: skip
    await jobs.submit(shared, job)
    events = await collect(shared, job.job_id)
    end = events[-1]
    assert isinstance(end, EndEvent) and end.ogg is not None and not end.cached
    voice = jobs.decode_voice(await shared.get(jobs.voice_key(GUILD, voice_id)))
    assert voice.transcript == "Well met."
    assert voice.frames == round(end.seconds * 44100 / 512), "exactly the frames that were heard"
    codes = np.frombuffer(voice.codes, dtype="<i2")
    assert codes.min() >= 0 and codes.max() < 1024

    # Designed again with the same seed: made (and stored) again, never served from the cache.
    again = RenderJob(guild_id=GUILD, requester=next(_users), segments=job.segments, params=params,
                      keep_voice=uuid.uuid4().hex)  # fmt: skip
    await jobs.submit(shared, again)
    assert isinstance((await collect(shared, again.job_id))[-1], EndEvent)
    assert again.keep_voice is not None
    first, second = jobs.voice_key(GUILD, voice_id), jobs.voice_key(GUILD, again.keep_voice)
    assert await shared.get(second) == await shared.get(first)


async def test_two_voices_prompt_one_segment(shared: Redis) -> None:
    ids = []
    for n, words in enumerate(["I am Bram.", "And I am Mira."]):
        codes = np.random.default_rng(n).integers(0, 1024, size=(30, 9)).astype("<i2")
        record = jobs.VoiceRecord(transcript=words, codes=codes.tobytes(), frames=30, channels=9)
        ids.append(f"v{n}")
        await shared.set(jobs.voice_key(GUILD, f"v{n}"), jobs.encode_voice(record))
    segment = Segment(text="[S1] Hello. [S2] Hi.", voices=tuple(ids))
    job = RenderJob(guild_id=GUILD, requester=next(_users), segments=(segment,), params=RenderParams(max_tokens=50))
    await jobs.submit(shared, job)
    assert isinstance((await collect(shared, job.job_id))[-1], EndEvent)


def test_voice_prompts_are_tagged_in_order() -> None:
    codes = np.zeros((2, 9), dtype="<i2").tobytes()
    records = [jobs.VoiceRecord(transcript=t, codes=codes, frames=2, channels=9) for t in ("[S1] I am Bram.", "Mira.")]
    prompt = voice_prompt(records)
    assert prompt.transcript == "[S1] I am Bram. [S2] Mira."
    assert prompt.codes.shape == (4, 9)
