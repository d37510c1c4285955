"""The delay pattern as index math: channel c of frame f sits at decoder position f + delay[c].

Follows nari-labs/dia's build_delay_indices/apply_audio_delay and transformers' DiaProcessor.build_indices:
the prefilled grid holds BOS where f < 0 and the voice prompt's codes where known; every later cell is free
for the decoder to fill. Reverting reads frame f back from positions f + delay[c].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FREE = -1  # a cell of the prefilled grid that the decoder samples (transformers marks these with PAD)


def prefill_grid(prompt_TxC: np.ndarray | None, delays: Sequence[int], bos_id: int) -> np.ndarray:
    """The known cells of the delayed grid: int64 (1 + T + max_delay, C), BOS / prompt codes / FREE.

    Frame 0 is the BOS frame and frames 1..T are the prompt, so every channel is known at positions 0..T
    and channel c keeps forced prompt values until position T + delay[c].
    """
    channels = len(delays)
    known = 1 + (0 if prompt_TxC is None else prompt_TxC.shape[0])
    frames_FxC = np.full((known, channels), bos_id, dtype=np.int64)
    if prompt_TxC is not None:
        frames_FxC[1:] = prompt_TxC
    grid = np.full((known + max(delays), channels), FREE, dtype=np.int64)
    for c, delay in enumerate(delays):
        grid[:delay, c] = bos_id
        grid[delay : delay + known, c] = frames_FxC[:, c]
    return grid


def undelay(grid_PxC: np.ndarray, delays: Sequence[int], start: int, stop: int) -> np.ndarray:
    """Frames `start`..`stop - 1` of a delayed grid: int64 (stop - start, C). Needs rows up to stop - 1 + max delay."""
    count = max(0, stop - start)
    frames = np.empty((count, len(delays)), dtype=np.int64)
    for c, delay in enumerate(delays):
        frames[:, c] = grid_PxC[start + delay : start + delay + count, c]
    return frames
