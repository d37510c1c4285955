"""The decode loop on the device: slot buffers, per-request prefill, one step for every slot, CUDA graphs.

The loop is gpt-fast's prefill / decode_one_token split with Dia's rules from transformers' generation_dia.py
and nari-labs/dia's generate: the delayed grid starts with BOS and the voice prompt, cells the prefill knows
are never resampled (transformers' apply_delay_mask), channel 0's EOS (or the length cap) starts a countdown
that forces EOS on channel c delay[c] steps later and PAD after it, and a slot is done once its last channel
has ended. One step is a pure function of static buffers, so on CUDA it is captured once per span bucket as
a CUDA graph and replayed; the host looks at the results only between chunks of steps.

Shapes: B slots, R = 2B rows (conditional rows first), P grid positions, C channels, V vocab, N noise steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tts_engine.dia import sampling
from tts_engine.dia.cache import CrossCache, SelfCache
from tts_engine.dia.delay import FREE, prefill_grid
from tts_engine.dia.model import DiaModel

NOT_ENDED = 2**62  # eos position of a slot whose channel 0 has not ended yet


@dataclass(frozen=True)
class Request:
    """What a slot needs to start: text ids (with any prompt transcript), prompt codes and sampling settings."""

    text_ids: Sequence[int]
    prompt_TxC: np.ndarray | None
    cfg_scale: float
    temperature: float  # 0 means greedy
    top_k: int
    top_p: float
    max_tokens: int  # grid positions including BOS and the prompt; channel 0 ends by max_tokens - 1
    generator: torch.Generator | None  # None for greedy


def spans(limit: int, step: int, first: int) -> tuple[int, ...]:
    """Bucket sizes first, 2*first, ... by doubling up to `step`, then every `step`, ending exactly at `limit`."""
    sizes, size = [], first
    while size < limit:
        sizes.append(size)
        size = size * 2 if size < step else size + step
    return (*sizes, limit)


class Decoder:
    """Device state for `slots` concurrent requests and the step that advances all of them at once."""

    def __init__(self, model: DiaModel, *, slots: int, noise_steps: int, use_graphs: bool) -> None:
        cfg = model.cfg
        dec = cfg.decoder
        param = next(model.parameters())
        self.model, self.cfg, self.slots = model, cfg, slots
        self.device, self.dtype = param.device, param.dtype
        # The countdown may run max_delay past the cap; a multiple of 64 keeps attention kernels on fast paths.
        self.positions = -(-(dec.max_positions + cfg.max_delay) // 64) * 64
        model.setup_rope(self.positions, self.device)
        dev = self.device
        self.cache = SelfCache.allocate(cfg, rows=2 * slots, length=self.positions, device=dev, dtype=self.dtype)
        self.cross = CrossCache.allocate(
            cfg, rows=2 * slots, max_text=cfg.encoder.max_positions, device=dev, dtype=self.dtype
        )
        shape_BxPxC = (slots, self.positions, dec.num_channels)
        self.grid = torch.zeros(shape_BxPxC, dtype=torch.long, device=dev)
        self.forced = torch.full(shape_BxPxC, FREE, dtype=torch.long, device=dev)
        self.pos = torch.zeros(slots, dtype=torch.long, device=dev)
        self.eos = torch.full((slots,), NOT_ENDED, dtype=torch.long, device=dev)
        self.last = torch.zeros(slots, dtype=torch.long, device=dev)
        self.live = torch.zeros(slots, dtype=torch.bool, device=dev)
        self.params = sampling.SamplingParams(
            cfg_scale=torch.ones(slots, device=dev),
            temperature=torch.ones(slots, device=dev),
            top_k=torch.ones(slots, dtype=torch.long, device=dev),
            top_p=torch.ones(slots, device=dev),
            greedy=torch.ones(slots, dtype=torch.bool, device=dev),
        )
        self.noise = torch.ones((noise_steps, slots, dec.num_channels, dec.vocab_size), device=dev)
        self.noise_step = torch.zeros(1, dtype=torch.long, device=dev)
        self.delays = torch.tensor(cfg.delay_pattern, dtype=torch.long, device=dev)
        self.slot_index = torch.arange(slots, device=dev)
        self.text_len = [0] * slots
        self.host_pos = [0] * slots  # positions as last read, so choosing spans needs no sync
        # Captured graphs need few span buckets; eager steps take fine ones and read no more cache than needed.
        # Masked keys add exact zeros, so the bucket never changes a result.
        self.self_spans = spans(self.positions, 512, 256) if use_graphs else spans(self.positions, 32, 32)
        self.cross_spans = spans(self.cross.max_text, 1024, 128) if use_graphs else spans(self.cross.max_text, 32, 32)
        self.generators: list[torch.Generator | None] = [None] * slots
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        if use_graphs:
            self._capture()

    @torch.inference_mode()
    def start(self, slot: int, request: Request) -> int:
        """Encode, prefill and arm `slot` for `request`; returns the prompt length in frames."""
        dec = self.cfg.decoder
        dev = self.device
        ids_1xL = torch.tensor([list(request.text_ids)], dtype=torch.long, device=dev)
        rows = torch.tensor([slot, self.slots + slot], device=dev)
        # The unconditional row reads as many zero bytes as the text has (transformers' CFG input).
        enc_2xLxD = self.model.encode(torch.cat((ids_1xL, torch.zeros_like(ids_1xL))))
        self.cross.fill(rows, self.model.cross_kv(enc_2xLxD))
        self.text_len[slot] = ids_1xL.shape[1]

        forced_PxC = torch.from_numpy(prefill_grid(request.prompt_TxC, self.cfg.delay_pattern, dec.bos_id))
        known = 1 + (0 if request.prompt_TxC is None else request.prompt_TxC.shape[0])
        self.forced[slot].fill_(FREE)
        self.forced[slot, : forced_PxC.shape[0]] = forced_PxC.to(dev)
        self.grid[slot].zero_()
        self.grid[slot, :known] = forced_PxC[:known].to(dev)
        if known > 1:  # positions 0..T-1 of the prompt go through the decoder in one causal pass
            tokens_2xTxC = self.grid[slot, : known - 1].unsqueeze(0).expand(2, -1, -1)
            pos_2xT = torch.arange(known - 1, device=dev).unsqueeze(0).expand(2, -1)
            self.model.decode(tokens_2xTxC, pos_2xT, self.cache, self.cross, rows, cross_span=self.text_len[slot])

        self.pos[slot] = known - 1
        self.host_pos[slot] = known - 1
        self.eos[slot] = NOT_ENDED
        self.last[slot] = request.max_tokens - 1
        greedy = request.temperature == 0
        self.params.cfg_scale[slot] = request.cfg_scale
        self.params.temperature[slot] = 1.0 if greedy else request.temperature
        self.params.top_k[slot] = request.top_k
        self.params.top_p[slot] = request.top_p
        self.params.greedy[slot] = greedy
        self.generators[slot] = request.generator
        self.live[slot] = True
        return known - 1

    def stop(self, slot: int) -> None:
        """Free `slot`: its rows keep being computed but nothing is written for it any more."""
        self.live[slot] = False
        self.generators[slot] = None
        self.text_len[slot] = 0

    def _step(self, self_span: int, cross_span: int) -> None:
        cfg = self.cfg
        dec = cfg.decoder
        slots = self.slots
        at = self.slot_index
        tokens_BxC = self.grid[at, self.pos]
        logits_Rx1xCxV = self.model.decode(
            tokens_BxC.repeat(2, 1).unsqueeze(1),
            self.pos.repeat(2).unsqueeze(1),
            self.cache,
            self.cross,
            self_span=self_span,
            cross_span=cross_span,
        )
        cond_BxCxV, uncond_BxCxV = logits_Rx1xCxV[:, 0].split(slots)
        scores_BxCxV = sampling.process(cond_BxCxV, uncond_BxCxV, self.params, dec.eos_id)
        noise_BxCxV = self.noise.index_select(0, self.noise_step).squeeze(0)
        next_BxC = sampling.draw(scores_BxCxV, noise_BxCxV, self.params.greedy)

        new_pos = (self.pos + 1).clamp(max=self.positions - 1)
        ended = self.eos < NOT_ENDED
        trigger = (next_BxC[:, 0] == dec.eos_id) | (new_pos >= self.last)
        eos = torch.where(~ended & trigger, new_pos, self.eos)
        since_Bx1 = (new_pos - eos)[:, None]
        counting = (eos < NOT_ENDED)[:, None]
        next_BxC = torch.where(counting & (since_Bx1 == self.delays), dec.eos_id, next_BxC)
        next_BxC = torch.where(counting & (since_Bx1 > self.delays), dec.pad_id, next_BxC)
        forced_BxC = self.forced[at, new_pos]
        next_BxC = torch.where(forced_BxC != FREE, forced_BxC, next_BxC)

        # A slot is done once its last channel has ended; done and idle slots are computed but never written.
        writing = self.live & ~(ended & (self.pos >= self.eos + cfg.max_delay))
        self.grid[at, new_pos] = torch.where(writing[:, None], next_BxC, self.grid[at, new_pos])
        self.eos.copy_(torch.where(writing, eos, self.eos))
        self.pos.copy_(torch.where(writing, new_pos, self.pos))
        self.noise_step.add_(1)

    def _spans_for(self, steps: int) -> tuple[int, int]:
        # No slot moves more than one position a step, so none passes its last-read position + steps here.
        live = (pos for pos, length in zip(self.host_pos, self.text_len, strict=True) if length)
        top = max(live, default=0) + steps + 1
        self_span = next(s for s in self.self_spans if s >= min(top, self.positions))
        longest = max(self.text_len)
        cross_span = next(s for s in self.cross_spans if s >= longest)
        return self_span, cross_span

    @torch.inference_mode()
    def run(self, steps: int) -> None:
        """Advance every slot by `steps` steps (at most the noise buffer's length), drawing each slot's noise."""
        if not 0 < steps <= self.noise.shape[0]:
            raise ValueError(f"steps must be 1..{self.noise.shape[0]}, got {steps}")
        for slot, generator in enumerate(self.generators):
            if generator is None:
                self.noise[:steps, slot].fill_(1.0)  # greedy rows use argmax; ones keep idle rows finite
            else:
                for i in range(steps):  # one draw per step, so chunking never changes a seeded request's noise
                    self.noise[i, slot].exponential_(generator=generator)
        self.noise_step.zero_()
        key = self._spans_for(steps)
        graph = self.graphs.get(key)
        for _ in range(steps):
            if graph is not None:
                graph.replay()
            else:
                self._step(*key)

    def read(self, slot: int, start: int, stop: int) -> tuple[np.ndarray, int, int]:
        """Grid rows start..stop-1 of `slot`, its position and its eos position (NOT_ENDED if none); syncs."""
        state = torch.stack((self.pos[slot], self.eos[slot])).cpu()
        rows = self.grid[slot, start : min(stop, self.positions)].cpu().numpy()
        self.host_pos[slot] = int(state[0])
        return rows, self.host_pos[slot], int(state[1])

    @torch.inference_mode()
    def _capture(self) -> None:
        """Capture one CUDA graph per (self span, cross span) bucket, with every slot idle."""
        pool = torch.cuda.graph_pool_handle()
        warmup = torch.cuda.Stream(self.device)
        warmup.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(warmup):
            for key in ((s, c) for s in self.self_spans for c in self.cross_spans):
                for _ in range(2):  # cuBLAS and the allocator settle before capture
                    self._step(*key)
        torch.cuda.current_stream(self.device).wait_stream(warmup)
        for self_span in self.self_spans:
            for cross_span in self.cross_spans:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    self._step(self_span, cross_span)
                self.graphs[(self_span, cross_span)] = graph
        self.noise_step.zero_()
