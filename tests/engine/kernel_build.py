"""Our Triton kernels compiled for GPUs this machine does not have (an H100, sm_90; an RTX 4090, sm_89, where
many self-hosters run the bot), and what their machine code says.

Triton compiles for a named target without a driver: `triton.compile` on an `ASTSource` gives the cubin that a
launch on that GPU would build, and the `cuobjdump` that Triton's wheel carries reads its registers, spills
and instructions. The launches are the real ones: a decode step of the full-size model, built on the meta
device (shapes and strides, no weights), calls the decode kernels and the skinny matmuls through stand-ins
that record each launch's arguments instead of running it. Each launch is then specialised as Triton's JIT
would specialise it at run time (`native_specialize_impl`: integers divisible by 16 and 16-byte-aligned
pointers get a divisibility hint, integers equal to 1 become constants); those hints decide whether loads
are vectorised, so compiling without them would judge other code than the GPU runs.

It runs in a process of its own, without TRITON_INTERPRET=1: with it set when triton is imported, Triton's
library functions are jitted for the interpreter and nothing compiles. `python -m tests.engine.kernel_build`
prints the table (`--json` for tests/engine/test_kernel_build.py); with another Triton first on PYTHONPATH
(the lent GPU machine has 3.6) it checks that version.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import multiprocessing
import os
import re
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import triton
from triton._C.libtriton import native_specialize_impl
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import CUDABackend
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction

from tts_engine.dia import kernels, linear, megakernel, persistent_layers, sample_kernel, sampling, skinny_kernel
from tts_engine.dia.cache import CrossCache, SelfCache
from tts_engine.dia.config import DiaConfig
from tts_engine.dia.model import DiaModel


@dataclass(frozen=True)
class Gpu:
    """A GPU to build for: its target, multiprocessors, and the shared memory one block may opt into."""

    name: str
    target: GPUTarget
    sms: int
    shared: int


H100 = Gpu("H100", GPUTarget("cuda", 90, 32), sms=132, shared=227 * 1024)
RTX_4090 = Gpu("RTX 4090", GPUTarget("cuda", 89, 32), sms=128, shared=99 * 1024)
OPTIONS = ("num_warps", "num_stages", "launch_pdl")
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


@dataclass(frozen=True)
class Launch:
    """One kernel launch as a decode step made it: the kernel body, its arguments and its compile options."""

    fn: Callable[..., None]
    args: tuple[Any, ...]
    constants: dict[str, Any]  # the constexpr keyword arguments
    options: dict[str, int]  # num_warps, num_stages
    do_not_specialize: tuple[str, ...] = ()

    def specialisation(self) -> tuple[dict[str, str], dict[tuple[int, ...], Any], dict[tuple[int, ...], Any]]:
        """Signature, constants and attributes as Triton's JIT derives them from these arguments."""
        jit = JITFunction(self.fn)
        signature: dict[str, str] = {}
        constants: dict[tuple[int, ...], Any] = {}
        attrs: dict[tuple[int, ...], Any] = {}
        positional = iter(self.args)
        for i, name in enumerate(jit.arg_names):
            if name in self.constants:
                signature[name], constants[(i,)] = "constexpr", self.constants[name]
                continue
            specialise = name not in self.do_not_specialize
            kind, spec = native_specialize_impl(CUDABackend, next(positional), False, specialise, True)
            if kind == "constexpr":
                signature[name], constants[(i,)] = kind, spec
                continue
            signature[name] = kind
            if spec:
                attrs[(i,)] = CUDABackend.parse_attr(spec)
        return signature, constants, attrs

    def key(self) -> str:
        signature, constants, attrs = self.specialisation()
        return repr((self.fn.__name__, signature, sorted(constants.items()), sorted(attrs.items()), self.options))

    def arg_index(self, name: str) -> int:
        """Where the argument `name` sits among the positional ones (constexprs go by keyword)."""
        return [a for a in JITFunction(self.fn).arg_names if a not in self.constants].index(name)

    def with_config(self, config: linear.Config) -> Launch:
        """This skinny-matmul launch with another candidate block shape (and, for split-K, the float32 parts,
        int32 counts and K slice that linear.SkinnyLinear._launch passes with it; for PDL, the prefetch)."""
        constants = {**self.constants, "BLOCK_N": config.block_n, "BLOCK_K": config.block_k, "SPLITS": config.splits}
        args = list(self.args)
        y, w, k = (args[self.arg_index(name)] for name in ("y_ptr", "w_ptr", "k"))
        k_split = linear.split_width(k, config) if config.splits > 1 else k
        args[self.arg_index("k_split")] = k_split
        if config.splits > 1:
            rows = config.splits * constants["BLOCK_M"]
            args[self.arg_index("part_ptr")] = torch.empty((rows, w.shape[0]), dtype=torch.float32, device=y.device)
            args[self.arg_index("count_ptr")] = torch.empty(linear.MAX_SPLIT_BANDS, dtype=torch.int32, device=y.device)
        lines, line = linear.prefetch_lines(k_split, w.element_size(), w.shape[0], config.splits)
        constants |= {"PDL": config.pdl, "LINES": lines, "LINE": line}
        options = {"num_warps": config.warps, "num_stages": config.stages}
        if config.pdl:
            options["launch_pdl"] = True
        return dataclasses.replace(self, args=tuple(args), constants=constants, options=options)

    def compile(self, target: GPUTarget, *, hints: bool = True) -> Any:
        """The cubin for `target`; without `hints`, as if no argument were known divisible or aligned."""
        signature, constants, attrs = self.specialisation()
        source = ASTSource(JITFunction(self.fn), signature, constants, attrs if hints else {})
        # FMA fusion on, the JIT's default (named, because Triton 3.9 warns when it is left to the default).
        return triton.compile(source, target=target, options={**self.options, "enable_fp_fusion": True})


