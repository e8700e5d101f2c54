"""The fuzzing harness: seeded mutants of every format's seed files, each loaded in a child
process with an address-space limit and a timeout, counted by outcome.

    python tests/fuzz/fuzz_harness.py --mutants 10000 --workers 2 [--formats rcnn,idx]
        [--seed 14] [--timeout 120] [--json out.json] [--findings DIR]

Mutant ``i`` of a format is a pure function of (seed, format, i): byte flips, truncations,
splices, insertions, deletions, duplicated chunks, integer fields set to interesting values
(``BYTE_MUTATORS``), or one of the format's structured mutations (``fuzz_formats``), one to
three stacked. Formats run one after another; within one, ``workers`` processes split the
mutants. Each worker imports robustcnn and loads every seed once (warm kernels), then for each
mutant writes the file, forks a child that sets ``RLIMIT_AS`` and loads it, and waits for it
with a timeout (``os.wait4`` gives the child's peak RSS). Outcomes:

    loaded      the reader returned (for a model: the net built and ran one example)
    clean       ValueError or FileNotFoundError naming the file, in one line (a FloatingPoint-
                Error from the forward pass, naming the layer, counts here too: the command
                reports it as such)
    unexpected  any other exception, or a ValueError not naming the file / of several lines
    memory      MemoryError (the address-space limit was hit)
    hang        the timeout expired (the child is killed)
    crash       the child died of a signal (a segmentation fault in a C library, …)

Workers use Numba's workqueue threading layer with one thread: it is fork-safe (GNU OpenMP is
not), and two workers fill the two cores.
"""

import argparse
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ADDRESS_SPACE = 4 << 30  # each load
WORKER_ADDRESS_SPACE = 8 << 30  # the worker making the mutants
OUTCOMES = ("loaded", "clean", "unexpected", "memory", "hang", "crash")
INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
               10**6, 10**9)


# ---------------------------------------------------------------------------------------------
# Mutations


def _flip(data, rng, seeds):
    data = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        if data:
            data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
    return bytes(data)


def _bytes(data, rng, seeds):
    data = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        if data:
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
    return bytes(data)


def _truncate(data, rng, seeds):
    return data[:int(rng.integers(len(data) + 1))]


def _splice(data, rng, seeds):
    """A chunk of this or another seed copied over a random place."""
    other = seeds[int(rng.integers(len(seeds)))]
    if not other or not data:
        return data
    n = int(rng.integers(1, min(len(other), 4096) + 1))
    src = int(rng.integers(len(other) - n + 1))
    dst = int(rng.integers(len(data)))
    return data[:dst] + other[src:src + n] + data[dst + n:]


def _insert(data, rng, seeds):
    at = int(rng.integers(len(data) + 1))
    junk = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    return data[:at] + junk + data[at:]


def _delete(data, rng, seeds):
    if not data:
        return data
    at = int(rng.integers(len(data)))
    return data[:at] + data[at + int(rng.integers(1, 256)):]


def _repeat(data, rng, seeds):
    if not data:
        return data
    at = int(rng.integers(len(data)))
    chunk = data[at:at + int(rng.integers(1, 512))]
    return data[:at] + chunk * int(rng.integers(2, 20)) + data[at:]


def _integer_field(data, rng, seeds):
    """A 1-, 2-, 4- or 8-byte field (either byte order) set to an interesting value: how a
    binary header declares an absurd size."""
    width = int(rng.choice([1, 2, 4, 8]))
    if len(data) < width:
        return data
    at = int(rng.integers(len(data) - width + 1))
    value = int(INTERESTING[int(rng.integers(len(INTERESTING)))]) % (1 << (8 * width))
    fmt = {1: "B", 2: "H", 4: "I", 8: "Q"}[width]
    data = bytearray(data)
    struct.pack_into(("<" if rng.random() < 0.5 else ">") + fmt, data, at, value)
    return bytes(data)


BYTE_MUTATORS = {"flip": _flip, "bytes": _bytes, "truncate": _truncate, "splice": _splice,
                 "insert": _insert, "delete": _delete, "repeat": _repeat,
                 "integer": _integer_field}


def mutant(fmt, seeds, index, base_seed):
    """(seed name, mutation names, bytes) of mutant ``index`` of format ``fmt``: a pure
    function of its arguments. Structured mutations are tried on about 40% of them."""
    rng = np.random.default_rng([base_seed, sum(map(ord, fmt.name)), index])
    names = sorted(seeds)
    seed = names[int(rng.integers(len(names)))]
    data, applied = seeds[seed], []
    originals = [seeds[n] for n in names]
    for step in range(int(rng.choice([1, 1, 1, 2, 3]))):
        if fmt.mutators and (step == 0 and rng.random() < 0.4):
            name = sorted(fmt.mutators)[int(rng.integers(len(fmt.mutators)))]
            try:
                data = fmt.mutators[name](data, rng)
            except Exception:  # the mutation does not apply to this (already mutated) file
                continue
        else:
            name = sorted(BYTE_MUTATORS)[int(rng.integers(len(BYTE_MUTATORS)))]
            data = BYTE_MUTATORS[name](data, rng, originals)
        applied.append(name)
    return seed, applied, data


