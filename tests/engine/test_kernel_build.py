"""The decode kernels compiled here, without a GPU, for an H100 (sm_90) and an RTX 4090 (sm_89), from the
launches of real decode steps (tests/engine/kernel_build.py): each compiles with the installed Triton, fits a
block's shared memory on that GPU, keeps its values in registers, and reads memory in 16-byte vectors. The
machine code is what a GPU would run, so these checks fail on a kernel that would crash at launch or crawl
(unvectorised two-byte loads, spills in the loop); how fast it runs is for bench/engine.py on a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("triton.backends.nvidia.compiler", reason="Triton's CUDA backend is not installed")
from tests.engine import kernel_build  # after the skip: these import triton
from tts_engine.dia import linear, skinny_kernel
from tts_engine.dia.config import DiaConfig

# ptxas may park a few values on the stack across the main loop (seen at 32-row skinny blocks with Triton 3.6
# and 3.9, and in a gated 64-column block: stores before the loop, loads after it); more than that is a working
# set that does not fit. Inside a loop, no spill at all: that is paid on every step.
SPILL_ALLOWANCE = 16
# The report compiles every distinct launch for two GPUs (about a hundred kernels, ~100 s on two cores with an
# empty Triton cache), in the first test that asks for it.
pytestmark = pytest.mark.timeout(600)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    """tests/engine/kernel_build.py's report, from a process without TRITON_INTERPRET (see its docstring)."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.engine.kernel_build", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if "no cuobjdump" in done.stderr:
        pytest.skip("this Triton wheel carries no cuobjdump")
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _vectorised(loads: dict[str, int]) -> bool:
    """Tiles arrive by 16-byte cp.async or plain loads; only scalars (a length, a position, an lse) may be
    narrower, and never as two-byte loads of bf16 data."""
    if any(op.startswith("LDGSTS") and not op.endswith(".128") for op in loads):
        return False
    return not any(op.endswith((".U16", ".S16", ".U8", ".S8")) for op in loads)


def _skinny_config(built: dict[str, Any]) -> linear.Config:
    constants, options = built["constants"], built["options"]
    return linear.Config(
        constants["BLOCK_N"], constants["BLOCK_K"], options["num_warps"], options["num_stages"], constants["SPLITS"]
    )


def _form(constants: dict[str, Any]) -> int:
    """The linear.FORMS key of a skinny-matmul build, from its prologue and epilogue."""
    normed, epilogue = constants["PROLOGUE"] == linear.NORM, constants["EPILOGUE"]
    if epilogue == skinny_kernel.SILU:
        return linear.NORM_GATED if normed else linear.GATED
    if epilogue == skinny_kernel.ROPE:
        return linear.ROPED
    return linear.NORM if normed else linear.PLAIN


CASES = [(g, i) for g, steps in enumerate(kernel_build.STEPS.values()) for i in range(len(steps))]
IDS = [f"{gpu.name}-{step}" for gpu, steps in kernel_build.STEPS.items() for step in steps]