class _Recorder:
    """Stands in for a jitted kernel: `kernel[grid](...)` records the launch and runs nothing."""

    def __init__(self, fn: Callable[..., None], into: list[Launch], do_not_specialize: tuple[str, ...] = ()) -> None:
        self.fn, self.into, self.do_not_specialize = fn, into, do_not_specialize

    def __getitem__(self, grid: object) -> Callable[..., None]:
        def launch(*args: Any, **kwargs: Any) -> None:
            options = {name: kwargs.pop(name) for name in OPTIONS if name in kwargs}
            self.into.append(Launch(self.fn, args, kwargs, options, self.do_not_specialize))

        return launch


EVERY_FORM = (linear.NORM, linear.ROPED, linear.NORM_GATED)  # every norm and the activation fused


@dataclass(frozen=True)
class Step:
    """A decode step to record: its rows (two per request), spans, dtype, whether batch-invariant, and the fused
    forms the tuner is taken to have kept (linear.FORMS)."""

    rows: int
    self_span: int
    cross_span: int
    dtype: torch.dtype = torch.bfloat16
    invariant: bool = False
    forms: tuple[int, ...] = EVERY_FORM
    pdl: bool = True  # build its matmuls as programmatic dependent launches too, where the GPU has them


WIDTH_1 = Step(rows=2, self_span=256, cross_span=203)  # one line, early on
# Sixteen lines at full spans, as an H100 tuned them (2026-11-23: no NORM form won past 2 rows); the activation
# in the gate/up projection's epilogue after the norm's kernel.
WIDTH_16 = Step(rows=32, self_span=1024, cross_span=1024, forms=(linear.GATED,))
# The PDL forms are built for the bfloat16 steps of one and sixteen lines (their machine code is alike in the
# others, and each variant doubles the builds).
FLOAT32 = Step(rows=2, self_span=512, cross_span=77, dtype=torch.float32, pdl=False)
INVARIANT = Step(rows=6, self_span=768, cross_span=203, invariant=True, pdl=False)  # DIA_BATCH_INVARIANT
# The RTX 4090 serves bfloat16: no float32 step there.
STEPS = {H100: (WIDTH_1, WIDTH_16, FLOAT32, INVARIANT), RTX_4090: (WIDTH_1, WIDTH_16, INVARIANT)}


