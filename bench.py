"""The benchmark: robustcnn side by side with torch CPU, in one process, with the same threads.

    python bench.py                 # every case, the cold start, the targets
    python bench.py --quick         # smaller time budgets, no cold start
    python bench.py --json FILE     # also write records {"case", "ours", "peer", "ours_s",
                                    #                     "peer_s", "ratio"}

Each case runs our functional API (or our Net) and the same computation in torch: checks that the
outputs agree, warms both up, then lets the two take turns (see ``time_pair``) so that background
load hits both alike, and reports the median time per call of each. ``ratio`` = torch time / our
time: > 1 means we are faster. torch is a bench-only extra: only this file imports it.
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
import time
from dataclasses import dataclass
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
    "3 × forward − conv1's dx (not computed).")


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

    @property
    def ratio(self):
        return self.peer_s / self.ours_s

    @property
    def agrees(self):
        if self.failure:
            return False
        return self.error < TOLERANCE or (self.reference_error is not None
                                          and self.reference_error < TOLERANCE)

    @property
    def check(self):
        """The check column: how far our outputs are from torch's."""
        if self.failure:
            return f"FAILED {self.failure}"
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
    return cases + lenet5_cases()


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
    return p.parse_args(argv)


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
    lines, info = environment(torch)  # after a first kernel call: Numba's pool is started
    peak, assumption = theoretical_peak(info)
    for label, value in lines:
        print(f"{label:>24}: {value}")
    print(f"{'peak (theoretical)':>24}: {peak:.1f} GFLOP/s = {assumption}")
    sgemm = measured_sgemm(torch, reps=2 if args.quick else 3)
    print(f"{'sgemm 2048^3 (measured)':>24}: "
          + ", ".join(f"{name} {g:.1f} GFLOP/s" for name, g in sgemm.items()))
    caveat = peak_caveat(peak, sgemm, info)
    if caveat:
        print(f"{'caution':>24}: {caveat}")
    # %peak against whichever is higher: the theoretical figure or what one thread's sgemm
    # shows the cores really do (× cores); a VM's nominal clock can understate the first.
    measured_peak = info["cores"] * sgemm.get("scipy sgemm, 1 thread", 0.0)
    peak_label = "theoretical" if peak >= measured_peak else "cores × measured 1-thread sgemm"
    peak = max(peak, measured_peak)
    print(f"{'timing':>24}: median of >= {budget.reps} calls and >= {budget.seconds} s per side "
          f"after {budget.warmup} warm-up call(s); ours and torch take turns of ~{budget.turn} s, "
          f"each after one untimed call", flush=True)

    cases = all_cases()
    if args.cases:
        cases = [c for c in cases if args.cases in c.name]
    results = []
    for case in cases:
        print(f"  running {case.name}", file=sys.stderr, flush=True)
        results.append(run_case(case, budget))
    cold = None if args.quick else cold_start()

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
    print()
    print("targets")
    print(format_table(["target", "measured", "result"], targets(results, cold)))
    if args.json:
        with atomic_path(args.json) as tmp, open(tmp, "w") as f:
            json.dump(records(results, cold), f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
