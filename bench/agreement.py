"""Do the Triton decode kernels give the lines the SDPA path gives, at full size? For GPU sessions.

    python bench/agreement.py                             # CUDA: float32, then bfloat16
    python bench/agreement.py --dtype float32 --steps 300

Two engines on one set of random full-size weights (bench/random_dia.py's `build`, so EOS is held off and lines
run to the cap): one with the decode kernels, skinny matmuls and (where it measured faster) the fused sampler,
the CUDA default; one with SDPA, cuBLAS and the compiled sampling chain (`decode_kernels=False`). Each renders
the same line greedily and with three seeds; printed per line: both lengths and the first frame where they
differ. In float32 the two compute the same sums within float32 rounding, far below the gaps between random
logits, so greedy lines should agree on every frame; a seeded line may part where top-p's cut falls within a
rounding of a token's cumulative probability (the fused sampler sums them in another order than the chain's
sort, and flat random logits put many tokens near the cut: H100, 2026-11-23, two of three seeds parted
after 107 and 195 frames). In bfloat16 one rounding can flip a near-tied token of
these near-flat random logits, after which the lines go their own ways: parting early there says nothing
about trained weights. The tests compare the kernels with SDPA on tiny models; this is the same check at full
size. Not a benchmark of record.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from bench.engine import TEXT
from bench.random_dia import build, hf_config
from tts_engine.engine import GenerationParams


def lines(dtype: torch.dtype, decode_kernels: bool, steps: int) -> dict[str, np.ndarray]:
    """Codes of the greedy line and three sampled ones from a freshly built engine (same seed, same weights)."""
    torch.manual_seed(0)
    _, engine = build(hf_config("full"), torch.device("cuda"), dtype, decode_kernels=None if decode_kernels else False)
    params = {"greedy": GenerationParams(max_tokens=steps, temperature=0)}
    params |= {f"seed {seed}": GenerationParams(max_tokens=steps, seed=seed) for seed in range(3)}
    codes = {name: engine.generate_codes(TEXT, p) for name, p in params.items()}
    del engine
    torch.cuda.empty_cache()
    return codes


def first_difference(a_TxC: np.ndarray, b_TxC: np.ndarray) -> int | None:
    n = min(len(a_TxC), len(b_TxC))
    differing = np.flatnonzero((a_TxC[:n] != b_TxC[:n]).any(axis=1))
    if len(differing):
        return int(differing[0])
    return None if len(a_TxC) == len(b_TxC) else n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--steps", type=int, default=300, help="max tokens per line")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("needs CUDA: on the CPU the decode kernels run in Triton's interpreter", file=sys.stderr)
        return 2
    # Plain float32 matmuls on both sides: TF32 would round each side's inputs its own way.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(f"# {torch.cuda.get_device_name()} torch {torch.__version__}")
    print("| dtype | line | frames, kernels | frames, SDPA | first differing frame |")
    print("|---|---|---|---|---|")
    for name in args.dtype:
        dtype = getattr(torch, name)
        ours, sdpa = lines(dtype, True, args.steps), lines(dtype, False, args.steps)
        for line, codes in ours.items():
            first = first_difference(codes, sdpa[line])
            print(f"| {name} | {line} | {len(codes)} | {len(sdpa[line])} | {'none' if first is None else first} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
