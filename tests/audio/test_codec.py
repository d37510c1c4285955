"""The DAC codec through the real loading code, and the streaming decode against a full decode."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import DacModel

from tests.models import tiny_dac_config
from tts_engine.audio.codec import Codec
from tts_engine.audio.stream import StreamingDecoder, receptive_frames, warm_up
from tts_engine.hub import ModelLoadError

TOLERANCE = 1e-4  # the bound; the measured difference is printed by the test below


def test_loads_and_round_trips_shapes(codec: Codec) -> None:
    assert (codec.sample_rate, codec.hop, codec.channels) == (44100, 512, 9)
    codes = codec.encode(np.random.default_rng(0).standard_normal(44100).astype(np.float32) * 0.1)
    assert codes.shape == (87, 9) and codes.dtype == np.int64  # 44100 samples padded to 87 frames
    assert codes.min() >= 0 and codes.max() < 1024
    audio = codec.decode(codes)
    assert audio.shape == (87 * 512,) and audio.dtype == np.float32
    assert np.abs(audio).max() <= 1.0


def test_the_16khz_default_config_is_refused(tmp_path: Path) -> None:
    DacModel(tiny_dac_config(sampling_rate=16000, downsampling_ratios=[2, 4, 5, 8])).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match=r"16000 Hz DAC with hop 320 .* needs the 44\.1 kHz one"):
        Codec.load(tmp_path, "cpu")


def test_missing_codec_says_where_to_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        Codec.load(tmp_path / "no-codec", "cpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelLoadError, match=r"cannot get 'descript/dac_44khz' .*\(DIA_CODEC\)"):
        Codec.load("descript/dac_44khz", "cpu")


def test_receptive_field_of_the_44khz_decoder() -> None:
    # 3 frames (first conv) + per block 2/rate + 39/rate' samples ... = 11.0 frames, ceiled, plus one.
    assert receptive_frames((8, 8, 4, 2)) == 13


@pytest.mark.parametrize("chunk", [1, 3, 7, 16, 50])
def test_streaming_decode_equals_full_decode(codec: Codec, chunk: int) -> None:
    codes = np.random.default_rng(chunk).integers(0, 1024, size=(133, 9))
    full = codec.decode(codes)
    stream = StreamingDecoder(codec)
    parts = [stream.push(codes[i : i + chunk]) for i in range(0, len(codes), chunk)]
    parts.append(stream.flush())
    joined = np.concatenate(parts)
    assert joined.shape == full.shape
    difference = float(np.abs(joined - full).max())
    assert difference <= TOLERANCE, difference
    assert any(len(p) for p in parts[:-1]), "audio must leave before the end"


def test_the_same_frames_give_the_same_samples_however_they_are_pushed(codec: Codec) -> None:
    """Windows on a fixed grid: a line's audio bits do not depend on how its frames were batched."""
    codes = np.random.default_rng(9).integers(0, 1024, size=(241, 9))
    random_cuts = sorted(set(np.random.default_rng(10).integers(1, 241, size=30).tolist()))
    outputs = []
    for cuts in (list(range(1, 241)), list(range(8, 241, 8)), [], random_cuts):
        stream = StreamingDecoder(codec)
        pieces = [stream.push(part) for part in np.split(codes, cuts)]
        outputs.append(np.concatenate([*pieces, stream.flush()]))
    for output in outputs[1:]:
        assert np.array_equal(output, outputs[0])


def test_first_audio_leaves_once_its_right_context_arrived(codec: Codec) -> None:
    stream = StreamingDecoder(codec)
    codes = np.random.default_rng(1).integers(0, 1024, size=(40, 9))
    needed = stream.first + stream.context
    outputs = [len(stream.push(codes[i : i + 1])) for i in range(needed)]
    assert outputs[:-1] == [0] * (needed - 1)
    assert outputs[-1] == stream.first * 512


def test_streaming_cost_does_not_grow_with_the_line(codec: Codec) -> None:
    """Only the context frames stay buffered, so each window decodes a bounded number of frames."""
    stream = StreamingDecoder(codec)
    decoded: list[int] = []
    original = codec.decode

    def counting(codes: np.ndarray) -> np.ndarray:
        decoded.append(len(codes))
        return original(codes)

    codec.decode = counting  # type: ignore[method-assign]
    try:
        for frames in np.random.default_rng(2).integers(0, 1024, size=(600, 1, 9)):
            stream.push(frames)
        stream.flush()
    finally:
        del codec.decode
    assert max(decoded) <= stream.largest + 2 * stream.context
    assert sum(decoded) <= 600 * (1 + 2 * stream.context / stream.largest) + 2 * stream.context + 64
    assert len(stream._frames) <= stream.context  # what is kept after the end


def test_decode_of_no_frames(codec: Codec) -> None:
    assert codec.decode(np.zeros((0, 9), dtype=np.int64)).shape == (0,)
    assert StreamingDecoder(codec).flush().shape == (0,)


def test_codec_runs_in_inference_mode(codec: Codec) -> None:
    assert not any(p.requires_grad for p in codec.model.parameters())
    assert torch.is_inference_mode_enabled() is False


@pytest.mark.gpu
def test_on_cuda_after_warm_up_streaming_equals_full_decode(dac_folder: Path) -> None:
    """The worker's GPU path: every window length warmed once, then streaming == full decode (tf32 off)."""
    torch.backends.cudnn.allow_tf32 = False
    cuda = Codec.load(dac_folder, "cuda")
    warm_up(cuda)
    codes = np.random.default_rng(5).integers(0, 1024, size=(150, cuda.channels))
    stream = StreamingDecoder(cuda)
    parts = [stream.push(codes[i : i + 3]) for i in range(0, len(codes), 3)]
    streamed = np.concatenate([*parts, stream.flush()])
    full = cuda.decode(codes)
    assert streamed.shape == full.shape
    assert np.abs(streamed - full).max() <= 1e-4


@pytest.mark.skipif(shutil.which("c++") is None, reason="torch.compile on the CPU needs a C++ compiler")
def test_fused_activations_decode_like_transformers(dac_folder: Path, codec: Codec) -> None:
    """The CUDA default (each Snake1d through torch.compile), here on the CPU: the same audio and codes, and
    streaming still equals a full decode."""
    fused = Codec.load(dac_folder, "cpu", fuse=True)
    snakes = [m for m in fused.model.modules() if type(m).__name__ == "FusedSnake"]
    assert snakes and not any(type(m).__name__ == "Snake1d" for m in fused.model.modules())
    assert not any(type(m).__name__ == "FusedSnake" for m in codec.model.modules())
    assert fused.model.state_dict().keys() == codec.model.state_dict().keys()
    codes = np.random.default_rng(2).integers(0, 1024, size=(60, fused.channels))
    full = fused.decode(codes)
    np.testing.assert_allclose(full, codec.decode(codes), rtol=0, atol=1e-5)
    stream = StreamingDecoder(fused)
    streamed = np.concatenate([*(stream.push(codes[i : i + 7]) for i in range(0, 60, 7)), stream.flush()])
    np.testing.assert_allclose(streamed, full, rtol=0, atol=1e-4)
    clip = np.sin(np.arange(44100) / 44100 * 2 * np.pi * 220).astype(np.float32) * 0.5
    assert np.mean(fused.encode(clip) == codec.encode(clip)) > 0.99
