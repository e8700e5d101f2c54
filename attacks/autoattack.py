"""AutoAttack: an ensemble of parameter-free attacks, each run on the points still robust, with
the per-point worst case, robust accuracy after each attack and the gradient-masking flags.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, §5. The versions of the authors' code:

    standard   APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5,000 queries)
    plus       APGD-CE and APGD-DLR (5 restarts each), FAB (5 restarts), Square, APGD-T, FAB-T
    rand       APGD-CE and APGD-DLR with expectation over transformation (20 samples, through
               ``eot.eot``), for nets with random layers

A point counts as broken by the first attack that returns, for it, a misclassified input within
eps (checked here, whatever the attack reports); the later attacks never see it. APGD and FAB
run 100 iterations, every attack gets the same seed: the result is a deterministic function of
the seed.
"""

import time

import numpy as np

from ._common import (WorkMeter, check_clip, check_clip_pair, check_eps, check_inputs,
                      check_int, check_progress, check_untargeted)
from .apgd import apgd, apgd_t
from .eot import eot as expectation, random_layers
from .fab import fab, fab_t
from .masking import check_square_vs_whitebox, check_zero_gradient, net_flags
from .norms import check_norm, perturbation_norms
from .square import square

VERSIONS = {
    "standard": {"apgd-ce": {}, "apgd-t": {"n_targets": 9}, "fab-t": {"n_targets": 9},
                 "square": {}},
    "plus": {"apgd-ce": {"restarts": 5}, "apgd-dlr": {"restarts": 5}, "fab": {"restarts": 5},
             "square": {}, "apgd-t": {"n_targets": 9}, "fab-t": {"n_targets": 9}},
    "rand": {"apgd-ce": {}, "apgd-dlr": {}},
}
WHITE_BOX = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t")
# A perturbation counts if ‖δ‖ ≤ eps · (1 + slack): float32 rounding of x + δ.
_NORM_SLACK = 1e-5


def _stage(name, version_kwargs, *, n_iter, n_queries):
    """(function, keyword arguments) of one attack of the ensemble."""
    kw = dict(version_kwargs)
    if name in ("apgd-ce", "apgd-dlr"):
        return apgd, dict(kw, loss=name[5:], n_iter=n_iter)
    if name == "apgd-t":
        return apgd_t, dict(kw, n_iter=n_iter)
    if name == "fab":
        return fab, dict(kw, n_iter=n_iter)
    if name == "fab-t":
        return fab_t, dict(kw, n_iter=n_iter)
    return square, dict(kw, n_queries=n_queries, p_init=0.8, loss="margin")


