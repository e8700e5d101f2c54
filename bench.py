"""The benchmark: robustcnn side by side with torch CPU, in one process, with the same threads.

    python bench.py                 # every case, the cold start, the targets
    python bench.py --quick         # smaller time budgets, no cold start
    python bench.py --json FILE     # also write records {"case", "ours", "peer", "ours_s",
                                    #                     "peer_s", "ratio"}
    python bench.py --formats       # only the weight formats (add --quick for a fast look)
    python bench.py --cases TEXT    # only the cases whose name contains TEXT
    python bench.py --bytes-json F  # also write the bytes-per-format tables as JSON

Each case runs our functional API (or our Net, or an attack: PGD-40 on LeNet-5) and the same
computation in torch: checks that the outputs agree, warms both up, then lets the two take turns
(see ``time_pair``) so that background load hits both alike, and reports the median time per
call of each. ``ratio`` = torch time / our time: > 1 means we are faster. torch is a bench-only
extra: only this file imports it.

The weight-format section runs FC and conv layers with pruned weights in every format of
``robustcnn.engine.formats`` (dense, CSR, sparse codebook, Huffman streaming and decode-once,
dense-pattern codebooks) side by side with torch dense, torch sparse CSR and scipy.sparse; our
Huffman decoder against a NumPy one (MB/s); and the bytes of weights each format reads, per
case and per layer of the Deep Compression SqueezeNet and LeNet-5.
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numba
import numpy as np

from robustcnn.atomic import atomic_path
from robustcnn.engine import conv2d_backward, conv2d_forward, linear_backward, linear_forward
from robustcnn.models.lenet import lenet5

OURS, PEER = "robustcnn-dense", "torch-dense"
TOLERANCE = 1e-3  # max |ours − torch| / max |torch| over a case's outputs

FLOP_CONVENTION = (
    "GFLOP/s count 2 FLOPs per multiply-add of the forward pass; fwd+bwd = 3 × forward "
    "(dx and dW each cost one forward). LeNet-5: forward = its conv and ip layers (pooling, ReLU "
    "and loss not counted); loss_and_input_grad = 2 × forward (dx only); loss_and_grad = "
    "3 × forward − conv1's dx (not computed). PGD-40 = 40 × loss_and_input_grad (L∞, eps 0.1, "
    "steps of 0.01, no random start; the final forward our pgd runs to see which examples it "
    "fooled is timed but not counted).")


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


@dataclass
class Case:
    """One benchmark: two zero-argument callables computing the same outputs."""

    name: str
    ours: Callable  # () → tuple of numpy arrays
    peer: Callable  # () → tuple of torch tensors, in the same order
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
    # legitimately (an attack's sign step at a ~0 gradient); see ``pgd_case``.
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

    @property
    def ratio(self):
        return self.peer_s / self.ours_s

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
        """The check column: how far our outputs are from torch's."""
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


# ---------------------------------------------------------------------------------------------
# The machine


def _cpuinfo():
    """/proc/cpuinfo as a list of {field: value}, one per logical CPU ([] where unavailable)."""
    try:
        with open("/proc/cpuinfo") as f:
            blocks = f.read().strip().split("\n\n")
    except OSError:
        return []
    cpus = []
    for block in blocks:
        fields = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        cpus.append(fields)
    return cpus


def _lscpu_max_mhz():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"CPU max MHz:\s*([\d.]+)", out)
    return float(m.group(1)) if m else None


def machine():
    """CPU model, usable cores, clock and SIMD flags of this machine."""
    cpus = _cpuinfo()
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else list(range(os.cpu_count() or 1))
    mine = [c for c in cpus if int(c.get("processor", -1)) in usable] or cpus
    first = mine[0] if mine else {}
    cores = {(c.get("physical id"), c.get("core id")) for c in mine if "core id" in c}
    mhz = [float(c["cpu MHz"]) for c in mine if "cpu MHz" in c]
    max_mhz = _lscpu_max_mhz()
    return {
        "model": first.get("model name", platform.processor() or "unknown"),
        "vendor": first.get("vendor_id", "?"),
        "family": first.get("cpu family", "?"),
        "model_number": first.get("model", "?"),
        "logical_cpus": len(usable),
        "cores": len(cores) or len(usable),
        "mhz": max_mhz or (statistics.mean(mhz) if mhz else None),
        "mhz_source": "lscpu CPU max MHz" if max_mhz else "/proc/cpuinfo cpu MHz",
        "flags": set(first.get("flags", "").split()),
    }


def flops_per_cycle(flags):
    """Single-precision FLOPs per cycle per core from the CPU flags → (flops, assumption)."""
    if "avx512f" in flags or {"avx2", "fma"} <= flags:
        return 32, ("AVX-512F or AVX2+FMA: assumed 2 FMA pipes × 256 bit = 2 × 8 lanes × "
                    "2 FLOPs = 32 SP FLOP/cycle/core (AMD Zen 2-4, Intel client cores; Zen 4 runs "
                    "AVX-512 as 2 × 256 bit; Intel server cores with two 512-bit FMA units "
                    "would do 64)")
    if "avx" in flags:
        return 16, "AVX without FMA: assumed one 256-bit add + one 256-bit multiply per cycle"
    return 8, "SSE only: assumed one 128-bit add + one 128-bit multiply per cycle"


def theoretical_peak(info):
    """→ (GFLOP/s, assumption): cores × GHz × SP FLOPs/cycle/core."""
    per_cycle, why = flops_per_cycle(info["flags"])
    ghz = (info["mhz"] or 0) / 1000
    text = (f"{info['cores']} cores × {ghz:.2f} GHz ({info['mhz_source']}) × {per_cycle} "
            f"FLOP/cycle. {why}")
    return info["cores"] * ghz * per_cycle, text


def peak_caveat(peak, sgemm, info):
    """A warning if a measured sgemm beats the theoretical peak, with the clock it implies."""
    one_core = sgemm.get("scipy sgemm, 1 thread", 0.0)
    if max(sgemm.values(), default=0.0) <= peak:
        return None
    ghz = one_core / flops_per_cycle(info["flags"])[0]
    return (f"the measured sgemm beats the theoretical peak: the cores run faster than the clock "
            f"above (a VM reports its nominal TSC clock; turbo). The 1-thread sgemm implies "
            f">= {ghz:.2f} GHz at that FLOP/cycle, a peak of >= {info['cores'] * one_core:.0f} "
            f"GFLOP/s, which %peak below uses.")


def measured_sgemm(torch, n=2048, reps=3):
    """GFLOP/s of an n³ float32 matmul: NumPy's BLAS, torch's, and SciPy's single-threaded one
    (the library robustcnn's kernels call, one call per Numba thread)."""
    import scipy.linalg.blas

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    at, bt = torch.from_numpy(a), torch.from_numpy(b)
    af, bf = np.asfortranarray(a), np.asfortranarray(b)
    runs = {"numpy matmul": lambda: a @ b, "torch.mm": lambda: torch.mm(at, bt),
            "scipy sgemm, 1 thread": lambda: scipy.linalg.blas.sgemm(1.0, af, bf)}
    out = {}
    for name, fn in runs.items():
        fn()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = 2 * n ** 3 / min(times) / 1e9
    return out


