"""Finding and loading a Dia checkpoint in its transformers layout: config.json plus (sharded) safetensors.

Like gpt-fast's `_load_model`: the model is built on the meta device and the checkpoint's tensors are assigned
to it, read straight onto the target device and cast one at a time, so no second copy of the weights ever
exists. Every expected key is checked against the safetensors headers (names and shapes, no data read)
before anything is loaded, and a problem names the key and the folder. A hub id is fetched once with
tts_engine.hub (progress bars on), skipping the 6 GB `dia-v1.pth` that nari-labs/Dia-1.6B-0626 also holds.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import safe_open

from tts_engine import hub
from tts_engine.dia.config import ConfigError, DiaConfig
from tts_engine.dia.model import DiaModel
from tts_engine.hub import ModelLoadError

log = logging.getLogger(__name__)

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
# nari-labs/Dia-1.6B-0626 also holds a 6 GB dia-v1.pth in nari's own layout, which is never fetched.
HUB_FILES = ("config.json", "generation_config.json", "*.safetensors", INDEX_FILE)


def resolve(model: str) -> Path:
    """The local folder of a Dia checkpoint: a folder as given, or a hub id downloaded once."""
    return hub.resolve(model, HUB_FILES, setting="the model setting (DIA_MODEL)")


def read_config(folder: Path) -> DiaConfig:
    try:
        return DiaConfig.from_file(folder / "config.json")
    except ConfigError as exc:
        raise ModelLoadError(str(exc)) from exc


def _tensor_files(folder: Path) -> dict[str, Path]:
    """Which file holds each tensor, from the index of a sharded checkpoint or the single file's header."""
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"cannot read {index}: {exc}") from exc
        return {key: folder / name for key, name in weight_map.items()}
    single = folder / SINGLE_FILE
    if not single.is_file():
        raise ModelLoadError(f"{folder} holds neither {INDEX_FILE} nor {SINGLE_FILE}: not a safetensors checkpoint")
    with safe_open(str(single), framework="pt") as handle:
        return dict.fromkeys(handle.keys(), single)


def expected_tensors(cfg: DiaConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a checkpoint of `cfg` must hold, with its shape (computed on the meta device)."""
    with torch.device("meta"):
        model = DiaModel(cfg)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def _check(folder: Path, files: dict[str, Path], expected: dict[str, tuple[int, ...]]) -> None:
    for key in expected:
        if key not in files:
            raise ModelLoadError(f"the checkpoint in {folder} is missing the tensor {key}")
    by_file: dict[Path, list[str]] = {}
    for key in expected:
        by_file.setdefault(files[key], []).append(key)
    for path, keys in by_file.items():
        if not path.is_file():
            raise ModelLoadError(f"{path} is listed in {INDEX_FILE} but does not exist")
        with safe_open(str(path), framework="pt") as handle:
            present = set(handle.keys())
            for key in keys:
                if key not in present:
                    raise ModelLoadError(f"{path.name} does not hold {key}, although the index says it does")
                shape = tuple(handle.get_slice(key).get_shape())
                if shape != expected[key]:
                    raise ModelLoadError(
                        f"tensor {key} in {path.name} has shape {list(shape)}, expected {list(expected[key])}"
                    )
    extra = sorted(set(files) - set(expected))
    if extra:
        log.warning("ignoring %d tensors this engine does not use, e.g. %s", len(extra), extra[0])


def load(folder: Path, *, device: torch.device, dtype: torch.dtype) -> DiaModel:
    """The checkpoint in `folder` as a DiaModel on `device` in `dtype`, q/k/v fused, ready for inference."""
    cfg = read_config(folder)
    files = _tensor_files(folder)
    expected = expected_tensors(cfg)
    _check(folder, files, expected)
    with torch.device("meta"):
        model = DiaModel(cfg)
    state: dict[str, torch.Tensor] = {}
    by_file: dict[Path, list[str]] = {}
    for key in expected:
        by_file.setdefault(files[key], []).append(key)
    target = "cpu" if device.type == "cpu" else str(device)
    for path, keys in by_file.items():
        with safe_open(str(path), framework="pt", device=target) as handle:
            for key in keys:
                state[key] = handle.get_tensor(key).to(dtype)
    model.load_state_dict(state, strict=True, assign=True)
    model.fuse()
    model.requires_grad_(False)
    return model.eval()