@functools.cache
def _meta_model(dtype: torch.dtype) -> DiaModel:
    with torch.device("meta"):
        model = DiaModel(DiaConfig()).to(dtype)
    model.fuse()
    model.setup_rope(model.cfg.decoder.max_positions, torch.device("meta"))
    return model


def record(step: Step, gpu: Gpu = H100) -> list[Launch]:
    """The kernel launches of one decode step of the full-size model on `gpu` (every projection on the skinny
    kernel, in the step's fused forms wherever they apply)."""
    launches: list[Launch] = []
    model = _meta_model(step.dtype)
    span = model.cfg.longest_span if step.invariant else None  # as DiaModel.use_batch_invariant sets it
    decode_kernels = kernels.DecodeKernels(
        _Recorder(kernels._split_attention, launches),
        _Recorder(kernels._rope_write, launches),
        programs=2 * gpu.sms,  # as kernels.for_device counts them
        counters=torch.zeros(kernels.MAX_ROW_KV, dtype=torch.int32, device="meta"),
        invariant_span=span,
        trigger=gpu.target.arch >= 90,  # as kernels.pdl_capable says there
        dependent=frozenset({step.rows}) if step.pdl and gpu.target.arch >= 90 else frozenset(),
    )
    kernel = _Recorder(skinny_kernel.skinny_matmul, launches, linear.DO_NOT_SPECIALIZE)
    skinny = linear.SkinnyLinear(kernel=kernel, invariant=step.invariant)
    for weight in model.parameters():
        if weight.dim() == 2:  # every projection on the kernel, in the step's forms wherever they apply
            skinny.choices[(step.rows, *weight.shape)] = linear.CANDIDATES[0]
            for form in step.forms:
                skinny.fusions[(form, step.rows, *weight.shape)] = linear.CANDIDATES[0]
    meta, cfg = torch.device("meta"), model.cfg
    cache = SelfCache.allocate(cfg, rows=step.rows, length=cfg.decoder.max_positions, device=meta, dtype=step.dtype)
    cross = CrossCache.allocate(cfg, rows=step.rows, max_text=cfg.encoder.max_positions, device=meta, dtype=step.dtype)
    tokens = torch.zeros(step.rows, 1, cfg.decoder.num_channels, dtype=torch.long, device=meta)
    pos = torch.zeros(step.rows, 1, dtype=torch.long, device=meta)
    saved = model.ops
    model.ops = dataclasses.replace(model.ops, kernels=decode_kernels, linear=skinny)
    try:
        with _compiled_form():
            logits = model.decode(tokens, pos, cache, cross, self_span=step.self_span, cross_span=step.cross_span)
    finally:
        model.ops = saved
    if not step.invariant:  # DiaModel.use_decode_kernels samples through the kernel; batch-invariant steps do not
        _record_sampling(logits, launches)
    return launches


# The persistent layers' spans: one line early on, and at full spans.
PERSISTENT_SPANS = ((WIDTH_1.self_span, WIDTH_1.cross_span), (1024, 1024))


def record_persistent(gpu: Gpu = H100) -> list[Launch]:
    """The launches of the persistent decoder layers (persistent_layers.py) for one request's steps in bfloat16,
    one block an SM of `gpu`, at PERSISTENT_SPANS."""
    launches: list[Launch] = []
    model = _meta_model(torch.bfloat16)
    meta, cfg = torch.device("meta"), model.cfg
    cache = SelfCache.allocate(cfg, rows=2, length=cfg.decoder.max_positions, device=meta, dtype=torch.bfloat16)
    cross = CrossCache.allocate(cfg, rows=2, max_text=cfg.encoder.max_positions, device=meta, dtype=torch.bfloat16)
    x = torch.zeros(2, 1, cfg.decoder.hidden_size, dtype=torch.bfloat16, device=meta)
    pos = torch.zeros(2, dtype=torch.long, device=meta)
    assert model.rope is not None
    saved = megakernel.decoder_layers
    megakernel.decoder_layers = _Recorder(saved.fn, launches, megakernel.DO_NOT_SPECIALIZE)
    try:
        with _compiled_form():
            layers = persistent_layers.PersistentLayers(model, programs=gpu.sms)
            for self_span, cross_span in PERSISTENT_SPANS:
                layers(x, pos, cache, cross, self_span, cross_span, model.rope)
    finally:
        megakernel.decoder_layers = saved
    return launches