def environment(torch):
    """(label, value) lines: what the numbers depend on besides the code."""
    import scipy
    from threadpoolctl import threadpool_info

    info = machine()
    blas = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    onednn = "on" if torch.backends.mkldnn.is_available() else "off"
    lines = [
        ("CPU", f"{info['model']} ({info['vendor']} family {info['family']} model "
                f"{info['model_number']}), {info['cores']} cores, {info['logical_cpus']} "
                f"logical CPUs usable"),
        ("numba", f"{numba.__version__}: {numba.get_num_threads()} threads, threading layer "
                  f"{numba.threading_layer()}"),
        ("torch", f"{torch.__version__}: {torch.get_num_threads()} threads "
                  f"({torch.get_num_interop_threads()} inter-op), "
                  f"BLAS {blas.group(1) if blas else '?'} (linked in), oneDNN {onednn}"),
        ("numpy / scipy / python", f"{np.__version__} / {scipy.__version__} / "
                                   f"{platform.python_version()}, {' '.join(platform.libc_ver())}"),
    ]
    for lib in threadpool_info():
        owner = next((p for p in ("torch", "scipy", "numpy") if f"/{p}" in lib["filepath"]),
                     "system")
        lines.append((f"thread pool ({owner})",
                      f"{lib['internal_api']} {lib.get('version') or ''} {lib['num_threads']} "
                      f"threads  {os.path.basename(lib['filepath'])}"))
    malloc = {k: v for k, v in os.environ.items()
              if k.startswith("MALLOC_") or k in ("GLIBC_TUNABLES", "LD_PRELOAD")}
    lines.append(("allocator", ", ".join(f"{k}={v}" for k, v in sorted(malloc.items()))
                  or "glibc malloc, no MALLOC_*/GLIBC_TUNABLES/LD_PRELOAD set (defaults)"))
    threading_env = {k: v for k, v in os.environ.items()
                     if k.startswith(("NUMBA_", "OMP_", "GOMP_", "MKL_", "OPENBLAS_", "KMP_"))}
    lines.append(("threading env", ", ".join(f"{k}={v}" for k, v in sorted(threading_env.items()))
                  or "none set"))
    return lines, info


# ---------------------------------------------------------------------------------------------
# Timing and checking


def _cpu_snapshot():
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
    this file was written on: (1) alternating call by call, each side page-faulted its buffers
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


def _numpy(a):
    return a.detach().numpy() if hasattr(a, "detach") else np.asarray(a)


def relative_error(ours, peer):
    """max |ours − peer| / max |peer| over pairs of outputs (inf if the shapes differ)."""
    worst = 0.0
    for a, b in zip(ours, peer, strict=True):
        a, b = _numpy(a).astype(np.float64), _numpy(b).astype(np.float64)
        if a.shape != b.shape:
            return float("inf")
        scale = max(float(np.abs(b).max(initial=0.0)), 1e-30)
        worst = max(worst, float(np.abs(a - b).max(initial=0.0)) / scale)
    return worst


def run_case(case, budget):
    """Check that both sides agree, then time them → Result."""
    result = Result(case)
    try:
        if case.agreement is not None:
            result.agreement = case.agreement()
        else:
            ours = case.ours()
            result.error = relative_error(ours, case.peer())
            if result.error >= TOLERANCE and case.reference is not None:
                result.reference_error = relative_error(ours, case.reference())
        before = _cpu_snapshot()
        result.ours_s, result.peer_s, *result.faults = time_pair(case.ours, case.peer, budget)
        result.background = background_cpus(before, _cpu_snapshot())
    except Exception as e:  # a broken case must not hide the others
        result.failure = f"{type(e).__name__}: {e}"
    return result


# ---------------------------------------------------------------------------------------------
# Cases


def _out_size(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def conv_case(name, batch, channels, size, out_channels, kernel, *, stride=1, padding=0,
              groups=1, backward=False, seed=0):
    """conv2d_forward (+ conv2d_backward: dx, dW, db) against torch's F.conv2d (+ autograd)."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    out = _out_size(size, kernel, stride, padding)
    x = rng.standard_normal((batch, channels, size, size), dtype=np.float32)
    w = rng.standard_normal((out_channels, channels // groups, kernel, kernel), dtype=np.float32)
    w *= 1 / np.sqrt(w[0].size)
    b = rng.standard_normal(out_channels, dtype=np.float32)
    dy = rng.standard_normal((batch, out_channels, out, out), dtype=np.float32)
    xt, wt, bt, dyt = (torch.from_numpy(a.copy()) for a in (x, w, b, dy))
    args = (stride, padding, 1, groups)
    flops = 2 * batch * out_channels * out * out * w[0].size

    if not backward:
        def ours():
            return (conv2d_forward(x, w, b, *args),)

        def peer():
            with torch.no_grad():
                return (F.conv2d(xt, wt, bt, *args),)

        return Case(f"{name} fwd", ours, peer, flops, target=0.5)

    for t in (xt, wt, bt):
        t.requires_grad_()

    def ours():
        return (conv2d_forward(x, w, b, *args),) + conv2d_backward(dy, x, w, *args)

    def peer():
        y = F.conv2d(xt, wt, bt, *args)
        return (y,) + torch.autograd.grad(y, (xt, wt, bt), dyt)

    return Case(f"{name} fwd+bwd", ours, peer, 3 * flops, target=0.5)


def linear_case(name, batch, in_features, out_features, *, backward=False, seed=0):
    """linear_forward (+ linear_backward: dx, dW, db) against torch's F.linear (+ autograd)."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, in_features), dtype=np.float32)
    w = rng.standard_normal((out_features, in_features), dtype=np.float32)
    w *= 1 / np.sqrt(in_features)
    b = rng.standard_normal(out_features, dtype=np.float32)
    dy = rng.standard_normal((batch, out_features), dtype=np.float32)
    xt, wt, bt, dyt = (torch.from_numpy(a.copy()) for a in (x, w, b, dy))
    flops = 2 * batch * in_features * out_features

    if not backward:
        def ours():
            return (linear_forward(x, w, b),)

        def peer():
            with torch.no_grad():
                return (F.linear(xt, wt, bt),)

        return Case(f"{name} fwd", ours, peer, flops)

    for t in (xt, wt, bt):
        t.requires_grad_()

    def ours():
        return (linear_forward(x, w, b),) + linear_backward(dy, x, w)

    def peer():
        y = F.linear(xt, wt, bt)
        return (y,) + torch.autograd.grad(y, (xt, wt, bt), dyt)

    return Case(f"{name} fwd+bwd", ours, peer, 3 * flops)


def torch_lenet5(net):
    """Our LeNet-5 (conv20-pool-conv50-pool-ip500-relu-ip10) in torch, with our weights."""
    import torch
    from torch import nn

    p = {name: {k: torch.from_numpy(v.copy()) for k, v in params.items()}
         for name, params in net.params.items()}
    conv1, conv2 = (nn.Conv2d(p[n]["weight"].shape[1], p[n]["weight"].shape[0],
                              tuple(p[n]["weight"].shape[2:])) for n in ("conv1", "conv2"))
    ip1, ip2 = (nn.Linear(p[n]["weight"].shape[1], p[n]["weight"].shape[0]) for n in ("ip1", "ip2"))
    model = nn.Sequential(conv1, nn.MaxPool2d(2, 2, ceil_mode=True),  # Caffe pools in ceil mode
                          conv2, nn.MaxPool2d(2, 2, ceil_mode=True),
                          nn.Flatten(), ip1, nn.ReLU(), ip2)
    with torch.no_grad():
        for name, layer in (("conv1", conv1), ("conv2", conv2), ("ip1", ip1), ("ip2", ip2)):
            layer.weight.copy_(p[name]["weight"])
            layer.bias.copy_(p[name]["bias"])
    return model.eval()


def lenet5_flops(net, batch):
    """Forward FLOPs of each layer with weights, in layer order (2 per multiply-add)."""
    return [2 * batch * int(np.prod(layer.out_shapes[0])) * layer.params["weight"][0].size
            for layer in net.layers if "weight" in layer.params]


def torch_lenet5_passes(net, x, labels, train_batch, dtype):
    """torch closures of our LeNet-5's forward, loss_and_input_grad and loss_and_grad (on the first
    ``train_batch`` examples), computed in ``dtype``."""
    import torch
    import torch.nn.functional as F

    frozen = torch_lenet5(net).to(dtype).requires_grad_(False)
    trainable = torch_lenet5(net).to(dtype)
    params = list(trainable.parameters())
    xt, yt = torch.from_numpy(x.copy()).to(dtype), torch.from_numpy(labels)
    xg = xt.clone().requires_grad_()
    xs, ys = xt[:train_batch], yt[:train_batch]

    def forward():
        with torch.no_grad():
            return (frozen(xt),)

    def input_grad():
        loss = F.cross_entropy(frozen(xg), yt, reduction="none")
        return (loss,) + torch.autograd.grad(loss.sum(), xg)

    def train():
        loss = F.cross_entropy(trainable(xs), ys)
        return (loss,) + torch.autograd.grad(loss, params)

    return forward, input_grad, train


def lenet5_cases(*, eval_batch=256, train_batch=64, seed=0):
    """Net.forward, Net.loss_and_input_grad and Net.loss_and_grad against the same net in torch."""
    import torch

    rng = np.random.default_rng(seed)
    net = lenet5(seed=seed)
    for params in net.params.values():  # nonzero biases, so that the check covers them
        params["bias"][...] = rng.uniform(-0.1, 0.1, params["bias"].shape)
    x = rng.random((eval_batch,) + net.input_shape, dtype=np.float32)
    labels = rng.integers(0, net.num_classes, eval_batch)
    names = [key.rsplit("/", 1) for key, _ in net.named_params()]  # in torch's parameter order

    def forward():
        return (net.forward(x),)

    def input_grad():
        return net.loss_and_input_grad(x, labels)

    def train():
        loss, _ = net.loss_and_grad(x[:train_batch], labels[:train_batch])
        return (np.float32(loss),) + tuple(net.grads[layer][p] for layer, p in names)

    peer = torch_lenet5_passes(net, x, labels, train_batch, torch.float32)
    reference = torch_lenet5_passes(net, x, labels, train_batch, torch.float64)
    fwd = sum(lenet5_flops(net, eval_batch))
    per_layer = lenet5_flops(net, train_batch)
    return [
        Case(f"lenet5 forward b{eval_batch}", forward, peer[0], fwd, images=eval_batch,
             reference=reference[0]),
        Case(f"lenet5 loss_and_input_grad b{eval_batch}", input_grad, peer[1], 2 * fwd,
             images=eval_batch, target=0.7, reference=reference[1]),
        Case(f"lenet5 loss_and_grad b{train_batch}", train, peer[2],
             3 * sum(per_layer) - per_layer[0], images=train_batch, reference=reference[2]),
    ]


def all_cases():
    """The cases of the project's benchmark issue, in table order."""
    convs = [
        dict(name="lenet5-conv2 20x12x12->50 5x5 b64", batch=64, channels=20, size=12,
             out_channels=50, kernel=5),
        dict(name="alexnet-conv2 96x27x27->256 5x5 p2 g2 b8", batch=8, channels=96, size=27,
             out_channels=256, kernel=5, padding=2, groups=2),
        dict(name="vgg 64x56x56->64 3x3 p1 b8", batch=8, channels=64, size=56, out_channels=64,
             kernel=3, padding=1),
        dict(name="depthwise 32x112x112 3x3 p1 b8", batch=8, channels=32, size=112,
             out_channels=32, kernel=3, padding=1, groups=32),
    ]
    cases = []
    for spec in convs:
        cases += [conv_case(**spec), conv_case(**spec, backward=True)]
    for batch in (1, 64):
        for backward in (False, True):
            cases.append(linear_case(f"fc 4096->4096 b{batch}", batch, 4096, 4096,
                                     backward=backward))
    return cases + lenet5_cases() + [pgd_case()]


PGD = dict(eps=0.1, alpha=0.01, steps=40)  # Madry et al.'s MNIST attack: 40 steps of 0.01


def torch_pgd(model, x, labels, *, eps, alpha, steps):
    """L∞ PGD in torch, from x itself: ``steps`` signed steps of ``alpha`` up the cross-entropy,
    each projected onto the eps-ball around x and [0, 1]; ``attacks.pgd`` with
    random_init=False, written as a torch user would."""
    import torch
    import torch.nn.functional as F

    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            x_adv = (x_adv + alpha * grad.sign()).clamp_(0, 1)
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0, 1)
    return x_adv.detach()