@pytest.mark.parametrize(("gpu_index", "step_index"), CASES, ids=IDS)
def test_every_decode_launch_builds(report: dict[str, Any], gpu_index: int, step_index: int) -> None:
    gpu = report["gpus"][gpu_index]
    step = gpu["steps"][step_index]
    layers = DiaConfig().decoder.num_layers
    # Per layer: self- and cross-attention and the projections on the skinny kernel; the RoPE cache write in the
    # q/k/v projection's epilogue where the step keeps the roped form, else a kernel.
    invariant, forms_kept = step["step"]["invariant"], set(step["step"]["forms"])
    roped = linear.ROPED in forms_kept and not invariant
    assert step["launches"].get("rope_write", 0) == (0 if roped else layers)
    assert step["launches"]["split_attention"] == 2 * layers
    assert step["launches"]["skinny_matmul"] >= 6 * layers
    assert step["launches"].get("sample", 0) == (0 if invariant else 1)
    kernels_built = {built["kernel"] for built in step["builds"]}
    assert {"skinny_matmul", "split_attention"} | (set() if roped else {"rope_write"}) <= kernels_built
    forms = {(b["constants"]["PROLOGUE"], b["constants"]["DELTA"], b["constants"]["EPILOGUE"]) for b in step["builds"]
             if b["kernel"] == "skinny_matmul"}  # fmt: skip
    plain, norm = linear.PLAIN, linear.NORM
    store, rope, silu = skinny_kernel.STORE, skinny_kernel.ROPE, skinny_kernel.SILU
    if invariant:
        assert forms == {(plain, False, store)}, "batch-invariant steps keep the norms and the activation unfused"
    elif forms_kept == set(kernel_build.EVERY_FORM):
        # The first layer's norm has no residual sum before it; the other norms and the logits' do.
        assert forms == {(plain, False, store), (norm, False, rope), (norm, True, rope), (norm, True, store),
                         (norm, True, silu)}  # fmt: skip
    else:  # the norms apart, the activation in the gate/up projection's epilogue
        assert forms_kept == {linear.GATED} and forms == {(plain, False, store), (plain, False, silu)}

    # Programmatic dependent launches where the GPU has them (Hopper): the tuner may time any block shape as one.
    dependent = [b["constants"]["PDL"] for b in step["builds"] if b["kernel"] == "skinny_matmul"]
    assert any(dependent) == (gpu["target"] >= 90 and step["step"]["pdl"]) and not all(dependent)
    attention = [b["constants"]["DEPENDENT"] for b in step["builds"] if b["kernel"] == "split_attention"]
    assert any(attention) == (gpu["target"] >= 90 and step["step"]["pdl"]) and not all(attention)

    for built in step["builds"]:
        what = f"{gpu['gpu']}: {built['kernel']} {built['constants']} {built['options']}"
        if built["kernel"] == "split_attention":  # lets the output projection after it start early, on Hopper
            pdl = built["dependent"]
            assert bool(pdl["triggers"]) == (gpu["target"] >= 90), f"{what}: {pdl}"
            if built["constants"]["DEPENDENT"]:  # its keys and values asked of L2, then the wait before any access
                assert pdl["prefetches"] and pdl["waits"] and pdl["accesses_before_wait"] == 0, f"{what}: {pdl}"
            else:
                assert not (pdl["prefetches"] or pdl["waits"]), f"{what}: {pdl}"
        if built["kernel"] == "skinny_matmul":
            constants = built["constants"]
            pdl = built["dependent"]
            if constants["PDL"]:  # its weights asked of L2, the next kernel let in, then the wait before any access
                assert pdl["prefetches"] and pdl["triggers"] and pdl["waits"], f"{what}: {pdl}"
                assert pdl["accesses_before_wait"] == 0, f"{what}: reads or writes before the wait: {pdl}"
            else:
                assert not (pdl["prefetches"] or pdl["triggers"] or pdl["waits"]), f"{what}: {pdl}"
            estimate = _skinny_config(built).shared_bytes(constants["BLOCK_M"], built["itemsize"], _form(constants))
            assert built["shared"] <= estimate, f"{what}: shared_bytes {estimate} under the real {built['shared']}"
            if estimate > gpu["shared"]:
                continue  # the tuner never launches it on this GPU (linear.shared_limit)
        assert built["shared"] <= gpu["shared"], f"{what}: {built['shared']} B of shared memory"
        assert built["spilled"] <= SPILL_ALLOWANCE, f"{what}: {built['spilled']} B spilled ({built['registers']} regs)"
        # float32 runs on a GPU for parity checks, not for serving: Triton 3.6 parks one value of a 64-column
        # float32 matmul block in its loop (8 bytes, within the allowance above); bf16 builds, none.
        in_loops_allowed = 2 if built["itemsize"] == 4 else 0
        assert built["spills_in_loops"] <= in_loops_allowed, f"{what}: {built['spills_in_loops']} spills in a loop"
        if built["kernel"] == "sample":  # its rows in 16-byte vectors; each row's greedy flag is one byte
            loads = {op: count for op, count in built["loads"].items() if op != "LDG.E.U8"}
            assert _vectorised(loads) and "LDG.E.128" in loads, f"{what}: {built['loads']}"
        else:
            assert _vectorised(built["loads"]), f"{what}: {built['loads']}"


def test_every_gpu_keeps_a_matmul_candidate_for_every_block_height(report: dict[str, Any]) -> None:
    """The tuner leaves out candidates past a GPU's shared memory; at least one must be left at every height,
    for every prologue."""
    for gpu in report["gpus"]:
        heights: dict[tuple[int, int], int] = {}
        for step in gpu["steps"]:
            for built in step["builds"]:
                if built["kernel"] == "skinny_matmul":
                    fits = built["shared"] <= gpu["shared"]
                    height = (_form(built["constants"]), built["constants"]["BLOCK_M"])
                    heights[height] = heights.get(height, 0) + fits
        assert heights and all(heights.values()), (gpu["gpu"], heights)


def test_the_checks_catch_what_they_are_for(report: dict[str, Any]) -> None:
    """The controls fail these checks: float32 attention tiles of 64 keys on 4 warps spill (in the loop too),
    and without the JIT's divisibility hints the matmul loads its bf16 operands two bytes at a time."""
    controls = report["controls"]
    spilling = controls["float32 attention, 64-key tiles, 4 warps"]
    assert spilling["spilled"] > SPILL_ALLOWANCE and spilling["spills_in_loops"] > 0
    assert not _vectorised(controls["matmul without hints"]["loads"])


def test_the_persistent_layers_build(report: dict[str, Any]) -> None:
    """The persistent decoder layers (tts_engine/dia/persistent_layers.py) build for both GPUs, one build for an
    early and a full span alike (so the decoder's span buckets do not each compile one). One block fits an SM's
    shared memory; registers hold the working set (the whole kernel is one loop over the layers, so a spill
    anywhere is a spill in a loop: the allowance holds for both); loads are 16-byte vectors; each block asks L2
    for its next band at the barriers; and the barrier's release fences and its acquire drops the SM's L1 (what
    other blocks wrote is read from L2)."""
    for gpu in report["gpus"]:
        assert len(gpu["persistent"]) == 1, (gpu["gpu"], [built["constants"] for built in gpu["persistent"]])
        for built in gpu["persistent"]:
            what = f"{gpu['gpu']}: {built['constants']} {built['options']}"
            assert built["shared"] <= gpu["shared"], f"{what}: {built['shared']} B of shared memory"
            assert built["spilled"] <= SPILL_ALLOWANCE, f"{what}: {built['spilled']} B spilled"
            assert _vectorised(built["loads"]), f"{what}: {built['loads']}"
            assert built["dependent"]["prefetches"] > 0 and not built["dependent"]["waits"], f"{what}"
            assert built["fences"]["membar"] > 0 and built["fences"]["l1_invalidations"] > 0, f"{what}"
