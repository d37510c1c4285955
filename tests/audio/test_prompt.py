"""Voice-prompt trimming on synthetic speech: silence stripped, long clips cut at a sentence pause, clear errors.

"Words" are tone-plus-noise bursts under a Hann envelope with 30-70 ms gaps (like gaps between real words),
"sentences" are runs of words separated by true silence, and a transcript gives each sentence a number of
characters proportional to its duration. Every expectation is computed from that layout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pytest

from tts_engine.audio.clip import ClipError, ClipTooLong, ClipTooShort
from tts_engine.audio.prompt import MARGIN_S, NoSentenceCut, TooLittleSpeech, trim_for_prompt

RATE = 44100
EDGE_S = 0.07  # a word's Hann envelope fades under the threshold up to ~40 ms early; frames are 10 ms


@dataclass
class Clip:
    wav_44k: np.ndarray
    sentences: list[str]
    lead_s: float
    speech_s: float


def _word(rng: np.random.Generator, seconds: float, amplitude: float) -> np.ndarray:
    n = round(seconds * RATE)
    t = np.arange(n) / RATE
    voice = np.sin(2 * np.pi * rng.uniform(120, 240) * t) + 0.5 * rng.standard_normal(n)
    return (amplitude * np.hanning(n) * voice / 1.5).astype(np.float32)


def _speech(rng: np.random.Generator, seconds: float, amplitude: float) -> np.ndarray:
    """Words and short gaps filling exactly `seconds`, starting and ending with a word."""
    parts, left = [], seconds
    while left > 0:
        length = rng.uniform(0.2, 0.45)
        length = left if left - length < 0.3 else length  # no word too short to hear at the end
        parts.append(_word(rng, length, amplitude))
        left -= length
        if left > 0:
            gap = min(rng.uniform(0.03, 0.07), left)
            parts.append(np.zeros(round(gap * RATE), dtype=np.float32))
            left -= gap
    return np.concatenate(parts)


def _text(index: int, seconds: float) -> str:
    """Four spoken characters for each quarter second: an even speaking rate, and each sentence distinct."""
    return " ".join([chr(ord("a") + index) * 4] * round(seconds * 4)) + "."


def make_clip(
    durations: list[float],
    pauses: float | list[float] = 0.4,
    *,
    lead_s: float = 1.0,
    tail_s: float = 1.0,
    amplitude: float = 0.5,
    noise: float = 1e-3,
    seed: int = 0,
) -> Clip:
    rng = np.random.default_rng(seed)
    gaps = pauses if isinstance(pauses, list) else [pauses] * (len(durations) - 1)
    parts = [np.zeros(round(lead_s * RATE), dtype=np.float32)]
    for i, seconds in enumerate(durations):
        parts.append(_speech(rng, seconds, amplitude))
        if i < len(gaps):
            parts.append(np.zeros(round(gaps[i] * RATE), dtype=np.float32))
    parts.append(np.zeros(round(tail_s * RATE), dtype=np.float32))
    wav = np.concatenate(parts)
    wav += (noise * rng.standard_normal(len(wav))).astype(np.float32)
    speech_s = sum(durations) + sum(gaps[: len(durations) - 1])
    return Clip(wav, [_text(i, d) for i, d in enumerate(durations)], lead_s, speech_s)


def cut_points(durations: list[float], pause_s: float) -> list[float]:
    """Where the cut after each sentence but the last lands, in seconds of trimmed audio (see trim_for_prompt)."""
    return [
        MARGIN_S + sum(durations[:k]) + (k - 1) * pause_s + min(pause_s / 2, MARGIN_S) for k in range(1, len(durations))
    ]


def expected_cut(durations: list[float], pause_s: float, target: tuple[float, float]) -> tuple[int, float]:
    """(sentences kept, seconds kept) of the longest sentence prefix whose cut lies within target; (0, 0) if none."""
    fits = [(k, cut_s) for k, cut_s in enumerate(cut_points(durations, pause_s), 1) if target[0] <= cut_s <= target[1]]
    return fits[-1] if fits else (0, 0.0)


@pytest.mark.parametrize(
    ("amplitude", "noise", "tolerance_s"),
    [
        (0.5, 0.0, EDGE_S),
        (0.5, 1e-3, EDGE_S),
        (0.02, 1e-4, EDGE_S),
        (0.5, 0.02, 2 * EDGE_S),  # 24 dB above the noise, the fading ends of the first and last word sink into it
    ],
    ids=["digital-silence", "quiet-room", "quiet-recording", "noisy-room"],
)
def test_silence_is_stripped_with_a_margin(amplitude: float, noise: float, tolerance_s: float) -> None:
    clip = make_clip([3.0, 3.0], lead_s=1.3, tail_s=2.1, amplitude=amplitude, noise=noise)
    wav, transcript = trim_for_prompt(clip.wav_44k, " ".join(clip.sentences))
    assert len(wav) / RATE == pytest.approx(clip.speech_s + 2 * MARGIN_S, abs=tolerance_s)
    # The output is a slice of the input: find where it starts from its loudest sample.
    peak = int(np.argmax(np.abs(wav)))
    (start,) = np.flatnonzero(clip.wav_44k == wav[peak]) - peak
    assert np.array_equal(clip.wav_44k[start : start + len(wav)], wav)
    assert start / RATE == pytest.approx(clip.lead_s - MARGIN_S, abs=tolerance_s)
    assert transcript == " ".join(clip.sentences)


def test_seven_seconds_are_kept_whole() -> None:
    clip = make_clip([2.0, 2.5, 2.5], pauses=0.0)
    wav, transcript = trim_for_prompt(clip.wav_44k, f"  [S1] {' '.join(clip.sentences)}\n")
    assert len(wav) / RATE == pytest.approx(7.0 + 2 * MARGIN_S, abs=EDGE_S)
    assert transcript == f"[S1] {' '.join(clip.sentences)}"


@pytest.mark.parametrize(
    "durations",
    [[5.0, 5.0, 5.0, 5.0], [4.0, 4.0, 4.0, 4.0, 4.0], [3.0, 3.0, 3.0, 3.0, 3.0, 3.0], [2.0, 1.5, 3.0, 6.0, 8.0]],
)
@pytest.mark.parametrize("noise", [0.0, 3e-3])
def test_long_clip_is_cut_at_the_pause_after_the_last_whole_sentence(durations: list[float], noise: float) -> None:
    clip = make_clip(durations, pauses=0.4, noise=noise)
    kept, cut_s = expected_cut(durations, 0.4, (5.0, 10.0))
    assert kept >= 1, "the layout must allow a cut"
    wav, transcript = trim_for_prompt(clip.wav_44k, "[S1] " + " ".join(clip.sentences))
    assert transcript == "[S1] " + " ".join(clip.sentences[:kept])
    assert len(wav) / RATE == pytest.approx(cut_s, abs=EDGE_S)


def test_sentences_end_with_any_closing_punctuation() -> None:
    durations = [4.0, 4.0, 4.0, 4.0]
    clip = make_clip(durations)
    # "Mr." ends no sentence where it is said; a "sentence" break there finds no pause and is passed over.
    sentences = [
        f"Mr. {clip.sentences[0][:-1]}?",
        f'{clip.sentences[1][:-1]}!"',
        f"{clip.sentences[2][:-1]}\u2026",
        clip.sentences[3],
    ]
    kept, cut_s = expected_cut(durations, 0.4, (5.0, 10.0))
    wav, transcript = trim_for_prompt(clip.wav_44k, "\n".join(sentences))
    assert transcript == "\n".join(sentences[:kept])
    assert len(wav) / RATE == pytest.approx(cut_s, abs=EDGE_S)


def test_other_targets() -> None:
    durations = [2.0, 2.0, 2.0, 2.0]
    clip = make_clip(durations, pauses=0.5)
    kept, cut_s = expected_cut(durations, 0.5, (3.0, 6.0))
    wav, transcript = trim_for_prompt(clip.wav_44k, " ".join(clip.sentences), target=(3.0, 6.0))
    assert transcript == " ".join(clip.sentences[:kept])
    assert len(wav) / RATE == pytest.approx(cut_s, abs=EDGE_S)
    with pytest.raises(ValueError, match="target"):
        trim_for_prompt(clip.wav_44k, transcript, target=(6.0, 3.0))


def test_twenty_seconds_without_pauses_is_refused() -> None:
    clip = make_clip([5.0, 5.0, 5.0, 5.0], pauses=0.0)
    with pytest.raises(NoSentenceCut) as error:
        trim_for_prompt(clip.wav_44k, " ".join(clip.sentences))
    assert isinstance(error.value, ClipTooLong) and isinstance(error.value, ClipError)
    message = str(error.value)
    assert f"{len(clip.wav_44k) / RATE:.1f} s long" in message
    assert "could not find a pause between sentences in its first 10 s" in message
    assert "upload a 5-10 s clip" in message


def test_pauses_far_from_any_sentence_end_are_not_used() -> None:
    # The audio pauses mid-sentence (2.5 s into each 5 s sentence), the transcript says sentences end elsewhere.
    clip = make_clip([2.5, 5.0, 5.0, 5.0, 2.5], pauses=0.4)
    sentences = [_text(i, 5.0) for i in range(4)]
    with pytest.raises(NoSentenceCut, match="pause between sentences"):
        trim_for_prompt(clip.wav_44k, " ".join(sentences))


def test_long_clip_without_sentence_punctuation_is_refused() -> None:
    clip = make_clip([5.0, 5.0, 5.0, 5.0], pauses=0.4)
    transcript = " ".join(sentence.rstrip(".") for sentence in clip.sentences)
    with pytest.raises(NoSentenceCut) as error:
        trim_for_prompt(clip.wav_44k, transcript)
    assert "one sentence" in str(error.value) and "punctuation" not in str(error.value)
    assert "end the transcript's sentences with . ! or ?" in str(error.value)


# Only digital silence for "no speech": energy alone cannot tell steady noise from speech, and decode_clip
# refuses clips whose loudest 50 ms stays under -50 dBFS before they get here.
@pytest.mark.parametrize(("speech_s", "noise"), [(0.0, 0.0), (0.8, 1e-3), (1.8, 1e-3)])
def test_too_little_speech_is_refused(speech_s: float, noise: float) -> None:
    clip = make_clip([speech_s] if speech_s else [], lead_s=1.5, tail_s=2.0, noise=noise)
    with pytest.raises(TooLittleSpeech) as error:
        trim_for_prompt(clip.wav_44k, "Hi.")
    assert isinstance(error.value, ClipTooShort)
    found = re.fullmatch(
        r"the clip holds only ([\d.]+) s of speech once the silence around it is cut; .*", str(error.value)
    )
    assert found and float(found[1]) == pytest.approx(speech_s, abs=0.1)


@pytest.mark.parametrize("seed", range(16))
def test_never_longer_than_the_target_and_always_whole_sentences(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    durations = [float(d) for d in rng.uniform(1.5, 7.0, size=rng.integers(2, 7))]
    pause_s = float(rng.uniform(0.25, 0.8))
    clip = make_clip(durations, pauses=pause_s, noise=float(rng.uniform(0, 3e-3)), seed=seed)
    sentences = " ".join(clip.sentences)
    whole_s = clip.speech_s + 2 * MARGIN_S
    kept, cut_s = expected_cut(durations, pause_s, (5.0, 10.0))
    # A cut within a frame or two of a bound may fall either side of it: only the length limit holds then.
    exact = all(abs(x - bound) > EDGE_S for x in [*cut_points(durations, pause_s), whole_s] for bound in (5.0, 10.0))
    try:
        wav, transcript = trim_for_prompt(clip.wav_44k, sentences)
    except NoSentenceCut:
        assert not exact or (whole_s > 10.0 and kept == 0)
        return
    assert len(wav) / RATE <= 10.0 + MARGIN_S
    if exact and whole_s <= 10.0:
        assert transcript == sentences
    elif exact:
        assert transcript == " ".join(clip.sentences[:kept])
        assert len(wav) / RATE == pytest.approx(cut_s, abs=EDGE_S)