def _record_sampling(logits_Rx1xCxV: torch.Tensor, launches: list[Launch]) -> None:
    """The fused sampler's launch on a step's logits, as decode.Decoder._step makes it."""
    rows, _, channels, vocab = logits_Rx1xCxV.shape
    width, meta = rows // 2, torch.device("meta")
    cond, uncond = logits_Rx1xCxV[:, 0].view(width, 2, channels, vocab).unbind(1)
    params = sampling.SamplingParams(
        cfg_scale=torch.empty(width, device=meta),
        temperature=torch.empty(width, device=meta),
        top_k=torch.empty(width, dtype=torch.long, device=meta),
        top_p=torch.empty(width, device=meta),
        greedy=torch.empty(width, dtype=torch.bool, device=meta),
    )
    noise = torch.empty((16, width, channels, vocab), device=meta)
    sampler = sample_kernel.FusedSampler(_Recorder(sample_kernel._sample, launches))
    sampler(cond, uncond, params, 1024, noise, torch.zeros(1, dtype=torch.long, device=meta))


@contextlib.contextmanager
def _compiled_form() -> Iterator[None]:
    """Makes the launch code choose what it chooses on a GPU, not the interpreter's float32 dot inputs."""
    saved = kernels.interpreting
    kernels.interpreting = linear.interpreting = lambda: False  # type: ignore[attr-defined]
    try:
        yield
    finally:
        kernels.interpreting = linear.interpreting = saved  # type: ignore[attr-defined]


def distinct(launches: list[Launch], pdl: bool = False) -> dict[str, Launch]:
    """One launch per distinct compilation, by Launch.key; skinny matmuls once with every candidate block shape
    (as PDL launches too, with `pdl`), split attention recorded as a dependent launch also as a plain one, the
    sampler with every warp count."""
    found: dict[str, Launch] = {}
    for launch in launches:
        variants = [launch]
        if launch.fn is skinny_kernel.skinny_matmul:
            n = launch.args[launch.arg_index("n")]
            variants = [launch.with_config(config) for config in linear.candidates(n, pdl=pdl)]
        elif launch.fn is kernels._split_attention and launch.constants["DEPENDENT"]:  # attention_tuning races these
            plain = {name: value for name, value in launch.options.items() if name != "launch_pdl"}
            variants = [launch, dataclasses.replace(launch, constants={**launch.constants, "DEPENDENT": False},
                                                    options=plain)]  # fmt: skip
        elif launch.fn is sample_kernel._sample:  # FusedSampler.tune picks among these
            variants = [dataclasses.replace(launch, options={"num_warps": warps}) for warps in sample_kernel.WARPS]
        for variant in variants:
            found.setdefault(variant.key(), variant)
    return found


@dataclass(frozen=True)
class Built:
    """What the machine code of one compiled launch says."""

    kernel: str
    constants: dict[str, Any]  # the block shape and other constexprs
    options: dict[str, int]
    itemsize: int  # bytes per element of the launch's first tensor (bf16 2, float32 4)
    registers: int
    spilled: int  # bytes of stack and local memory per thread (register spills)
    spills_in_loops: int  # local-memory loads and stores inside a loop of the machine code: a spill paid per step
    shared: int  # bytes of shared memory per block
    loads: dict[str, int]  # global load instructions by opcode (LDG, and cp.async's LDGSTS)
    dependent: dict[str, int]  # PDL's machine code: L2 prefetches, launch triggers, waits, memory accesses before
    fences: dict[str, int]  # memory fences (MEMBAR) and L1 invalidations (CCTL.IVALL): a grid barrier's

    def describe(self) -> str:
        constants = {k: v for k, v in self.constants.items() if k not in ("DOT_F32", "PRECISION")}
        return f"{self.kernel} {constants} {self.options}"


