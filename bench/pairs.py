"""Cases that time one of our functions against one peer computing the same outputs: checked,
then timed in turns, reported in one table with GFLOP/s and % of the machine's peak.

The kernel and whole-net cases (``dense``) and the attack cases (``attacks``) are such pairs;
``suite`` makes the bench section that runs a set of case families.
"""

import sys
from dataclasses import dataclass
from typing import Callable

from .common import (OURS_DENSE, TOLERANCE, TORCH_DENSE, Suite, background_cpus, contention,
                     cpu_snapshot, format_table, relative_error, time_pair)

OURS, PEER = OURS_DENSE, TORCH_DENSE  # a case's sides unless it names others

FLOP_CONVENTION = (
    "GFLOP/s count 2 FLOPs per multiply-add of the forward pass; fwd+bwd = 3 × forward "
    "(dx and dW each cost one forward). LeNet-5: forward = its conv and ip layers (pooling, ReLU "
    "and loss not counted); loss_and_input_grad = 2 × forward (dx only); loss_and_grad = "
    "3 × forward − conv1's dx (not computed). PGD-40 = 40 × loss_and_input_grad (L∞, eps 0.1, "
    "steps of 0.01, no random start; the final forward our pgd runs to see which examples it "
    "fooled is timed but not counted).")


@dataclass
class Case:
    """One benchmark: two zero-argument callables computing the same outputs."""

    name: str
    ours: Callable  # () → tuple of numpy arrays
    peer: Callable  # () → tuple of the peer's outputs (torch tensors, numpy arrays), same order
    flops: float  # FLOPs of one call, see FLOP_CONVENTION
    images: int = 0  # examples per call, for images/s (0: not reported)
    target: float = None  # the ratio peer_s / ours_s we aim for, if any
    # () → the peer's outputs in float64. Nets with max pooling or ReLU are discontinuous: where
    # two pooled values lie within float32 rounding, torch float32 may route a gradient to the
    # other one. If ours disagrees with torch float32, it must then agree with this.
    reference: Callable = None
    ours_name: str = OURS
    peer_name: str = PEER
    # () → (ok, text): checks agreement instead of comparing outputs, where they may differ
    # legitimately (an attack's sign step at a ~0 gradient); see ``attacks.pgd_case``.
    agreement: Callable = None


@dataclass
class Result:
    case: Case
    ours_s: float = float("nan")
    peer_s: float = float("nan")
    error: float = float("nan")  # relative difference of the outputs
    reference_error: float = None  # relative difference from case.reference, if consulted
    background: float = None  # CPUs busy with other processes while timing
    faults: tuple = (float("nan"), float("nan"))  # page faults per call: ours, peer
    failure: str = ""  # an exception raised by either side
    agreement: tuple = None  # (ok, text) from case.agreement, if the case has one
    busy: tuple = None  # (ours_s, peer_s) timed again beside spinning processes (--contend)

    @property
    def ratio(self):
        return self.peer_s / self.ours_s

    @property
    def slowdowns(self):
        """How many times slower each side ran beside the spinning processes: (ours, peer)."""
        return self.busy[0] / self.ours_s, self.busy[1] / self.peer_s

    @property
    def agrees(self):
        if self.failure:
            return False
        if self.agreement is not None:
            return self.agreement[0]
        return self.error < TOLERANCE or (self.reference_error is not None
                                          and self.reference_error < TOLERANCE)

    @property
    def check(self):
        """The check column: how far our outputs are from the peer's."""
        if self.failure:
            return f"FAILED {self.failure}"
        if self.agreement is not None:
            return f"{'ok' if self.agreement[0] else 'MISMATCH'} {self.agreement[1]}"
        if self.error < TOLERANCE:
            return f"ok {self.error:.0e}"
        if self.reference_error is not None:
            verdict = "ok" if self.agrees else "MISMATCH"
            return (f"{verdict} {self.reference_error:.0e} vs torch f64 "
                    f"(torch f32: {self.error:.0e})")
        return f"MISMATCH {self.error:.1e}"


def run_case(case, budget, contend=0):
    """Check that both sides agree, then time them → Result; with ``contend`` processes, time
    them again while that many CPU-bound processes spin beside them."""
    result = Result(case)
    try:
        if case.agreement is not None:
            result.agreement = case.agreement()
        else:
            ours = case.ours()
            result.error = relative_error(ours, case.peer())
            if result.error >= TOLERANCE and case.reference is not None:
                result.reference_error = relative_error(ours, case.reference())
        before = cpu_snapshot()
        result.ours_s, result.peer_s, *result.faults = time_pair(case.ours, case.peer, budget)
        result.background = background_cpus(before, cpu_snapshot())
        if contend:
            with contention(contend):
                result.busy = time_pair(case.ours, case.peer, budget)[:2]
    except Exception as e:  # a broken case must not hide the others
        result.failure = f"{type(e).__name__}: {e}"
    return result


# ---------------------------------------------------------------------------------------------
# Report


def _peer_label(name):
    """The peer as the column headers name it: torch-dense → torch."""
    return name.removesuffix("-dense")


