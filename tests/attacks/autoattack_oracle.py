"""robustcnn's APGD, FAB, Square and AutoAttack against torchattacks 3.5.1 on the same weights.

Used by ``test_autoattack_oracle.py`` and runnable on its own (the full comparison of issue 13,
a few minutes per model on 1,000 images):

    PYTHONPATH=<checkout's parent> python tests/attacks/autoattack_oracle.py MODEL [MODEL ...]
        [--examples 1000] [--eps-linf 0.1] [--eps-l2 1.5] [--attacks apgd-ce,apgd-t,fab-t,...]

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


def ours(name, norm, eps):
    """robustcnn's attack of that name as f(net, x, y) → x_adv."""
    from robustcnn.attacks import apgd, apgd_t, fab_t
    from robustcnn.attacks.autoattack import autoattack

    if name in ("apgd-ce", "apgd-dlr"):
        return lambda net, x, y: apgd(net, x, y, eps, norm=norm, loss=name[5:])
    if name == "apgd-t":
        return lambda net, x, y: apgd_t(net, x, y, eps, norm=norm)
    if name == "fab-t":
        return lambda net, x, y: fab_t(net, x, y, eps, norm=norm)
    if name == "square":
        from robustcnn.attacks.square import square
        return lambda net, x, y: square(net, x, y, eps, norm=norm, n_queries=5000, p_init=0.8)
    if name == "autoattack":
        return lambda net, x, y: autoattack(net, x, y, eps, norm=norm)
    raise ValueError(f"unknown attack {name!r}")


def robust_accuracy(predict, x, x_adv, y, norm, eps):
    """Share of points classified correctly at x_adv or whose x_adv is further than eps."""
    d = (x_adv.astype(np.float64) - x.astype(np.float64)).reshape(len(x), -1)
    size = np.abs(d).max(1) if norm == "linf" else np.sqrt((d * d).sum(1))
    return float(((predict(x_adv) == y) | (size > eps * (1 + 1e-5))).mean())


def compare(net, x, y, norm, eps, attacks, *, log=None):
    """One row per attack: {attack, norm, eps, ours, theirs, ours_s, theirs_s, clean}, robust
    accuracy on (x, y) with true labels (torchattacks attacks the clean-correct points; a
    clean-wrong point counts as broken on both sides)."""
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
        row = {"attack": name, "norm": norm, "eps": eps, "clean": float(clean.mean())}
        if name != "autoattack-shipped":
            t0 = time.perf_counter()
            adv = ours(name, norm, eps)(net, x, y)
            row["ours_s"] = time.perf_counter() - t0
            row["ours"] = robust_accuracy(lambda a: net.predict(a), x, adv, y, norm, eps)
        t0 = time.perf_counter()
        adv_t = theirs[name](tx, ty).detach().numpy()
        row["theirs_s"] = time.perf_counter() - t0
        row["theirs"] = robust_accuracy(torch_predict, x, adv_t, y, norm, eps)
        rows.append(row)
        if log:
            log(format_row(row))
    return rows


def format_row(r):
    ours_ = f"{100 * r['ours']:6.2f}%  {r['ours_s']:7.1f} s" if "ours" in r else " " * 17
    return (f"{r['attack']:<19} {r['norm']:<4} {r['eps']:<5g} {ours_}   "
            f"{100 * r['theirs']:6.2f}%  {r['theirs_s']:7.1f} s")


def markdown_table(tables, *, command, examples, threads):
    """The comparison as a markdown section: one table per model, a row per norm and attack
    (robust accuracy of both, their difference in percentage points, the run times)."""
    lines = [f"Robust accuracy on the first {examples} Fashion-MNIST test images (true labels; a "
             f"clean-wrong image counts as broken), robustcnn against torchattacks 3.5.1 on the "
             f"same weights, {threads} thread(s) each. Produced by:", "",
             f"    {command}", ""]
    for model, clean, rows in tables:
        lines += [f"**{model}** (clean accuracy {100 * clean:.2f}%)", "",
                  "| attack | norm | eps | robustcnn | torchattacks | difference (pp) | "
                  "robustcnn s | torchattacks s |",
                  "|---|---|---|---:|---:|---:|---:|---:|"]
        for r in rows:
            ours_ = f"{100 * r['ours']:.1f}%" if "ours" in r else "-"
            diff = f"{100 * (r['ours'] - r['theirs']):+.1f}" if "ours" in r else "-"
            ours_s = f"{r['ours_s']:.1f}" if "ours_s" in r else "-"
            lines.append(f"| {r['attack']} | {r['norm']} | {r['eps']:g} | {ours_} | "
                         f"{100 * r['theirs']:.1f}% | {diff} | {ours_s} | {r['theirs_s']:.1f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--examples", type=int, default=1000)
    p.add_argument("--eps-linf", type=float, default=0.1)
    p.add_argument("--eps-l2", type=float, default=1.5)
    p.add_argument("--attacks", default="apgd-ce,apgd-t,fab-t,square,autoattack,"
                                        "autoattack-shipped")
    p.add_argument("--threads", type=int, default=1, help="torch and Numba threads (1)")
    p.add_argument("--markdown", help="also write the tables as markdown here")
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
    print(f"{args.examples} Fashion-MNIST test images; {args.threads} thread(s); robust accuracy "
          f"and time, robustcnn then torchattacks")
    tables = []
    command = "python tests/attacks/autoattack_oracle.py " + " ".join(
        [os.path.basename(m) for m in args.models] +
        [f"--examples {args.examples}", f"--threads {args.threads}", f"--attacks {args.attacks}"])

    def write():  # after every row, so a long run leaves what it has done
        if args.markdown:
            from robustcnn.atomic import atomic_path

            with atomic_path(args.markdown) as tmp, open(tmp, "w") as f:
                f.write(markdown_table(tables, command=command, examples=args.examples,
                                       threads=args.threads))

    for path in args.models:
        net, _ = load(path)
        clean = net.accuracy(x, y)
        print(f"\n{os.path.basename(path)}: clean {100 * clean:.2f}%")
        print(f"{'attack':<19} {'norm':<4} {'eps':<5} {'robustcnn':>17}   {'torchattacks':>17}")
        rows = []
        tables.append((os.path.basename(path), clean, rows))
        for norm, eps in (("linf", args.eps_linf), ("l2", args.eps_l2)):
            for name in attacks:
                rows += compare(net, x, y, norm, eps, [name],
                                log=lambda line: print(line, flush=True))
                write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
