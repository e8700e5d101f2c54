"""Attacks against the same attack written in torch: PGD-40 (L∞) on LeNet-5, the whole attack
timed, its agreement checked on the first step's gradient signs and the adversarial accuracy
(a pair case); and ``ENSEMBLE_SUITE``: AutoAttack standard and Square against torchattacks
3.5.1, one whole run a side (200 test images with --quick, 1,000 without), timed in wall and in
process CPU seconds."""

import os
import sys
import time

import numpy as np

from ..models.lenet import lenet5
from .common import Suite, background_cpus, cpu_snapshot, format_table, note
from .dense import lenet5_flops, torch_lenet5
from .pairs import Case

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

    from ..attacks import pgd

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


def cases():
    """The attack cases, in table order."""
    return [pgd_case()]


# ---------------------------------------------------------------------------------------------
# AutoAttack and Square against torchattacks: whole runs, too long to repeat, so a suite of
# their own (one timed run a side, after a warm-up on a few images).

ENSEMBLE = dict(eps=0.1, norm="linf")  # the setting: L∞ eps 0.1 on Fashion-MNIST
SQUARE_EPS = {"linf": 0.1, "l2": 1.5}  # the oracle's radii (docs/autoattack_oracle.md)
ENSEMBLE_IMAGES = {"quick": 200, "full": 1000}
SQUARE_RUN = {"quick": dict(points=32, n_queries=1000), "full": dict(points=64, n_queries=5000)}
ENSEMBLE_TARGETS = {"autoattack": 1.5, "square": 2.0}  # torchattacks time / ours (issue 13)
# Other processes may keep this many CPUs beyond the ones our threads leave idle before a side's
# wall time stops measuring the implementation alone: past it, the ratio is taken on CPU time.
LOAD_SLACK = 0.25


def timed(fn):
    """fn() → (its result, {"wall": s, "cpu": process CPU-seconds, "background": CPUs other
    processes kept busy meanwhile (None where unknown), "load": 1-minute load average after}).
    CPU time counts every thread of this process (a spinning thread pool too), at
    ``time.process_time``'s resolution (``os.times`` ticks 10 ms)."""
    before, cpu0 = cpu_snapshot(), time.process_time()
    out = fn()
    cpu1, after = time.process_time(), cpu_snapshot()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return out, {"wall": after[0] - before[0], "cpu": cpu1 - cpu0,
                 "background": background_cpus(before, after), "load": load}


def ratio_basis(background, threads, cpus=None):
    """"cpu" when other processes kept more CPUs busy (the larger of the two sides'
    ``background``) than our ``threads`` left idle, plus ``LOAD_SLACK``: both sides then
    shared cores with them and wall time measures the machine's load as much as the code;
    else "wall" (also when the load is unknown)."""
    cpus = cpus or os.cpu_count() or 1
    known = [b for b in background if b is not None]
    return "cpu" if known and max(known) > max(cpus - threads, 0) + LOAD_SLACK else "wall"


def torchattacks_attacks(model, norm, eps, n_classes, *, n_iter=100, n_queries=5000):
    """{name: torchattacks 3.5.1 attack} with the authors' AutoAttack settings: APGD-CE,
    APGD-DLR, APGD-T (9 targets), FAB-T, Square (p_init 0.8, its schedule rescaled to the
    budget, as ours) and "autoattack", the standard ensemble of four run on the points still
    robust (``MultiAttack``). torchattacks' own ``AutoAttack`` class builds its members with 10
    iterations each, so it is "autoattack-shipped", for information. The classes come from
    their modules (the package's __init__ would not change that: it imports no torchvision)."""
    from torchattacks.attacks.apgd import APGD
    from torchattacks.attacks.apgdt import APGDT
    from torchattacks.attacks.autoattack import AutoAttack
    from torchattacks.attacks.fab import FAB
    from torchattacks.attacks.square import Square
    from torchattacks.wrappers.multiattack import MultiAttack

    tnorm = {"linf": "Linf", "l2": "L2"}[norm]
    members = {
        "apgd-ce": APGD(model, norm=tnorm, eps=eps, steps=n_iter, n_restarts=1, loss="ce",
                        seed=0),
        "apgd-dlr": APGD(model, norm=tnorm, eps=eps, steps=n_iter, n_restarts=1, loss="dlr",
                         seed=0),
        "apgd-t": APGDT(model, norm=tnorm, eps=eps, steps=n_iter, n_restarts=1,
                        n_classes=n_classes, seed=0),
        "fab-t": FAB(model, norm=tnorm, eps=eps, steps=n_iter, n_restarts=1,
                     multi_targeted=True, n_classes=n_classes, seed=0),
        "square": Square(model, norm=tnorm, eps=eps, n_queries=n_queries, n_restarts=1,
                         p_init=0.8, loss="margin", resc_schedule=True, seed=0),
    }
    members["autoattack"] = MultiAttack([members[k] for k in ("apgd-ce", "apgd-t", "fab-t",
                                                              "square")])
    members["autoattack-shipped"] = AutoAttack(model, norm=tnorm, eps=eps, version="standard",
                                               n_classes=n_classes, seed=0)
    return members


