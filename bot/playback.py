"""The hand-off from the event loop to discord.py's player thread: a jitter buffer and the source over it.

discord.py's AudioPlayer thread calls `read()` every 20 ms and must get one packet at once: a blocking read
makes it burst afterwards to catch up, and `b''` means the end (discord/player.py). So the buffer never
blocks: on an underrun the source returns Opus silence, and `b''` comes only once the end is drained
(research/discord.md §3.4, §5).
"""

from __future__ import annotations

import threading
from collections import deque

import discord

OPUS_SILENCE = b"\xf8\xff\xfe"


class JitterBuffer:
    """Packets from the event loop to the player thread. `read` never blocks."""

    def __init__(self) -> None:
        self._packets: deque[bytes] = deque()
        self._lock = threading.Lock()
        self._ended = False
        self.played = 0
        self.underruns = 0

    def put(self, packets: list[bytes]) -> None:
        with self._lock:
            self._packets.extend(packets)

    def end(self) -> None:
        """No more packets will come: drain what is left, then report the end."""
        with self._lock:
            self._ended = True

    def drop(self) -> None:
        """Stop now: forget what is buffered and end."""
        with self._lock:
            self._packets.clear()
            self._ended = True

    def __len__(self) -> int:
        with self._lock:
            return len(self._packets)

    @property
    def exhausted(self) -> bool:
        """Ended with nothing left to play."""
        with self._lock:
            return self._ended and not self._packets

    def read(self) -> bytes:
        with self._lock:
            if self._packets:
                self.played += 1
                return self._packets.popleft()
            if self._ended:
                return b""
            self.underruns += 1
            return OPUS_SILENCE


class StreamedOpusSource(discord.AudioSource):
    """A discord.py source over a jitter buffer; its packets are Opus already."""

    def __init__(self, buffer: JitterBuffer) -> None:
        self.buffer = buffer

    def read(self) -> bytes:
        return self.buffer.read()

    def is_opus(self) -> bool:
        return True