def build(launch: Launch, gpu: Gpu = H100, *, hints: bool = True) -> Built:
    compiled = launch.compile(gpu.target, hints=hints)
    with tempfile.TemporaryDirectory() as folder:
        cubin = Path(folder) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        usage = _cuobjdump("--dump-resource-usage", cubin)
        sass = _cuobjdump("--dump-sass", cubin)
    resources = dict(re.findall(r"(REG|STACK|LOCAL):(\d+)", usage))
    first_tensor = next(arg for arg in launch.args if isinstance(arg, torch.Tensor))
    return Built(
        kernel=launch.fn.__name__.lstrip("_"),
        constants=dict(launch.constants),
        options={"num_warps": compiled.metadata.num_warps, "num_stages": compiled.metadata.num_stages},
        itemsize=first_tensor.element_size(),
        registers=int(resources["REG"]),
        spilled=int(resources["STACK"]) + int(resources["LOCAL"]),
        spills_in_loops=_spills_in_loops(sass),
        shared=int(compiled.metadata.shared),
        loads=dict(Counter(re.findall(r"\b(LDGSTS[.\w]*|LDG[.\w]*)", sass))),
        dependent=_dependent_launch(sass),
        fences={"membar": len(re.findall(r"\bMEMBAR\b", sass)), "l1_invalidations": sass.count("CCTL.IVALL")},
    )


def _dependent_launch(sass: str) -> dict[str, int]:
    """What a programmatic dependent launch's machine code does: L2 prefetches (CCTL.E.PF2), the trigger that
    lets the next kernel start (PREEXIT), the wait for the kernel before (ACQBULK), and how many global loads,
    stores and atomics come before that wait in the code (which would read or write before the kernel before
    has finished; prefetches are no such access)."""
    ops = [re.sub(r"^@!?U?P\w+\s+", "", op) for op in re.findall(r"/\*[0-9a-f]{4,}\*/\s+(.*?)\s*;", sass)]
    waits = [i for i, op in enumerate(ops) if op.startswith("ACQBULK")]
    memory = [i for i, op in enumerate(ops) if re.match(r"(LDG|LDGSTS|STG|ATOMG|RED|LD|ST)\.", op)]
    first_wait = waits[0] if waits else len(ops)
    return {
        "prefetches": sum(op.startswith("CCTL.E.PF2") for op in ops),
        "triggers": sum(op.startswith("PREEXIT") for op in ops),
        "waits": len(waits),
        "accesses_before_wait": sum(i < first_wait for i in memory) if waits else 0,
    }


