"""Cases with several implementations of one computation (our weight formats and their
peers): each implementation checked against its float64 reference, all timed in turns; ratios
against the case's baselines; the format section's tables, targets and records."""

from dataclasses import dataclass, field
from typing import Callable

from ..common import (OURS_DENSE, TOLERANCE, TORCH_DENSE, background_cpus, cpu_snapshot,
                      format_table, relative_error, time_turns)

# Contender names shared by cases, tables and records (and OURS_DENSE, TORCH_DENSE)
TORCH_SPARSE, SCIPY = "torch-sparse-csr", "scipy-sparse"
TORCH_SPARSE_MV = "torch-sparse-csr-mv"  # batch 1: torch.mv on the CSR tensor, torch's faster path
NUMPY_HUFFMAN = "numpy-huffman"
# The "vs" columns of the timing table: (baseline, header)
VERSUS = ((TORCH_DENSE, "vs torch dense"), (TORCH_SPARSE, "vs torch sparse"),
          (SCIPY, "vs scipy"), (OURS_DENSE, "vs ours dense"))
MB = 1e6
WEIGHT_BYTES = 4  # a decoded weight is one float32


@dataclass
class Contender:
    """One implementation in a format case."""

    name: str  # "robustcnn-csr", "torch-dense", …
    run: Callable  # () → tuple of outputs (numpy arrays or torch tensors)
    expected: Callable  # () → the outputs ``run`` must give (float64, on the weight it uses)


@dataclass
class FormatCase:
    """Several implementations of one computation, timed in turns; ratios against ``baselines``."""

    name: str
    contenders: list
    baselines: tuple  # contender names the table gives "vs" ratios against
    weight: object = None  # the PrunedWeight of a layer case (weights.py), for the bytes tables
    weights_decoded: int = 0  # Huffman decode cases: float32 weights one call decodes (MB/s)
    # (contender, baseline, minimum baseline_s / contender_s); baseline None: minimum MB/s
    targets: tuple = ()


@dataclass
class FormatResult:
    case: FormatCase
    seconds: dict = field(default_factory=dict)  # contender → median s per call
    faults: dict = field(default_factory=dict)  # contender → page faults per timed call
    errors: dict = field(default_factory=dict)  # contender → relative error vs its expected
    failures: dict = field(default_factory=dict)  # contender → the exception it raised
    background: float = None

    def ratio(self, contender, baseline):
        """baseline_s / contender_s: > 1 means the contender is faster (nan if either is
        missing)."""
        if contender not in self.seconds or baseline not in self.seconds:
            return float("nan")
        return self.seconds[baseline] / self.seconds[contender]

    def megabytes_per_s(self, contender):
        return self.case.weights_decoded * WEIGHT_BYTES / self.seconds[contender] / MB

    def agrees(self, contender):
        return contender not in self.failures and self.errors.get(contender, 1.0) < TOLERANCE

    def check(self, contender):
        if contender in self.failures:
            return f"FAILED {self.failures[contender]}"
        error = self.errors[contender]
        return f"{'ok' if error < TOLERANCE else 'MISMATCH'} {error:.0e}"


def once(fn):
    """``fn`` computed on first call, then remembered (the float64 reference outputs)."""
    memo = []

    def get():
        if not memo:
            memo.append(fn())
        return memo[0]

    return get


def run_format_case(case, budget):
    """Check every contender against its expected outputs, then time those that ran, in turns."""
    result = FormatResult(case)
    timed = []
    for c in case.contenders:
        try:
            result.errors[c.name] = relative_error(c.run(), c.expected())
            timed.append(c)
        except Exception as e:  # a broken contender must not hide the others
            result.failures[c.name] = f"{type(e).__name__}: {e}"
    if timed:
        before = cpu_snapshot()
        seconds, faults = time_turns([c.run for c in timed], budget)
        result.background = background_cpus(before, cpu_snapshot())
        result.seconds = {c.name: s for c, s in zip(timed, seconds)}
        result.faults = {c.name: f for c, f in zip(timed, faults)}
    return result


# ---------------------------------------------------------------------------------------------
# Report


def format_results_table(results):
    """A row per implementation: time, ratios against the case's baselines, check."""
    header = (["case", "implementation", "ms"] + [title for _, title in VERSUS]
              + ["faults/call", "bg CPUs", "check"])
    rows = []
    for r in results:
        for i, c in enumerate(r.case.contenders):
            row = [r.case.name if i == 0 else "", c.name]
            if c.name not in r.seconds:
                rows.append(row + ["-"] * (len(VERSUS) + 3) + [r.check(c.name)])
                continue
            row.append(f"{r.seconds[c.name] * 1e3:.3f}")
            for v, _ in VERSUS:
                ok = v in r.case.baselines and v in r.seconds
                row.append(f"{r.ratio(c.name, v):.2f}x" if ok else "")
            bg = "?" if r.background is None else f"{r.background:.2f}"
            rows.append(row + [f"{r.faults[c.name]:.0f}", bg, r.check(c.name)])
    return format_table(header, rows)


def decode_table(results):
    """A row per Huffman decoder: time, M weights/s, MB/s, ratio against NumPy's, check."""
    header = ["stream", "implementation", "ms", "M weights/s", "MB/s", "vs numpy", "bg CPUs",
              "check"]
    rows = []
    for r in results:
        for i, c in enumerate(r.case.contenders):
            row = [r.case.name if i == 0 else "", c.name]
            if c.name not in r.seconds:
                rows.append(row + ["-"] * 5 + [r.check(c.name)])
                continue
            s = r.seconds[c.name]
            bg = "?" if r.background is None else f"{r.background:.2f}"
            rows.append(row + [f"{s * 1e3:.2f}", f"{r.case.weights_decoded / s / 1e6:.1f}",
                               f"{r.megabytes_per_s(c.name):.0f}",
                               f"{r.ratio(c.name, NUMPY_HUFFMAN):.2f}x", bg, r.check(c.name)])
    return format_table(header, rows)


def format_targets(results):
    """(what, measured, PASS or FALL SHORT) for each target of the format cases."""
    lines = []
    for r in results:
        for contender, baseline, minimum in r.case.targets:
            if baseline is None:
                what = f"{r.case.name}: {contender} >= {minimum:g} MB/s"
            else:
                what = f"{r.case.name}: {contender} vs {baseline} >= {minimum:g}x"
            if not (r.agrees(contender) and contender in r.seconds
                    and (baseline is None or r.agrees(baseline) and baseline in r.seconds)):
                lines.append((what, "output wrong or failed", "FALL SHORT"))
                continue
            value = (r.megabytes_per_s(contender) if baseline is None
                     else r.ratio(contender, baseline))
            lines.append((what, f"{value:.2f}" if baseline else f"{value:.0f} MB/s",
                          "PASS" if value >= minimum else "FALL SHORT"))
    return lines


def format_records(results):
    """--json records of the format cases: each robustcnn implementation against each baseline
    (torch dense, torch sparse, scipy, our dense), and each Huffman decoder against NumPy's."""
    out = []
    for r in results:
        for c in r.case.contenders:
            if not c.name.startswith("robustcnn-") or c.name not in r.seconds:
                continue
            for baseline in r.case.baselines:
                if baseline == c.name or baseline not in r.seconds:
                    continue
                out.append({"case": r.case.name, "ours": c.name, "peer": baseline,
                            "ours_s": r.seconds[c.name], "peer_s": r.seconds[baseline],
                            "ratio": r.ratio(c.name, baseline)})
    return out
