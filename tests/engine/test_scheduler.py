"""Continuous batching: every request's codes equal its single-stream codes, whoever shares the steps.

The engines run batch-invariant (Engine(batch_invariant=True)): without it a row's logits may differ in the
last bits between batch widths (MKL without AVX-512 picks other kernels), and one such bit can flip a token.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.engine import tiny
from tests.engine.conftest import Checkpoint, make_checkpoint
from tts_engine.batching import Decoded, Scheduler, SchedulerFull
from tts_engine.dia import fused
from tts_engine.dia.text import TextError, TextTooLong
from tts_engine.engine import Engine, GenerationParams, VoicePrompt

SHORT = "[S1] Hi."
MEDIUM = "[S1] The bridge is out. [S2] Then we swim."
LONG = "[S1] Welcome, traveler! (laughs) Rooms are two silver. [S2] Two silver? For that straw?"


@dataclass(frozen=True)
class Job:
    request_id: str
    text: str
    params: GenerationParams
    prompt: VoicePrompt | None = None
    join_at: int = 0  # the chunk before which it is submitted (later if no slot is free then)


@pytest.fixture(scope="module")
def engine(checkpoint: Checkpoint) -> Engine:
    return Engine.load(checkpoint.folder, batch_invariant=True)


@pytest.fixture(scope="module")
def small_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine.load(make_checkpoint(tmp_path_factory, tiny.SHAPES[0]).folder, batch_invariant=True)


def _prompt(channels: int, frames: int, seed: int) -> VoicePrompt:
    codes = np.random.default_rng(seed).integers(0, 1024, size=(frames, channels))
    return VoicePrompt("[S2] This is my voice.", codes)


def _alone(engine: Engine, jobs: list[Job]) -> dict[str, np.ndarray]:
    return {job.request_id: engine.generate_codes(job.text, job.params, job.prompt) for job in jobs}


def _collect(codes: dict[str, list[np.ndarray]], chunk: Decoded) -> None:
    for request_id, frames in chunk.frames.items():
        codes[request_id].append(frames)


def _run(scheduler: Scheduler, jobs: list[Job], channels: int) -> dict[str, np.ndarray]:
    """Submit each job at its chunk (or as soon as a slot frees up), step until all are done; codes per id."""
    waiting = sorted(jobs, key=lambda job: job.join_at)
    frames: dict[str, list[np.ndarray]] = defaultdict(list)
    finished: list[str] = []
    chunk_index = 0
    while waiting or scheduler.active:
        while waiting and waiting[0].join_at <= chunk_index and scheduler.free_slots:
            job = waiting.pop(0)
            scheduler.submit(job.request_id, job.text, job.params, job.prompt)
        running = set(scheduler.active)
        chunk = scheduler.step_chunk()
        assert set(chunk.frames) <= running and set(chunk.finished) <= running
        assert not set(chunk.finished) & set(scheduler.active), "a finished request gave its slot back"
        _collect(frames, chunk)
        finished += chunk.finished
        chunk_index += 1
    assert sorted(finished) == sorted(job.request_id for job in jobs), "each request finishes exactly once"
    empty = np.zeros((0, channels), dtype=np.int64)
    return {job.request_id: np.concatenate([empty, *frames[job.request_id]]) for job in jobs}


def _assert_same(batched: dict[str, np.ndarray], alone: dict[str, np.ndarray]) -> None:
    assert batched.keys() == alone.keys()
    for request_id, codes in alone.items():
        assert len(codes) > 0
        np.testing.assert_array_equal(batched[request_id], codes, err_msg=f"request {request_id}")


def test_batched_equals_alone(checkpoint: Checkpoint, engine: Engine) -> None:
    """Greedy and sampled requests of different texts, prompts and settings, joining and leaving at different
    chunks, three slots for six requests so freed slots are reused: each gets exactly its alone codes."""
    channels = len(checkpoint.shape.delays)
    jobs = [
        Job("sampled", MEDIUM, GenerationParams(max_tokens=60, seed=1)),
        Job("greedy", LONG, GenerationParams(max_tokens=35, temperature=0)),
        Job("prompted", SHORT, GenerationParams(max_tokens=70, seed=5, top_k=10, top_p=0.8), _prompt(channels, 7, 0)),
        Job("greedy-prompted", MEDIUM, GenerationParams(max_tokens=50, temperature=0, cfg_scale=1.0),
            _prompt(channels, 12, 1), join_at=2),
        Job("hot", LONG, GenerationParams(max_tokens=40, seed=9, temperature=2.0, cfg_scale=5.0, top_p=1.0), join_at=3),
        Job("cool", SHORT, GenerationParams(max_tokens=25, seed=9, temperature=0.5, top_k=1024), join_at=5),
    ]  # fmt: skip
    batched = _run(engine.scheduler(slots=3, chunk_steps=5), jobs, channels)
    _assert_same(batched, _alone(engine, jobs))


def test_same_seed_beside_itself(small_engine: Engine) -> None:
    """Two slots with the same seed and text draw from their own generators, so both equal the alone codes."""
    jobs = [Job(name, MEDIUM, GenerationParams(max_tokens=50, seed=42)) for name in ("first", "second")]
    jobs.append(Job("third", MEDIUM, GenerationParams(max_tokens=50, seed=42), join_at=1))
    batched = _run(small_engine.scheduler(slots=4, chunk_steps=8), jobs, 3)
    alone = small_engine.generate_codes(MEDIUM, GenerationParams(max_tokens=50, seed=42))
    _assert_same(batched, dict.fromkeys(batched, alone))


def test_lines_that_end_by_themselves(ending_checkpoint: Checkpoint) -> None:
    """Channel 0's EOS ends each line at its own step, mid-chunk; the countdown and cut stay per slot."""
    engine = Engine.load(ending_checkpoint.folder, batch_invariant=True)
    jobs = [
        Job("greedy", MEDIUM, GenerationParams(max_tokens=100, temperature=0)),
        Job("long-greedy", LONG, GenerationParams(max_tokens=100, temperature=0), join_at=1),
        *(Job(f"seed-{seed}", SHORT, GenerationParams(max_tokens=100, seed=seed), join_at=seed) for seed in range(4)),
    ]
    alone = _alone(engine, jobs)
    assert any(len(codes) < 100 - 2 for codes in alone.values()), "the biased checkpoint should end lines early"
    _assert_same(_run(engine.scheduler(slots=4, chunk_steps=7), jobs, 3), alone)