def autoattack(net, x, y=None, eps=8 / 255, *, norm="linf", version="standard", attacks=None,
               n_iter=100, n_queries=5000, eot=20, clip=(0.0, 1.0), targeted=False,
               batch_size=256, seed=0, progress=None, return_info=False):
    """AutoAttack's robust accuracy at ``eps``: several attacks, each on the points the earlier
    ones left robust, the per-point worst case.

    Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
    diverse parameter-free attacks" (ICML).

    Parameters
    ----------
    net : robustcnn ``Net`` (eval mode, any weight formats).
    x : (N, …) inputs inside ``clip``.
    y : (N,) true labels; None uses the net's predictions (then every point starts robust).
    eps : radius in data units, in ``norm``. ``eps == 0`` returns a copy of x.
    norm : "linf" or "l2".
    version : "standard", "plus" or "rand" (see the module docstring).
    attacks : the attacks to run, in order, instead of the version's (names among apgd-ce,
        apgd-dlr, apgd-t, fab, fab-t, square), with the version's settings where it has them.
    n_iter : iterations of APGD and FAB (100). n_queries : Square's budget (5,000).
    eot : random passes averaged in the rand version (20): its attacks, and the check that a
        point is broken, see ``eot.eot(net, eot)``, the net averaged over that many draws of its
        random layers (Dropout). A net without random layers is deterministic: one pass is the
        expectation, and the net is attacked as it is (``info["eot"]`` = 1).
    clip : (low, high) valid range, or None.
    targeted : must be False (the ensemble's targeted members choose their own targets).
    batch_size, seed : passed to every attack (each gets the same seed, as in the authors' code).
    progress : called with the number of examples just finished (each attack a share), or None.
    return_info : also return a JSON-ready dict: ``version``, ``norm``, ``eps``, ``attacks``,
        ``clean_accuracy``, ``stages`` (per attack: ``attack``, ``attacked``, ``broken``,
        ``robust_accuracy`` after it, ``seconds``; Square adds ``queries``: mean and median over
        the points it broke, and total), ``robust_accuracy``, ``flags`` (the gradient-masking
        checks of ``masking``, as dicts) and ``flags_passed``; and, not JSON, ``robust`` (N,)
        bool and ``broken_by`` (N,) the attack that broke each point ("clean" for a point
        misclassified clean, None where robust).

    Returns x_adv (and info): for every broken point the adversarial input that broke it, x
    elsewhere. Not guaranteed: the attacks are strong, not exhaustive: robust accuracy is an
    upper bound on the true one. Defined differences from the authors' code are listed in
    ``apgd``, ``fab`` and ``square``.
    """
    name = "autoattack"
    eps = check_eps(eps, name)
    norm = check_norm(norm, name)
    if version not in VERSIONS:
        raise ValueError(f"{name}: version must be one of {list(VERSIONS)}, got {version!r}")
    settings = VERSIONS[version]
    if attacks is None:
        stages = list(settings)
    else:
        known = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
        stages = [a.strip().lower() for a in ([attacks] if isinstance(attacks, str) else attacks)]
        bad = [a for a in stages if a not in known]
        if bad or not stages:
            raise ValueError(f"{name}: attacks must be names among {list(known)}, got {attacks!r}")
    n_iter = check_int(n_iter, "n_iter", name)
    n_queries = check_int(n_queries, "n_queries", name)
    eot = check_int(eot, "eot", name)
    batch_size = check_int(batch_size, "batch_size", name)
    check_progress(progress, name)
    check_untargeted(targeted, name, "its targeted attacks choose their own targets")
    check_clip_pair(clip, name)
    x, y = check_inputs(net, x, y, name)
    check_clip(clip, x, name)
    n = len(x)
    flags = net_flags(net, x) if n else []
    model, samples = net, 1
    if version == "rand" and random_layers(net) and eot > 1:
        model, samples = expectation(net, eot, seed=seed), eot
    clean = model.predict(x, batch_size=batch_size) == y
    robust = clean.copy()
    broken_by = np.full(n, None, dtype=object)
    broken_by[~clean] = "clean"
    out = x.copy()
    records, skipped = [], []
    zero = attacked = None
    meter = WorkMeter(progress, n)
    for stage in stages:
        if stage in ("apgd-dlr", "apgd-t") and net.num_classes < 3:
            skipped.append(f"{stage}: the DLR loss needs 3 classes")
            meter.add(1.0 / len(stages))
            continue
        fn, kw = _stage(stage, settings.get(stage, {}), n_iter=n_iter, n_queries=n_queries)
        idx = np.flatnonzero(robust)
        record = {"attack": stage, "attacked": int(len(idx)), "broken": 0}
        t0 = time.perf_counter()
        if len(idx) and eps > 0:
            def report(k, m=len(idx)):
                meter.add(k / m / len(stages))

            adv, info = fn(model, x[idx], y[idx], eps, norm=norm, clip=clip,
                           batch_size=batch_size, seed=seed, progress=report, return_info=True,
                           **kw)
            size = perturbation_norms(x[idx], adv)[norm]
            ok = (model.predict(adv, batch_size=batch_size) != y[idx]) & \
                (size <= eps * (1 + _NORM_SLACK))
            robust[idx[ok]] = False
            out[idx[ok]] = adv[ok]
            broken_by[idx[ok]] = stage
            record["broken"] = int(ok.sum())
            if stage.startswith("apgd") and zero is None:
                zero, attacked = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
                zero[idx], attacked[idx] = info["zero_grad_start"], info["attacked"]
            if stage == "square" and "queries" in info:
                q = np.asarray(info["queries"], dtype=np.float64)
                record["queries"] = {
                    "mean_broken": float(q[ok].mean()) if ok.any() else None,
                    "median_broken": float(np.median(q[ok])) if ok.any() else None,
                    "total": int(q.sum())}
        else:
            meter.add(1.0 / len(stages))
        record["seconds"] = time.perf_counter() - t0
        record["robust_accuracy"] = float(robust.mean()) if n else float("nan")
        records.append(record)
    meter.finish()
    if zero is not None:
        flags.append(check_zero_gradient(zero, attacked))
    if "square" in stages and any(s in WHITE_BOX for s in stages[:stages.index("square")]):
        broken = next(r["broken"] for r in records if r["attack"] == "square")
        flags.append(check_square_vs_whitebox(broken, n))
    if not return_info:
        return out
    info = {"version": version, "norm": norm, "eps": eps, "attacks": stages,
            "clean_accuracy": float(clean.mean()) if n else float("nan"), "stages": records,
            "robust_accuracy": float(robust.mean()) if n else float("nan"),
            "eot": samples if version == "rand" else None,
            "skipped": skipped, "flags": [f.to_dict() for f in flags],
            "flags_passed": all(f.passed for f in flags), "robust": robust,
            "broken_by": broken_by}
    return out, info


__all__ = ["autoattack", "VERSIONS"]
