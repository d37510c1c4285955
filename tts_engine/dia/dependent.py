"""What the kernels launched as programmatic dependent launches share (Hopper on; PTX's griddepcontrol): the
L2 prefetch a block issues while the kernel before it still runs.

Such a block may start before the kernel before it has finished, so until its `gdc_wait` it may touch nothing
that kernel writes. A prefetch to L2 is no such access: it loads nothing into registers and never faults, and
L2 is where every SM's reads and writes meet, so a line prefetched while another kernel writes it is never
read stale. The skinny matmuls ask L2 for their weights this way (skinny_kernel.py), split attention for its
keys and values (kernels.py).
"""

from __future__ import annotations

import triton
import triton.language as tl

LINE_BYTES = 128  # an L2 line


def lines(values: int, itemsize: int, most: int) -> tuple[int, int]:
    """(lines, values a line) covering `values` contiguous values of `itemsize` bytes, at most `most` lines
    (a power of two: the prefetch's tile)."""
    line = LINE_BYTES // itemsize
    return min(most, triton.next_power_of_2(triton.cdiv(values, line))), line


@triton.jit
def prefetch_l2(base, rows, rows_ok, k_lo, k_hi, stride, LINES: tl.constexpr, LINE: tl.constexpr):
    """Asks L2 for LINES 128-byte lines (LINE values each) of each of these rows from column k_lo, short of
    k_hi: `prefetch.global.L2`."""
    ks = k_lo + tl.arange(0, LINES) * LINE
    ok = rows_ok[:, None] & (ks < k_hi)[None, :]
    at = base + rows[:, None] * stride + ks[None, :]
    tl.inline_asm_elementwise(
        "{ .reg .pred p; setp.ne.b32 p, $2, 0; @p prefetch.global.L2 [$1]; mov.b32 $0, 0; }",
        "=r,l,r", [at, ok.to(tl.int32)], dtype=tl.int32, is_pure=False, pack=1,
    )  # fmt: skip
