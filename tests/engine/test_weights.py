"""Loading real on-disk checkpoints: configs of both transformers eras, sharded and single files, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import DiaConfig as HFDiaConfig
from transformers import DiaForConditionalGeneration

from tests.engine import tiny
from tests.engine.conftest import Checkpoint
from tts_engine.dia.config import ConfigError, DiaConfig
from tts_engine.dia.weights import ModelLoadError, expected_tensors
from tts_engine.engine import Engine, GenerationParams


def test_full_size_layout_matches_transformers() -> None:
    """The real 0626 checkpoint's keys and shapes, from transformers' model on the meta device (no download)."""
    with torch.device("meta"):
        reference = DiaForConditionalGeneration(HFDiaConfig())
    expected = {name: tuple(t.shape) for name, t in reference.state_dict().items()}
    assert expected_tensors(DiaConfig()) == expected
    assert len(expected) == 1 + 12 * 8 + 1 + 1 + 18 * 13 + 1 + 1
    assert sum(torch.Size(s).numel() for s in expected.values()) == 1_611_160_576


def test_transformers_config_parses_to_the_defaults() -> None:
    assert DiaConfig.from_dict(HFDiaConfig().to_dict()) == DiaConfig()


def test_original_0626_config_form_parses() -> None:
    """The 4.53-era config.json: rope_theta per part, special ids at the top level."""
    encoder = dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=12, num_attention_heads=16,
        num_key_value_heads=16, head_dim=128, hidden_act="silu", max_position_embeddings=1024, norm_eps=1e-05,
        rope_theta=10000.0, rope_scaling=None, vocab_size=256,
    )  # fmt: skip
    decoder = dict(
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=18, num_attention_heads=16,
        num_key_value_heads=4, head_dim=128, cross_hidden_size=1024, cross_num_attention_heads=16,
        cross_num_key_value_heads=16, cross_head_dim=128, hidden_act="silu", max_position_embeddings=3072,
        norm_eps=1e-05, rope_theta=10000.0, vocab_size=1028, num_channels=9,
    )  # fmt: skip
    raw = dict(
        architectures=["DiaForConditionalGeneration"], model_type="dia", bos_token_id=1026, eos_token_id=1024,
        pad_token_id=1025, delay_pattern=[0, 8, 9, 10, 11, 12, 13, 14, 15], encoder_config=encoder,
        decoder_config=decoder,
    )  # fmt: skip
    assert DiaConfig.from_dict(raw) == DiaConfig()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda raw: raw["decoder_config"].update(hidden_act="gelu"), "only 'silu'"),
        (lambda raw: raw["encoder_config"].update(rope_parameters={"rope_type": "linear", "factor": 2.0}), "RoPE"),
        (lambda raw: raw.update(delay_pattern=[1, 8, 9, 10, 11, 12, 13, 14, 15]), "must start with 0"),
        (lambda raw: raw.update(delay_pattern=[0, 8]), "2 entries for 9 channels"),
        (lambda raw: raw["decoder_config"].update(num_attention_heads=6), "multiple of key/value heads"),
        (lambda raw: raw["decoder_config"].update(num_hidden_layers="18"), "num_hidden_layers must be a positive"),
        (lambda raw: raw.update(model_type="llama"), "not 'dia'"),
    ],
)
def test_unsupported_configs_are_refused(change: object, message: str) -> None:
    raw = HFDiaConfig().to_dict()
    change(raw)  # type: ignore[operator]
    with pytest.raises(ConfigError, match=message):
        DiaConfig.from_dict(raw)


def test_sharded_and_single_file_load_the_same(tmp_path: Path) -> None:
    model = tiny.build(tiny.SHAPES[0])
    single = Engine.load(tiny.save(model, tmp_path / "single"))
    sharded_folder = tiny.save(model, tmp_path / "sharded", sharded=True)
    assert (sharded_folder / "model.safetensors.index.json").is_file()
    sharded = Engine.load(sharded_folder)
    for (name, a), (_, b) in zip(single.model.state_dict().items(), sharded.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_weights_are_cast_to_the_requested_dtype(checkpoint: Checkpoint) -> None:
    engine = Engine.load(checkpoint.folder, device="cpu", dtype="bfloat16")
    assert {p.dtype for p in engine.model.parameters()} == {torch.bfloat16}
    assert not any(p.is_meta for p in engine.model.parameters())
    codes = engine.generate_codes("[S1] Hello.", GenerationParams(temperature=0, max_tokens=24))
    assert codes.shape == (22, len(checkpoint.shape.delays))


def _copy(checkpoint: Checkpoint, folder: Path) -> Path:
    shutil.copytree(checkpoint.folder, folder)
    return folder


@pytest.fixture
def single_file(tmp_path: Path) -> Path:
    return tiny.save(tiny.build(tiny.SHAPES[0]), tmp_path / "ckpt")


def test_missing_tensor_is_named(single_file: Path) -> None:
    tensors = load_file(single_file / "model.safetensors")
    del tensors["model.decoder.layers.1.mlp.down_proj.weight"]
    save_file(tensors, single_file / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"missing the tensor model\.decoder\.layers\.1\.mlp\.down_proj\.weight"):
        Engine.load(single_file)


def test_misshaped_tensor_is_named(single_file: Path) -> None:
    tensors = load_file(single_file / "model.safetensors")
    tensors["logits_dense.weight"] = torch.zeros(10, 24)
    save_file(tensors, single_file / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(
        ModelLoadError, match=r"logits_dense\.weight in model\.safetensors has shape \[10, 24\], expected \[3084, 24\]"
    ):
        Engine.load(single_file)


def test_missing_shard_is_named(tmp_path: Path) -> None:
    folder = tiny.save(tiny.build(tiny.SHAPES[0]), tmp_path / "ckpt", sharded=True)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[-1]
    (folder / shard).unlink()
    with pytest.raises(ModelLoadError, match=f"{shard} is listed in model.safetensors.index.json but does not exist"):
        Engine.load(folder)


def test_folder_without_weights_is_refused(single_file: Path) -> None:
    (single_file / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"neither model\.safetensors\.index\.json nor model\.safetensors"):
        Engine.load(single_file)


def test_bad_config_is_named(single_file: Path) -> None:
    raw = json.loads((single_file / "config.json").read_text())
    raw["decoder_config"]["hidden_act"] = "relu"
    (single_file / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ModelLoadError, match=r"config\.json: decoder_config\.hidden_act is 'relu'"):
        Engine.load(single_file)


def test_missing_folder_and_file_paths(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"model folder .*nowhere does not exist"):
        Engine.load(tmp_path / "nowhere")
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="is a file"):
        Engine.load(tmp_path / "weights.bin")


def test_uncached_hub_id_offline_says_how_to_use_a_local_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelLoadError) as caught:
        Engine.load("nari-labs/Dia-1.6B-0626")
    message = str(caught.value)
    assert "cannot get 'nari-labs/Dia-1.6B-0626' from the Hugging Face hub" in message
    assert "DIA_MODEL" in message and "local folder" in message
    assert "\n" not in message