def _spills_in_loops(sass: str) -> int:
    """Local-memory accesses (STL, LDL) between a backward branch and its target: inside a loop."""
    instructions = [(int(address, 16), op) for address, op in re.findall(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", sass)]
    loops = []
    for address, op in instructions:
        branch = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", op)
        if branch and int(branch.group(1), 16) < address:
            loops.append((int(branch.group(1), 16), address))
    local = [address for address, op in instructions if re.match(r"(@!?U?P\w+\s+)?(STL|LDL)\b", op)]
    return sum(any(start <= address <= end for start, end in loops) for address in local)


def _cuobjdump(flag: str, cubin: Path) -> str:
    return subprocess.run([str(CUOBJDUMP), flag, str(cubin)], check=True, capture_output=True, text=True).stdout


def controls() -> dict[str, Built]:
    """The same kernels in forms we avoid, to show what the checks see in them (H100): the float32 split
    attention with 64-key tiles on 4 warps, and a skinny matmul compiled without the JIT's divisibility hints."""
    attention = next(launch for launch in record(FLOAT32) if launch.fn is kernels._split_attention)
    wide = dataclasses.replace(attention, constants={**attention.constants, "BLOCK_N": 64}, options={"num_warps": 4})
    matmul = next(
        launch
        for launch in record(WIDTH_1)
        if launch.fn is skinny_kernel.skinny_matmul
        and launch.constants["PROLOGUE"] == linear.PLAIN
        and launch.constants["EPILOGUE"] == skinny_kernel.STORE
    )
    return {"float32 attention, 64-key tiles, 4 warps": build(wide), "matmul without hints": build(matmul, hints=False)}


def report() -> dict[str, Any]:
    """Every distinct build of every step in STEPS on each GPU, with launch counts, and the controls."""
    recorded = {(gpu, step): record(step, gpu) for gpu, steps in STEPS.items() for step in steps}
    kinds = {at: distinct(launches, at[1].pdl and at[0].target.arch >= 90) for at, launches in recorded.items()}
    jobs: dict[tuple[str, str], tuple[Launch, Gpu]] = {}  # by GPU and Launch.key: steps share most builds
    for (gpu, _), by_key in kinds.items():
        for key, launch in by_key.items():
            jobs.setdefault((gpu.name, key), (launch, gpu))
    persistent = {gpu: {launch.key(): launch for launch in record_persistent(gpu)} for gpu in STEPS}
    for gpu, by_key in persistent.items():
        for key, launch in by_key.items():
            jobs.setdefault((gpu.name, key), (launch, gpu))
    built = dict(zip(jobs, _build_all(list(jobs.values())), strict=True))
    gpus = []
    for gpu, steps in STEPS.items():
        built_steps = []
        for step in steps:
            counts = Counter(launch.fn.__name__.lstrip("_") for launch in recorded[(gpu, step)])
            builds = [dataclasses.asdict(built[(gpu.name, key)]) for key in kinds[(gpu, step)]]
            described = dataclasses.asdict(step) | {"dtype": str(step.dtype)}
            built_steps.append({"step": described, "launches": counts, "builds": builds})
        layers = [dataclasses.asdict(built[(gpu.name, key)]) for key in persistent[gpu]]
        gpus.append({"gpu": gpu.name, "target": gpu.target.arch, "shared": gpu.shared, "steps": built_steps,
                     "persistent": layers})  # fmt: skip
    return {
        "triton": triton.__version__,
        "gpus": gpus,
        "controls": {name: dataclasses.asdict(built) for name, built in controls().items()},
    }


_JOBS: list[tuple[Launch, Gpu]] = []  # what forked builders compile, by index


def _build_job(index: int) -> Built:
    launch, gpu = _JOBS[index]
    return build(launch, gpu)


def _build_all(jobs: list[tuple[Launch, Gpu]]) -> list[Built]:
    """`build` for every job, on every core: forked processes (each build is mostly LLVM and ptxas, CPU-bound
    and holding the GIL in places), which inherit the jobs rather than pickling meta tensors."""
    global _JOBS
    _JOBS = jobs
    workers = min(len(jobs), os.cpu_count() or 1)
    try:
        if workers <= 1:
            return [build(launch, gpu) for launch, gpu in jobs]
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            return pool.map(_build_job, range(len(jobs)))
    finally:
        _JOBS = []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        # Triton's own library functions are jitted at import for the interpreter then, and cannot compile.
        parser.error("run without TRITON_INTERPRET=1")
    if not CUOBJDUMP.exists():
        parser.exit(3, f"no cuobjdump in this Triton wheel (looked for {CUOBJDUMP})\n")
    result = report()
    if args.json:
        print(json.dumps(result))
        return
    print(f"triton {result['triton']}")
    for gpu in result["gpus"]:
        for step in gpu["steps"]:
            print(f"\n{gpu['gpu']} (sm_{gpu['target']}), {step['step']}: launches {step['launches']}")
            for built in step["builds"]:
                _print(Built(**built))
        print(f"\n{gpu['gpu']} (sm_{gpu['target']}), the persistent layers (one request, bfloat16):")
        for built in gpu["persistent"]:
            _print(Built(**built))
    print("\ncontrols (forms we avoid, H100):")
    for name, built in result["controls"].items():
        print(f"  {name}:")
        _print(Built(**built))


def _print(built: Built) -> None:
    loads = ", ".join(f"{op} x{n}" for op, n in sorted(built.loads.items()))
    print(f"  {built.describe()}\n    regs {built.registers}, spilled {built.spilled} B "
          f"({built.spills_in_loops} accesses in loops), "
          f"shared {built.shared} B; loads: {loads}; fences: {built.fences}")  # fmt: skip


if __name__ == "__main__":
    main()