def ensemble_net(seed=0, *, train_images=10000, log=None):
    """(net, x, y, what): a LeNet-5 trained for one epoch on the first ``train_images``
    Fashion-MNIST training images and its test images; without the dataset, a random LeNet-5
    on uniform random images labelled by its own predictions (the robust accuracies then mean
    little; the times still compare the two implementations)."""
    from ..engine.train import fit
    from ..models.datasets import load_dataset

    net = lenet5(seed=seed)
    try:
        xs, ys = load_dataset("fashion-mnist", "train")
        xt, yt = load_dataset("fashion-mnist", "test")
    except (OSError, ValueError):
        rng = np.random.default_rng(seed)
        x = rng.random((max(ENSEMBLE_IMAGES.values()),) + net.input_shape, dtype=np.float32)
        return net, x, net.predict(x), "random LeNet-5, random images"
    fit(net, xs[:train_images], ys[:train_images], epochs=1, seed=seed, progress=False,
        log=log or (lambda line: None))
    return net, xt, yt, "LeNet-5 1 epoch, Fashion-MNIST test"


def _robust(predict, x, x_adv, y, eps, norm="linf"):
    """Share of points classified correctly at x_adv, or moved further than eps (in ``norm``)."""
    moved = (x_adv.astype(np.float64) - x).reshape(len(x), -1)
    size = np.abs(moved).max(1) if norm == "linf" else np.sqrt((moved ** 2).sum(1))
    return float(((predict(x_adv) == y) | (size > eps * (1 + 1e-5))).mean())


