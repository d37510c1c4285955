"""The engine's audio: streamed PCM equals the whole-line path, Opus batches, pauses, voices from clips, render."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.audio.test_clip import make_clip
from tests.helpers import env_without_settings
from tts_engine.audio.clip import ClipLimits
from tts_engine.audio.loudness import LoudnessNormalizer
from tts_engine.audio.opus import FRAME_BYTES_PCM16, FRAME_SAMPLES, OpusDecoder, OpusSettings
from tts_engine.audio.resample import Resampler
from tts_engine.engine import Engine, GenerationParams
from tts_engine.jobs import RenderJob, RenderParams, Segment
from tts_engine.renderer import EngineRenderer
from tts_engine.rendering import RenderResult

TEXT = "[S1] Hello there. (laughs) [S2] Hi!"
PARAMS = GenerationParams(max_tokens=70, seed=3)


@pytest.fixture(scope="session")
def dia_folder(tiny_dia: Path) -> Path:
    return tiny_dia


@pytest.fixture(scope="session")
def engine(dia_folder: Path, dac_folder: Path) -> Engine:
    return Engine.load(dia_folder, "cpu", codec=dac_folder)


def test_streamed_pcm_equals_the_whole_line_path(engine: Engine) -> None:
    assert engine.codec is not None
    streamed = list(engine.stream_pcm(TEXT, PARAMS))
    assert len(streamed) > 2, "audio leaves in several chunks, not all at the end"
    codes = engine.generate_codes(TEXT, PARAMS)
    resampler = Resampler(44100, 48000)
    full = resampler.process(engine.codec.decode(codes))
    reference = LoudnessNormalizer().process(np.concatenate((full, resampler.flush())))
    joined = np.concatenate(streamed)
    assert len(joined) == len(reference) == round(len(codes) * 512 * 48000 / 44100)
    np.testing.assert_allclose(joined, reference, rtol=0, atol=1e-4)


def test_opus_batches_are_playable(engine: Engine) -> None:
    batches = list(engine.stream_audio(TEXT, PARAMS, opus=OpusSettings(bitrate=64_000)))
    assert len(batches) > 1 and all(batches)
    packets = [p for batch in batches for p in batch]
    samples = round(len(engine.generate_codes(TEXT, PARAMS)) * 512 * 48000 / 44100)
    assert len(packets) == -(-(samples + 312) // FRAME_SAMPLES)  # the audio plus the encoder's lookahead
    decoder = OpusDecoder()
    assert all(len(decoder.decode(p)) == FRAME_BYTES_PCM16 for p in packets)


def test_the_opus_settings_reach_the_worker_s_packets(engine: Engine) -> None:
    """DIA_OPUS_COMPLEXITY's and DIA_OPUS_FEC's path: the renderer's pipelines encode with them (other bits, as
    many packets, all playable), and its revision names them, so no cached or resumed line mixes packets of two
    encoders."""
    job = RenderJob(guild_id=1, requester=1, segments=(Segment(text=TEXT),), params=RenderParams(max_tokens=70, seed=3))
    coded = {}
    for opus in (OpusSettings(complexity=0), OpusSettings(), OpusSettings(fec=True)):
        renderer = EngineRenderer(engine, opus=opus)
        assert renderer.revision == f"{engine.revision}:{opus.revision}"
        coded[opus] = [p for batch in renderer.render(job, {}, RenderResult()) for p in batch]
    assert len({len(packets) for packets in coded.values()}) == 1 and len(coded[OpusSettings()]) > 10
    assert len({tuple(packets) for packets in coded.values()}) == 3
    decoder = OpusDecoder()
    assert all(len(decoder.decode(p)) == FRAME_BYTES_PCM16 for packets in coded.values() for p in packets)


def test_speed_changes_the_duration(engine: Engine) -> None:
    normal = sum(map(len, engine.stream_pcm(TEXT, PARAMS)))
    fast = sum(map(len, engine.stream_pcm(TEXT, PARAMS, speed=1.25)))
    assert fast == round(normal / 1.25)
    with pytest.raises(ValueError, match="speed must be between"):
        next(engine.stream_pcm(TEXT, PARAMS, speed=3.0))


def test_pauses_are_exact_silence_between_segments(engine: Engine) -> None:
    pipeline = engine.audio_pipeline(speed=1.5)
    chunks = [pipeline.push_codes(f) for f in engine.stream_codes("[S1] One.", PARAMS)]
    chunks.append(pipeline.pause(0.75))
    before = sum(len(c.pcm) for c in chunks)
    chunks += [pipeline.push_codes(f) for f in engine.stream_codes("[S2] Two.", PARAMS)]
    chunks.append(pipeline.finish())
    pcm = np.concatenate([c.pcm for c in chunks])
    assert np.all(pcm[before - 36000 : before] == 0), "0.75 s of silence, not stretched by the speed"
    assert pipeline.samples == len(pcm)
    with pytest.raises(ValueError, match="a pause is 0 to 10 s"):
        pipeline.pause(60)


def test_voice_from_a_clip(engine: Engine, tmp_path: Path) -> None:
    clip = make_clip(tmp_path, "me.mp3", 1.0, "-b:a", "96k").read_bytes()
    voice = engine.voice_from_clip(clip, "[S1] This is my voice.", ClipLimits(min_seconds=0.5))
    assert voice.codes.shape[1] == 9 and abs(voice.codes.shape[0] - 1.0 * 44100 / 512) <= 3
    codes = engine.generate_codes("[S1] Hi.", GenerationParams(max_tokens=voice.codes.shape[0] + 30, seed=1), voice)
    assert codes.shape == (28, 9)


def test_audio_needs_a_codec(dia_folder: Path) -> None:
    codes_only = Engine.load(dia_folder, "cpu")
    with pytest.raises(RuntimeError, match="no codec loaded"):
        codes_only.stream_audio(TEXT)


def _render(tmp_path: Path, dia: Path, dac: Path, *args: str, max_tokens: int = 80) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "tts_engine", "render", *args, "--model", str(dia), "--codec", str(dac)]
    return subprocess.run(
        [*argv, "--device", "cpu", "--max-tokens", str(max_tokens), "--seed", "2"],
        cwd=tmp_path, env=env_without_settings(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _decoded_seconds(path: Path) -> float:
    pcm = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-ar", "48000", "pipe:"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    return len(pcm) / 2 / 48000


@pytest.mark.parametrize("name", ["line.ogg", "line.wav"])
def test_render_writes_a_playable_file_of_the_reported_length(
    tmp_path: Path, dia_folder: Path, dac_folder: Path, name: str
) -> None:
    done = _render(tmp_path, dia_folder, dac_folder, "[S1] Hello there. (laughs)", "-o", name)
    assert done.returncode == 0, done.stderr
    reported = float(re.fullmatch(rf"wrote {name}: (\d+\.\d\d) s of audio\n", done.stdout).group(1))  # type: ignore[union-attr]
    assert "rendering:" in done.stderr and "x real time" in done.stderr
    assert reported == pytest.approx(78 * 512 / 44100, abs=0.01)
    assert _decoded_seconds(tmp_path / name) == pytest.approx(reported, abs=0.0051)  # reported to 0.01 s


def test_render_with_a_voice_and_speed(tmp_path: Path, dia_folder: Path, dac_folder: Path) -> None:
    make_clip(tmp_path, "voice.flac", 3.0)
    done = _render(
        tmp_path, dia_folder, dac_folder, "[S1] Hi.", "-o", "v.ogg", "--voice", "voice.flac",
        "--transcript", "[S1] Me.", "--speed", "1.25", "--opus-fec", max_tokens=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "v.ogg").stat().st_size > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("[S1] Hi.", "-o", "out.mp3"), "must end in .ogg, .opus or .wav"),
        (("[S1] Hi.", "-o", "o.ogg", "--voice", "x.wav"), "--voice and --transcript go together"),
        (("", "-o", "o.ogg"), "the text is empty"),
        (("[S1] Hi.", "-o", "o.ogg", "--top-k", "0"), "top_k must be between 1 and 1024"),
        (("[S1] Hi.", "-o", "o.ogg", "--opus-complexity", "11"), "Opus complexity must be 0..10, got 11"),
        (
            ("[S1] Hi.", "-o", "o.ogg", "--voice", "nope.wav", "--transcript", "x"),
            "cannot read the voice clip nope.wav",
        ),
    ],
)
def test_render_input_errors_are_one_line(
    tmp_path: Path, dia_folder: Path, dac_folder: Path, args: tuple[str, ...], message: str
) -> None:
    done = _render(tmp_path, dia_folder, dac_folder, *args)
    assert done.returncode == 64
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and message in last
    assert "Traceback" not in done.stderr


def test_an_audio_pool_changes_no_packet(engine: Engine, dia_folder: Path, dac_folder: Path) -> None:
    """The CUDA default (audio stages on a pool beside the GPU thread), here on the CPU: the same packets."""
    pooled = Engine.load(dia_folder, "cpu", codec=dac_folder, audio_threads=2)
    assert pooled._audio_pool is not None and engine._audio_pool is None
    with pytest.raises(ValueError, match="audio_threads must be 0 or more"):
        Engine(pooled.model, audio_threads=-1)
    packets = [p for batch in pooled.stream_audio(TEXT, PARAMS) for p in batch]
    assert packets == [p for batch in engine.stream_audio(TEXT, PARAMS) for p in batch]


def test_packets_do_not_depend_on_how_the_codes_arrive(engine: Engine) -> None:
    """The same codes pushed in other chunks (another scheduler's batching, a retry taking over mid-line) give
    the same packets, bit for bit: the codec's windows, resampling, loudness and Opus all follow the samples."""
    codes = engine.generate_codes(TEXT, PARAMS)
    assert len(codes) > 40
    outputs = []
    for cuts in ([], [1, 9, 17, 25, 33], [5, 6, 30], list(range(1, len(codes)))):
        pipeline = engine.audio_pipeline()
        packets = [p for part in np.split(codes, cuts) for p in pipeline.push_codes(part).packets]
        outputs.append(packets + pipeline.finish().packets)
    assert len(outputs[0]) > 20
    for output in outputs[1:]:
        assert output == outputs[0]
