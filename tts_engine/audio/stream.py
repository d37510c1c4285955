"""Streaming DAC decode: PCM for frames as they arrive, equal to decoding the whole line at once.

The DAC decoder is non-causal (symmetric convolutions), so an output sample depends on a bounded number of
frames on each side: its receptive field, computed from the architecture below (about 9.9 frames for the
44.1 kHz model: the first convolution, then per upsampling block a transposed convolution and three residual
units of dilation 1, 3, 9). Each window decodes the new frames plus that many frames of context on both sides
and keeps only the new frames' samples; every stride is even, so frame f maps exactly to samples
[512 f, 512 f + 512). With full context the result equals a full decode up to float rounding. Only the last
`context` frames are kept between windows, so the cost per second of audio does not grow with the line.

The windows lie on a fixed grid of frame indices (4, 8, 16, 32, then 48 frames each), whatever sizes the
frames arrive in: a convolution rounds differently over a window of another extent, so windows that followed
the pushes would make a line's audio bits depend on how its frames were batched (the chunks a scheduler
shared with other lines, or where a retried job took over). On the grid, the same codes give the same audio.
This is Orpheus-TTS's sliding-window idea with the window sized from the network, not guessed; parler-tts's
streamer re-decodes the whole prefix instead.
"""

from __future__ import annotations

import math

import numpy as np

from tts_engine.audio.codec import Codec

RESIDUAL_DILATIONS = (1, 3, 9)  # DacResidualUnit dilations in every decoder block
RESIDUAL_KERNEL = 7
EDGE_KERNEL = 7  # the decoder's first and last convolutions


def receptive_frames(upsampling_ratios: tuple[int, ...] | list[int]) -> int:
    """Frames of context each side of a frame that can change its samples: ceil of the exact radius, plus one."""
    radius = (EDGE_KERNEL // 2) * 1.0  # first conv, at the frame rate
    rate = 1  # samples per frame at the current layer
    for stride in upsampling_ratios:
        radius += 2.0 / rate  # the transposed conv (kernel 2s, padding ceil(s/2)) reaches < 2 input samples
        rate *= stride
        radius += sum((RESIDUAL_KERNEL // 2) * d for d in RESIDUAL_DILATIONS) / rate
    radius += (EDGE_KERNEL // 2) / rate  # last conv, at the sample rate
    return math.ceil(radius) + 1


FIRST_WINDOW = 4  # frames emitted by a line's first window: its latency
LARGEST_WINDOW = 48  # frames emitted by a window once playback is under way


def warm_up(codec: Codec) -> None:
    """Decode one window of each length from 1 frame to the largest window with its context on both sides
    (74 frames for the 44.1 kHz model), once, on a GPU.

    cuDNN plans each new convolution shape on first use; measured on an H100, that added ~70 ms to a line's
    first packet whenever its first window had a length not seen before. The grid's windows are all among
    these; only a line's last window (at `flush`) may be longer, and is planned at its first use.
    """
    if codec.device.type != "cuda":
        return  # CPU convolutions need no per-shape planning
    longest = LARGEST_WINDOW + 2 * receptive_frames(codec.upsampling_ratios)
    for frames in range(1, longest + 1):
        codec.decode(np.zeros((frames, codec.channels), dtype=np.int64))


class StreamingDecoder:
    """Feed undelayed frames with `push`, get PCM back as soon as its right context has arrived; `flush` at the end.

    `first` frames go out in the first window (the latency that matters); later windows double up to `largest`
    so the context overhead shrinks once playback is under way. The same frames give the same samples however
    they are split into pushes.
    """

    def __init__(
        self, codec: Codec, *, context: int | None = None, first: int = FIRST_WINDOW, largest: int = LARGEST_WINDOW
    ) -> None:
        self.codec = codec
        self.context = receptive_frames(codec.upsampling_ratios) if context is None else context
        self.first, self.largest = first, largest
        self.want = first
        self._frames = np.zeros((0, codec.channels), dtype=np.int64)
        self._offset = 0  # absolute index of _frames[0]
        self._emitted = 0  # frames whose audio has gone out

    def push(self, frames_nxC: np.ndarray) -> np.ndarray:
        """Audio float32 at 44.1 kHz for every window of the grid now final (maybe none)."""
        self._frames = np.concatenate((self._frames, np.asarray(frames_nxC, dtype=np.int64)))
        total = self._offset + len(self._frames)
        pieces = []
        while self._emitted + self.want + self.context <= total:  # the next window's right context is here
            pieces.append(self._decode(self._emitted + self.want, total_known=False))
            self.want = min(self.want * 2, self.largest)
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)

    def flush(self) -> np.ndarray:
        """Audio of every frame not yet emitted; the line is over."""
        total = self._offset + len(self._frames)
        if total == self._emitted:
            return np.zeros(0, dtype=np.float32)
        return self._decode(total, total_known=True)

    def _decode(self, stop: int, *, total_known: bool) -> np.ndarray:
        start = self._emitted
        lo = max(0, start - self.context)
        hi = self._offset + len(self._frames) if total_known else stop + self.context
        window = self._frames[lo - self._offset : hi - self._offset]
        audio = self.codec.decode(window)
        hop = self.codec.hop
        out = audio[(start - lo) * hop : (stop - lo) * hop]
        self._emitted = stop
        keep_from = max(0, stop - self.context)  # the left context of the next window
        self._frames = self._frames[keep_from - self._offset :]
        self._offset = keep_from
        return out