def pgd_case(*, batch=256, eps=PGD["eps"], alpha=PGD["alpha"], steps=PGD["steps"], seed=0):
    """PGD-40 (L∞) on LeNet-5: ``attacks.pgd`` against ``torch_pgd`` on the same weights.

    No random start on either side (random_init=False), so both compute the same iterates. A
    fresh ``lenet5(seed)`` with nonzero biases on uniform random images, labels its own
    predictions. The agreement check, before timing: the first step's signed gradient equals
    torch's wherever |g| > 1e-3 of the example's largest (or torch float64's, where torch
    float32 takes the other side of a max-pool near-tie), and the adversarial accuracies (by
    our net) differ by at most one example; later steps may diverge where a gradient is ~0
    (float32 on both sides).
    """
    import torch

    from robustcnn.attacks import pgd

    rng = np.random.default_rng(seed)
    net = lenet5(seed=seed)
    for params in net.params.values():
        params["bias"][...] = rng.uniform(-0.1, 0.1, params["bias"].shape)
    x = rng.random((batch,) + net.input_shape, dtype=np.float32)
    labels = net.predict(x)
    model = torch_lenet5(net).requires_grad_(False)
    xt, yt = torch.from_numpy(x), torch.from_numpy(labels)

    def ours():
        return (pgd(net, x, labels, eps, alpha=alpha, steps=steps, random_init=False,
                    batch_size=batch),)

    def peer():
        return (torch_pgd(model, xt, yt, eps=eps, alpha=alpha, steps=steps),)

    def torch_grad(m, dtype):
        xg = xt.to(dtype).clone().requires_grad_(True)  # a leaf of its own; xt stays as is
        torch.nn.functional.cross_entropy(m(xg), yt, reduction="sum").backward()
        return xg.grad.numpy()

    def agreement():
        _, g = net.loss_and_input_grad(x, labels)
        ref = torch_grad(model, torch.float32)
        # Where torch float32 routes a gradient through the other side of a max-pool near-tie,
        # ours must agree with torch float64 instead (as ``Case.reference`` does for outputs).
        ref64 = torch_grad(torch_lenet5(net).to(torch.float64), torch.float64)
        clear = np.abs(ref) > 1e-3 * np.abs(ref).reshape(batch, -1).max(1).reshape(-1, 1, 1, 1)
        flips32 = (np.sign(g) != np.sign(ref)) & clear
        flips = int((flips32 & (np.sign(g) != np.sign(ref64))).sum())
        adv, adv_peer = ours()[0], peer()[0].numpy()
        acc, acc_peer = net.accuracy(adv, labels), net.accuracy(adv_peer, labels)
        same = float(np.mean(np.abs(adv - adv_peer).reshape(batch, -1).max(1) <= 1e-5))
        ok = flips == 0 and abs(acc - acc_peer) <= 1.0 / batch + 1e-12
        near_ties = int(flips32.sum()) - flips
        signs = (f"step 1: {flips} sign flips on {int(clear.sum())} clear gradients" if flips else
                 f"step 1: same signs as torch on {int(clear.sum())} clear gradients"
                 + (f" ({near_ties} as torch f64, not f32: max-pool near-ties)" if near_ties
                    else ""))
        return ok, (f"{signs}; adv acc {100 * acc:.1f}% vs {100 * acc_peer:.1f}%; "
                    f"{100 * same:.0f}% of examples identical")

    fwd = sum(lenet5_flops(net, batch))
    return Case(f"lenet5 PGD-{steps} Linf eps {eps:g} b{batch}", ours, peer, steps * 2 * fwd,
                images=batch, target=1.0, agreement=agreement)


# ---------------------------------------------------------------------------------------------
# Weight formats: pruned and quantized weights, side by side
#
# Each format case runs one layer (FC or conv) with one pruned weight in every format of
# robustcnn.engine.formats and in its peers, all taking turns (``time_turns``). A weight is a
# random one, magnitude-pruned, its survivors snapped to 2**bits − 1 evenly spaced values, so
# that with 0.0 it is a 2**bits-value codebook and every codebook conversion is exact (Deep
# Compression's code widths: 5 bits for FC, 8 for conv; the 4- and 5-bit dense-pattern codebooks
# get their own quantization of the same pruned weight).

