"""A user's voice clip and its transcript, cut to the 5-10 s that Dia works best with as a voice prompt.

Dia continues the prompt audio after reading its transcript, so the two must match word for word: the audio
can only be cut where the transcript can be cut too, at the end of a sentence. A long prompt also eats the
3072-frame budget (~86 frames a second: a 30 s clip would leave ~5 s to speak). So:
1. Silence before and after the speech is stripped, keeping a small margin so quiet word edges survive.
2. Speech of at most `target[1]` seconds is kept whole, with the whole transcript.
3. Longer speech is cut after the longest run of whole sentences that ends in a real pause of the audio,
   where the transcript says that sentence should end, and `target` seconds in.
Speech or silence is decided per 10 ms frame by its level relative to the clip's own loudness, so the
recording level does not matter; energy alone cannot tell steady noise from speech, so near-silent clips are
left to `decode_clip` to refuse first. A false sentence end ("Mr.") finds no pause where it is expected and is
passed over. Pure numpy; each failure is a `ClipError` whose message a user can act on.
"""

from __future__ import annotations

import re

import numpy as np

from tts_engine.audio.clip import RATE, ClipTooLong, ClipTooShort

FRAME = RATE // 100  # 10 ms: finer than any pause we look for, coarse enough to be cheap
# Loudness is the 99th percentile of frame levels: the vowel peaks, yet one click (a frame or two) cannot set it.
LOUD_PERCENTILE = 99.0
# Silence is more than 35 dB below that: quiet consonants sit 20-30 dB below vowels and must stay speech...
BELOW_LOUD_DB = 35.0
# ...unless the room is noisier than that: then 6 dB above the noise floor (the quietest 10% of frames)...
FLOOR_PERCENTILE, ABOVE_FLOOR_DB = 10.0, 6.0
# ...but never closer than 15 dB to the loudness, or a noisy clip would count its own speech as silence.
MIN_BELOW_LOUD_DB = 15.0
DIGITAL_SILENCE_DBFS = -80.0  # below this a frame is silence however quiet the whole clip is
MARGIN_S = 0.15  # kept around the speech: word-final /s/, /t/ releases and breaths fall below the threshold
# Under 2 s Dia has a word or two to copy the voice from, and very short text makes it hallucinate.
MIN_SPEECH_S = 2.0
# Gaps between words and stop closures last under ~120 ms; pauses between sentences 300-700 ms.
MIN_PAUSE_S = 0.15
# How far a pause may lie from where the transcript puts a sentence end. Speaking rate drifts 10-15% within
# a clip, ~0.6 s over 5 s; more would accept a pause a few words away and the transcript would not match.
TOLERANCE_S = 0.6

# A sentence ends with . ! ? or … (repeated, maybe closed by a quote or bracket) before a space or the end.
_SENTENCE_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*(?=\s|$)")
_UNSPOKEN = re.compile(r"\[[^\]]*\]|[\W_]")  # speaker tags, spaces and punctuation take no speaking time


class TooLittleSpeech(ClipTooShort):
    """Once the silence is stripped, too little speech is left to copy a voice from."""


class NoSentenceCut(ClipTooLong):
    """The speech is longer than the target and no sentence ends in a pause within it."""


def trim_for_prompt(
    wav_44k: np.ndarray, transcript: str, *, target: tuple[float, float] = (5.0, 10.0)
) -> tuple[np.ndarray, str]:
    """The audio (float32, 44.1 kHz mono) and transcript to use as a voice prompt, at most `target[1]` s long.

    Raises `TooLittleSpeech` under `MIN_SPEECH_S` of speech, `NoSentenceCut` when longer speech cannot be cut
    at a sentence end between `target[0]` and `target[1]` s, `ValueError` for a meaningless `target`.
    """
    low_s, high_s = target
    if not 0 < low_s <= high_s:
        raise ValueError(f"target must be (shortest, longest) seconds with 0 < shortest <= longest, got {target}")
    wav = np.asarray(wav_44k, dtype=np.float32).reshape(-1)
    speech = _speech_frames(frame_rms_db(wav))
    voiced = np.flatnonzero(speech)
    speech_s = (voiced[-1] + 1 - voiced[0]) * FRAME / RATE if voiced.size else 0.0
    if speech_s < MIN_SPEECH_S:
        raise TooLittleSpeech(
            f"the clip holds only {speech_s:.1f} s of speech once the silence around it is cut; a voice needs at "
            f"least {MIN_SPEECH_S:g} s (5 to 10 s of clear speech works best)"
        )
    margin = _frames(MARGIN_S)
    first, last = max(voiced[0] - margin, 0), min(voiced[-1] + 1 + margin, len(speech))
    trimmed = wav[first * FRAME : last * FRAME]
    if len(trimmed) <= high_s * RATE:
        return trimmed, transcript.strip()
    cut = _sentence_cut(speech[first:last], transcript, low_s, high_s)
    if cut is None:
        raise NoSentenceCut(_no_cut_message(len(wav) / RATE, transcript, target))
    cut_frame, cut_char = cut
    return trimmed[: cut_frame * FRAME], transcript[:cut_char].strip()


