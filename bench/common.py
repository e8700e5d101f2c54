"""What every suite of the bench shares: time budgets, timing by turns with the load and page
faults beside it, the output check, aligned tables, and the record a suite is."""

import contextlib
import os
import re
import statistics
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

TOLERANCE = 1e-3  # max |ours − peer| / max |peer| over a case's outputs
# Names of the implementations several suites time (the "ours"/"peer" of the --json records)
OURS_DENSE, TORCH_DENSE = "robustcnn-dense", "torch-dense"


@dataclass(frozen=True)
class Budget:
    """How long to time each implementation of a case: the median of at least ``reps`` calls
    and at least ``seconds`` of calls, in turns of about ``turn`` seconds; ``warmup`` calls first
    (the first one compiles)."""

    reps: int
    seconds: float
    warmup: int
    turn: float


FULL = Budget(reps=5, seconds=0.5, warmup=2, turn=0.1)
QUICK = Budget(reps=3, seconds=0.1, warmup=1, turn=0.03)


@dataclass(frozen=True)
class Suite:
    """One section of the bench. The command line runs the suites of ``cli.SUITES`` in order:
    ``plan`` for each (before the header), then ``run``, then the report, targets and records.

    plan(args) → what to run, or None when the flags leave the suite out (it then prints,
    records and targets nothing); run(plan, budget) → its outcome; report(outcome, args, peak)
    prints its section (peak: (GFLOP/s, what it is)); targets(outcome) → (what, measured,
    verdict) lines; records(outcome) → --json records {"case", "ours", "peer", "ours_s",
    "peer_s", "ratio"}. ``needs_peak(plan)``: whether the header should measure the machine's
    SGEMM rate for it (the %peak columns).
    """

    name: str
    plan: Callable
    run: Callable
    report: Callable
    targets: Callable
    records: Callable
    needs_peak: Callable = lambda plan: False


def selected(name, match):
    """Whether ``--cases match`` selects the case ``name`` (every case without it)."""
    return match is None or match in name


# ---------------------------------------------------------------------------------------------
# Timing


def cpu_snapshot():
    """(wall s, CPU-seconds busy on the whole machine or None, CPU-seconds of this process and
    of its finished children)."""
    busy = None
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
        busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait
    except (OSError, ValueError, IndexError):
        pass
    t = os.times()
    return time.perf_counter(), busy, t.user + t.system + t.children_user + t.children_system


def background_cpus(before, after):
    """CPUs kept busy by other processes between two snapshots (None where unknown): noise."""
    wall = after[0] - before[0]
    if before[1] is None or after[1] is None or wall <= 0:
        return None
    return max(0.0, (after[1] - before[1]) - (after[2] - before[2])) / wall


@contextlib.contextmanager
def contention(processes):
    """``processes`` CPU-bound Python processes spinning beside the block (none: nothing), the
    busy machine a user's laptop or a shared server is; yields their ``Popen``s."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(processes)]
    try:
        time.sleep(0.2 if spinners else 0)  # let them reach the loop
        yield spinners
    finally:
        for p in spinners:
            p.kill()
        for p in spinners:
            p.wait()


def _page_faults():
    """Minor page faults of this process so far (0 where unknown)."""
    try:
        import resource
    except ImportError:  # not on Unix
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_turns(fns, budget):
    """Median seconds per call of each of ``fns`` and page faults per timed call of each, taking
    turns so that background load hits all alike → (seconds list, faults list).

    A turn makes one untimed call, then timed calls for ``budget.turn`` seconds (at least one).
    The untimed call absorbs what the previous turn left behind. Measured on the 2-core VM
    this was written on: (1) alternating call by call, each side page-faulted its buffers
    back in after the other's frees had reshaped glibc's heap (depthwise fwd 2.8 → 7-12 ms per
    call); (2) Numba's and torch's libgomp pools spin for a few ms after a parallel region, but
    that did not slow the other side's next call, while sleeping 50 ms before a call to let them
    park did (waking parked threads): so no pause.
    """
    for _ in range(budget.warmup):
        for fn in fns:
            fn()
    times, faults = [[] for _ in fns], [0] * len(fns)
    while min(map(len, times)) < budget.reps or min(map(sum, times)) < budget.seconds:
        for side, fn in enumerate(fns):
            fn()  # untimed, see above
            start = time.perf_counter()
            while True:
                f0 = _page_faults()
                t0 = time.perf_counter()
                fn()
                t1 = time.perf_counter()
                faults[side] += _page_faults() - f0
                times[side].append(t1 - t0)
                if t1 - start >= budget.turn:
                    break
    return ([statistics.median(t) for t in times],
            [f / len(t) for f, t in zip(faults, times)])


def time_pair(ours, peer, budget):
    """Median seconds per call of ``ours()`` and ``peer()`` and page faults per timed call of
    each, in turns (see ``time_turns``) → (ours_s, peer_s, ours_faults, peer_faults)."""
    (ours_s, peer_s), (ours_faults, peer_faults) = time_turns((ours, peer), budget)
    return ours_s, peer_s, ours_faults, peer_faults


# ---------------------------------------------------------------------------------------------
# Checking


def _numpy(a):
    return a.detach().numpy() if hasattr(a, "detach") else np.asarray(a)


def relative_error(ours, peer):
    """max |ours − peer| / max |peer| over pairs of outputs (inf if the shapes differ); the
    outputs are numpy arrays or torch tensors."""
    worst = 0.0
    for a, b in zip(ours, peer, strict=True):
        a, b = _numpy(a).astype(np.float64), _numpy(b).astype(np.float64)
        if a.shape != b.shape:
            return float("inf")
        scale = max(float(np.abs(b).max(initial=0.0)), 1e-30)
        worst = max(worst, float(np.abs(a - b).max(initial=0.0)) / scale)
    return worst


# ---------------------------------------------------------------------------------------------
# Tables


def format_table(header, rows):
    """Columns aligned: text to the left, numbers to the right."""
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]

    def line(row):
        cells = []
        for cell, w in zip(row, widths):
            text = str(cell)
            number = re.fullmatch(r"[-+]?[\d.,]+[%x]?|nan|-", text) is not None
            cells.append(text.rjust(w) if number else text.ljust(w))
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule] + [line(r) for r in rows])


def note(text):
    print(textwrap.fill(text, width=100))