SPARSITIES = (0.9, 0.95)
TORCH_DENSE, TORCH_SPARSE, SCIPY = "torch-dense", "torch-sparse-csr", "scipy-sparse"
TORCH_SPARSE_MV = "torch-sparse-csr-mv"  # batch 1: torch.mv on the CSR tensor, torch's faster path
OURS_DENSE = "robustcnn-dense"
CODE_BITS = "codebook (code bits)"  # the bytes tables' dense-pattern codebook at the code width
MB = 1e6
WEIGHT_BYTES = 4  # a decoded weight is one float32


def magnitude_prune(weight, keep):
    """A copy of ``weight`` with only its round(keep · size) largest |w| left, the rest 0.0."""
    flat = weight.reshape(-1)
    k = int(round(keep * flat.size))
    out = np.zeros_like(flat)
    if k:
        top = np.argpartition(np.abs(flat), flat.size - k)[flat.size - k:]
        out[top] = flat[top]
    return out.reshape(weight.shape)


def quantize_survivors(weight, bits):
    """A copy of ``weight`` whose non-zeros are snapped to the nearest of 2**bits − 1 values
    spaced evenly over their range (Deep Compression's linear initialisation): with 0.0, at most
    2**bits distinct values, which every codebook of ``bits`` or more bits stores exactly."""
    from robustcnn.engine.formats.codebook import linear_centroids, nearest_codes

    flat = weight.reshape(-1).copy()
    nz = np.flatnonzero(flat)
    if nz.size:
        levels = linear_centroids(flat[nz], (1 << bits) - 1).astype(weight.dtype)
        flat[nz] = levels[nearest_codes(flat[nz], levels)]
    return flat.reshape(weight.shape)


@dataclass
class PrunedWeight:
    """One pruned weight, quantized at several code widths, in every format we time."""

    name: str  # e.g. "fc 4096x4096 90% sparse"
    levels: dict  # bits → dense weight whose non-zeros take at most 2**bits − 1 values
    code_bits: int  # the width of the sparse codebook's codes (Deep Compression: FC 5, conv 8)
    formats: dict  # contender name → (weight format, key of ``levels`` it stores)
    decode_once_s: float  # seconds HuffmanCodebookWeight.decoded() took (the cache's one cost)
    extra_bytes: dict = None  # bytes of formats not timed or not ours: {column: bytes}

    @property
    def size(self):
        return self.levels[self.code_bits].size


def pruned_weight(name, shape, sparsity, code_bits, gap_bits, *, seed=0):
    """A random weight (scaled by 1/√fan-in), magnitude-pruned to ``sparsity``, in every format:
    the sparse codebook and Huffman with ``code_bits``/``gap_bits``, codebooks of 4 and 5 bits."""
    from robustcnn.engine.formats import (CodebookWeight, CSRWeight, DenseWeight,
                                          HuffmanCodebookWeight, SparseCodebookWeight)

    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape, dtype=np.float32)
    w *= np.float32(1 / np.sqrt(np.prod(shape[1:])))
    w = magnitude_prune(w, 1 - sparsity)
    levels = {bits: quantize_survivors(w, bits) for bits in sorted({4, 5, code_bits})}
    main = levels[code_bits]
    sc = SparseCodebookWeight.from_dense(main, code_bits, gap_bits)
    huffman = HuffmanCodebookWeight.from_sparse_codebook(sc)
    t0 = time.perf_counter()
    cached = huffman.decoded()
    decode_once_s = time.perf_counter() - t0
    formats = {
        OURS_DENSE: (DenseWeight.from_dense(main), code_bits),
        "robustcnn-csr": (CSRWeight.from_dense(main), code_bits),
        "robustcnn-sparse-codebook": (sc, code_bits),
        "robustcnn-huffman": (huffman, code_bits),
        "robustcnn-huffman-cached": (cached, code_bits),
        "robustcnn-codebook4": (CodebookWeight.from_dense(levels[4], 4), 4),
        "robustcnn-codebook5": (CodebookWeight.from_dense(levels[5], 5), 5),
    }
    # the dense-pattern codebook at the code width, for the bytes table (timed if 4 or 5 bits)
    timed = formats.get(f"robustcnn-codebook{code_bits}")
    codebook = timed[0] if timed else CodebookWeight.from_dense(main, code_bits)
    return PrunedWeight(name, levels, code_bits, formats, decode_once_s,
                        {CODE_BITS: codebook.stored_bytes()})


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
    weight: PrunedWeight = None
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


def _once(fn):
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
        before = _cpu_snapshot()
        seconds, faults = time_turns([c.run for c in timed], budget)
        result.background = background_cpus(before, _cpu_snapshot())
        result.seconds = {c.name: s for c, s in zip(timed, seconds)}
        result.faults = {c.name: f for c, f in zip(timed, faults)}
    return result


def _selected(name, match):
    return match is None or match in name


def sparse_linear_cases(in_features=4096, out_features=4096, batches=(1, 64), sparsity=0.9, *,
                        seed=0, match=None):
    """FC forward, y = x·Wᵀ + b, with a pruned W in each format against torch dense, torch sparse
    CSR (``torch.sparse.mm``; at batch 1 also ``torch.mv``, twice as fast there) and
    scipy.sparse (``csr_matrix @ xᵀ``), one case per batch."""
    import scipy.sparse
    import torch
    import torch.nn.functional as F

    from robustcnn.engine.linear import linear_forward_format

    label = f"fc {in_features}->{out_features}"
    names = [f"{label} b{batch} {sparsity:.0%} sparse fwd" for batch in batches]
    if not any(_selected(n, match) for n in names):
        return []
    pw = pruned_weight(f"{label} {sparsity:.0%} sparse", (out_features, in_features), sparsity,
                       code_bits=5, gap_bits=5, seed=seed)
    rng = np.random.default_rng(seed + 1)
    b = rng.standard_normal(out_features, dtype=np.float32)
    w = pw.levels[pw.code_bits]
    wt, bt = torch.from_numpy(w), torch.from_numpy(b)
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        wcsr = wt.to_sparse_csr()
    sp = scipy.sparse.csr_matrix(w)
    pw.extra_bytes[TORCH_SPARSE] = sum(t.numel() * t.element_size() for t in
                                       (wcsr.values(), wcsr.col_indices(), wcsr.crow_indices()))
    pw.extra_bytes[SCIPY] = sp.data.nbytes + sp.indices.nbytes + sp.indptr.nbytes

    def ours(x, fmt):
        return lambda: (linear_forward_format(x, fmt, b),)

    cases = []
    for batch, name in zip(batches, names):
        if not _selected(name, match):
            continue
        x = rng.standard_normal((batch, in_features), dtype=np.float32)
        xt = torch.from_numpy(x)
        expected = {bits: _once(lambda x=x, q=q: (x.astype(np.float64) @ q.T.astype(np.float64)
                                                  + b,))
                    for bits, q in pw.levels.items()}
        contenders = [Contender(n, ours(x, fmt), expected[bits])
                      for n, (fmt, bits) in pw.formats.items()]
        contenders += [
            Contender(TORCH_DENSE, lambda xt=xt: (F.linear(xt, wt, bt),), expected[pw.code_bits]),
            Contender(TORCH_SPARSE, lambda xt=xt: (torch.sparse.mm(wcsr, xt.T).T + bt,),
                      expected[pw.code_bits]),
            Contender(SCIPY, lambda x=x: ((sp @ x.T).T + b,), expected[pw.code_bits]),
        ]
        baselines = (TORCH_DENSE, TORCH_SPARSE, SCIPY, OURS_DENSE)
        targets = ()
        if batch == 1:
            contenders.append(Contender(TORCH_SPARSE_MV,
                                        lambda xt=xt: ((torch.mv(wcsr, xt[0]) + bt)[None],),
                                        expected[pw.code_bits]))
            baselines += (TORCH_SPARSE_MV,)
            if sparsity == 0.9:
                targets = tuple(("robustcnn-csr", peer, minimum) for peer, minimum in
                                ((TORCH_DENSE, 3.0), (TORCH_SPARSE, 1.0), (TORCH_SPARSE_MV, 1.0)))
        cases.append(FormatCase(name, contenders, baselines, weight=pw, targets=targets))
    return cases


