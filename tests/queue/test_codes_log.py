"""The codes log a retry goes on from (tts_engine/worker_store.py): what is joined, and what is dropped."""

from __future__ import annotations

import msgpack
import numpy as np

from tts_engine.rendering import CodesChunk
from tts_engine.worker_store import encode_log, resumable

REV = "dia-a:dac-b:opus96000"


def _chunk(segment: int, start: int, frames: int, *, last: bool = False, channels: int = 3) -> CodesChunk:
    codes = np.arange(start, start + frames * channels, dtype="<i2").reshape(frames, channels) + 100 * segment
    return CodesChunk(segment, start, frames, channels, codes.tobytes(), last)


def _frames(chunk: CodesChunk) -> np.ndarray:
    return np.frombuffer(chunk.codes, dtype="<i2").reshape(chunk.frames, chunk.channels)


def test_attempts_join_into_each_segment_s_chunks() -> None:
    first = encode_log([_chunk(0, 0, 4), _chunk(0, 4, 2), _chunk(0, 6, 0, last=True), _chunk(1, 0, 3)], REV)
    assert len(first) == 1 and encode_log([], REV) == [], "an entry per emitted batch, none for no codes"
    second = encode_log([_chunk(1, 3, 5)], REV)  # a retry goes on from frame 3 of the second segment
    joined = resumable([*first, *second], REV)
    assert joined == {
        0: [_chunk(0, 0, 4), _chunk(0, 4, 2), _chunk(0, 6, 0, last=True)],
        1: [_chunk(1, 0, 3), _chunk(1, 3, 5)],
    }
    np.testing.assert_array_equal(_frames(joined[1][1]), np.arange(3, 18).reshape(5, 3) + 100)


def test_what_does_not_follow_on_is_dropped_keeping_what_came_before() -> None:
    entries = encode_log([_chunk(0, 0, 4)], REV) + encode_log([_chunk(0, 6, 2), _chunk(0, 8, 2)], REV)  # a gap
    entries += encode_log([_chunk(1, 0, 2)], "dia-other:dac-b:opus96000")  # other weights made these
    entries += encode_log([_chunk(2, 0, 2, last=True)], REV) + encode_log([_chunk(2, 2, 1)], REV)  # after the end
    assert resumable(entries, REV) == {0: [_chunk(0, 0, 4)], 2: [_chunk(2, 0, 2, last=True)]}


def test_an_unreadable_entry_ends_the_log() -> None:
    entries = encode_log([_chunk(0, 0, 4)], REV)
    entries.append(msgpack.packb({"v": 99, "what": "a newer worker's entry"}))
    entries += encode_log([_chunk(0, 4, 4)], REV)
    assert resumable(entries, REV) == {0: [_chunk(0, 0, 4)]}
    assert resumable([b"\xc1"], REV) == {}
