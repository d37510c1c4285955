"""The Descript Audio Codec (44.1 kHz, hop 512, 9 codebooks of 1024) through transformers' DacModel.

Dia's own code decodes with the `descript-audio-codec` package; that package pins PyPI torchaudio, which
breaks beside a CPU torch, so the same weights (`descript/dac_44khz`) load through transformers instead.
Codes are undelayed (T, 9) int arrays; audio is mono float32 in [-1, 1] at 44.1 kHz, 512 samples a frame.
Like dia2's audio/codec.py: a thin wrapper, inference mode, nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from tts_engine import hub

if TYPE_CHECKING:
    from transformers import DacModel

log = logging.getLogger(__name__)

DEFAULT_CODEC = "descript/dac_44khz"
SAMPLE_RATE = 44100
HOP = 512
HUB_FILES = ("config.json", "preprocessor_config.json", "*.safetensors")


def snake(x_BxCxT: Tensor, alpha_1xCx1: Tensor) -> Tensor:
    """transformers' Snake1d, x + sin(alpha x)^2 / alpha, written as it writes it."""
    return x_BxCxT + (alpha_1xCx1 + 1e-9).reciprocal() * torch.sin(alpha_1xCx1 * x_BxCxT).pow(2)


class FusedSnake(nn.Module):
    """A Snake1d whose formula runs as one kernel: eager PyTorch makes five full passes over the activations
    (multiply, sine, square, multiply, add), and the DAC's activations are its largest tensors."""

    def __init__(self, alpha: nn.Parameter, fn: Callable[[Tensor, Tensor], Tensor]) -> None:
        super().__init__()
        self.alpha = alpha  # the same parameter, under the same name: state dicts are unchanged
        self._fn = fn

    def forward(self, x_BxCxT: Tensor) -> Tensor:
        return self._fn(x_BxCxT, self.alpha)


def fuse_activations(model: nn.Module) -> int:
    """Swap every Snake1d of `model` for a FusedSnake through torch.compile (dynamic shapes: one compilation for
    every width and length); returns how many were swapped."""
    fused = torch.compile(snake, dynamic=True, fullgraph=True)
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            alpha = getattr(child, "alpha", None)
            if type(child).__name__ == "Snake1d" and isinstance(alpha, nn.Parameter):
                setattr(parent, name, FusedSnake(alpha, fused))
                swapped += 1
    return swapped


class Codec:
    """Encode 44.1 kHz mono audio to DAC codes and decode them back.

    `fuse` (default: on CUDA) runs the Snake activations through torch.compile (`fuse_activations`); they
    compile at the first decode, which `stream.warm_up` makes at load.
    """

    def __init__(self, model: DacModel, *, device: torch.device, fuse: bool | None = None) -> None:
        if device.type == "cuda" if fuse is None else fuse:
            log.info("DAC: %d Snake activations fused", fuse_activations(model))
        self.model = model
        self.device = device
        config = model.config
        self.channels = int(config.n_codebooks)
        self.hop = int(np.prod(config.downsampling_ratios))
        self.sample_rate = int(config.sampling_rate)
        self.upsampling_ratios = tuple(int(r) for r in config.upsampling_ratios)

    @classmethod
    def load(
        cls, model: str | Path = DEFAULT_CODEC, device: str | torch.device | None = None, *, fuse: bool | None = None
    ) -> Codec:
        """The codec from a local folder or hub id, in float32 on `device` (default: CUDA when present).

        Raises `hub.ModelLoadError` when it cannot be found or is not a 44.1 kHz, hop-512 DAC.
        """
        from transformers import DacModel

        target = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        folder = cls.resolve(model)
        try:
            dac = DacModel.from_pretrained(folder, dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise hub.ModelLoadError(f"cannot load the DAC codec from {folder}: {exc}") from exc
        config = dac.config
        hop = int(np.prod(config.downsampling_ratios))
        # DacConfig defaults to the 16 kHz model; a codec of another rate or hop would garble Dia's codes.
        if config.sampling_rate != SAMPLE_RATE or hop != HOP or config.codebook_size != 1024:
            raise hub.ModelLoadError(
                f"{folder} holds a {config.sampling_rate} Hz DAC with hop {hop} and {config.codebook_size} codes; "
                f"Dia needs the 44.1 kHz one ({DEFAULT_CODEC})"
            )
        dac.requires_grad_(False)
        torch.nn.Module.to(dac, target)  # transformers wraps .to with a signature mypy misreads
        return cls(dac.eval(), device=target, fuse=fuse)

    @staticmethod
    def resolve(model: str | Path) -> Path:
        """The local folder of a codec given as a folder or hub id (downloaded once)."""
        return hub.resolve(str(model), HUB_FILES, setting="the codec setting (DIA_CODEC)")

    @torch.inference_mode()
    def encode(self, wav: np.ndarray) -> np.ndarray:
        """Codes int64 (T, 9) of mono float32 audio at 44.1 kHz, right-padded to whole frames."""
        samples = np.asarray(wav, dtype=np.float32).reshape(-1)
        padded = -(-len(samples) // self.hop) * self.hop
        x = torch.zeros((1, 1, max(padded, self.hop)), device=self.device)
        x[0, 0, : len(samples)] = torch.from_numpy(samples).to(self.device)
        codes_1xCxT = self.model.encode(x).audio_codes
        return codes_1xCxT[0].T.cpu().numpy().astype(np.int64)

    @torch.inference_mode()
    def decode_tensor(self, codes_TxC: np.ndarray) -> torch.Tensor:
        """Audio float32 (T * hop,) on the codec's device."""
        codes = torch.as_tensor(np.asarray(codes_TxC, dtype=np.int64), device=self.device)
        out = self.model.decode(audio_codes=codes.T.unsqueeze(0)).audio_values
        return out.reshape(-1)

    def decode(self, codes_TxC: np.ndarray) -> np.ndarray:
        """Audio float32 (T * 512,) in [-1, 1] at 44.1 kHz of undelayed codes (T, 9)."""
        if len(codes_TxC) == 0:
            return np.zeros(0, dtype=np.float32)
        return self.decode_tensor(codes_TxC).cpu().numpy()