def sparse_conv_cases(name, batch, channels, size, out_channels, kernel, *, padding=0, groups=1,
                      sparsity=0.9, seed=0, match=None):
    """Conv forward with a pruned W in each format against torch's dense conv (torch has no
    sparse conv), and forward + backward for dense and CSR → [fwd case, fwd+bwd case]."""
    import torch
    import torch.nn.functional as F

    from robustcnn.engine.conv import (conv2d_backward_format, conv2d_forward_format,
                                       conv2d_geometry)

    names = [f"{name} {sparsity:.0%} sparse fwd", f"{name} {sparsity:.0%} sparse fwd+bwd"]
    if not any(_selected(n, match) for n in names):
        return []
    shape = (out_channels, channels // groups, kernel, kernel)
    weight_name = name.rsplit(" b", 1)[0]  # the case's name without its batch
    pw = pruned_weight(f"{weight_name} {sparsity:.0%} sparse", shape, sparsity, code_bits=8,
                       gap_bits=4, seed=seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((batch, channels, size, size), dtype=np.float32)
    b = rng.standard_normal(out_channels, dtype=np.float32)
    geom = conv2d_geometry(x.shape[1:], shape, 1, padding, 1, groups)
    dy = rng.standard_normal((batch,) + geom.out_shape, dtype=np.float32)
    args = (1, padding, 1, groups)
    w = pw.levels[pw.code_bits]
    xt, wt, bt, dyt = (torch.from_numpy(a) for a in (x, w, b, dy))

    def reference(q, backward):
        x64, w64, b64 = (torch.from_numpy(a).double().requires_grad_(backward) for a in (x, q, b))
        y = F.conv2d(x64, w64, b64, *args)
        if not backward:
            return (y.detach().numpy(),)
        return (y,) + torch.autograd.grad(y, (x64, w64, b64), torch.from_numpy(dy).double())

    expected = {bits: _once(lambda q=q: reference(q, False)) for bits, q in pw.levels.items()}
    train_ref = _once(lambda: [a.detach().numpy() for a in reference(w, True)])

    def ours(fmt):
        return lambda: (conv2d_forward_format(x, fmt, b, geom),)

    def ours_train(fmt):
        def run():
            y = conv2d_forward_format(x, fmt, b, geom)
            dx, grads, db = conv2d_backward_format(dy, x, fmt, geom)
            return (y, dx, grads[fmt.trainable[0]], db)

        def want():  # the format's own weight gradient: dW itself, or dW at the stored positions
            y, dx, dw, db = train_ref()
            return (y, dx, fmt.reduce_dense_grad(dw)[fmt.trainable[0]], db)

        return run, want

    xg, wg, bg = (t.clone().requires_grad_() for t in (xt, wt, bt))  # apart from the forward's

    def torch_train():
        y = F.conv2d(xg, wg, bg, *args)
        return (y,) + torch.autograd.grad(y, (xg, wg, bg), dyt)

    cases = []
    if _selected(names[0], match):
        contenders = [Contender(n, ours(fmt), expected[bits])
                      for n, (fmt, bits) in pw.formats.items()]
        contenders.append(Contender(TORCH_DENSE, lambda: (F.conv2d(xt, wt, bt, *args),),
                                    expected[pw.code_bits]))
        targets = ()
        if sparsity == 0.9:
            targets = (("robustcnn-csr", OURS_DENSE, 1.5),
                       ("robustcnn-sparse-codebook", OURS_DENSE, 1.5))
        cases.append(FormatCase(names[0], contenders, (TORCH_DENSE, OURS_DENSE), weight=pw,
                                targets=targets))
    if _selected(names[1], match):
        contenders = [Contender(n, *ours_train(pw.formats[n][0]))
                      for n in (OURS_DENSE, "robustcnn-csr")]
        contenders.append(Contender(TORCH_DENSE, torch_train, train_ref))
        cases.append(FormatCase(names[1], contenders, (TORCH_DENSE, OURS_DENSE), weight=pw))
    return cases


# ---------------------------------------------------------------------------------------------
# Huffman decode throughput


def skewed_symbols(n, alphabet=256, decay=0.97, seed=0):
    """``n`` symbols with P(s) ∝ decay**s (the geometric stream huffman.py's tuning used)."""
    p = decay ** np.arange(alphabet)
    return np.random.default_rng(seed).choice(alphabet, size=n, p=p / p.sum()).astype(np.uint8)


def numpy_huffman_decode(stream):
    """All symbols of a HuffmanStream, decoded in NumPy: the peer of ``huffman.decode``.

    Vectorised across blocks: step i decodes symbol i of every block that has one, so the Python
    loop runs as many times as the longest block has symbols, not once per symbol. A step reads
    40 bits at each block's bit position (5 byte gathers), looks the next ``primary_bits`` up in
    the primary table and resolves longer codes by the canonical first-code-per-length test,
    the kernel's algorithm. The bit window and the canonical test follow
    ``reference_decode_block`` in tests/engine/formats/test_huffman.py; that decoder's pointer
    doubling over every bit position, tried here as the peer, decoded the 10 M-symbol stream
    below at ~4 M symbols/s against ~19 M for this one, so this is the fairer peer. No
    validation: the streams are the bench's own.
    """
    from robustcnn.engine.formats.huffman import decode_tables

    primary, primary_bits, canonical, sorted_symbols = decode_tables(stream.lengths)
    first, per_length, offset = canonical
    longest = int(np.flatnonzero(per_length).max(initial=0))
    padded = np.concatenate([stream.bits, np.zeros(5, dtype=np.uint8)])
    starts = stream.block_symbol_starts
    counts = np.diff(starts)
    order = np.argsort(-counts, kind="stable")  # longest blocks first: the active ones a prefix
    pos = stream.block_bit_starts[:-1][order].astype(np.int64)
    first_symbol = starts[:-1][order]
    steps = int(counts.max(initial=0))
    active = np.searchsorted(-counts[order], -np.arange(steps), side="left")
    out = np.empty(stream.nsymbols, dtype=np.uint8 if stream.alphabet_size <= 256 else np.uint16)
    for i in range(steps):
        p = pos[:active[i]]  # a view: advancing p advances pos
        byte = p >> 3
        window = padded[byte].astype(np.uint64)
        for k in range(1, 5):
            window = (window << 8) | padded[byte + k]
        window <<= (p & 7).astype(np.uint64) + 24  # bit p at bit 63
        entry = primary[window >> (64 - primary_bits)]
        length = entry & 0xFF
        symbol = entry >> 8
        slow = np.flatnonzero(length == 0)  # codes longer than primary_bits
        for l in range(primary_bits + 1, longest + 1):
            if slow.size == 0:
                break
            d = (window[slow] >> (64 - l)).astype(np.int64) - first[l]
            hit = (d >= 0) & (d < per_length[l])
            symbol[slow[hit]] = sorted_symbols[offset[l] + d[hit]]
            length[slow[hit]] = l
            slow = slow[~hit]
        out[first_symbol[:active[i]] + i] = symbol
        p += length
    return out


def _huffman_kernel(stream):
    """decode_blocks alone on prebuilt tables and buffers (what ``huffman.decode`` adds:
    ``validate``, ``decode_tables``, the output buffer and the end-of-block check)."""
    from robustcnn.engine.formats.huffman import decode_blocks, decode_tables

    tables = decode_tables(stream.lengths)
    out = np.empty(stream.nsymbols, dtype=np.uint8 if stream.alphabet_size <= 256 else np.uint16)
    ends = np.empty(stream.nblocks, dtype=np.int64)
    nbits = np.int64(stream.nbits)

    def run():
        decode_blocks(stream.bits, nbits, *tables, stream.block_bit_starts,
                      stream.block_symbol_starts, out, ends)
        return out

    return run


def huffman_decode_case(name, streams, symbols, weights, *, target=None):
    """Decode ``streams`` (whose symbols are ``symbols``) with ours and NumPy; ``weights`` is the
    number of float32 weights they decode to (for MB/s)."""
    from robustcnn.engine.formats import huffman

    kernels = [_huffman_kernel(s) for s in streams]
    expected = lambda: tuple(symbols)  # noqa: E731
    contenders = [
        Contender("robustcnn-huffman", lambda: tuple(huffman.decode(s) for s in streams),
                  expected),
        Contender("robustcnn-huffman-kernel", lambda: tuple(k() for k in kernels), expected),
        Contender("numpy-huffman", lambda: tuple(numpy_huffman_decode(s) for s in streams),
                  expected),
    ]
    targets = (("robustcnn-huffman", None, target),) if target else ()
    return FormatCase(name, contenders, ("numpy-huffman",), weights_decoded=weights,
                      targets=targets)


def huffman_decode_cases(symbols=10_000_000, block=4096, *, match=None):
    """Our Huffman decoder against NumPy's on a skewed 256-symbol stream cut into rows of
    ``block`` symbols, and on the real SqueezeNet codes and gaps (one block per row)."""
    from robustcnn.engine.formats import HuffmanCodebookWeight, huffman
    from robustcnn.models.squeezenet_dc import (load_deep_compression_arrays,
                                                sparse_codebook_weight)

    cases = []
    name = f"huffman decode skewed-256 {symbols / 1e6:g}M symbols, {block}-symbol blocks"
    if _selected(name, match):
        s = skewed_symbols(symbols)
        starts = np.unique(np.append(np.arange(0, symbols, block), symbols))
        stream = huffman.encode(s, starts, 256)
        cases.append(huffman_decode_case(name, [stream], [s], symbols, target=200))
    name = "huffman decode squeezenet codes+gaps, 26 layers, a block per row"
    if _selected(name, match):
        streams, symbols_ = [], []
        for layer in load_deep_compression_arrays().values():
            w = HuffmanCodebookWeight.from_sparse_codebook(sparse_codebook_weight(layer))
            streams += [w.codes, w.gaps]
            symbols_ += [layer.codes, layer.gaps]
        entries = sum(s.size for s in symbols_) // 2
        cases.append(huffman_decode_case(name, streams, symbols_, entries, target=200))
    return cases


def format_cases(match=None):
    """The weight-format cases in table order, then the Huffman decode cases."""
    convs = [
        dict(name="alexnet-conv2 96x27x27->256 5x5 p2 g2 b8", batch=8, channels=96, size=27,
             out_channels=256, kernel=5, padding=2, groups=2),
        dict(name="vgg 64x56x56->64 3x3 p1 b8", batch=8, channels=64, size=56, out_channels=64,
             kernel=3, padding=1),
    ]
    cases = []
    for sparsity in SPARSITIES:
        cases += sparse_linear_cases(sparsity=sparsity, match=match)
    for spec in convs:
        for sparsity in SPARSITIES:
            cases += sparse_conv_cases(**spec, sparsity=sparsity, match=match)
    return cases + huffman_decode_cases(match=match)


# ---------------------------------------------------------------------------------------------
# Bytes of weights


@dataclass
class LayerBytes:
    """One layer's weight in several formats: {format column: stored bytes}."""

    name: str
    shape: tuple
    nonzeros: int
    entries: int  # stored entries of the sparse codebook, fillers included
    bytes: dict

    @property
    def size(self):
        return int(np.prod(self.shape))


NET_FORMATS = ("dense", "csr", CODE_BITS, "sparse codebook", "huffman")


def layer_bytes(name, sc, *, cache=False):
    """A layer given as a SparseCodebookWeight, converted to each of ``NET_FORMATS`` (and the
    Huffman decode-once cache, if asked) → LayerBytes. Every conversion is exact."""
    from robustcnn.engine.formats import CodebookWeight, CSRWeight, HuffmanCodebookWeight

    dense = sc.to_dense()
    huffman = HuffmanCodebookWeight.from_sparse_codebook(sc)
    out = {"dense": WEIGHT_BYTES * sc.size,
           "csr": CSRWeight.from_dense(dense).stored_bytes(),
           CODE_BITS: CodebookWeight.from_dense(dense, sc.code_bits,
                                                centroids=sc.centroids).stored_bytes(),
           "sparse codebook": sc.stored_bytes(),
           "huffman": huffman.stored_bytes()}
    if cache:
        out["huffman cached"] = huffman.decoded().stored_bytes()
    return LayerBytes(name, sc.shape, sc.nnz(), sc.count, out)


def squeezenet_bytes():
    """Per-layer bytes of the Deep Compression SqueezeNet, stored as its file stores it (sparse
    codebook: 8-bit codes, 4-bit gaps) and converted → (list of LayerBytes, file bytes)."""
    from robustcnn.models.squeezenet_dc import (WEIGHTS, load_deep_compression_arrays,
                                                sparse_codebook_weight)

    layers = load_deep_compression_arrays()
    rows = [layer_bytes(name, sparse_codebook_weight(layer), cache=True)
            for name, layer in layers.items()]
    biases = sum(WEIGHT_BYTES * layer.bias.size for layer in layers.values())
    return rows, os.path.getsize(WEIGHTS), biases


# Deep Compression's LeNet-5 (Han et al. 2016): the fraction of weights kept per layer
LENET5_DC_KEPT = {"conv1": 0.66, "conv2": 0.12, "ip1": 0.08, "ip2": 0.19}


def lenet5_bytes(seed=0):
    """Per-layer bytes of a fresh LeNet-5 magnitude-pruned to Deep Compression's densities, its
    survivors quantized to 2**bits − 1 evenly spaced centroids (conv 8 bits, 4-bit gaps; FC 5
    bits, 5-bit gaps; ``SparseCodebookWeight.from_dense``) → list of LayerBytes."""
    from robustcnn.engine.formats import SparseCodebookWeight

    net = lenet5(seed=seed)
    rows = []
    for name, keep in LENET5_DC_KEPT.items():
        w = magnitude_prune(net.params[name]["weight"], keep)
        bits = 8 if name.startswith("conv") else 5
        sc = SparseCodebookWeight.from_dense(w, bits, 4 if bits == 8 else 5)
        rows.append(layer_bytes(name, sc, cache=True))
    return rows


def total_row(rows, name="total"):
    formats = list(dict.fromkeys(k for r in rows for k in r.bytes))  # in the rows' order
    return LayerBytes(name, (sum(r.size for r in rows),), sum(r.nonzeros for r in rows),
                      sum(r.entries for r in rows),
                      {k: sum(r.bytes[k] for r in rows) for k in formats})


def _kib(n):
    return f"{n / 1024:,.1f}"


def net_bytes_table(rows):
    """Per layer: bytes of each format and its ratio to dense float32, then a total row."""
    header = ["layer", "shape", "weights", "kept", "entries"]
    for f in NET_FORMATS:
        header += [f"{f} KiB", "x"]
    lines = []
    for r in rows + [total_row(rows)]:
        line = [r.name, "x".join(map(str, r.shape)) if r.name != "total" else "",
                f"{r.size:,}", f"{r.nonzeros / r.size:.1%}", f"{r.entries:,}"]
        for f in NET_FORMATS:
            line += [_kib(r.bytes[f]), f"{r.bytes['dense'] / r.bytes[f]:.1f}x"]
        lines.append(line)
    return format_table(header, lines)


BYTES_READ_COLUMNS = ("dense", "csr", "sparse codebook", "huffman", "huffman cached",
                      "codebook4", "codebook5", CODE_BITS, TORCH_SPARSE, SCIPY)


def weight_bytes_read(pw):
    """{column of BYTES_READ_COLUMNS: bytes a forward pass reads} for a case's weight."""
    names = {"dense": OURS_DENSE, "csr": "robustcnn-csr",
             "sparse codebook": "robustcnn-sparse-codebook", "huffman": "robustcnn-huffman",
             "huffman cached": "robustcnn-huffman-cached", "codebook4": "robustcnn-codebook4",
             "codebook5": "robustcnn-codebook5"}
    out = {col: pw.formats[name][0].stored_bytes() for col, name in names.items()}
    out["dense"] = WEIGHT_BYTES * pw.size
    return {**out, **(pw.extra_bytes or {})}


def bytes_read_table(entries):
    """entries: [(name, {column: bytes})] → the table, KiB and × smaller than dense float32."""
    header = ["weight"] + [f"{c} KiB" for c in BYTES_READ_COLUMNS]
    lines = []
    for name, b in entries:
        lines.append([name] + [_kib(b[c]) if c in b else "-" for c in BYTES_READ_COLUMNS])
        lines.append([""] + [f"{b['dense'] / b[c]:.1f}x" if c in b else "-"
                             for c in BYTES_READ_COLUMNS])
    return format_table(header, lines)


def bytes_records(entries, squeezenet, lenet):
    """The --bytes-json document: every table as a list of {name, format, bytes}."""
    def layers(rows):
        return [{"layer": r.name, "shape": list(r.shape), "nonzeros": r.nonzeros,
                 "entries": r.entries, "format": f, "bytes": n}
                for r in rows + [total_row(rows)] for f, n in r.bytes.items()]

    return {
        "note": "bytes of weight data, as stored; dense = 4 bytes per weight; huffman cached = "
                "the decoded sparse codebook; codebook (code bits) = a dense-pattern codebook at "
                "the sparse codebook's code width",
        "bytes_read_per_inference": [{"weight": name, "format": f, "bytes": n}
                                     for name, b in entries for f, n in b.items()],
        "squeezenet_v1.0_deep_compression": layers(squeezenet),
        "lenet5_deep_compression_densities": layers(lenet),
    }


# ---------------------------------------------------------------------------------------------
# Format report


def format_results_table(results):
    """A row per implementation: time, ratios against the case's baselines, check."""
    header = ["case", "implementation", "ms", "vs torch dense", "vs torch sparse", "vs scipy",
              "vs ours dense", "faults/call", "bg CPUs", "check"]
    versus = (TORCH_DENSE, TORCH_SPARSE, SCIPY, OURS_DENSE)
    rows = []
    for r in results:
        for i, c in enumerate(r.case.contenders):
            row = [r.case.name if i == 0 else "", c.name]
            if c.name not in r.seconds:
                rows.append(row + ["-"] * 7 + [r.check(c.name)])
                continue
            row.append(f"{r.seconds[c.name] * 1e3:.3f}")
            for v in versus:
                ok = v in r.case.baselines and v in r.seconds
                row.append(f"{r.ratio(c.name, v):.2f}x" if ok else "")
            bg = "?" if r.background is None else f"{r.background:.2f}"
            rows.append(row + [f"{r.faults[c.name]:.0f}", bg, r.check(c.name)])
    return format_table(header, rows)


def decode_table(results):
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
                               f"{r.ratio(c.name, 'numpy-huffman'):.2f}x", bg, r.check(c.name)])
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


