"""robustcnn's APGD, FAB, Square and AutoAttack against torchattacks 3.5.1 on the same weights.

Used by ``test_autoattack_oracle.py`` and runnable on its own (the full comparison of issue 13,
about an hour per model and norm on 1,000 images on a shared 2-core machine):

    PYTHONPATH=<checkout's parent> python tests/attacks/autoattack_oracle.py MODEL [MODEL ...]
        [--examples 1000] [--eps-linf 0.1] [--eps-l2 1.5] [--norms linf,l2]
        [--attacks apgd-ce,apgd-t,fab-t,...] [--json ROWS.json] [--markdown ROWS.md]

MODEL is an HDF5 checkpoint or a compressed .rcnn file (densified for torch). Prints, per model,
norm and attack, the robust accuracy of both and their run times.

The settings are matched to the authors' AutoAttack (100 iterations of APGD, APGD-T and FAB-T,
9 target classes, 5,000 Square queries with p_init 0.8; Square's schedule of square sizes
rescaled to the budget, as robustcnn's and torchattacks' default do, where the authors'
AutoAttack keeps the 10,000-query schedule); torchattacks' own ``AutoAttack`` class
builds its members with their defaults, 10 iterations each, so the ensemble is built here from
the members with the authors' settings (``MultiAttack``), and the shipped class is reported
beside it for information ("torchattacks AutoAttack as shipped").

Defined differences, which move robust accuracy by a few points at most on 1,000 images:
random numbers (NumPy's generators, not torch's), so random starts differ; robustcnn stops an
example once it is broken (results unchanged); APGD's first checkpoint window compares with the
start's loss (the authors' code with 0); FAB with eps stops an example at its first point within
eps; torchattacks' APGD-T in L2 steps every example with the first example's step size (its
``step_size[0]``), a quirk of its code.
"""

import argparse
import os
import sys
import time

import numpy as np
from torch_sequential import torch_sequential

from robustcnn.bench.attacks import torchattacks_attacks  # the bench's, one home


def ours(name, norm, eps, progress=None):
    """robustcnn's attack of that name as f(net, x, y) → x_adv; ``progress(k)`` is called as k
    examples finish (None: nothing reported)."""
    from robustcnn.attacks import apgd, apgd_t, fab_t
    from robustcnn.attacks.autoattack import autoattack

    common = dict(norm=norm, progress=progress)
    if name in ("apgd-ce", "apgd-dlr"):
        return lambda net, x, y: apgd(net, x, y, eps, loss=name[5:], **common)
    if name == "apgd-t":
        return lambda net, x, y: apgd_t(net, x, y, eps, **common)
    if name == "fab-t":
        return lambda net, x, y: fab_t(net, x, y, eps, **common)
    if name == "square":
        from robustcnn.attacks.square import square
        return lambda net, x, y: square(net, x, y, eps, n_queries=5000, p_init=0.8, **common)
    if name == "autoattack":
        return lambda net, x, y: autoattack(net, x, y, eps, **common)
    raise ValueError(f"unknown attack {name!r}")


def robust_accuracy(predict, x, x_adv, y, norm, eps):
    """Share of points classified correctly at x_adv or whose x_adv is further than eps."""
    d = (x_adv.astype(np.float64) - x.astype(np.float64)).reshape(len(x), -1)
    size = np.abs(d).max(1) if norm == "linf" else np.sqrt((d * d).sum(1))
    return float(((predict(x_adv) == y) | (size > eps * (1 + 1e-5))).mean())