def frame_rms_db(wav_44k: np.ndarray) -> np.ndarray:
    """The level in dBFS of each 10 ms frame, (ceil(samples / FRAME),) float64; the last frame zero-padded."""
    padded = np.zeros(-(-len(wav_44k) // FRAME) * FRAME, dtype=np.float64)
    padded[: len(wav_44k)] = wav_44k
    mean_square = np.square(padded).reshape(-1, FRAME).mean(axis=1)
    return 10 * np.log10(np.maximum(mean_square, 1e-12))  # 1e-12: digital silence reads -120 dBFS, not -inf


def _speech_frames(frame_db: np.ndarray) -> np.ndarray:
    """Which frames hold speech (bool, same shape): see the thresholds at the top of the module."""
    if not frame_db.size:
        return np.zeros(0, dtype=bool)
    loud_db = float(np.percentile(frame_db, LOUD_PERCENTILE))
    floor_db = float(np.percentile(frame_db, FLOOR_PERCENTILE))
    threshold_db = min(max(loud_db - BELOW_LOUD_DB, floor_db + ABOVE_FLOOR_DB), loud_db - MIN_BELOW_LOUD_DB)
    return np.asarray(frame_db > max(threshold_db, DIGITAL_SILENCE_DBFS))


def _sentence_cut(speech: np.ndarray, transcript: str, low_s: float, high_s: float) -> tuple[int, int] | None:
    """(frames of audio, characters of transcript) of the longest cut that fits, None when there is none.

    A sentence end is expected where the speaking time (pauses left out: they have no characters) reaches
    that sentence's share of the transcript's spoken characters; a pause must lie within `TOLERANCE_S` of it.
    """
    total_chars = _spoken_chars(transcript)
    pauses = [(start, stop) for start, stop in _runs(~speech) if stop - start >= _frames(MIN_PAUSE_S)]
    in_pause = np.zeros(len(speech), dtype=bool)
    for start, stop in pauses:
        in_pause[start:stop] = True
    speaking_frames = np.cumsum(~in_pause)  # frames of speaking time up to and including each frame
    best = None
    for end in _sentence_ends(transcript):
        share = _spoken_chars(transcript[:end]) / max(total_chars, 1)
        if not pauses or share >= 1.0:  # the last sentence ends the clip: no cut
            break
        expected = int(np.searchsorted(speaking_frames, share * speaking_frames[-1]))
        start, stop = min(pauses, key=lambda pause: _distance(expected, pause))
        # Mid-pause, but with at most MARGIN_S of silence: more would cost frames and teach Dia to pause.
        cut = start + min((stop - start) // 2, _frames(MARGIN_S))
        if _distance(expected, (start, stop)) <= _frames(TOLERANCE_S) and low_s <= cut * FRAME / RATE <= high_s:
            best = (cut, end)  # sentence ends come in order: a later fit is a longer prefix
    return best


def _sentence_ends(transcript: str) -> list[int]:
    """The character index just past each sentence's closing punctuation."""
    return [match.end() for match in _SENTENCE_END.finditer(transcript)]


def _spoken_chars(text: str) -> int:
    return len(_UNSPOKEN.sub("", text))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each run of True in a bool array, stop exclusive."""
    edges = np.flatnonzero(np.diff(np.concatenate(([False], mask, [False])).astype(np.int8)))
    return [(int(start), int(stop)) for start, stop in zip(edges[::2], edges[1::2], strict=True)]


def _distance(frame: int, pause: tuple[int, int]) -> int:
    """Frames from `frame` to the nearest frame of `pause` (0 inside it)."""
    return max(pause[0] - frame, frame - (pause[1] - 1), 0)


def _frames(seconds: float) -> int:
    return round(seconds * RATE / FRAME)


def _no_cut_message(clip_s: float, transcript: str, target: tuple[float, float]) -> str:
    span = f"{target[0]:g}-{target[1]:g} s"
    ends = _sentence_ends(transcript)
    if not ends or _spoken_chars(transcript[: ends[0]]) >= _spoken_chars(transcript):
        return (
            f"the clip is {clip_s:.1f} s long and its transcript is one sentence, so I cannot tell where to cut "
            f"it: upload a {span} clip, or end the transcript's sentences with . ! or ?"
        )
    return (
        f"the clip is {clip_s:.1f} s long and I could not find a pause between sentences in its first "
        f"{target[1]:g} s: upload a {span} clip, or a transcript with sentence punctuation"
    )