FORMAT_NOTES = (
    "Weights: a random weight, magnitude-pruned, its survivors on 2**bits − 1 evenly spaced "
    "values (FC: 5-bit codes and gaps; conv: 8-bit codes, 4-bit gaps; codebook4/5 on their own "
    "4-/5-bit quantization of the same pruned weight), so every conversion is exact. Each "
    "implementation is checked against torch float64 on the weight it stores. vs X = X's time / "
    "this row's time: > 1 means this row is faster. All implementations of a case take turns. "
    "Threads: ours and torch use the same count; scipy.sparse is single-threaded. "
    "torch-sparse-csr: torch.sparse.mm(W.to_sparse_csr(), xᵀ); at batch 1 torch-sparse-csr-mv "
    "is torch.mv on the same tensor, torch's faster path for a vector. "
    "robustcnn-huffman decodes each row's codes and gaps every time a kernel visits the row "
    "(streaming); robustcnn-huffman-cached computes on HuffmanCodebookWeight.decoded(), decoded "
    "once, outside the timing. fwd+bwd: the forward, dx, the format's own weight gradient "
    "(CSR: dL/dW at the stored positions) and db; torch: dense autograd.")


def note(text):
    print(textwrap.fill(text, width=100))


def print_formats(results, bytes_entries, squeezenet, lenet):
    """The format section of the report: timings, decode throughput, bytes."""
    timed = [r for r in results if not r.case.weights_decoded]
    decoded = [r for r in results if r.case.weights_decoded]
    if timed:
        print()
        print("weight formats: pruned weights in every format, side by side")
        print(format_results_table(timed))
        note(FORMAT_NOTES)
        seen = {}
        for r in timed:
            seen.setdefault(r.case.weight.name, r.case.weight)
        note("decode-once cost of the Huffman cache (HuffmanCodebookWeight.decoded(), not in "
             "the times above): " + "; ".join(f"{pw.name} {pw.decode_once_s * 1e3:.1f} ms"
                                              for pw in seen.values()))
    if decoded:
        print()
        note("Huffman decode throughput (MB/s = decoded weights × 4 bytes, each decoded weight "
             "taken as one float32; the skewed stream decodes one symbol per weight, SqueezeNet "
             "one code + one gap symbol per stored entry)")
        print(decode_table(decoded))
        note("robustcnn-huffman: huffman.decode (validate, tables, the parallel kernel over "
             "blocks, end check); robustcnn-huffman-kernel: decode_blocks alone on prebuilt "
             "tables; numpy-huffman: bench.py's NumPy decoder (vectorised across blocks).")
    print()
    note("bytes of weights read per inference (= stored bytes for the streaming formats; "
         "Huffman cached: the decoded sparse codebook's; dense: 4 × weights); KiB, and below "
         "each row × smaller than dense float32")
    print(bytes_read_table(bytes_entries))
    note(f"{CODE_BITS}: a dense-pattern codebook at the sparse codebook's code width (FC 5 bits, "
         "conv 8; LeNet-5: conv 8, ip 5), bytes only where not timed. torch-sparse-csr: int64 "
         "indices; scipy-sparse: int32.")
    rows, file_bytes, biases = squeezenet
    total = total_row(rows)
    print()
    note("SqueezeNet v1.0, Deep Compression (compressed_SqueezeNet.net: pruned, 8-bit codes, "
         "4-bit gaps, no Huffman), per layer, KiB and × smaller than dense float32")
    print(net_bytes_table(rows))
    note(f"the file: {file_bytes:,} bytes = {file_bytes / 1024:.0f} KiB (published: 660 KB); "
         f"our sparse codebook total + float32 biases = "
         f"{(total.bytes['sparse codebook'] + biases) / 1024:,.0f} KiB; with Huffman coding = "
         f"{(total.bytes['huffman'] + biases) / 1024:,.0f} KiB")
    print()
    note("LeNet-5 (fresh lenet5(), magnitude-pruned to Deep Compression's densities conv1 66%, "
         "conv2 12%, ip1 8%, ip2 19%; conv 8-bit codes + 4-bit gaps, ip 5 + 5), per layer")
    print(net_bytes_table(lenet))
    lenet_total = total_row(lenet)
    note(f"published (Han et al. 2016): 1,720 KB -> 44 KB, 39x; here "
         f"{lenet_total.bytes['dense'] / 1024:,.0f} KiB -> "
         f"{lenet_total.bytes['huffman'] / 1024:,.1f} KiB with Huffman "
         f"({lenet_total.bytes['dense'] / lenet_total.bytes['huffman']:.0f}x), biases not counted")


