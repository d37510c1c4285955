"""Dia with random weights for the benchmarks: the transformers reference initialised on the device and our
engine on the very same tensors, and what our engine's start-up tuning chose for its kernels (recorded with
each run's results)."""

from __future__ import annotations

import torch
from transformers import DiaConfig as HFDiaConfig
from transformers import DiaForConditionalGeneration
from transformers.models.dia.configuration_dia import DiaDecoderConfig, DiaEncoderConfig

from tts_engine.dia.config import DiaConfig
from tts_engine.dia.model import DiaModel
from tts_engine.engine import Engine


def hf_config(size: str) -> HFDiaConfig:
    """The full Dia-1.6B architecture, or a reduced one (same vocab, channels, delays and lengths) for CPU runs."""
    if size == "full":
        return HFDiaConfig()
    encoder = DiaEncoderConfig(
        hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
        head_dim=64,
    )  # fmt: skip
    decoder = DiaDecoderConfig(
        hidden_size=512, intermediate_size=2048, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=2,
        head_dim=64, cross_num_attention_heads=8, cross_num_key_value_heads=8, cross_head_dim=64, cross_hidden_size=256,
    )  # fmt: skip
    return HFDiaConfig(encoder_config=encoder, decoder_config=decoder)


def build(
    config: HFDiaConfig,
    device: torch.device,
    dtype: torch.dtype,
    *,
    decode_kernels: bool | None = None,
    dependent_launches: bool = True,
    batch_invariant: bool = False,
) -> tuple[DiaForConditionalGeneration, Engine]:
    """The reference with random weights initialised on the device, and our engine on the very same tensors
    (`decode_kernels`, `dependent_launches` and `batch_invariant` as Engine takes them: None is the default, on
    for CUDA)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    with torch.device(device):
        reference = DiaForConditionalGeneration(config).eval()
    torch.set_default_dtype(previous)
    # Random weights sample EOS now and then (a single bf16 rounding moves where), and a line that ends early
    # times fewer, shorter steps and leaves a batch narrower. Channel 0's EOS logit is held at 0, below the top
    # 45 of 1024 random codes (their logits spread about 0), so every line decodes to the length cap.
    decoder = config.decoder_config
    assert isinstance(decoder, DiaDecoderConfig)
    with torch.no_grad():
        reference.logits_dense.weight[decoder.eos_token_id].zero_()
    engine = build_ours(
        reference, decode_kernels=decode_kernels, dependent_launches=dependent_launches, batch_invariant=batch_invariant
    )
    return reference, engine


def build_ours(
    reference: DiaForConditionalGeneration,
    *,
    decode_kernels: bool | None = None,
    dependent_launches: bool = True,
    batch_invariant: bool = False,
    persistent_layers: bool = False,
) -> Engine:
    """Our engine on the reference's weights. The fused q/k/v and gate/up weights are its own copies, and so are
    its tuners' choices (they live on the model), so a second one beside the first is tuned and timed apart."""
    with torch.device("meta"):
        ours = DiaModel(DiaConfig.from_dict(reference.config.to_dict()))
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    ours.fuse()
    ours.requires_grad_(False)
    return Engine(
        ours.eval(),
        decode_kernels=decode_kernels,
        dependent_launches=dependent_launches,
        batch_invariant=batch_invariant,
        persistent_layers=persistent_layers,
    )


def matmul_choices(engine: Engine) -> dict[str, list[str]]:
    """Which decode-step projections the tuner put on our kernel, by (rows, N, K), and which of those run fused
    with the norm before them or the activation or RoPE after them; every other projection runs on cuBLAS."""
    projections = engine.model.ops.linear
    choices = getattr(projections, "choices", {})
    fusions = getattr(projections, "fusions", {})
    if fusions:
        from tts_engine.dia import linear  # imports triton, which a CPU-only install may lack
    return {
        "ours": [f"{rows}x{n}x{k}: {config}" for (rows, n, k), config in sorted(choices.items())],
        "fused": [
            f"{linear.FORMS[form]} {rows}x{n}x{k}: {config}" for (form, rows, n, k), config in sorted(fusions.items())
        ],
    }


def sampler_choices(engine: Engine) -> dict[str, str]:
    """Per batch width the tuner timed, whether sampling runs in the fused kernel (on how many warps) or in the
    compiled chain; empty where there is no fused sampler (CPU, batch-invariant, or it failed its check)."""
    sampler = engine.model.ops.sampler
    if sampler is None:
        return {}
    return {
        str(width): "chain" if warps is None else f"fused, {warps} warps"
        for width, warps in sorted(sampler.choices.items())
    }
