"""Cold start: seconds from a fresh interpreter to the end of its first LeNet-5 forward
(batch 1), robustcnn with an empty and with a warm Numba kernel cache, and torch."""

import json
import os
import subprocess
import sys
import tempfile
import time

import numba

from .common import Suite, background_cpus, cpu_snapshot, format_table
from .pairs import OURS, PEER


_COLD_START = """
import json, time
import numpy as np
from robustcnn.models.lenet import lenet5
net = lenet5()
ready = time.time()
net.forward(np.zeros((1,) + net.input_shape, dtype=np.float32))
print(json.dumps({"ready": ready, "done": time.time()}))
"""

_TORCH_COLD_START = """
import json, time
import torch
from torch import nn
net = nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2, 2, ceil_mode=True), nn.Conv2d(20, 50, 5),
                    nn.MaxPool2d(2, 2, ceil_mode=True), nn.Flatten(), nn.Linear(800, 500),
                    nn.ReLU(), nn.Linear(500, 10)).eval()
ready = time.time()
with torch.no_grad():
    net(torch.zeros(1, 1, 28, 28))
print(json.dumps({"ready": ready, "done": time.time()}))
"""


def _first_forward(script, env):
    """Seconds from starting a fresh interpreter to the end of its first forward, and of that the
    seconds of the forward itself (with Numba: compiling or loading the cached kernels)."""
    start = time.time()
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         check=True, timeout=600)
    stamps = json.loads(out.stdout.strip().splitlines()[-1])
    return stamps["done"] - start, stamps["done"] - stamps["ready"]


def cold_start(warm_runs=3):
    """Time to the first LeNet-5 forward (batch 1) in a fresh process: robustcnn with an empty
    Numba cache, robustcnn with that cache warm (median of ``warm_runs``), torch."""
    before = cpu_snapshot()
    with tempfile.TemporaryDirectory(prefix="robustcnn-bench-numba-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache,
                   NUMBA_NUM_THREADS=str(numba.get_num_threads()))
        empty = _first_forward(_COLD_START, env)
        warm = sorted(_first_forward(_COLD_START, env) for _ in range(warm_runs))[warm_runs // 2]
        peer = _first_forward(_TORCH_COLD_START, env)
    return {"empty": empty, "warm": warm, "torch": peer,
            "background": background_cpus(before, cpu_snapshot())}


# ---------------------------------------------------------------------------------------------
# The suite: measured unless --quick, left out by --formats


def plan(args):
    return None if args.formats else not args.quick


def run(measure, budget):
    return cold_start() if measure else None


def report(cold, args, peak):
    if cold is None:
        return
    print()
    bg = "?" if cold["background"] is None else f"{cold['background']:.2f}"
    print("cold start, seconds from a fresh interpreter to the end of the first LeNet-5 "
          f"forward (batch 1); bg CPUs {bg}")
    print(format_table(["", "total s", "of which first forward s"], [
        ["robustcnn, empty numba cache", f"{cold['empty'][0]:.2f}", f"{cold['empty'][1]:.2f}"],
        ["robustcnn, warm numba cache", f"{cold['warm'][0]:.2f}", f"{cold['warm'][1]:.2f}"],
        ["torch", f"{cold['torch'][0]:.2f}", f"{cold['torch'][1]:.2f}"]]))


def targets(cold, max_cold_start=3.0):
    what = f"warm-cache cold start <= {max_cold_start:g} s"
    if cold is None:
        return [(what, "not measured (--quick)", "-")]
    s = cold["warm"][0]
    return [(what, f"{s:.2f} s", "PASS" if s <= max_cold_start else "FALL SHORT")]


def records(cold):
    """--json records: the empty and the warm cache, each against torch."""
    if cold is None:
        return []
    return [{"case": f"lenet5 cold start b1, {label}", "ours": OURS, "peer": PEER,
             "ours_s": cold[key][0], "peer_s": cold["torch"][0],
             "ratio": cold["torch"][0] / cold[key][0]}
            for key, label in (("empty", "empty numba cache"), ("warm", "warm numba cache"))]


SUITE = Suite("cold start", plan, run, report, targets, records)