# ---------------------------------------------------------------------------------------------
# One mutant in a child process


def _classify(error, path):
    """The outcome of an exception raised while loading the file at ``path``."""
    if isinstance(error, MemoryError):
        return "memory"
    text = str(error)
    if isinstance(error, FloatingPointError) and "\n" not in text:
        return "clean"  # the forward pass: the net names the layer with non-finite outputs
    if isinstance(error, (ValueError, FileNotFoundError)) and "\n" not in text and \
            (path in text or os.path.dirname(path) + os.sep in text):
        return "clean"
    return "unexpected"


def _child(fmt, path, directory, result_fd):
    """Load ``path`` under the address-space limit; write the outcome to ``result_fd``."""
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    try:
        fmt.load(path, directory)
        record = {"outcome": "loaded"}
    except BaseException as e:  # noqa: BLE001: every outcome is counted
        record = {"outcome": _classify(e, path), "type": type(e).__name__,
                  "message": str(e)[:400]}
        if record["outcome"] == "unexpected":
            record["traceback"] = traceback.format_exc()[-3000:]
    try:
        os.write(result_fd, json.dumps(record).encode())
    finally:
        os._exit(0)


def run_one(fmt, path, directory, timeout):
    """Fork a child that loads ``path`` → its record (outcome, peak RSS in MiB, seconds)."""
    read_fd, write_fd = os.pipe()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(fmt, path, directory, write_fd)
    os.close(write_fd)
    status = rusage = None
    while time.monotonic() - t0 < timeout:
        done, status, rusage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.002 if time.monotonic() - t0 < 1 else 0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        _, status, rusage = os.wait4(pid, 0)
        os.close(read_fd)
        return {"outcome": "hang", "rss_mib": rusage.ru_maxrss / 1024,
                "seconds": time.monotonic() - t0}
    with os.fdopen(read_fd, "rb") as f:
        raw = f.read()
    record = json.loads(raw) if raw else None
    if record is None:
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        record = {"outcome": "crash", "type": f"signal {sig}" if sig else
                  f"exit {os.WEXITSTATUS(status)}"}
    record.update(rss_mib=rusage.ru_maxrss / 1024, seconds=time.monotonic() - t0)
    return record


# ---------------------------------------------------------------------------------------------
# A worker: a share of the mutants of each format, one format after another


def worker(names, seeds_root, indices, base_seed, timeout, out_dir, tag, findings=None):
    """For each format of ``names`` (its seeds in ``seeds_root/<name>``), run the mutants
    ``indices`` and write their records to ``out_dir/<name>-<tag>.json`` as soon as the format
    is done. The worker itself is held to ``WORKER_ADDRESS_SPACE``: a mistake in a mutation
    must not take the machine's memory."""
    resource.setrlimit(resource.RLIMIT_AS, (WORKER_ADDRESS_SPACE, WORKER_ADDRESS_SPACE))
    for name in names:
        records = fuzz_format(name, os.path.join(seeds_root, name), indices, base_seed,
                              timeout, findings)
        with open(os.path.join(out_dir, f"{name}-{tag}.json"), "w") as f:
            json.dump(records, f)


def fuzz_format(fmt_name, seeds_dir, indices, base_seed, timeout, findings=None):
    """Run the mutants ``indices`` of one format → [record], each with ``index`` and the
    mutation; the files of unexpected outcomes are kept in ``findings``."""
    import shutil

    from fuzz_formats import FORMATS

    fmt = FORMATS[fmt_name]
    seeds = _read_seeds(seeds_dir, fmt)
    records = []
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{fmt_name}-") as work:
        for name in os.listdir(seeds_dir):  # the companions (a prototxt beside weights)
            if name not in seeds and os.path.isfile(os.path.join(seeds_dir, name)):
                shutil.copy(os.path.join(seeds_dir, name), work)
        for name, data in seeds.items():  # warm up: every seed loads (and compiles kernels)
            path = _write(work, fmt.target(name), data)
            fmt.load(path, work)
            os.unlink(path)
        for index in indices:
            seed, applied, data = mutant(fmt, seeds, index, base_seed)
            path = _write(work, fmt.target(seed), data)
            record = run_one(fmt, path, work, timeout)
            record.update(index=index, seed=seed, mutation="+".join(applied), bytes=len(data))
            records.append(record)
            if findings and record["outcome"] not in ("loaded", "clean"):
                os.makedirs(findings, exist_ok=True)
                shutil.copy(path, os.path.join(findings, f"{fmt_name}-{index}-"
                                                         f"{fmt.target(seed)}"))
            os.unlink(path)
    return records


def _write(directory, name, data):
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _read_seeds(seeds_dir, fmt):
    with open(os.path.join(seeds_dir, "seeds.json")) as f:
        names = json.load(f)
    out = {}
    for name in names:
        with open(os.path.join(seeds_dir, name), "rb") as f:
            out[name] = f.read()
    return out


