#!/usr/bin/env bash
# Everything that needs a CUDA device, in one go: the GPU correctness tests, then the benchmarks.
#
#     bench/gpu.sh OUT [PART...]      # parts: info tests kernels engine audio concurrent profile baseline invariant
#                                     #        agreement sweep nopdl build persistent mega megatests megastep
#                                     # (default: info tests kernels engine audio concurrent)
#
# Each part writes its log (and JSON where the script has one) into OUT and has its own time limit, so one
# that fails or hangs leaves the others' results. Meant for a lent GPU machine: if the Python packages that
# the worker needs are missing there, install wheels first and put them on PYTHONPATH (see bench/README.md).
set -u
out=${1:?usage: bench/gpu.sh OUT [PART...]}
shift
parts=${*:-info tests kernels engine audio concurrent}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
python=${PYTHON:-python3}
# The device copy of the tree may have no .git, or a stale one: before a run, `git rev-parse HEAD > .commit`
# here (.commit is ignored) and carry it, or set COMMIT; what is measured is then recorded with the right commit.
COMMIT=${COMMIT:-$(cat .commit 2>/dev/null || git rev-parse HEAD 2>/dev/null || true)}
commit=(${COMMIT:+--commit "$COMMIT"})

run() {  # run NAME LIMIT_S COMMAND...: log to OUT/NAME.log, say how it ended
    local name=$1 limit=$2
    shift 2
    local begin=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "## $name: exit $rc after $((SECONDS - begin)) s"
    tail -n 25 "$out/$name.log"
}

for part in $parts; do
    case $part in
        info)
            nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,clocks.sm,clocks.max.sm --format=csv
            "$python" -c 'import torch, transformers, triton; print("torch", torch.__version__, "transformers", transformers.__version__, "triton", triton.__version__)'
            ;;
        tests)  # each engine they load tunes its kernels first, compiling every candidate on a fresh machine: on an
            # H100 (2026-11-24) the first three tests took most of four minutes
            run tests 540 "$python" -m pytest -v --durations=0 -m gpu -p no:cacheprovider tests/engine/test_gpu.py \
                tests/engine/test_scheduler.py tests/audio/test_codec.py
            ;;
        kernels)  # the decode kernels' and skinny matmuls' tests run on the CPU in Triton's interpreter; here compiled:
            # about 175 kernel specialisations, so compiled on several cores where pytest-xdist was carried.
            parallel=()
            if "$python" -c 'import xdist' 2>/dev/null; then parallel=(-n 8); fi
            # (pytest-benchmark, where installed, turns itself off under xdist with a warning that -W error fails)
            run kernels 200 "$python" -m pytest -q "${parallel[@]}" -p no:cacheprovider -p no:benchmark tests/engine/test_kernels.py \
                tests/engine/test_linear.py tests/engine/test_attention_tuning.py
            ;;
        build)  # the kernels' machine code as this machine's Triton builds it (CI reads its own Triton's): the PDL
            # kernels' prefetches, triggers and waits, no access before the wait, registers, spills
            run build 300 "$python" -m pytest -q -p no:cacheprovider tests/engine/test_kernel_build.py
            ;;
        engine)
            # building both engines takes about 80 s and the reference's four lines at 30 to 47 steps/s 100 to 150
            run engine 480 "$python" bench/engine.py "${commit[@]}" --json "$out/engine.json"
            ;;
        concurrent)
            run concurrent 420 "$python" bench/engine.py "${commit[@]}" --concurrent 1 4 8 16 32 --json "$out/concurrent.json"
            ;;
        baseline)  # our engine without the Triton decode kernels, for comparison with `engine`
            run baseline 200 "$python" bench/engine.py "${commit[@]}" --skip-reference --no-decode-kernels \
                --json "$out/engine-sdpa.json"
            ;;
        nopdl)  # what programmatic dependent launches gain: our engine with and without them on the same weights,
            # taking turns in one run (two runs on two machines differ by about what they gain)
            run nopdl 300 "$python" bench/engine.py "${commit[@]}" --skip-reference --against-no-dependent-launches \
                --json "$out/engine-nopdl.json"
            ;;
        invariant)  # the cost of DIA_BATCH_INVARIANT: the batching run with the kernels in their invariant form
            run invariant 300 "$python" bench/engine.py "${commit[@]}" --batch-invariant --concurrent 1 4 16 \
                --repeats 2 --json "$out/concurrent-invariant.json"
            ;;
        agreement)  # full-size lines through the decode kernels against the SDPA path, float32 and bfloat16
            run agreement 300 "$python" bench/agreement.py
            ;;
        profile)
            run profile 240 "$python" bench/profile_step.py
            ;;
        sweep)  # the tuner's matmul candidates with and without programmatic dependent launch, against cuBLAS
            run sweep 240 "$python" bench/skinny_sweep.py --tuner
            ;;
        mega)  # the persistent decoder layers (tts_engine/dia/megakernel.py) against the layer loop, taking turns on
            # the same weights in one run; the log says whether their check at load let them serve
            run mega 540 "$python" bench/engine.py "${commit[@]}" --skip-reference --against-persistent-layers \
                --json "$out/engine-mega.json"
            ;;
        megastep)  # the persistent layers in several block shapes against the tuned layer loop, on one step's
            # layers alone (captured, replayed): which persistent_layers.Shapes to keep
            run megastep 300 "$python" bench/megastep.py
            ;;
        megatests)  # the persistent layers on a GPU: their check passes (real grid barriers; two launches the
            # same bits, and in agreement with the phases launched one by one) and captured steps render the loop's lines
            run megatests 300 "$python" -m pytest -v -m gpu -p no:cacheprovider tests/engine/test_megakernel.py
            ;;
        persistent)  # a layer's projections chained through one persistent kernel with grid barriers, against a
            # launch each: whether a megakernel would remove the ~3.5 us each weight-streaming kernel costs
            run persistent 300 "$python" bench/persistent.py --budget 200
            ;;
        audio)
            run audio 90 "$python" bench/audio.py "${commit[@]}" --json "$out/audio.json"
            ;;
        *)
            echo "unknown part: $part" >&2
            exit 2
            ;;
    esac
done
