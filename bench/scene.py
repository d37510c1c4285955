"""A five-character scene through the whole system: time to the first packet, and gaps between segments.

    python bench/scene.py                                   # tiny random checkpoints on the CPU
    python bench/scene.py --model nari-labs/Dia-1.6B-0626 --codec descript/dac_44khz --device cuda --voice-seconds 6

Everything is real: the Discord emulator (tests/fakediscord) in this process, a real redis-server,
`python -m bot`, and `python -m tts_engine worker` on the given checkpoints. Five characters are stored with
voices of `--voice-seconds` (random codes: the timing does not depend on what the voice sounds like), then
alice runs `/say` with the tavern scene of the README (five characters, moods, two written pauses).

- first packet: from the interaction's dispatch to the first packet with sound at the emulator's UDP port;
- gaps: Opus silence frames the bot sent between the first and the last sound because its buffer ran dry
  (the bot sends those only on underrun; written pauses arrive as rendered silence, not as these frames).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from redis.asyncio import Redis

from bench.common import commit, redis_server
from tests.bot.conftest import BotProcess, make_world
from tests.fakediscord import FakeDiscord
from tests.queue.workers import WorkerProcess
from tts_engine import job_events, jobs
from tts_engine.characters import Cast
from tts_engine.scene import FRAMES_PER_SECOND

OPUS_SILENCE = b"\xf8\xff\xfe"
CAST = ("Bram", "Old Tom", "Mira", "Guard Captain", "Stranger")
SCENE = (
    "[Bram] Welcome, welcome! Sit anywhere you like. (pause 1s) "
    "[Old Tom] Not there. That's my chair, and has been for forty years. "
    "[Mira] (sighs) Then I'll stand. "
    "[Bram:angry] Tom, you'll not chase off my customers again! "
    "[Guard Captain] Quiet, all of you. (pause 1.5s) [Guard Captain] Who owns the black horse outside? "
    "[Stranger] (clears throat) That would be me."
)


async def _cast(client: Redis, guild_id: int, voice_seconds: float) -> None:
    cast, rng = Cast(client, guild_id), np.random.default_rng(0)
    frames = round(voice_seconds * FRAMES_PER_SECOND)

    async def voice(words: str) -> str:
        codes = rng.integers(0, 1024, size=(frames, 9)).astype("<i2")
        voice_id = uuid.uuid4().hex
        record = jobs.VoiceRecord(transcript=words, codes=codes.tobytes(), frames=frames, channels=9)
        await client.set(jobs.voice_key(guild_id, voice_id), jobs.encode_voice(record))
        return voice_id

    for name in CAST:
        await cast.create(name, await voice(f"I am {name}, and this is how I sound."))
    await cast.add_mood("Bram", "angry", await voice("Out of my inn, the lot of you!"))


async def _run(args: argparse.Namespace, url: str, folder: Path, model: str, codec: str) -> dict[str, float]:
    client = Redis.from_url(url)
    worker = WorkerProcess(url, Path(model), Path(codec), folder / "worker.log", DIA_DEVICE=args.device)
    worker.wait_ready(timeout=900)
    try:
        async with FakeDiscord() as discord:
            world = make_world(discord)
            await _cast(client, world.guild.id, args.voice_seconds)
            bot = BotProcess(discord, url, folder / "bot.log")
            try:
                await bot.ready()
                sent = time.monotonic()
                interaction = await discord.slash(world.guild, world.alice, world.text, "say", text=SCENE)
                reply = await interaction.reply(timeout=60)
                assert "Speaking now" in str(reply["content"]), reply
                session = await world.session()
                await session.wait_for(lambda s: bool(s.audio()), timeout=600)
                keys = [k.decode() if isinstance(k, bytes) else k for k in await client.keys("dia:out:*")]
                (job_id,) = [key.rsplit(":", 1)[1] for key in keys]
                end = await job_events.outcome(client, job_id, stall_timeout=600)
                assert isinstance(end, jobs.EndEvent), end
                await session.wait_for(lambda s: bool(s.speaking) and s.speaking[-1][1] == 0, timeout=600)
            finally:
                await bot.stop()
    finally:
        worker.close()
        await client.aclose()
    sound = [i for i, p in enumerate(session.packets) if p.opus != OPUS_SILENCE]
    underruns = sum(p.opus == OPUS_SILENCE for p in session.packets[sound[0] : sound[-1]])
    return {
        "first_packet_ms": round(1000 * (session.packets[sound[0]].arrived - sent), 1),
        "interaction_reply_ms": round(1000 * (interaction.responses[0][0] - interaction.sent), 1),
        "audio_s": round(end.seconds, 2),
        "render_s": round(end.stats.get("render_s", 0.0), 2),
        "underrun_ms_total": underruns * 20,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="Dia checkpoint (hub id or folder); default: a tiny random one")
    parser.add_argument("--codec", help="DAC checkpoint (hub id or folder); default: a tiny random one")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--voice-seconds", type=float, default=1.5, help="length of each character's voice prompt")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        if args.model is None or args.codec is None:
            from tests.models import save_tiny_dac, save_tiny_dia

            model = args.model or str(save_tiny_dia(folder / "dia"))
            codec = args.codec or str(save_tiny_dac(folder / "dac"))
        else:
            model, codec = args.model, args.codec
        with redis_server() as url:
            result = asyncio.run(_run(args, url, folder, model, codec))
    report = {"date": datetime.now(UTC).strftime("%Y-%m-%d"), "commit": commit(), "device": args.device,
              "model": args.model or "tiny random", "voice_seconds": args.voice_seconds, **result}  # fmt: skip
    print(json.dumps(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