def results_table(results, peak):
    """A row per case. With one peer its name titles the peer's columns; with several, the
    columns say "peer" and a column after the case names each row's."""
    peers = list(dict.fromkeys(r.case.peer_name for r in results))
    label = _peer_label(peers[0]) if len(peers) == 1 else "peer"
    header = ["case", "ours ms", f"{label} ms", f"{label}/ours", "ours GFLOP/s", "%peak",
              f"{label} GFLOP/s", "%peak", "ours img/s", f"{label} img/s", "faults/call",
              "bg CPUs", "check"]

    def percent(gflops):
        return f"{100 * gflops / peak:.0f}%" if peak > 0 else "?"

    rows = []
    for r in results:
        if r.failure:
            rows.append([r.case.name] + ["-"] * 11 + [r.check])
            continue
        c = r.case
        rows.append([
            c.name, f"{r.ours_s * 1e3:.3f}", f"{r.peer_s * 1e3:.3f}", f"{r.ratio:.2f}x",
            f"{c.flops / r.ours_s / 1e9:.1f}", percent(c.flops / r.ours_s / 1e9),
            f"{c.flops / r.peer_s / 1e9:.1f}", percent(c.flops / r.peer_s / 1e9),
            f"{c.images / r.ours_s:,.0f}" if c.images else "",
            f"{c.images / r.peer_s:,.0f}" if c.images else "",
            f"{r.faults[0]:.0f} / {r.faults[1]:.0f}",
            "?" if r.background is None else f"{r.background:.2f}", r.check])
    if len(peers) > 1:
        header.insert(1, "peer")
        for r, row in zip(results, rows):
            row.insert(1, _peer_label(r.case.peer_name))
    return format_table(header, rows)


def report(results, args, peak):
    """The table and its legend, and the contention table (nothing if no case ran)."""
    if not results:
        return
    peak, peak_label = peak
    print()
    print(results_table(results, peak))
    print()
    print(FLOP_CONVENTION + f" %peak is of {peak:.1f} GFLOP/s ({peak_label}).")
    print("faults/call: minor page faults per timed call, ours / torch (memory the allocator "
          "had returned to the OS and the call touched again).")
    print("bg CPUs: CPUs other processes kept busy while the case was timed (/proc/stat); "
          "well above 0 means the row is noisy: re-run on a quiet machine.")
    if any(r.busy is not None for r in results):
        contention_table(results, args.contend)


def contention_table(results, processes):
    """A row per case timed under contention: each side's time quiet and busy, and slowdowns."""
    header = ["case", "peer", "ours ms", "busy", "peer ms", "busy", "ours slowdown",
              "peer slowdown", "peer/ours busy"]
    rows = []
    for r in results:
        if r.failure or r.busy is None:
            continue
        ours, peer = r.slowdowns
        rows.append([r.case.name, _peer_label(r.case.peer_name), f"{r.ours_s * 1e3:.3f}",
                     f"{r.busy[0] * 1e3:.3f}", f"{r.peer_s * 1e3:.3f}", f"{r.busy[1] * 1e3:.3f}",
                     f"{ours:.2f}x", f"{peer:.2f}x", f"{r.busy[1] / r.busy[0]:.2f}x"])
    print()
    print(f"under contention: each case timed again beside {processes} CPU-bound process(es)")
    print(format_table(header, rows))


def targets(results):
    """(what, measured, PASS or FALL SHORT) for each case with a target, and for each case timed
    under contention: our slowdown at most the peer's."""
    lines = []
    for r in results:
        if r.busy is not None and not r.failure:
            ours, peer = r.slowdowns
            lines.append((f"{r.case.name}: our slowdown under contention <= "
                          f"{_peer_label(r.case.peer_name)}'s", f"{ours:.2f}x vs {peer:.2f}x",
                          "PASS" if ours <= peer else "FALL SHORT"))

        if r.case.target is None:
            continue
        what = f"{r.case.name}: {_peer_label(r.case.peer_name)}/ours >= {r.case.target}"
        if r.failure or not r.agrees:
            lines.append((what, "output wrong or failed", "FALL SHORT"))
        else:
            verdict = "PASS" if r.ratio >= r.case.target else "FALL SHORT"
            lines.append((what, f"{r.ratio:.2f}", verdict))
    return lines


def records(results):
    """The --json records: {"case", "ours", "peer", "ours_s", "peer_s", "ratio"}, and
    "busy_ours_s", "busy_peer_s" where the case was timed under contention."""
    out = []
    for r in results:
        if r.failure:
            continue
        record = {"case": r.case.name, "ours": r.case.ours_name, "peer": r.case.peer_name,
                  "ours_s": r.ours_s, "peer_s": r.peer_s, "ratio": r.ratio}
        if r.busy is not None:
            record["busy_ours_s"], record["busy_peer_s"] = r.busy
        out.append(record)
    return out


def suite(name, families, *, formats=False):
    """The bench section of the pair cases that ``families`` build, in order: each family is a
    function () → [Case]; ``--cases`` keeps those whose name contains its text; ``--formats``
    keeps the suite only if it times weight formats (``formats``); ``--contend N`` times each
    case again beside N spinning processes."""
    def plan(args):
        if args.formats and not formats:
            return None
        cases = [case for family in families for case in family()]
        if args.cases:
            cases = [c for c in cases if args.cases in c.name]
        return cases, args.contend

    def run(plan, budget):
        cases, contend = plan
        results = []
        for case in cases:
            print(f"  running {case.name}", file=sys.stderr, flush=True)
            results.append(run_case(case, budget, contend))
        return results

    return Suite(name, plan, run, report, targets, records, needs_peak=lambda plan: bool(plan[0]))
