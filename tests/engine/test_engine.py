"""The engine's public API: parameters, voice prompts, streaming, seeds, one request at a time."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from tests.engine.conftest import Checkpoint
from tts_engine.dia.text import TextError, TextTooLong
from tts_engine.engine import Engine, EngineBusy, GenerationParams, VoicePrompt

TEXT = "[S1] The bridge is out. [S2] Then we swim."


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cfg_scale": 0.5}, "cfg_scale must be between 1"),
        ({"temperature": -0.1}, "temperature must be between 0"),
        ({"top_p": 0.0}, "top_p must be above 0"),
        ({"top_p": 1.5}, "top_p must be above 0"),
        ({"top_k": 0}, "top_k must be between 1 and 1024"),
        ({"max_tokens": 1}, "max_tokens must be at least 2"),
        ({"seed": -1}, "seed must be between 0"),
    ],
)
def test_invalid_params_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GenerationParams(**kwargs)  # type: ignore[arg-type]


def test_defaults_are_the_reference_ones() -> None:
    params = GenerationParams()
    assert (params.cfg_scale, params.temperature, params.top_p, params.top_k, params.max_tokens, params.seed) == (
        3.0, 1.2, 0.95, 45, 3072, None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("codes", "transcript", "message"),
    [
        (np.zeros((5,), dtype=np.int64), "[S1] hi", "shape"),
        (np.zeros((0, 3), dtype=np.int64), "[S1] hi", "shape"),
        (np.zeros((5, 3), dtype=np.float32), "[S1] hi", "integers"),
        (np.full((5, 3), 1024), "[S1] hi", "0..1023"),
        (np.zeros((5, 3), dtype=np.int64), "  ", "transcript"),
    ],
)
def test_invalid_voice_prompts_are_refused(codes: np.ndarray, transcript: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VoicePrompt(transcript, codes)


def test_prompt_must_fit_the_model(small_engine: Engine) -> None:
    with pytest.raises(ValueError, match="voice prompt codes have 9 channels, the model 3"):
        small_engine.generate_codes(TEXT, prompt=VoicePrompt("[S1] hi", np.zeros((4, 9), dtype=np.int64)))
    with pytest.raises(ValueError, match="prompt is 30 frames long and max_tokens \\(20\\)"):
        small_engine.generate_codes(
            TEXT, GenerationParams(max_tokens=20), VoicePrompt("[S1] hi", np.zeros((30, 3), dtype=np.int64))
        )
    with pytest.raises(ValueError, match="max_tokens is 3072, the model reaches 128"):
        small_engine.generate_codes(TEXT, GenerationParams())


def test_a_greedy_line_resumed_from_its_frames_goes_on_as_it_did(checkpoint: Checkpoint, engine: Engine) -> None:
    """Frames prefilled after the prompt stand where the line's own steps put them (the delay pattern's
    staggered channels included), so greedy decoding carries on to the same codes."""
    channels = len(checkpoint.shape.delays)
    prompt = VoicePrompt("[S2] Me.", np.random.default_rng(4).integers(0, 1024, size=(6, channels)))
    for voice in (None, prompt):
        params = GenerationParams(max_tokens=70, temperature=0)
        whole = engine.generate_codes(TEXT, params, voice)
        for frames in (1, 17, len(whole) - 3):
            rest = list(engine.stream_codes(TEXT, params, voice, resume_from=whole[:frames]))
            np.testing.assert_array_equal(np.concatenate(rest), whole[frames:], err_msg=f"from frame {frames}")


def test_resumed_frames_are_checked(small_engine: Engine) -> None:
    with pytest.raises(ValueError, match="resume_from must be integer frames of shape \\(n, 3\\)"):
        small_engine.stream_codes(TEXT, resume_from=np.zeros((4, 9), dtype=np.int64))
    with pytest.raises(ValueError, match=r"resume_from codes must lie in 0\.\.1023"):
        small_engine.stream_codes(TEXT, resume_from=np.full((4, 3), 1024))
    with pytest.raises(ValueError, match="resumed frames are 40 frames long and max_tokens \\(30\\)"):
        small_engine.stream_codes(TEXT, GenerationParams(max_tokens=30), resume_from=np.zeros((40, 3), dtype=np.int64))
    assert len(small_engine.generate_codes(TEXT, GenerationParams(max_tokens=20, seed=1))) == 18, "still serving"


def test_bad_text_fails_at_the_call(small_engine: Engine) -> None:
    with pytest.raises(TextError, match="empty"):
        small_engine.stream_codes("   ")  # raised before iterating: nothing was started
    with pytest.raises(TextTooLong):
        small_engine.stream_codes("a" * 97)  # the tiny encoder reads 96 bytes
    assert len(small_engine.generate_codes(TEXT, GenerationParams(max_tokens=20, seed=1))) == 18


def test_stream_concatenation_equals_generate(checkpoint: Checkpoint, engine: Engine) -> None:
    for params in (GenerationParams(max_tokens=60, seed=123), GenerationParams(max_tokens=60, temperature=0)):
        chunks = list(engine.stream_codes(TEXT, params))
        assert len(chunks) > 3
        assert chunks[0].shape == (1, len(checkpoint.shape.delays)), "the first frame leaves as soon as it is final"
        np.testing.assert_array_equal(np.concatenate(chunks), engine.generate_codes(TEXT, params))


def test_seeds_reproduce_and_differ(small_engine: Engine) -> None:
    first = small_engine.generate_codes(TEXT, GenerationParams(max_tokens=60, seed=7))
    again = small_engine.generate_codes(TEXT, GenerationParams(max_tokens=60, seed=7))
    other = small_engine.generate_codes(TEXT, GenerationParams(max_tokens=60, seed=8))
    unseeded = [small_engine.generate_codes(TEXT, GenerationParams(max_tokens=60)) for _ in range(2)]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(*unseeded)


def test_chunk_size_does_not_change_seeded_codes(checkpoint: Checkpoint, small_engine: Engine) -> None:
    params = GenerationParams(max_tokens=60, seed=99)
    other = Engine(small_engine.model, chunk_steps=3)
    np.testing.assert_array_equal(other.generate_codes(TEXT, params), small_engine.generate_codes(TEXT, params))


def test_global_rng_is_untouched(small_engine: Engine) -> None:
    before = torch.random.get_rng_state()
    small_engine.generate_codes(TEXT, GenerationParams(max_tokens=30, seed=5))
    small_engine.generate_codes(TEXT, GenerationParams(max_tokens=30))
    assert torch.equal(before, torch.random.get_rng_state())


def test_one_request_at_a_time_and_closing_cancels(small_engine: Engine) -> None:
    stream = small_engine.stream_codes(TEXT, GenerationParams(max_tokens=100, seed=3))
    next(stream)
    with pytest.raises(EngineBusy):
        small_engine.stream_codes(TEXT, GenerationParams(max_tokens=50))
    stream.close()  # cancels: the slot is free again
    codes = small_engine.generate_codes(TEXT, GenerationParams(max_tokens=100, seed=3))
    assert codes.shape == (98, 3)


def test_codes_are_plain_dac_codes(small_engine: Engine) -> None:
    codes = small_engine.generate_codes(TEXT, GenerationParams(max_tokens=80, seed=11))
    assert codes.dtype == np.int64 and codes.shape == (78, 3)
    assert codes.min() >= 0 and codes.max() <= 1023


def test_early_eos_stream(ending_checkpoint: Checkpoint) -> None:
    """A line that ends by itself streams all its frames, then stops, with nothing after EOS."""
    engine = Engine.load(ending_checkpoint.folder)
    params = GenerationParams(temperature=0, max_tokens=100)
    chunks = list(engine.stream_codes(TEXT, params))
    codes = np.concatenate(chunks)
    assert 0 < len(codes) < 98
    np.testing.assert_array_equal(codes, engine.generate_codes(TEXT, params))
    assert codes.max() <= 1023


@pytest.mark.skipif(shutil.which("c++") is None, reason="torch.compile on the CPU needs a C++ compiler")
def test_compiled_ops_decode_like_the_plain_ones(ending_checkpoint: Checkpoint) -> None:
    """The CUDA default (tts_engine/dia/fused.py through torch.compile) changes no code, here on the CPU."""
    plain = Engine.load(ending_checkpoint.folder)
    compiled = Engine.load(ending_checkpoint.folder, compile_ops=True)
    assert compiled.model.ops.compiled and not plain.model.ops.compiled
    text = "[S1] Hello there. [S2] And hello to you!"
    for params in (GenerationParams(temperature=0, max_tokens=90), GenerationParams(max_tokens=90, seed=11)):
        np.testing.assert_array_equal(compiled.generate_codes(text, params), plain.generate_codes(text, params))
