"""The machine the bench runs on: CPU, clock and SIMD flags, its theoretical and measured
SGEMM peak, the libraries and thread pools in use, and the header that prints them."""

import os
import platform
import re
import statistics
import subprocess
import time

import numba
import numpy as np

from .common import QUICK


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