def run_ensemble(images, square_run, *, n_iter=100, n_queries=5000, train_images=10000,
                 square_norms=("linf",), log=None):
    """Time AutoAttack standard (L∞ eps 0.1) on ``images`` test images and Square alone (per
    norm of ``square_norms``, at ``SQUARE_EPS``) on ``square_run["points"]`` points that APGD-CE
    of that norm leaves robust, ours and torchattacks', with the same threads → rows {"case",
    "ours_s", "peer_s", "unit", "ours_rate", "peer_rate", "ours_robust", "peer_robust",
    "target", "failure"} (seconds and rates in wall time) and {"ours_cpu_s", "peer_cpu_s",
    "ours_cpu_rate", "peer_cpu_rate", "ours_background", "peer_background", "ours_load",
    "peer_load", "threads", "basis"}: process CPU seconds, CPUs other processes kept busy, load
    after each side, and which time the row's ratio is judged on (``ratio_basis``). The peer's
    columns are None without torchattacks. ``n_iter``, ``n_queries`` (AutoAttack's, both sides)
    and ``train_images`` shorten it for the tests."""
    import numba
    import torch

    from ..attacks import apgd, autoattack, square

    say = log or (lambda line: None)
    eps, norm = ENSEMBLE["eps"], ENSEMBLE["norm"]
    threads = numba.get_num_threads()
    net, x, y, what = ensemble_net(train_images=train_images, log=say)
    x, y = np.ascontiguousarray(x[:images]), y[:images]
    try:
        model = torch_lenet5(net).requires_grad_(False)
        theirs = torchattacks_attacks(model, norm, eps, net.num_classes, n_iter=n_iter,
                                      n_queries=n_queries)
    except ImportError as e:
        theirs, missing = None, f"torchattacks not installed ({e})"
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def torch_predict(a):
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(a))).argmax(1).numpy()

    def side(row, who, clock, count):
        """Put one side's times (``timed``'s dict) and rates (``count`` per second) in row."""
        row[f"{who}_s"], row[f"{who}_cpu_s"] = clock["wall"], clock["cpu"]
        row[f"{who}_rate"] = count / clock["wall"]
        row[f"{who}_cpu_rate"] = count / clock["cpu"] if clock["cpu"] > 0 else None
        row[f"{who}_background"], row[f"{who}_load"] = clock["background"], clock["load"]

    def no_peer(row):
        row.update(peer_s=None, peer_cpu_s=None, peer_rate=None, peer_cpu_rate=None,
                   peer_robust=None, peer_background=None, peer_load=None, failure=missing)

    def finish(row):
        row["threads"] = threads
        row["basis"] = ratio_basis((row["ours_background"], row["peer_background"]), threads)
        say(f"{row['case']}: {row['ours_s']:.1f} s wall, {row['ours_cpu_s']:.1f} s CPU"
            + (f"; torchattacks {row['peer_s']:.1f} s wall, {row['peer_cpu_s']:.1f} s CPU"
               if row["peer_s"] else "") + f"; ratio on {row['basis']} time")
        rows.append(row)

    rows = []
    name = f"AutoAttack standard Linf eps {eps:g}, {what}, {len(x)} images"
    row = dict(case=name, unit="img/s", target=ENSEMBLE_TARGETS["autoattack"], failure="")
    autoattack(net, x[:8], y[:8], eps, norm=norm, n_iter=2, n_queries=4)  # warm-up: compile
    adv, clock = timed(lambda: autoattack(net, x, y, eps, norm=norm, n_iter=n_iter,
                                          n_queries=n_queries))
    side(row, "ours", clock, len(x))
    row["ours_robust"] = _robust(net.predict, x, adv, y, eps, norm)
    if theirs is not None:
        theirs["apgd-ce"](tx[:8], ty[:8])  # warm-up
        adv_t, clock = timed(lambda: theirs["autoattack"](tx, ty).detach().numpy())
        side(row, "peer", clock, len(x))
        row["peer_robust"] = _robust(torch_predict, x, adv_t, y, eps, norm)
    else:
        no_peer(row)
    finish(row)

    # Square alone, its whole budget on points APGD-CE leaves robust (forward passes only).
    k, budget = square_run["points"], square_run["n_queries"]
    for sq_norm in square_norms:
        sq_eps = SQUARE_EPS[sq_norm]
        kept = apgd(net, x, y, sq_eps, norm=sq_norm, n_iter=n_iter)
        left = np.flatnonzero(net.predict(kept) == y)[:k]
        if not len(left):
            left = np.arange(min(k, len(x)))
        tnorm = {"linf": "Linf", "l2": "L2"}[sq_norm]
        row = dict(case=f"Square {tnorm} eps {sq_eps:g}, {budget} queries, {len(left)} points "
                        f"APGD-CE left", unit="queries/s", target=ENSEMBLE_TARGETS["square"],
                   failure="")
        square(net, x[left[:2]], y[left[:2]], sq_eps, norm=sq_norm, n_queries=4)  # warm-up
        (adv, info), clock = timed(lambda: square(net, x[left], y[left], sq_eps, norm=sq_norm,
                                                  n_queries=budget, return_info=True))
        side(row, "ours", clock, float(info["queries"].sum()))
        row["ours_robust"] = _robust(net.predict, x[left], adv, y[left], sq_eps, sq_norm)
        if theirs is not None:
            from torchattacks.attacks.square import Square

            sq = Square(model, norm=tnorm, eps=sq_eps, n_queries=budget, p_init=0.8, seed=0,
                        resc_schedule=True)
            sq.init_hyperparam(tx[left])
            torch.manual_seed(0)

            def run_theirs():
                with torch.no_grad():
                    return sq.attack_single_run(tx[left], ty[left])

            (counts, adv_t), clock = timed(run_theirs)
            side(row, "peer", clock, float(counts.sum()))
            row["peer_robust"] = _robust(torch_predict, x[left], adv_t.numpy(), y[left], sq_eps,
                                         sq_norm)
        else:
            no_peer(row)
        finish(row)
    return rows


def _ensemble_plan(args):
    if args.formats or (args.cases and not any(args.cases in c for c in ("AutoAttack",
                                                                          "Square"))):
        return None
    size = "quick" if args.quick else "full"
    return ENSEMBLE_IMAGES[size], SQUARE_RUN[size]


def _ensemble_run(plan, budget):
    images, square_run = plan
    print(f"  running AutoAttack and Square on {images} images, ours and torchattacks",
          file=sys.stderr, flush=True)
    try:
        return run_ensemble(images, square_run, square_norms=("linf", "l2"),
                            log=lambda line: print(f"    {line}", file=sys.stderr, flush=True))
    except Exception as e:  # a broken suite must not hide the others
        return [dict(case="AutoAttack and Square", failure=f"{type(e).__name__}: {e}")]


def _pct(v):
    return "-" if v is None else f"{100 * v:.1f}%"


def _num(v, digits=1):
    return "-" if v is None else f"{v:,.{digits}f}"


