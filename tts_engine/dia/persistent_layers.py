"""The host side of megakernel.py: `PersistentLayers` holds the persistent kernel's buffers and the table of
each layer's weights and caches, sizes its grid and launches it for a decode step; `check` decides at load
whether it may serve (DiaModel.use_decode_kernels with persistent_layers). Opt-in until an H100 run measures it
faster than the layer loop (kernel_step.residual), which it replaces for one-request steps."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import triton
from torch import Tensor

from tts_engine.dia import kernels, megakernel
from tts_engine.dia.dependent import lines
from tts_engine.dia.kernels import attention_tile, pow2
from tts_engine.dia.linear import block_rows, norm_chunk

if TYPE_CHECKING:
    from tts_engine.dia.cache import CrossCache, SelfCache
    from tts_engine.dia.model import DiaModel


@dataclass(frozen=True)
class Shapes:
    """Block shapes (output columns, K a loop step) of the projections, and the launch's warps and stages: one
    kernel, so one setting of each for every phase (`bench/engine.py --against-persistent-layers` times them). The
    defaults compile for sm_90 in bfloat16 to 255 registers and no spill (8 warps; at 4, or with 256-deep steps
    for all but the down projection, it spills: tests/engine/kernel_build.py builds it)."""

    qkv: tuple[int, int] = (32, 128)  # 96 bands of 3072 outputs: one a block (at 16, 60 of 132 blocks took two)
    hidden: tuple[int, int] = (16, 128)  # the 2048-wide outputs: self and cross output, cross queries
    gate_up: tuple[int, int] = (16, 128)
    down: tuple[int, int] = (16, 256)
    warps: int = 8
    stages: int = 3
    per_sm: int = 1  # resident blocks an SM
    prefetch: bool = True  # each block asks L2 for its next band while it waits at a barrier (not interpreted)


class PersistentLayers:
    """The megakernel for decode steps of `rows` rows: `__call__` runs every decoder layer and returns the
    residual stream (x, delta) that the final norm and the logits take. Build it before any graph capture; its
    buffers live as long as it does (captured graphs read them by address)."""

    def __init__(self, model: DiaModel, *, rows: int = 2, shapes: Shapes | None = None,
                 programs: int | None = None) -> None:  # fmt: skip
        dec = model.cfg.decoder
        layers = model.decoder().typed_layers()
        param = layers[0].mlp.down_proj.weight
        self.device, self.dtype, self.rows = param.device, param.dtype, rows
        self.shapes = shapes or Shapes()
        self.eps = dec.norm_eps
        self.layers = len(layers)
        self.dims = (dec.hidden_size, dec.num_heads, dec.num_kv_heads, dec.head_dim, dec.cross_num_heads,
                     dec.cross_num_kv_heads, dec.cross_head_dim, dec.intermediate_size)  # fmt: skip
        self._base = param  # every offset below counts from here, in values of the model's dtype
        self._weights: list[list[Tensor]] = []
        for layer in layers:
            qkv = layer.self_attention.qkv_proj
            if qkv is None:
                raise ValueError("the persistent layers need the fused q/k/v projection (DiaModel.fuse)")
            self._weights.append([
                qkv.weight, layer.self_attention.o_proj.weight, layer.cross_attention.q_proj.weight,
                layer.cross_attention.o_proj.weight, layer.mlp.gate_up_proj.weight, layer.mlp.down_proj.weight,
                layer.pre_sa_norm.weight, layer.pre_ca_norm.weight, layer.pre_mlp_norm.weight,
            ])  # fmt: skip
        hidden, heads, _, head_dim, cross_heads, _, cross_dim, inter = self.dims
        width = max(heads * head_dim, cross_heads * cross_dim)
        dev, dtype = self.device, self.dtype
        self.xs = torch.zeros((2, rows, hidden), device=dev, dtype=dtype)
        self.delta = torch.zeros((rows, hidden), device=dev, dtype=dtype)
        self.zeros = torch.zeros((rows, hidden), device=dev, dtype=dtype)  # layer 0's delta; never written
        self.q = torch.zeros((rows, width), device=dev, dtype=dtype)
        self.attn = torch.zeros((rows, width), device=dev, dtype=dtype)
        self.act = torch.zeros((rows, inter), device=dev, dtype=dtype)
        self.self_len = torch.ones(rows, device=dev, dtype=torch.long)
        self.sync = torch.zeros(2, device=dev, dtype=torch.int32)
        self.att_counts = torch.zeros(rows * max(dec.num_kv_heads, dec.cross_num_kv_heads), device=dev,
                                      dtype=torch.int32)  # fmt: skip
        self.programs = programs if programs is not None else self._resident_programs()
        self.part = torch.zeros(rows * max(heads, cross_heads) * self.programs * max(head_dim, cross_dim),
                                device=dev, dtype=torch.float32)  # fmt: skip
        self.lse = torch.zeros(rows * max(heads, cross_heads) * self.programs, device=dev, dtype=torch.float32)
        self._tables: dict[tuple[int, ...], Tensor] = {}
        self._resident: set[tuple[tuple[str, str], ...]] = set()

    def serves(self, rows: int) -> bool:
        return rows == self.rows

    def __call__(
        self, x_Rx1xD: Tensor, pos_R: Tensor, cache: SelfCache, cross: CrossCache, self_span: int, cross_span: int,
        rope_2xPxE: Tensor, *, persistent: bool = True,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        """(x, delta), each (R, 1, D), after every decoder layer; writes the step's keys and values into the
        cache at pos_R. `persistent=False` runs each phase of each layer as a launch of its own (the tests'
        way through Triton's interpreter, which cannot run blocks that wait for each other)."""
        hidden, heads, kv_heads, head_dim, cross_heads, cross_kv_heads, cross_dim, inter = self.dims
        rows = self.rows
        assert x_Rx1xD.shape == (rows, 1, hidden) and pos_R.shape == (rows,)
        table = self._table(cache, cross)
        assert x_Rx1xD.is_contiguous() and x_Rx1xD.dtype == self.dtype
        torch.add(pos_R, 1, out=self.self_len)  # a row attends to positions 0..pos
        self_block, _ = attention_tile(head_dim, self.dtype.itemsize)
        cross_block, _ = attention_tile(cross_dim, self.dtype.itemsize)
        self_splits, self_chunk = _splits(rows * kv_heads, self_span, self_block, self.programs)
        cross_splits, cross_chunk = _splits(rows * cross_kv_heads, cross_span, cross_block, self.programs)
        norm_m, norm_k = norm_chunk(rows, hidden)
        line_count, line = lines(max(hidden, inter), self.dtype.itemsize, 16)
        shapes = self.shapes
        k_cache, cross_k = cache.k[0], cross.k[0]
        args = (
            self._base, table, x_Rx1xD, self.zeros, self.xs, self.delta, self.q, self.attn, self.act, rope_2xPxE,
            pos_R, self.self_len,
            cross.lengths, self.part, self.lse, self.att_counts, self.sync,
        )  # fmt: skip
        sizes = (
            self.eps, hidden, heads, kv_heads, head_dim, cross_heads, cross_kv_heads, cross_dim, inter,
            *k_cache.stride()[:3], *cross_k.stride()[:3], *rope_2xPxE.stride()[:2],
            self_span, self_chunk, self_splits, cross_span, cross_chunk, cross_splits,
        )  # fmt: skip
        constants = dict(
            BLOCK_M=block_rows(rows), NORM_M=norm_m, NORM_K=norm_k, BN_QKV=shapes.qkv[0], BK_QKV=shapes.qkv[1],
            BN_D=shapes.hidden[0], BK_D=shapes.hidden[1], BN_GU=shapes.gate_up[0], BK_GU=shapes.gate_up[1],
            BN_DOWN=shapes.down[0], BK_DOWN=shapes.down[1], DOT_F32=kernels.interpreting(),
            PRECISION="ieee" if self.dtype == torch.float32 else "tf32",
            # Attention always merges (one split too) over as many splits as it may have at any span: one build
            # serves every span bucket the decoder captures, where each would otherwise compile its own.
            SG=pow2(heads // kv_heads), SN=self_block, SE=pow2(head_dim), S_FINAL=False,
            SMG=pow2(heads // kv_heads, 1), SS=pow2(max(1, self.programs // (rows * kv_heads)), 2),
            CG=pow2(cross_heads // cross_kv_heads), CN=cross_block, CE=pow2(cross_dim), C_FINAL=False,
            CMG=pow2(cross_heads // cross_kv_heads, 1), CS=pow2(max(1, self.programs // (rows * cross_kv_heads)), 2),
            PREFETCH=shapes.prefetch and not kernels.interpreting(), LINES=line_count, LINE=line,
            num_warps=shapes.warps, num_stages=shapes.stages,
        )  # fmt: skip
        grid, kernel = (self.programs,), megakernel.decoder_layers
        if persistent:
            self._check_resident((*args, rows, 0, self.layers, self.programs, *sizes), constants)
            kernel[grid](*args, rows, 0, self.layers, self.programs, *sizes, ONLY=-1, **constants)
        else:
            for layer in range(self.layers):
                for phase in range(megakernel.PHASES):
                    kernel[grid](*args, rows, layer, layer + 1, self.programs, *sizes, ONLY=phase, **constants)
        return self.xs[self.layers % 2][:, None], self.delta[:, None]

    def _table(self, cache: SelfCache, cross: CrossCache) -> Tensor:
        """Each layer's offsets (megakernel.FIELDS int64 values) from the base: its weights and norms, then its
        caches. Made once per set of caches, at an eager step (the decoder's warm-up runs each before capture)."""
        caches = [cache.k, cache.v, cross.k, cross.v]
        key = tuple(t.data_ptr() for group in caches for t in group)
        table = self._tables.get(key)
        if table is not None:
            return table
        if self.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("the persistent layers meet these caches first in a graph capture: run a step eagerly")
        for group in caches:
            if group[0].dtype != self.dtype or any(t.stride() != group[0].stride() for t in group):
                raise ValueError("every layer's cache must have the model's dtype and the same strides")
        rows = [
            [self._offset(t) for t in [*weights, cache.k[i], cache.v[i], cross.k[i], cross.v[i]]]
            for i, weights in enumerate(self._weights)
        ]
        padded = [r + [0] * (megakernel.FIELDS - len(r)) for r in rows]
        table = torch.tensor(padded, dtype=torch.int64, device=self.device)
        self._tables[key] = table
        return table

    def _offset(self, t: Tensor) -> int:
        """t's distance from the base in values: on CUDA a whole number of 16-value steps, as the kernel tells the
        compiler (so its loads are 16-byte vectors; CUDA's allocator aligns every tensor to 512 bytes)."""
        if t.dtype != self.dtype or t.stride(-1) != 1:
            raise ValueError(f"a tensor of {t.dtype} with strides {t.stride()} cannot join the persistent layers")
        distance = t.data_ptr() - self._base.data_ptr()
        step = (16 if self.device.type == "cuda" else 1) * self.dtype.itemsize
        if distance % step:
            raise ValueError(f"a tensor lies {distance} bytes from the base, not a multiple of {step}")
        return distance // self.dtype.itemsize

    def _resident_programs(self) -> int:
        """Blocks a launch has: `Shapes.per_sm` an SM on CUDA (`_check_resident` makes sure they fit), 1 on the
        CPU (Triton's interpreter runs blocks one after another, so a persistent launch of more never ends)."""
        if self.device.type != "cuda" or kernels.interpreting():
            return 1
        return self.shapes.per_sm * torch.cuda.get_device_properties(self.device).multi_processor_count

    def _check_resident(self, args: tuple[object, ...], constants: Mapping[str, object]) -> None:
        """Refuse (RuntimeError) a persistent launch whose blocks could not all be resident at once: it would wait
        for ever at its first barrier. From the compiled kernel's registers and shared memory, once a
        specialisation (Triton's `warmup` compiles without launching)."""
        key = tuple(sorted((k, str(v)) for k, v in constants.items()))
        if self.device.type != "cuda" or kernels.interpreting() or key in self._resident:
            return
        compiled = megakernel.decoder_layers.warmup(*args, grid=(1,), ONLY=-1, **constants)
        compiled._init_handles()  # loads the module, which reads its registers
        limits = triton.runtime.driver.active.utils.get_device_properties(self.device.index or 0)
        warps = int(constants["num_warps"])  # type: ignore[call-overload]
        fits = limits["max_num_regs"] // max(1, compiled.n_regs * 32 * warps)
        shared = compiled.metadata.shared
        if shared:
            fits = min(fits, limits["max_shared_mem"] // shared)
        if fits < self.shapes.per_sm:
            raise RuntimeError(
                f"{self.shapes.per_sm} blocks an SM of the persistent layers do not fit ({compiled.n_regs} registers"
                f" a thread, {shared} bytes of shared memory a block)"
            )
        self._resident.add(key)


def _splits(row_kv: int, span: int, block_n: int, programs: int) -> tuple[int, int]:
    """(splits, keys per split) of an attention phase: as many whole tiles a split as leave at most one item
    (row, kv head, split) a block, for a block that takes two holds the whole grid at the next barrier (where
    kernels.plan_splits, for launches of their own, rounds up: extra blocks queue there)."""
    tiles = triton.cdiv(span, block_n)
    splits = max(1, min(tiles, programs // row_kv))
    chunk = triton.cdiv(tiles, splits) * block_n
    return triton.cdiv(span, chunk), chunk


def check(model: DiaModel, layers: PersistentLayers, *, span: int = 256, text: int = 64) -> str | None:
    """Why `layers` cannot serve this model here, or None. Run once at load, on random caches of its own:
    - the kernel fails to build or launch;
    - two persistent launches on the same inputs give other bits, or leave their counts non-zero (a barrier that
      does not hold makes a phase read what another block has not yet written, which varies from run to run);
    - a persistent launch differs from the same phases launched one by one (no barriers; separately compiled, so
      compared within rounding: 1e-5 of the largest value in float32, 2e-2 in bfloat16);
    - its residual stream differs from the layer loop's (kernel_step.residual, whose projections may round
      otherwise: 1e-4 in float32; in bfloat16 only gross errors, 0.25, as the float32 tests check the rest)."""
    from tts_engine.dia import kernel_step
    from tts_engine.dia.cache import CrossCache, SelfCache

    cfg, dev, dtype, rows = model.cfg, layers.device, layers.dtype, layers.rows
    if model.rope is None or model.rope.shape[1] < span or model.rope.device != dev:
        model.setup_rope(span, dev)
    rope = model.rope
    assert rope is not None
    gen = torch.Generator(device=dev).manual_seed(0)
    cache = SelfCache.allocate(cfg, rows=rows, length=span, device=dev, dtype=dtype)
    cross = CrossCache.allocate(cfg, rows=rows, max_text=text, device=dev, dtype=dtype)
    for t in (*cache.k, *cache.v, *cross.k, *cross.v):
        t.copy_(torch.randn(t.shape, generator=gen, device=dev).to(dtype))
    cross.lengths.copy_(torch.arange(rows, device=dev) * 7 % text + 1)
    pos_R = span - 1 - torch.arange(rows, device=dev) * 29 % span
    x_Rx1xD = torch.randn((rows, 1, cfg.decoder.hidden_size), generator=gen, device=dev).to(dtype)
    results: dict[str, tuple[Tensor, list[Tensor]]] = {}
    for way in ("persistent", "again", "phases", "loop"):
        copy = cache.clone()
        try:
            if way == "loop":
                x, delta = kernel_step.residual(model, x_Rx1xD, pos_R, copy, cross, span, text)
            else:
                x, delta = layers(x_Rx1xD, pos_R, copy, cross, span, text, rope, persistent=way != "phases")
        except Exception as exc:  # Triton's compile and launch errors have no common type
            return f"{type(exc).__name__}: {exc}"
        results[way] = ((x.float() + delta.float()).clone(), copy.k + copy.v)
    (persistent, written), (again, rewritten) = results["persistent"], results["again"]
    if not torch.equal(persistent, again) or not all(map(torch.equal, written, rewritten)):
        return "two persistent launches on the same inputs gave other bits (a grid barrier that does not hold?)"
    if layers.sync.any() or layers.att_counts.any():
        return "the persistent layers left their counts non-zero"
    float32 = dtype == torch.float32
    for way, tolerance, what in (
        ("phases", 1e-5 if float32 else 2e-2, "its phases launched one by one"),
        ("loop", 1e-4 if float32 else 0.25, "the layer loop"),
    ):
        expected, expected_written = results[way]
        error = max(relative_error(persistent, expected), *map(relative_error, written, expected_written))
        if error > tolerance:
            return f"the persistent layers differ from {what} by {error:.3g}"
    return None


def relative_error(actual: Tensor, expected: Tensor) -> float:
    """The largest difference, as a share of the largest value expected."""
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max().clamp(min=1e-30)).item()
