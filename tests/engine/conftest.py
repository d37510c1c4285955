"""Tiny checkpoints on disk, made once per session, and engines loaded from them through the real loader."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from transformers import DiaForConditionalGeneration

from tests.engine import tiny
from tts_engine.engine import Engine


@dataclass(frozen=True)
class Checkpoint:
    shape: tiny.Shape
    reference: DiaForConditionalGeneration
    folder: Path


def make_checkpoint(factory: pytest.TempPathFactory, shape: tiny.Shape, **options: object) -> Checkpoint:
    model = tiny.build(shape, **options)  # type: ignore[arg-type]
    folder = tiny.save(model, factory.mktemp(shape.name), sharded=shape.name.startswith("odd"))
    return Checkpoint(shape, model, folder)


@pytest.fixture(scope="session", params=tiny.SHAPES, ids=lambda shape: shape.name)
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    """One tiny checkpoint per shape (the odd-heads one saved in shards)."""
    return make_checkpoint(tmp_path_factory, request.param)


@pytest.fixture(scope="session")
def ending_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    """A checkpoint whose channel 0 emits EOS by itself, well before the length cap."""
    return make_checkpoint(tmp_path_factory, tiny.SHAPES[0], seed=0, eos_scale=2.0)


@pytest.fixture(scope="session")
def engine(checkpoint: Checkpoint) -> Engine:
    return Engine.load(checkpoint.folder)


@pytest.fixture(scope="session")
def small_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """The first shape only, for tests about the API rather than the numbers."""
    return Engine.load(make_checkpoint(tmp_path_factory, tiny.SHAPES[0]).folder)
