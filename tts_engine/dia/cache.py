"""Static caches, allocated once per engine: self-attention keys/values and cross-attention keys/values.

Like gpt-fast's KVCache, shapes never change after allocation, so a decode step can be captured as a CUDA
graph. Rows come in pairs per request slot: row 2b is slot b's conditional pass, row 2b + 1 its unconditional
one (classifier-free guidance runs as a doubled batch, as in nari-labs/dia's KVCache), so the first W slots
are a plain slice of every buffer and a batch-size bucket works on views.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tts_engine.dia.config import DiaConfig


@dataclass
class SelfCache:
    """Per decoder layer, keys and values (rows, K, length, E)."""

    k: list[Tensor]
    v: list[Tensor]
    length: int

    @classmethod
    def allocate(cls, cfg: DiaConfig, *, rows: int, length: int, device: torch.device, dtype: torch.dtype) -> SelfCache:
        dec = cfg.decoder
        shape = (rows, dec.num_kv_heads, length, dec.head_dim)
        k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(dec.num_layers)]
        v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(dec.num_layers)]
        return cls(k, v, length)

    def clone(self) -> SelfCache:
        """A copy of every layer's keys and values, for running a step twice from the same cache."""
        return SelfCache([k.clone() for k in self.k], [v.clone() for v in self.v], self.length)


@dataclass
class CrossCache:
    """Per decoder layer, cross-attention keys and values (rows, K, max_text, E); `lengths` (rows,) counts the
    real text bytes of each row (a row attends to its first `lengths[row]`), so texts of any length share
    the buffers."""

    k: list[Tensor]
    v: list[Tensor]
    lengths: Tensor

    @classmethod
    def allocate(
        cls, cfg: DiaConfig, *, rows: int, max_text: int, device: torch.device, dtype: torch.dtype
    ) -> CrossCache:
        dec = cfg.decoder
        shape = (rows, dec.cross_num_kv_heads, max_text, dec.cross_head_dim)
        k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(dec.num_layers)]
        v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(dec.num_layers)]
        # A row with no keys would make attention NaN; unused rows attend to one zero key.
        lengths = torch.ones(rows, device=device, dtype=torch.long)
        return cls(k, v, lengths)

    def fill(self, rows: Tensor, kv: list[tuple[Tensor, Tensor]]) -> None:
        """Store one request's keys and values (len(rows), K, L, E) per layer in `rows`; the rest go unread."""
        length = kv[0][0].shape[2]
        for layer, (k, v) in enumerate(kv):
            self.k[layer][rows, :, :length] = k
            self.v[layer][rows, :, :length] = v
        self.lengths[rows] = length

    @property
    def max_text(self) -> int:
        return self.k[0].shape[2]
