"""Tiny random checkpoints on disk for tests that need a working engine (worker, launcher, audio)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from transformers import DacConfig, DacModel

from tests.engine import tiny


def tiny_dac_config(**overrides: object) -> DacConfig:
    # Same strides, codebooks and rate as descript/dac_44khz (so the same receptive field), small widths.
    options: dict[str, object] = dict(encoder_hidden_size=4, decoder_hidden_size=32, sampling_rate=44100)
    options.update(overrides)
    return DacConfig(**options)


def save_tiny_dac(folder: Path) -> Path:
    torch.manual_seed(0)
    DacModel(tiny_dac_config()).save_pretrained(folder)
    return folder


def save_tiny_dia(folder: Path) -> Path:
    """Nine channels like the DAC, room for 1024 steps (about 12 s) and 1024 text bytes, like the real model's
    text limit, so voice prompts and the planner's segments fit."""
    shape = dataclasses.replace(tiny.SHAPES[2], max_positions=1024, text_positions=1024)
    return tiny.save(tiny.build(shape), folder)