def test_cancel_frees_the_slot(small_engine: Engine) -> None:
    scheduler = small_engine.scheduler(slots=2, chunk_steps=4)
    first = GenerationParams(max_tokens=80, seed=3)
    second = GenerationParams(max_tokens=60, seed=4)
    third = GenerationParams(max_tokens=40, seed=5)
    assert scheduler.submit("first", LONG, first).slot == 0
    assert scheduler.submit("second", MEDIUM, second).slot == 1
    with pytest.raises(SchedulerFull):
        scheduler.submit("third", SHORT, third)
    codes: dict[str, list[np.ndarray]] = defaultdict(list)
    for _ in range(6):
        _collect(codes, scheduler.step_chunk())

    assert scheduler.cancel("first")
    assert not scheduler.cancel("first") and not scheduler.cancel("never-submitted")
    assert list(scheduler.active) == ["second"] and scheduler.free_slots == 1
    # What the cancelled request gave before was a prefix of its alone codes.
    early = np.concatenate(codes["first"])
    np.testing.assert_array_equal(early, small_engine.generate_codes(LONG, first)[: len(early)])

    # The freed slot is the lowest, so the newcomer takes it while `second` runs on in slot 1.
    assert scheduler.submit("third", SHORT, third).slot == 0
    while scheduler.active:
        _collect(codes, scheduler.step_chunk())
    np.testing.assert_array_equal(np.concatenate(codes["third"]), small_engine.generate_codes(SHORT, third))
    np.testing.assert_array_equal(np.concatenate(codes["second"]), small_engine.generate_codes(MEDIUM, second))
    assert scheduler.free_slots == 2 and scheduler.step_chunk().steps == 0


