"""Tiny random Dia checkpoints made with transformers, and transformers' own generation as the reference.

The shapes cover what the full model has and a little more: grouped-query attention of several ratios, odd
head counts, grouped cross-attention, and delay patterns other than the default. The reference generator
prepares its inputs exactly as DiaProcessor does (delayed BOS/prompt prefill plus its mask), so its output is
what a transformers user gets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import DiaConfig as HFDiaConfig
from transformers import DiaForConditionalGeneration
from transformers.models.dia.configuration_dia import DiaDecoderConfig, DiaEncoderConfig
from transformers.models.dia.processing_dia import DiaProcessor

BOS, EOS, PAD = 1026, 1024, 1025


@dataclass(frozen=True)
class Shape:
    name: str
    enc_heads: int
    enc_kv: int
    enc_head_dim: int
    dec_heads: int
    dec_kv: int
    dec_head_dim: int
    cross_heads: int
    cross_kv: int
    delays: tuple[int, ...]
    max_positions: int = 128
    text_positions: int = 96  # encoder bytes


SHAPES = (
    Shape("gqa2", 2, 2, 8, 4, 2, 8, 4, 4, (0, 1, 3)),
    Shape("odd-heads-gqa3", 3, 3, 6, 3, 1, 6, 3, 3, (0, 2, 2, 5)),
    Shape("nine-channels-gqa4", 2, 1, 8, 4, 1, 8, 2, 1, (0, 8, 9, 10, 11, 12, 13, 14, 15), 160),
)


def hf_config(shape: Shape) -> HFDiaConfig:
    enc = DiaEncoderConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=shape.enc_heads,
        num_key_value_heads=shape.enc_kv,
        head_dim=shape.enc_head_dim,
        vocab_size=256,
        max_position_embeddings=shape.text_positions,
    )
    dec = DiaDecoderConfig(
        hidden_size=24,
        intermediate_size=40,
        num_hidden_layers=2,
        num_attention_heads=shape.dec_heads,
        num_key_value_heads=shape.dec_kv,
        head_dim=shape.dec_head_dim,
        cross_num_attention_heads=shape.cross_heads,
        cross_num_key_value_heads=shape.cross_kv,
        cross_head_dim=shape.dec_head_dim,
        cross_hidden_size=16,
        vocab_size=1028,
        num_channels=len(shape.delays),
        max_position_embeddings=shape.max_positions,
    )
    return HFDiaConfig(encoder_config=enc, decoder_config=dec, delay_pattern=list(shape.delays))


def build(shape: Shape, seed: int = 0, eos_scale: float | None = None) -> DiaForConditionalGeneration:
    """A random model; `eos_scale` makes channel 0's EOS logit strong enough to end lines on its own."""
    torch.manual_seed(seed)
    model = DiaForConditionalGeneration(hf_config(shape)).eval()
    if eos_scale is not None:
        with torch.no_grad():
            weight = model.logits_dense.weight
            noise = torch.randn(weight.shape[1], generator=torch.Generator().manual_seed(seed))
            weight[EOS] = eos_scale * noise * weight[:EOS].std()
    return model


def save(model: DiaForConditionalGeneration, folder: Path, *, sharded: bool = False) -> Path:
    model.save_pretrained(folder, max_shard_size="40KB" if sharded else "10GB")
    return folder


def delayed_prefill(prompt_TxC: np.ndarray | None, delays: tuple[int, ...]) -> torch.Tensor:
    """DiaProcessor's decoder_input_ids for one sample: (1, 1 + T + max_delay, C)."""
    channels = len(delays)
    known = 1 + (0 if prompt_TxC is None else len(prompt_TxC))
    seq_len = known + max(delays)
    prefill = torch.full((1, seq_len, channels), PAD, dtype=torch.long)
    prefill[0, 0] = BOS
    if prompt_TxC is not None:
        prefill[0, 1:known] = torch.from_numpy(prompt_TxC)
    index = DiaProcessor.build_indices(
        bsz=1, seq_len=seq_len, num_channels=channels, delay_pattern=list(delays), revert=False
    )
    return DiaProcessor.apply_audio_delay(prefill, PAD, BOS, index)


def reference_generate(
    model: DiaForConditionalGeneration,
    ids: list[int],
    *,
    prompt_TxC: np.ndarray | None = None,
    max_tokens: int = 60,
    cfg_scale: float = 3.0,
    top_k: int = 45,
) -> np.ndarray:
    """transformers' greedy generation, reverted and cut as DiaProcessor.batch_decode does: (T, C) codes."""
    delays = tuple(model.config.delay_pattern)
    decoder_input_ids = delayed_prefill(prompt_TxC, delays)
    text = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(
            input_ids=text,
            attention_mask=torch.ones_like(text),
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=torch.ones(decoder_input_ids.shape[:2], dtype=torch.long),
            do_sample=False,
            guidance_scale=cfg_scale,
            top_k=top_k,
            max_length=max_tokens,
        )
    sequence = out[0]
    index = DiaProcessor.build_indices(
        bsz=1, seq_len=sequence.shape[0], num_channels=len(delays), delay_pattern=list(delays), revert=True
    )
    reverted = DiaProcessor.apply_audio_delay(sequence[None], -1, -1, index)[0]
    start = decoder_input_ids.shape[1] - max(delays)  # get_audio_prompt_len: BOS frame + prompt
    end = sequence.shape[0] - int((sequence[:, 0] == PAD).sum()) - 1  # the EOS position of channel 0
    return reverted[start:end].numpy()