def compare(net, x, y, norm, eps, attacks, *, log=None, progress=False):
    """One row per attack: {attack, norm, eps, examples, ours, theirs, ours_s, theirs_s, clean,
    load}, robust accuracy on (x, y) with true labels (torchattacks attacks the clean-correct
    points; a clean-wrong point counts as broken on both sides); ``load`` the machine's 1-, 5-
    and 15-minute load averages at the row's start, at the switch to torchattacks and at its
    end. ``progress``: a bar over robustcnn's examples and a line when torchattacks starts
    (torchattacks reports nothing while it runs)."""
    from robustcnn.progress import progress_bar

    import torch

    model = torch_sequential(net)
    tx, ty = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)

    def torch_predict(a):
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(a, np.float32))).argmax(1).numpy()

    clean = torch_predict(x) == y
    theirs = torchattacks_attacks(model, norm, eps, net.num_classes)
    rows = []
    for name in attacks:
        row = {"attack": name, "norm": norm, "eps": eps, "examples": len(x),
               "clean": float(clean.mean()), "load": [list(os.getloadavg())]}
        if name != "autoattack-shipped":
            bar = progress_bar(total=len(x), enabled=progress, unit="img", leave=False,
                               desc=f"robustcnn {name} {norm} {eps:g}")
            t0 = time.perf_counter()
            with bar:
                adv = ours(name, norm, eps, bar.update)(net, x, y)
            row["ours_s"] = time.perf_counter() - t0
            row["ours"] = robust_accuracy(lambda a: net.predict(a), x, adv, y, norm, eps)
            row["load"].append(list(os.getloadavg()))
            if progress:
                print(f"  robustcnn {name} {norm} {eps:g}: {100 * row['ours']:.2f}% in "
                      f"{row['ours_s']:.1f} s; torchattacks started at "
                      f"{time.strftime('%H:%M:%S')}", flush=True)
        t0 = time.perf_counter()
        adv_t = theirs[name](tx, ty).detach().numpy()
        row["theirs_s"] = time.perf_counter() - t0
        row["theirs"] = robust_accuracy(torch_predict, x, adv_t, y, norm, eps)
        row["load"].append(list(os.getloadavg()))
        rows.append(row)
        if log:
            log(format_row(row))
    return rows


def format_row(r):
    ours_ = f"{100 * r['ours']:6.2f}%  {r['ours_s']:7.1f} s" if "ours" in r else " " * 17
    return (f"{r['attack']:<19} {r['norm']:<4} {r['eps']:<5g} {ours_}   "
            f"{100 * r['theirs']:6.2f}%  {r['theirs_s']:7.1f} s")


TOLERANCE_PP = 1.0  # issue 13: robustcnn within ±1 percentage point of torchattacks


def row_key(r):
    """What identifies a measured row: a rerun with the same key skips it."""
    return (r["model"], r["norm"], float(r["eps"]), r["attack"], int(r["examples"]))


def markdown_table(record):
    """The comparison as markdown: one table per model and number of images, a row per norm
    and attack (robust accuracy of both, their difference in percentage points against the
    ±1 pp criterion, the run times, the 1-minute load average at the start, the switch to
    torchattacks and the end of the row), then the commands that produced the rows."""
    lines = []
    tables = {}
    for r in record["rows"]:
        tables.setdefault((r["model"], r["examples"]), []).append(r)
    for (model, examples), rows in tables.items():
        lines += [f"**{model}**, first {examples} test images (clean accuracy on them "
                  f"{100 * rows[0]['clean']:.2f}%)", "",
                  "| attack | norm | eps | robustcnn | torchattacks | difference (pp) | "
                  "within ±1 pp | robustcnn s | torchattacks s | load (1 min) |",
                  "|---|---|---|---:|---:|---:|---|---:|---:|---|"]
        for r in rows:
            if "ours" in r:
                d = 100 * (r["ours"] - r["theirs"])
                ours_, diff, ours_s = (f"{100 * r['ours']:.1f}%", f"{d:+.1f}",
                                       f"{r['ours_s']:.1f}")
                verdict = "yes" if abs(d) <= TOLERANCE_PP + 1e-9 else "**no**"
            else:
                ours_ = diff = ours_s = verdict = "-"
            load = " / ".join(f"{a[0]:.1f}" for a in r.get("load", []))
            lines.append(f"| {r['attack']} | {r['norm']} | {r['eps']:g} | {ours_} | "
                         f"{100 * r['theirs']:.1f}% | {diff} | {verdict} | {ours_s} | "
                         f"{r['theirs_s']:.1f} | {load} |")
        lines.append("")
    commands = list(dict.fromkeys(r["command"] for r in record["rows"] if "command" in r))
    if commands:
        lines += ["Produced by (from the folder holding the model files; `PYTHONPATH` the "
                  "checkout's parent):", ""] + [f"    {c}" for c in commands] + [""]
    return "\n".join(lines)