def test_cancelling_the_front_keeps_the_back_running(small_engine: Engine) -> None:
    """The busy slot left alone at the back still runs (at a wider bucket) and still matches."""
    jobs = [Job(f"job-{i}", MEDIUM, GenerationParams(max_tokens=45, seed=i)) for i in range(3)]
    scheduler = small_engine.scheduler(slots=4, chunk_steps=8)
    for job in jobs:
        scheduler.submit(job.request_id, job.text, job.params)
    codes: dict[str, list[np.ndarray]] = defaultdict(list)
    _collect(codes, scheduler.step_chunk())
    assert scheduler.cancel("job-0") and scheduler.cancel("job-1")
    while scheduler.active:
        _collect(codes, scheduler.step_chunk())
    np.testing.assert_array_equal(np.concatenate(codes["job-2"]), small_engine.generate_codes(MEDIUM, jobs[2].params))


def _engine_error(engine: Engine, text: str, params: GenerationParams, prompt: VoicePrompt | None) -> str:
    with pytest.raises(ValueError) as raised:
        engine.stream_codes(text, params, prompt)
    return str(raised.value)


def test_failing_requests_do_not_disturb_the_others(small_engine: Engine) -> None:
    scheduler = small_engine.scheduler(slots=3, chunk_steps=6)
    good = [
        Job("good-1", LONG, GenerationParams(max_tokens=60, seed=1)),
        Job("good-2", SHORT, GenerationParams(max_tokens=50, temperature=0), _prompt(3, 6, 2)),
    ]
    for job in good:
        scheduler.submit(job.request_id, job.text, job.params, job.prompt)
    codes: dict[str, list[np.ndarray]] = defaultdict(list)
    _collect(codes, scheduler.step_chunk())

    ok = GenerationParams(max_tokens=40)
    bad = [
        ("   ", ok, None, TextError),
        ("a" * 97, ok, None, TextTooLong),  # the tiny encoder reads 96 bytes
        (SHORT, GenerationParams(max_tokens=3072), None, ValueError),
        (SHORT, GenerationParams(max_tokens=20), _prompt(3, 30, 3), ValueError),
        (SHORT, ok, _prompt(9, 4, 4), ValueError),
    ]
    for text, params, prompt, kind in bad:
        with pytest.raises(kind) as raised:
            scheduler.submit("bad", text, params, prompt)
        assert str(raised.value) == _engine_error(small_engine, text, params, prompt)
        assert scheduler.active == ("good-1", "good-2") and scheduler.free_slots == 1
    with pytest.raises(ValueError, match="'good-1' is already running"):
        scheduler.submit("good-1", SHORT, ok)

    while scheduler.active:
        _collect(codes, scheduler.step_chunk())
    _assert_same({k: np.concatenate(v) for k, v in codes.items()}, _alone(small_engine, good))


def test_engine_streams_beside_a_scheduler(small_engine: Engine) -> None:
    """A scheduler shares the engine's weights but not its state: single streams still match in between."""
    params = GenerationParams(max_tokens=50, seed=8)
    before = small_engine.generate_codes(MEDIUM, params)
    scheduler = small_engine.scheduler(slots=2)
    scheduler.submit("batched", MEDIUM, params)
    codes = list(scheduler.step_chunk().frames.values())
    np.testing.assert_array_equal(small_engine.generate_codes(MEDIUM, params), before)
    while scheduler.active:
        codes += scheduler.step_chunk().frames.values()
    np.testing.assert_array_equal(np.concatenate(codes), before)


