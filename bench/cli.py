"""The benchmark: robustcnn side by side with torch CPU, in one process, with the same threads.

    python bench.py                 # every case, the cold start, the targets
    python bench.py --quick         # smaller time budgets, no cold start
    python bench.py --json FILE     # also write records {"case", "ours", "peer", "ours_s",
                                    #                     "peer_s", "ratio"}
    python bench.py --formats       # only the weight formats (add --quick for a fast look)
    python bench.py --cases TEXT    # only the cases whose name contains TEXT
    python bench.py --bytes-json F  # also write the bytes-per-format tables as JSON
    python bench.py --contend       # time each pair case again beside one spinning process per
                                    # thread (--contend N: N processes), our slowdown vs the peer's

(``python -m robustcnn.bench`` is the same.) Each case runs our functional API (or our Net, or
an attack: PGD-40 on LeNet-5) and the same computation in torch (a whole LeNet-5 also in
onnxruntime, the runtime users deploy with): checks that the outputs agree,
warms both up, then lets the two take turns (see ``common.time_turns``) so that background load
hits both alike, and reports the median time per call of each. ``ratio`` = torch time / our
time: > 1 means we are faster. torch is a bench-only extra: only ``robustcnn.bench`` imports it.

The weight-format section runs FC and conv layers with pruned weights in every format of
``robustcnn.engine.formats`` (dense, CSR, sparse codebook, Huffman streaming and decode-once,
dense-pattern codebooks) side by side with torch dense, torch sparse CSR and scipy.sparse; our
Huffman decoder against a NumPy one (MB/s); and the bytes of weights each format reads, per
case and per layer of the Deep Compression SqueezeNet and LeNet-5. The structured section runs
FC 4096² layers whose weight is circulant or Toeplitz-like (FFT on generators) against the
dense product with the same matrix, in torch and in our dense kernel.
"""

import argparse
import json

import numba
import numpy as np

from ..atomic import atomic_path
from ..engine import conv2d_forward
from . import attacks, coldstart, dense, pairs, runtime
from .common import FULL, QUICK, format_table
from .formats import binary, quantized, structured
from .formats.suite import SUITE as FORMATS
from .machine import print_header

# The sections of the bench in the order they run and report: a suite is a ``common.Suite``;
# the pair suite times the case families listed in it (each a function () → [pairs.Case]).
SUITES = (
    pairs.suite("kernels, nets and attacks against torch and onnxruntime",
                (dense.cases, runtime.cases, attacks.cases)),
    attacks.ENSEMBLE_SUITE,
    coldstart.SUITE,
    FORMATS,
    pairs.suite("quantized formats (int8, ternary, pow2) against our float32 and torch",
                (quantized.cases,), formats=True),
    pairs.suite("binary format (add/subtract, XNOR-popcount) against our float32 and torch",
                (binary.cases,), formats=True),
    pairs.suite("structured FC (circulant, Toeplitz-like r=4) against the dense product",
                (structured.cases,), formats=True),
)


def parse_args(argv=None, prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="fewer repetitions and smaller time budgets; no cold start")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON records")
    p.add_argument("--threads", type=int, help="Numba and torch threads (default: Numba's)")
    p.add_argument("--cases", metavar="SUBSTRING", help="only the cases whose name contains this")
    p.add_argument("--formats", action="store_true",
                   help="only the weight formats: sparse and codebook cases, Huffman decode, "
                        "bytes tables (no dense cases, no cold start)")
    p.add_argument("--bytes-json", metavar="FILE",
                   help="also write the bytes tables of the format section as JSON")
    p.add_argument("--contend", type=int, nargs="?", const=-1, default=0, metavar="N",
                   help="time each kernel, net and attack case again while N CPU-bound processes "
                        "spin beside it (default N: the thread count): our slowdown against the "
                        "peer's")
    args = p.parse_args(argv)
    if args.contend < -1:
        p.error(f"--contend: {args.contend} processes: give a count >= 0")
    return args


def main(argv=None, prog=None):
    args = parse_args(argv, prog)
    try:
        import torch
    except ImportError:
        raise SystemExit("bench.py compares against torch: pip install 'robustcnn[bench]'") \
            from None
    if args.threads:
        numba.set_num_threads(args.threads)
    torch.set_num_threads(numba.get_num_threads())
    if args.contend == -1:
        args.contend = numba.get_num_threads()
    budget = QUICK if args.quick else FULL

    # A first kernel call starts Numba's thread pool, which the header reports.
    conv2d_forward(np.zeros((1, 1, 4, 4), np.float32), np.zeros((1, 1, 3, 3), np.float32))
    planned = [(suite, suite.plan(args)) for suite in SUITES]
    planned = [(suite, plan) for suite, plan in planned if plan is not None]
    peak = print_header(torch, budget, sgemm=any(s.needs_peak(plan) for s, plan in planned))
    outcomes = [(suite, suite.run(plan, budget)) for suite, plan in planned]

    for suite, outcome in outcomes:
        suite.report(outcome, args, peak)
    print()
    print("targets")
    print(format_table(["target", "measured", "result"],
                       [line for suite, outcome in outcomes for line in suite.targets(outcome)]))
    if args.json:
        records = [r for suite, outcome in outcomes for r in suite.records(outcome)]
        with atomic_path(args.json) as tmp, open(tmp, "w") as f:
            json.dump(records, f, indent=1)
            f.write("\n")