def write_seeds(fmt, directory):
    """The format's seed files and companions, written into ``directory``."""
    os.makedirs(directory, exist_ok=True)
    seeds = fmt.seeds(directory)
    for name, data in seeds.items():
        _write(directory, name, data)
    with open(os.path.join(directory, "seeds.json"), "w") as f:
        json.dump(sorted(seeds), f)
    return seeds


# ---------------------------------------------------------------------------------------------
# Running formats with several workers, and the table


def worker_env():
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue", NUMBA_NUM_THREADS="1",
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONHASHSEED="0")
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, HERE,
                                                    env.get("PYTHONPATH")) if p)
    return env


def run(names, mutants, *, workers=2, base_seed=14, timeout=120, findings=None, start=0,
        out_dir=None):
    """Fuzz the formats ``names`` with ``mutants`` mutants each, split over ``workers``
    processes (each runs the formats in order) → [summary dict per format] (counts per
    outcome, peak RSS, the worst inputs, the problems). ``out_dir`` keeps the records."""
    from fuzz_formats import FORMATS

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fuzz-") as root:
        out_dir = out_dir or os.path.join(root, "records")
        os.makedirs(out_dir, exist_ok=True)
        for name in names:
            write_seeds(FORMATS[name], os.path.join(root, name))
        procs = []
        for k in range(workers):
            args = [sys.executable, os.path.join(HERE, "fuzz_harness.py"), "--worker",
                    ",".join(names), "--seeds-dir", root, "--indices",
                    f"{start + k}:{start + mutants}:{workers}", "--seed", str(base_seed),
                    "--timeout", str(timeout), "--out", out_dir, "--tag", str(k)]
            if findings:
                args += ["--findings", findings]
            procs.append(subprocess.Popen(args, env=worker_env(), stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
        for proc in procs:
            stdout, stderr = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"a fuzz worker failed ({proc.returncode}):\n"
                                   f"{stderr[-4000:]}")
        summaries = []
        for name in names:
            records = []
            for k in range(workers):
                with open(os.path.join(out_dir, f"{name}-{k}.json")) as f:
                    records += json.load(f)
            summaries.append(summarise(name, records, time.monotonic() - t0))
    return summaries


def summarise(name, records, seconds):
    counts = Counter(r["outcome"] for r in records)
    worst = sorted(records, key=lambda r: -r["rss_mib"])[:3]
    slowest = max(records, key=lambda r: r["seconds"]) if records else None
    return {"format": name, "tried": len(records), **{o: counts.get(o, 0) for o in OUTCOMES},
            "peak_rss_mib": max((r["rss_mib"] for r in records), default=0.0),
            "max_file_bytes": max((r["bytes"] for r in records), default=0),
            "slowest_seconds": slowest["seconds"] if slowest else 0.0,
            "worst_rss": [{k: r.get(k) for k in ("index", "mutation", "bytes", "rss_mib",
                                                 "outcome", "seconds", "message")}
                          for r in worst],
            "problems": [r for r in records if r["outcome"] not in ("loaded", "clean")][:20],
            "seconds": seconds}


def format_table(summaries):
    head = ("format", "tried", *OUTCOMES, "peak RSS MiB", "slowest s")
    rows = [head] + [(s["format"], s["tried"], *(s[o] for o in OUTCOMES),
                      f"{s['peak_rss_mib']:.0f}", f"{s['slowest_seconds']:.1f}")
                     for s in summaries]
    return "\n".join("| " + " | ".join(str(c) for c in r) + " |" for r in rows[:1]) + "\n" + \
        "|" + "---|" * len(head) + "\n" + \
        "\n".join("| " + " | ".join(str(c) for c in r) + " |" for r in rows[1:])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mutants", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--formats", default=None, help="comma-separated (default: all)")
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--json", default=None, help="write the summaries here")
    p.add_argument("--findings", default=None, help="keep the files of problems here")
    p.add_argument("--start", type=int, default=0, help="first mutant index")
    p.add_argument("--records", default=None,
                   help="keep every mutant's record here, one JSON file per format and worker")
    # a worker (started by run)
    p.add_argument("--worker", default=None)
    p.add_argument("--seeds-dir")
    p.add_argument("--indices")
    p.add_argument("--out", help="(worker) directory for the records")
    p.add_argument("--tag")
    args = p.parse_args(argv)
    if args.worker:
        lo, hi, step = (int(v) for v in args.indices.split(":"))
        worker(args.worker.split(","), args.seeds_dir, range(lo, hi, step), args.seed,
               args.timeout, args.out, args.tag, args.findings)
        return 0
    sys.path.insert(0, HERE)
    from fuzz_formats import FORMATS

    names = args.formats.split(",") if args.formats else list(FORMATS)
    summaries = run(names, args.mutants, workers=args.workers, base_seed=args.seed,
                    timeout=args.timeout, findings=args.findings, start=args.start,
                    out_dir=args.records)
    for s in summaries:
        for r in s["problems"][:5]:
            print(f"{s['format']}: {r['outcome']} #{r['index']} {r['mutation']}: "
                  f"{r.get('type')}: {(r.get('message') or '')[:200]}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summaries, f, indent=1)
    print(format_table(summaries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