def test_a_resumed_request_goes_on_beside_others(small_engine: Engine) -> None:
    """A retried line (resume_from) joins a slot like any other and carries on as its greedy self did."""
    greedy = GenerationParams(max_tokens=50, temperature=0)
    whole = small_engine.generate_codes(MEDIUM, greedy)
    scheduler = small_engine.scheduler(slots=3, chunk_steps=4)
    scheduler.submit("other", LONG, GenerationParams(max_tokens=40, seed=2))
    scheduler.submit("resumed", MEDIUM, greedy, resume_from=whole[:20])
    codes: dict[str, list[np.ndarray]] = defaultdict(list)
    while scheduler.active:
        _collect(codes, scheduler.step_chunk())
    np.testing.assert_array_equal(np.concatenate(codes["resumed"]), whole[20:])
    other = small_engine.generate_codes(LONG, GenerationParams(max_tokens=40, seed=2))
    np.testing.assert_array_equal(np.concatenate(codes["other"]), other)


def test_settings_are_checked(small_engine: Engine) -> None:
    with pytest.raises(ValueError, match="slots must be at least 1"):
        small_engine.scheduler(slots=0)
    with pytest.raises(ValueError, match="chunk_steps must be at least 1"):
        small_engine.scheduler(slots=2, chunk_steps=0)
    scheduler = small_engine.scheduler(slots=5)
    assert scheduler.free_slots == 5 and scheduler.active == ()
    chunk = scheduler.step_chunk()
    assert chunk.steps == 0 and not chunk.frames and not chunk.finished


@pytest.mark.gpu
@pytest.mark.timeout(360)  # its scheduler tunes every batch width first (still tuning at 90 s on an H100)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_graphs_equal_eager_steps(checkpoint: Checkpoint, dtype: str) -> None:
    """Captured (width, span) graphs replay exactly what eager steps compute for the same batches."""
    engine = Engine.load(checkpoint.folder, device="cuda", dtype=dtype)
    channels = len(checkpoint.shape.delays)
    jobs = [
        Job("sampled", MEDIUM, GenerationParams(max_tokens=60, seed=1)),
        Job("greedy", LONG, GenerationParams(max_tokens=35, temperature=0), join_at=1),
        Job("prompted", SHORT, GenerationParams(max_tokens=70, seed=5), _prompt(channels, 7, 0), join_at=2),
        Job("late", SHORT, GenerationParams(max_tokens=30, seed=6), join_at=6),
    ]
    graphs = engine.scheduler(slots=3, chunk_steps=5)
    eager = engine.scheduler(slots=3, chunk_steps=5, use_cuda_graphs=False)
    assert graphs._decoder.graphs and not eager._decoder.graphs
    _assert_same(_run(graphs, jobs, channels), _run(eager, jobs, channels))