def nets_bytes_read(squeezenet, lenet):
    """Whole-net rows of the bytes-read table."""
    out = []
    for name, rows in (("squeezenet v1.0 DC, whole net", squeezenet),
                       ("lenet-5 DC densities, whole net", lenet)):
        out.append((name, total_row(rows).bytes))
    return out


# ---------------------------------------------------------------------------------------------
# Cold start


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
    before = _cpu_snapshot()
    with tempfile.TemporaryDirectory(prefix="robustcnn-bench-numba-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache,
                   NUMBA_NUM_THREADS=str(numba.get_num_threads()))
        empty = _first_forward(_COLD_START, env)
        warm = sorted(_first_forward(_COLD_START, env) for _ in range(warm_runs))[warm_runs // 2]
        peer = _first_forward(_TORCH_COLD_START, env)
    return {"empty": empty, "warm": warm, "torch": peer,
            "background": background_cpus(before, _cpu_snapshot())}


# ---------------------------------------------------------------------------------------------
# Report


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


def results_table(results, peak):
    header = ["case", "ours ms", "torch ms", "torch/ours", "ours GFLOP/s", "%peak",
              "torch GFLOP/s", "%peak", "ours img/s", "torch img/s", "faults/call",
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
    return format_table(header, rows)


def targets(results, cold, max_cold_start=3.0):
    """(what, measured, PASS or FALL SHORT) for each performance target of the issue."""
    lines = []
    for r in results:
        if r.case.target is None:
            continue
        what = f"{r.case.name}: torch/ours >= {r.case.target}"
        if r.failure or not r.agrees:
            lines.append((what, "output wrong or failed", "FALL SHORT"))
        else:
            verdict = "PASS" if r.ratio >= r.case.target else "FALL SHORT"
            lines.append((what, f"{r.ratio:.2f}", verdict))
    what = f"warm-cache cold start <= {max_cold_start:g} s"
    if cold is None:
        lines.append((what, "not measured (--quick)", "-"))
    else:
        s = cold["warm"][0]
        lines.append((what, f"{s:.2f} s", "PASS" if s <= max_cold_start else "FALL SHORT"))
    return lines


def records(results, cold):
    """The --json records: {"case", "ours", "peer", "ours_s", "peer_s", "ratio"}."""
    out = [{"case": r.case.name, "ours": r.case.ours_name, "peer": r.case.peer_name,
            "ours_s": r.ours_s, "peer_s": r.peer_s, "ratio": r.ratio}
           for r in results if not r.failure]
    if cold is not None:
        for key, label in (("empty", "empty numba cache"), ("warm", "warm numba cache")):
            out.append({"case": f"lenet5 cold start b1, {label}", "ours": OURS, "peer": PEER,
                        "ours_s": cold[key][0], "peer_s": cold["torch"][0],
                        "ratio": cold["torch"][0] / cold[key][0]})
    return out


# ---------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
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
    return p.parse_args(argv)


def print_header(torch, budget, *, sgemm):
    """The environment; with ``sgemm``, the measured peak too → peak GFLOP/s for %peak."""
    lines, info = environment(torch)  # after a first kernel call: Numba's pool is started
    peak, assumption = theoretical_peak(info)
    for label, value in lines:
        print(f"{label:>24}: {value}")
    print(f"{'peak (theoretical)':>24}: {peak:.1f} GFLOP/s = {assumption}")
    peak_label = "theoretical"
    if sgemm:
        measured = measured_sgemm(torch, reps=2 if budget is QUICK else 3)
        print(f"{'sgemm 2048^3 (measured)':>24}: "
              + ", ".join(f"{name} {g:.1f} GFLOP/s" for name, g in measured.items()))
        caveat = peak_caveat(peak, measured, info)
        if caveat:
            print(f"{'caution':>24}: {caveat}")
        # %peak against whichever is higher: the theoretical figure or what one thread's sgemm
        # shows the cores really do (× cores); a VM's nominal clock can understate the first.
        measured_peak = info["cores"] * measured.get("scipy sgemm, 1 thread", 0.0)
        if measured_peak > peak:
            peak_label, peak = "cores × measured 1-thread sgemm", measured_peak
    print(f"{'timing':>24}: median of >= {budget.reps} calls and >= {budget.seconds} s per side "
          f"after {budget.warmup} warm-up call(s); ours and torch take turns of ~{budget.turn} s, "
          f"each after one untimed call", flush=True)
    return peak, peak_label


def run_formats(args, budget):
    """The format section: run its cases, build the bytes tables → (results, bytes-read rows,
    SqueezeNet, LeNet-5), or None if ``--cases`` selects none of it."""
    cases = format_cases(match=args.cases)
    if not cases and args.cases and not args.formats:
        return None
    results = []
    for case in cases:
        print(f"  running {case.name}", file=sys.stderr, flush=True)
        results.append(run_format_case(case, budget))
    weights = {}
    for r in results:
        if r.case.weight is not None:
            weights.setdefault(r.case.weight.name, weight_bytes_read(r.case.weight))
    squeezenet, lenet = squeezenet_bytes(), lenet5_bytes()
    entries = list(weights.items()) + nets_bytes_read(squeezenet[0], lenet)
    return results, entries, squeezenet, lenet


def main(argv=None):
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        raise SystemExit("bench.py compares against torch: pip install 'robustcnn[bench]'") \
            from None
    if args.threads:
        numba.set_num_threads(args.threads)
    torch.set_num_threads(numba.get_num_threads())
    budget = QUICK if args.quick else FULL

    conv2d_forward(np.zeros((1, 1, 4, 4), np.float32), np.zeros((1, 1, 3, 3), np.float32))
    cases = [] if args.formats else all_cases()
    if args.cases:
        cases = [c for c in cases if args.cases in c.name]
    peak, peak_label = print_header(torch, budget, sgemm=bool(cases))

    results = []
    for case in cases:
        print(f"  running {case.name}", file=sys.stderr, flush=True)
        results.append(run_case(case, budget))
    formats = run_formats(args, budget)
    format_results = formats[0] if formats else []
    cold = None if args.quick or args.formats else cold_start()

    if results:
        print()
        print(results_table(results, peak))
        print()
        print(FLOP_CONVENTION + f" %peak is of {peak:.1f} GFLOP/s ({peak_label}).")
        print("faults/call: minor page faults per timed call, ours / torch (memory the allocator "
              "had returned to the OS and the call touched again).")
        print("bg CPUs: CPUs other processes kept busy while the case was timed (/proc/stat); "
              "well above 0 means the row is noisy: re-run on a quiet machine.")
    if cold is not None:
        print()
        bg = "?" if cold["background"] is None else f"{cold['background']:.2f}"
        print("cold start, seconds from a fresh interpreter to the end of the first LeNet-5 "
              f"forward (batch 1); bg CPUs {bg}")
        print(format_table(["", "total s", "of which first forward s"], [
            ["robustcnn, empty numba cache", f"{cold['empty'][0]:.2f}", f"{cold['empty'][1]:.2f}"],
            ["robustcnn, warm numba cache", f"{cold['warm'][0]:.2f}", f"{cold['warm'][1]:.2f}"],
            ["torch", f"{cold['torch'][0]:.2f}", f"{cold['torch'][1]:.2f}"]]))
    if formats:
        print_formats(*formats)
    print()
    print("targets")
    lines = (targets(results, cold) if not args.formats else []) + format_targets(format_results)
    print(format_table(["target", "measured", "result"], lines))
    if args.json:
        with atomic_path(args.json) as tmp, open(tmp, "w") as f:
            json.dump(records(results, cold) + format_records(format_results), f, indent=1)
            f.write("\n")
    if args.bytes_json and formats:
        _, entries, squeezenet, lenet = formats
        with atomic_path(args.bytes_json) as tmp, open(tmp, "w") as f:
            json.dump(bytes_records(entries, squeezenet[0], lenet), f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
