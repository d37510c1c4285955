"""What a request asks of the engine: how to sample (GenerationParams), whose voice to continue (VoicePrompt),
and the checks on codes a caller hands in (a prompt's, or a retry's frames to resume from). Each is checked
when made, so a bad value fails with a clear ValueError before anything reaches the GPU."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class GenerationParams:
    """How to sample. Defaults are nari-labs/dia's for the 0626 checkpoint; temperature 0 means greedy."""

    cfg_scale: float = 3.0  # classifier-free guidance; 1 turns it off
    temperature: float = 1.2
    top_p: float = 0.95
    top_k: int = 45  # candidates kept, chosen on the guided logits
    max_tokens: int = 3072  # decoder steps including a voice prompt; 86 steps make one second of audio
    seed: int | None = None  # the same seed, text, prompt and device give the same codes

    def __post_init__(self) -> None:
        if not 1.0 <= self.cfg_scale <= 10.0:
            raise ValueError(f"cfg_scale must be between 1 (off) and 10, got {self.cfg_scale}")
        if not 0.0 <= self.temperature <= 5.0:
            raise ValueError(f"temperature must be between 0 (greedy) and 5, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be above 0 and at most 1, got {self.top_p}")
        if not 1 <= self.top_k <= 1024:
            raise ValueError(f"top_k must be between 1 and 1024, got {self.top_k}")
        if not 2 <= self.max_tokens <= 100_000:
            raise ValueError(f"max_tokens must be at least 2, got {self.max_tokens}")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be between 0 and 2**63 - 1, got {self.seed}")


@dataclass(frozen=True, eq=False)
class VoicePrompt:
    """A voice to continue: what was said (with speaker tags) and its DAC codes, int (T, 9), undelayed."""

    transcript: str
    codes: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        codes = np.asarray(self.codes)
        if codes.ndim != 2 or codes.shape[0] < 1:
            raise ValueError(f"voice prompt codes must have shape (frames, channels), got {codes.shape}")
        if not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"voice prompt codes must be integers, got {codes.dtype}")
        check_codebook(codes, "voice prompt codes")
        if not self.transcript.strip():
            raise ValueError("a voice prompt needs the transcript of what its clip says")
        object.__setattr__(self, "codes", codes.astype(np.int64))


def resumed_frames(frames: np.ndarray, channels: int) -> np.ndarray:
    codes = np.asarray(frames)
    if codes.ndim != 2 or codes.shape[1] != channels or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(
            f"resume_from must be integer frames of shape (n, {channels}), got {codes.dtype} {codes.shape}"
        )
    check_codebook(codes, "resume_from codes")
    return codes.astype(np.int64)


def check_codebook(codes: np.ndarray, what: str) -> None:
    if codes.min() < 0 or codes.max() > 1023:
        raise ValueError(f"{what} must lie in 0..1023 (DAC codebook entries)")