def read_record(path):
    """The rows measured so far (``--json`` of an earlier run), or an empty record."""
    import json

    if path and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {"rows": []}


def write_record(record, json_path, markdown_path):
    """Both files, atomically, after every row: an interrupted run keeps what it measured."""
    import json

    from robustcnn.atomic import atomic_path

    for path, text in ((json_path, lambda: json.dumps(record, indent=1)),
                       (markdown_path, lambda: markdown_table(record))):
        if path:
            with atomic_path(path) as tmp, open(tmp, "w") as f:
                f.write(text())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--examples", type=int, default=1000)
    p.add_argument("--eps-linf", type=float, default=0.1)
    p.add_argument("--eps-l2", type=float, default=1.5)
    p.add_argument("--norms", default="linf,l2", help="the norms to run, in this order")
    p.add_argument("--attacks", default="apgd-ce,apgd-t,fab-t,square,autoattack,"
                                        "autoattack-shipped")
    p.add_argument("--threads", type=int, default=1, help="torch and Numba threads (1)")
    p.add_argument("--json", help="rows as JSON here, written after every row; rows it already "
                                  "holds (same model, norm, eps, attack, images) are skipped")
    p.add_argument("--markdown", help="all the rows of --json (or of this run) as markdown "
                                      "tables here, written after every row")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    import numba
    import torch

    from robustcnn import load
    from robustcnn.models.datasets import load_dataset

    torch.set_num_threads(args.threads)
    numba.set_num_threads(args.threads)
    x, y = load_dataset("fashion-mnist", "test")
    x, y = x[:args.examples], y[:args.examples]
    attacks = [a for a in args.attacks.split(",") if a]
    norms = [n for n in args.norms.split(",") if n]
    bad = [n for n in norms if n not in ("linf", "l2")]
    if bad:
        p.error(f"--norms: unknown norm(s) {bad}; known: linf, l2")
    eps_of = {"linf": args.eps_linf, "l2": args.eps_l2}
    print(f"{args.examples} Fashion-MNIST test images; {args.threads} thread(s); robust accuracy "
          f"and time, robustcnn then torchattacks")
    command = "python tests/attacks/autoattack_oracle.py " + " ".join(
        [os.path.basename(m) for m in args.models] +
        [f"--examples {args.examples}", f"--threads {args.threads}", f"--norms {args.norms}",
         f"--attacks {args.attacks}"] +
        [f"--{k} {os.path.basename(v)}" for k, v in (("json", args.json),
                                                     ("markdown", args.markdown)) if v])
    record = read_record(args.json)
    done = {row_key(r) for r in record["rows"]}
    todo = [(m, n, a) for m in args.models for n in norms for a in attacks
            if row_key({"model": os.path.basename(m), "norm": n, "eps": eps_of[n],
                        "attack": a, "examples": args.examples}) not in done]
    print(f"{len(todo)} row(s) to run" + (f", {len(done)} already in {args.json}" if done
                                          else ""))
    nets = {}
    for i, (path, norm, name) in enumerate(todo, 1):
        model = os.path.basename(path)
        if path not in nets:
            nets[path], _ = load(path)
            print(f"\n{model}: clean {100 * nets[path].accuracy(x, y):.2f}% on these images")
            print(f"{'attack':<19} {'norm':<4} {'eps':<5} {'robustcnn':>17}   "
                  f"{'torchattacks':>17}")
        if not args.no_progress:
            print(f"[{i}/{len(todo)}] {model} {norm} {name} started at "
                  f"{time.strftime('%H:%M:%S')}", flush=True)
        (row,) = compare(nets[path], x, y, norm, eps_of[norm], [name],
                         log=lambda line: print(line, flush=True),
                         progress=not args.no_progress)
        record["rows"].append({"model": model, **row, "threads": args.threads,
                               "command": command})
        write_record(record, args.json, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
