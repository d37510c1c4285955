"""Architecture config of a Dia checkpoint in its transformers layout (config.json), as frozen dataclasses.

Field meanings follow transformers' configuration_dia.py (DiaConfig, DiaEncoderConfig, DiaDecoderConfig);
both the 4.53-era file of nari-labs/Dia-1.6B-0626 (`rope_theta`, special ids at the top level) and the
5.x form (`rope_parameters`, special ids in the decoder) are read. Anything this engine does not implement
(another activation, scaled RoPE, a first channel with a delay) is refused by name instead of run wrongly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """config.json is missing, malformed, or describes something this engine cannot run."""


@dataclass(frozen=True)
class EncoderConfig:
    num_layers: int = 12
    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_heads: int = 16
    num_kv_heads: int = 16
    head_dim: int = 128
    vocab_size: int = 256  # UTF-8 bytes; 1 and 2 double as [S1] and [S2]
    max_positions: int = 1024  # text bytes, transcript of a voice prompt included
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0


@dataclass(frozen=True)
class DecoderConfig:
    num_layers: int = 18
    hidden_size: int = 2048
    intermediate_size: int = 8192
    num_heads: int = 16
    num_kv_heads: int = 4
    head_dim: int = 128
    cross_num_heads: int = 16
    cross_num_kv_heads: int = 16
    cross_head_dim: int = 128
    cross_hidden_size: int = 1024  # the encoder's hidden size
    vocab_size: int = 1028  # 1024 DAC codes + EOS, PAD, BOS (+1 unused)
    num_channels: int = 9  # DAC codebooks
    max_positions: int = 3072  # decoder steps, voice prompt included (~35.7 s of audio)
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    eos_id: int = 1024
    pad_id: int = 1025
    bos_id: int = 1026


@dataclass(frozen=True)
class DiaConfig:
    encoder: EncoderConfig = EncoderConfig()
    decoder: DecoderConfig = DecoderConfig()
    delay_pattern: tuple[int, ...] = (0, 8, 9, 10, 11, 12, 13, 14, 15)

    @property
    def max_delay(self) -> int:
        return max(self.delay_pattern)

    @property
    def decode_positions(self) -> int:
        """Positions a decoder's self-attention cache holds: every step a line may take (its frames, then the
        delay pattern's tail), rounded up to a multiple of 64 for the attention's key blocks."""
        return -(-(self.decoder.max_positions + self.max_delay) // 64) * 64

    @property
    def longest_span(self) -> int:
        """The most keys a decode step's attention reads: the self-attention cache (its last span bucket reads
        all of it) or the text bytes (cross)."""
        return max(self.decode_positions, self.encoder.max_positions)

    @classmethod
    def from_file(cls, path: Path) -> DiaConfig:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path} does not exist") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None
        try:
            return cls.from_dict(raw)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DiaConfig:
        if raw.get("model_type", "dia") != "dia":
            raise ConfigError(f"model_type is {raw.get('model_type')!r}, not 'dia'")
        enc, dec = raw.get("encoder_config"), raw.get("decoder_config")
        if not isinstance(enc, dict) or not isinstance(dec, dict):
            raise ConfigError("not a transformers Dia config: encoder_config and decoder_config are missing")
        for part, name in ((enc, "encoder_config"), (dec, "decoder_config")):
            if part.get("hidden_act", "silu") != "silu":
                raise ConfigError(f"{name}.hidden_act is {part['hidden_act']!r}; only 'silu' is supported")
        encoder = EncoderConfig(
            num_layers=_int(enc, "num_hidden_layers", 12),
            hidden_size=_int(enc, "hidden_size", 1024),
            intermediate_size=_int(enc, "intermediate_size", 4096),
            num_heads=_int(enc, "num_attention_heads", 16),
            num_kv_heads=_int(enc, "num_key_value_heads", 16),
            head_dim=_int(enc, "head_dim", 128),
            vocab_size=_int(enc, "vocab_size", 256),
            max_positions=_int(enc, "max_position_embeddings", 1024),
            norm_eps=float(enc.get("norm_eps", 1e-5)),
            rope_theta=_rope_theta(enc, "encoder_config"),
        )

        def special(name: str, default: int) -> int:
            value = dec.get(name, raw.get(name))
            return default if value is None else int(value)

        decoder = DecoderConfig(
            num_layers=_int(dec, "num_hidden_layers", 18),
            hidden_size=_int(dec, "hidden_size", 2048),
            intermediate_size=_int(dec, "intermediate_size", 8192),
            num_heads=_int(dec, "num_attention_heads", 16),
            num_kv_heads=_int(dec, "num_key_value_heads", 4),
            head_dim=_int(dec, "head_dim", 128),
            cross_num_heads=_int(dec, "cross_num_attention_heads", 16),
            cross_num_kv_heads=_int(dec, "cross_num_key_value_heads", 16),
            cross_head_dim=_int(dec, "cross_head_dim", 128),
            cross_hidden_size=_int(dec, "cross_hidden_size", 1024),
            vocab_size=_int(dec, "vocab_size", 1028),
            num_channels=_int(dec, "num_channels", 9),
            max_positions=_int(dec, "max_position_embeddings", 3072),
            norm_eps=float(dec.get("norm_eps", 1e-5)),
            rope_theta=_rope_theta(dec, "decoder_config"),
            eos_id=special("eos_token_id", 1024),
            pad_id=special("pad_token_id", 1025),
            bos_id=special("bos_token_id", 1026),
        )
        delays = raw.get("delay_pattern") or [0, 8, 9, 10, 11, 12, 13, 14, 15]
        config = cls(encoder=encoder, decoder=decoder, delay_pattern=tuple(int(d) for d in delays))
        config.validate()
        return config

    def validate(self) -> None:
        enc, dec = self.encoder, self.decoder
        if len(self.delay_pattern) != dec.num_channels:
            raise ConfigError(f"delay_pattern has {len(self.delay_pattern)} entries for {dec.num_channels} channels")
        if self.delay_pattern[0] != 0 or min(self.delay_pattern) < 0:
            # Only channel 0 may emit EOS, and the countdown is measured from it: it must be undelayed.
            raise ConfigError(f"delay_pattern must start with 0 and have no negative delays: {self.delay_pattern}")
        if enc.num_heads % enc.num_kv_heads or dec.num_heads % dec.num_kv_heads:
            raise ConfigError("attention heads must be a multiple of key/value heads")
        if dec.cross_num_heads % dec.cross_num_kv_heads:
            raise ConfigError("cross-attention heads must be a multiple of its key/value heads")
        if dec.cross_hidden_size != enc.hidden_size:
            raise ConfigError(f"cross_hidden_size {dec.cross_hidden_size} != encoder hidden_size {enc.hidden_size}")
        if enc.head_dim % 2 or dec.head_dim % 2:
            raise ConfigError("head_dim must be even for rotary embeddings")
        if not dec.eos_id < dec.pad_id < dec.vocab_size or dec.bos_id >= dec.vocab_size:
            # The channel filter masks every id from EOS upward, so the special ids must sit above the codes.
            raise ConfigError(f"special ids eos={dec.eos_id} pad={dec.pad_id} bos={dec.bos_id} do not fit the vocab")


def _int(part: dict[str, Any], key: str, default: int) -> int:
    value = part.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    return value


def _rope_theta(part: dict[str, Any], name: str) -> float:
    params = part.get("rope_parameters") or {}
    scaling = part.get("rope_scaling")
    kind = params.get("rope_type", "default")
    if kind != "default" or scaling not in (None, {}):
        raise ConfigError(f"{name} asks for {kind!r} RoPE scaling; only plain RoPE is supported")
    return float(params.get("rope_theta", part.get("rope_theta", 10000.0)))