def _ensemble_report(rows, args, peak):
    print()
    header = ["case", "ours s", "torchattacks s", "torchattacks/ours", "ours CPU s",
              "torchattacks CPU s", "CPU ratio", "judged on", "ours rate", "torchattacks rate",
              "unit", "robust ours", "robust torchattacks", "others' CPUs", "load", "note"]
    lines = []
    for r in rows:
        if r.get("ours_s") is None:
            lines.append([r["case"]] + ["-"] * 14 + [r["failure"]])
            continue
        peer = r.get("peer_s") is not None
        others = [b for b in (r.get("ours_background"), r.get("peer_background")) if b is not None]
        loads = [v for v in (r.get("ours_load"), r.get("peer_load")) if v is not None]
        lines.append([r["case"], _num(r["ours_s"]), _num(r.get("peer_s")),
                      f"{_ratio(r):.2f}x" if peer else "-", _num(r.get("ours_cpu_s")),
                      _num(r.get("peer_cpu_s")),
                      f"{_cpu_ratio(r):.2f}x" if peer and _cpu_ratio(r) else "-",
                      r.get("basis", "wall"), _num(r["ours_rate"]), _num(r["peer_rate"]),
                      r["unit"], _pct(r["ours_robust"]), _pct(r["peer_robust"]),
                      "/".join(f"{b:.1f}" for b in others) or "-",
                      "/".join(f"{v:.1f}" for v in loads) or "-", r["failure"]])
    print(format_table(header, lines))
    print()
    note("One run a side after a warm-up, same threads (Numba's = torch's), one side after the "
         "other. torchattacks runs the authors' settings (100 iterations, 9 targets, 5,000 "
         "Square queries), its ensemble on the points still robust as ours; robust accuracies "
         "differ by their random numbers. Square: queries per second of its whole budget on "
         "points APGD-CE of its norm left robust (forward passes only; L2 at eps 1.5). Times "
         "are wall and process CPU seconds (all threads, a spinning pool included); 'others' "
         "CPUs': the CPUs other processes kept busy during ours/theirs; 'load': the 1-minute "
         "load after each side. 'judged on' says which ratio the targets use: CPU time where "
         f"other processes took more than the cores our threads left idle (+{LOAD_SLACK}), "
         "as wall time then measures the load as much as the code; else wall time.")


def _ratio(r):
    """Wall time: torchattacks time / ours for the ensemble; ours rate / theirs for Square's
    queries/s."""
    if r["unit"] == "queries/s":
        return r["ours_rate"] / r["peer_rate"]
    return r["peer_s"] / r["ours_s"]


def _cpu_ratio(r):
    """``_ratio`` on process CPU time (None where a side has none)."""
    if not r.get("ours_cpu_s") or not r.get("peer_cpu_s"):
        return None
    if r["unit"] == "queries/s":
        return r["ours_cpu_rate"] / r["peer_cpu_rate"]
    return r["peer_cpu_s"] / r["ours_cpu_s"]


def _judged_ratio(r):
    """The ratio the target is judged on: ``_cpu_ratio`` where the row's basis is "cpu"."""
    cpu = _cpu_ratio(r)
    return cpu if r.get("basis") == "cpu" and cpu is not None else _ratio(r)


def _ensemble_targets(rows):
    lines = []
    for r in rows:
        if r.get("target") is None:
            continue
        measure = ("ours/torchattacks queries/s" if r["unit"] == "queries/s"
                   else "torchattacks/ours time")
        what = f"{r['case']}: {measure} >= {r['target']}"
        if r.get("peer_s") is None:
            lines.append((what, r["failure"] or "not measured", "FALL SHORT"))
            continue
        judged, cpu = _judged_ratio(r), _cpu_ratio(r)
        measured = (f"{judged:.2f} on CPU time (wall {_ratio(r):.2f}, loaded machine)"
                    if r.get("basis") == "cpu" and cpu is not None else
                    f"{judged:.2f} on wall time" + (f" (CPU {cpu:.2f})" if cpu else ""))
        lines.append((what, measured, "PASS" if judged >= r["target"] else "FALL SHORT"))
    return lines


def _ensemble_records(rows):
    """--json records: the suite's common fields ("ratio" on wall time, as before), then the
    CPU seconds, their ratio, the basis the target is judged on and the load."""
    return [{"case": r["case"], "ours": "robustcnn", "peer": "torchattacks-3.5.1",
             "ours_s": r["ours_s"], "peer_s": r["peer_s"], "ratio": _ratio(r),
             "ours_cpu_s": r.get("ours_cpu_s"), "peer_cpu_s": r.get("peer_cpu_s"),
             "cpu_ratio": _cpu_ratio(r), "basis": r.get("basis", "wall"),
             "judged_ratio": _judged_ratio(r), "threads": r.get("threads"),
             "ours_background_cpus": r.get("ours_background"),
             "peer_background_cpus": r.get("peer_background"),
             "ours_load": r.get("ours_load"), "peer_load": r.get("peer_load")}
            for r in rows if r.get("peer_s") is not None]


ENSEMBLE_SUITE = Suite("AutoAttack and Square against torchattacks", _ensemble_plan,
                       _ensemble_run, _ensemble_report, _ensemble_targets, _ensemble_records)