def test_rowwise_projection_gives_a_row_the_same_bits_whatever_shares_it() -> None:
    """The batch-invariant projection is F.linear's maths, and a row's bits do not move with the batch width
    (F.linear's do on common CPUs at these shapes: MKL changes kernel between 2 and about 50 rows)."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(1024, 4096, generator=gen)
    x_Rx1xD = torch.randn(64, 1, 4096, generator=gen)
    first_two = fused.rowwise_linear(x_Rx1xD[:2], weight)
    torch.testing.assert_close(first_two, F.linear(x_Rx1xD[:2], weight), rtol=1e-5, atol=1e-4)
    for rows in (3, 4, 7, 16, 33, 64):
        assert torch.equal(fused.rowwise_linear(x_Rx1xD[:rows], weight)[:2], first_two), f"{rows} rows"
    prefill_2xTxD = torch.randn(2, 5, 4096, generator=gen)  # a request's prefill: rows of several positions
    # F.linear's own kernel and summation order vary with the CPU: the same maths within float32 rounding.
    torch.testing.assert_close(
        fused.rowwise_linear(prefill_2xTxD, weight), F.linear(prefill_2xTxD, weight), rtol=1e-5, atol=5e-4
    )


def test_plain_batch_invariance_projects_row_by_row(small_engine: Engine) -> None:
    """Without the decode kernels (the CPU default): row-by-row projections and SDPA, and no kernels later."""
    assert small_engine.model.ops.linear is fused.rowwise_linear and small_engine.model.ops.kernels is None
    with pytest.raises(ValueError, match="decode kernels are not batch-invariant"):
        small_engine.model.use_decode_kernels()


# About 80 s on the 2-core development machine alone (2026-11-24); it passed the default 120 s only when nothing
# else ran there.
@pytest.mark.timeout(300)
def test_batch_invariant_kernels_equal_alone(ending_checkpoint: Checkpoint) -> None:
    """The CUDA default of batch-invariant mode, here in Triton's interpreter: decode kernels with fixed splits
    and skinny matmuls with fixed blocks give batched lines exactly their alone codes."""
    pytest.importorskip("tts_engine.dia.kernels", reason="triton is not installed")
    engine = Engine.load(ending_checkpoint.folder, batch_invariant=True, decode_kernels=True)
    ops = engine.model.ops
    assert ops.kernels is not None and ops.kernels.invariant_span is not None
    # The last span bucket reads the whole cache, the delay pattern's tail past max_positions included (a step
    # there, or a CUDA graph captured for it, would be refused by kernels merging fewer keys).
    assert ops.kernels.invariant_span >= engine._decoder.positions > engine.config.decoder.max_positions
    assert getattr(ops.linear, "invariant", False)
    jobs = [
        Job("sampled", MEDIUM, GenerationParams(max_tokens=24, seed=1)),
        Job("greedy", SHORT, GenerationParams(max_tokens=20, temperature=0), join_at=1),
        Job("prompted", SHORT, GenerationParams(max_tokens=26, seed=5), _prompt(3, 4, 0), join_at=2),
    ]
    _assert_same(_run(engine.scheduler(slots=3, chunk_steps=4), jobs, 3), _alone(engine, jobs))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_batch_invariant_on_cuda(checkpoint: Checkpoint, dtype: str) -> None:
    """On a GPU too (cuBLAS picks kernels by batch size), batch-invariant lines equal their alone codes."""
    engine = Engine.load(checkpoint.folder, device="cuda", dtype=dtype, batch_invariant=True)
    channels = len(checkpoint.shape.delays)
    jobs = [
        Job("sampled", MEDIUM, GenerationParams(max_tokens=60, seed=1)),
        Job("greedy", LONG, GenerationParams(max_tokens=35, temperature=0), join_at=1),
        Job("prompted", SHORT, GenerationParams(max_tokens=70, seed=5), _prompt(channels, 7, 0), join_at=2),
    ]
    _assert_same(_run(engine.scheduler(slots=3, chunk_steps=5), jobs, channels), _alone(engine, jobs))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_steps_inputs_embed_each_slot_once_for_both_its_rows(small_engine: Engine, dtype: torch.dtype) -> None:
    """fused.step_inputs gives the bits the model's multi-channel embedding gives on each slot's tokens at its
    position, both rows of a slot alike, in the order of the slots asked for."""
    embeddings = copy.deepcopy(small_engine.model.decoder().embeddings).to(dtype)
    vocab, channels = embeddings.vocab_size, small_engine.model.cfg.decoder.num_channels
    gen = torch.Generator().manual_seed(4)
    grid_BxPxC = torch.randint(0, vocab, (5, 7, channels), generator=gen)
    at_W, pos_W = torch.tensor([3, 0, 4]), torch.tensor([6, 0, 2])
    x_Rx1xD, pos_Rx1 = fused.step_inputs(grid_BxPxC, at_W, pos_W, embeddings.embed.weight, vocab)
    expected = embeddings(grid_BxPxC[at_W, pos_W].repeat_interleave(2, dim=0)[:, None])
    assert x_Rx1xD.dtype == dtype and torch.equal(x_Rx1xD, expected)
    assert pos_Rx1.tolist() == [[6], [6], [0], [0], [2], [2]]
    # One slot too: both rows in memory of their own (the decode kernels read rows and positions by offset).
    x_Rx1xD, pos_Rx1 = fused.step_inputs(grid_BxPxC, at_W[:1], pos_W[:1], embeddings.embed.weight, vocab)
    assert x_Rx1xD.is_contiguous() and pos_Rx1.is_contiguous() and pos_Rx1.tolist() == [[6], [6]]
    assert torch.equal(x_Rx1xD, expected[:2])
