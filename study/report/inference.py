"""The report's statistics, drawn from the model summaries of ``tables.summarise``: which attack
the headline reads, each cell's intervals, and the paired tests of a compressed model against
a compact one (the numbers themselves come from ``study.stats``).

The headline attack is AutoAttack's standard evaluation (``autoattack-linf``, else
``autoattack-l2``) where the study has it; otherwise the strongest bounded white-box attack it
has: the one with the lowest mean robust accuracy over the (model, eps, seed) cells all of them
share (over all their cells when they share none). Transfer and unbounded attacks never head.
"""

import numpy as np

from .. import stats
from ..config import base_attack, parse_attack_label
from .tables import missing

AUTOATTACK = ("autoattack-linf", "autoattack-l2")  # the field's standard evaluation, in order


def white_box(column):
    """A bounded attack crafted on the model itself (not transferred)."""
    return column[1] is not None and parse_attack_label(column[0])[1] is None


def headline_attack(models, columns):
    """(attack label, "autoattack" or "strongest") the headline reads; (None, None) when the
    study has no bounded white-box attack."""
    attacks = list(dict.fromkeys(c[0] for c in columns if white_box(c)))
    for name in AUTOATTACK:
        found = [a for a in attacks if base_attack(a) == name]
        if found:
            return found[0], "autoattack"
    if not attacks:
        return None, None

    def cells(attack):  # {(model, eps, seed): robust accuracy}
        return {(n, c[1], s): v for n, m in models.items() for c, by in m["by_seed"].items()
                if c[0] == attack for s, v in by.items() if not missing(v)}

    found = {a: cells(a) for a in attacks}
    shared = set.intersection(*(set(f) for f in found.values()))

    def mean(attack):
        values = [v for k, v in found[attack].items() if not shared or k in shared]
        return sum(values) / len(values) if values else float("inf")

    return min(attacks, key=mean), "strongest"


def _clean_flags(m, seed):
    """(images, right on the clean image) of a model and seed, from any of its attack cells."""
    for by in m["outcomes"].values():
        o = by.get(seed)
        if o is not None:
            return o.images, o.clean
    return None


def cell_interval(m, column):
    """A model's figure in ``column`` (("clean", None) for clean accuracy) over its seeds →
    {"seeds", "t": ``stats.Interval`` over seeds (its low/high None with one seed), "bootstrap":
    (low, high) over test images or None (a seed without per-image outcomes), "images": how
    many}; None when the model has no value there."""
    if column[0] == "clean":
        by_seed = m["clean_by_seed"]
        flags = {s: _clean_flags(m, s) for s in by_seed}
    else:
        by_seed = m["by_seed"].get(column, {})
        flags = {s: None if o is None else (o.images, o.adversarial)
                 for s, o in m["outcomes"].get(column, {}).items()}
    t = stats.t_interval([v for v in by_seed.values() if not missing(v)])
    if t is None:
        return None
    boot, images = None, 0
    per_seed = [flags.get(s) for s in by_seed]
    if per_seed and all(f is not None for f in per_seed):
        common, scores = stats.image_scores(per_seed)
        boot, images = stats.bootstrap_interval(scores), len(common)
    return {"seeds": t.n, "t": t, "bootstrap": boot, "images": images}


def interval_bounds(m, column):
    """A model's figure in ``column`` as (mean, low, high): the interval over seeds when there
    are several, else the bootstrap over test images, else low and high None; None when the
    model has no value there. What the figures draw as bands."""
    iv = cell_interval(m, column)
    if iv is None:
        return None
    t, boot = iv["t"], iv["bootstrap"]
    if t.low is not None:
        return t.mean, t.low, t.high
    return (t.mean, *boot) if boot is not None else (t.mean, None, None)


def _aligned(oa, ob):
    """Robust-correct flags of two cells on the images both attacked."""
    common = sorted(set(oa.images.tolist()) & set(ob.images.tolist()))
    pos_a = {int(i): k for k, i in enumerate(oa.images)}
    pos_b = {int(i): k for k, i in enumerate(ob.images)}
    return (oa.adversarial[[pos_a[i] for i in common]],
            ob.adversarial[[pos_b[i] for i in common]])


def paired_seeds(a, b, column):
    """Per seed both models have ``column``: (seed, a's accuracy, b's, McNemar ``PairedTest``
    of a against b on the images both attacked, or None without per-image outcomes)."""
    out = []
    by_a, by_b = a["by_seed"].get(column, {}), b["by_seed"].get(column, {})
    for seed in sorted(set(by_a) & set(by_b)):
        va, vb = by_a[seed], by_b[seed]
        if missing(va) or missing(vb):
            continue
        oa, ob = a["outcomes"][column].get(seed), b["outcomes"][column].get(seed)
        test = None if oa is None or ob is None else stats.mcnemar_exact(*_aligned(oa, ob))
        out.append((seed, va, vb, test))
    return out


def across(a, b, columns):
    """The paired differences a − b over every (column, seed) of ``columns`` both models have
    whose sanity checks passed on both, and their tests → {"diffs", "cells" (columns
    counted), "sign", "wilcoxon": ``stats.PairedTest``}, or None with no difference."""
    diffs, counted = [], []
    for c in columns:
        if c in a["failed"] or c in b["failed"]:
            continue
        pairs = paired_seeds(a, b, c)
        if pairs:
            counted.append(c)
            diffs += [va - vb for _, va, vb, _ in pairs]
    if not diffs:
        return None
    return {"diffs": diffs, "cells": counted, "sign": stats.sign_test(diffs),
            "wilcoxon": stats.wilcoxon_test(diffs)}


def radii(o):
    """Per image of an unbounded attack's cell (``store.Outcomes`` with sizes): the radius at
    which the model was fooled — 0 where it was wrong on the clean image, the attack's
    perturbation size where that fooled it, inf where it did not (the attack found no
    adversarial example) → (images, radii), or None without per-image sizes."""
    if o is None or o.sizes is None:
        return None
    r = np.where(o.adversarial, np.inf, o.sizes.astype(np.float64))
    return o.images, np.where(o.clean, r, 0.0)


def paired_radii(a, b, attack):
    """Per seed both models ran the unbounded ``attack`` with per-image sizes: (seed, a's
    median radius, b's, Wilcoxon signed-rank ``PairedTest`` of a's radii against b's on the
    images both attacked; ``first``: images where a needs the larger perturbation)."""
    column = (attack, None)
    out = []
    by_a, by_b = a["outcomes"].get(column, {}), b["outcomes"].get(column, {})
    for seed in sorted(set(by_a) & set(by_b)):
        ra, rb = radii(by_a[seed]), radii(by_b[seed])
        if ra is None or rb is None:
            continue
        common, ia, ib = np.intersect1d(ra[0], rb[0], return_indices=True)
        if not len(common):
            continue
        va, vb = ra[1][ia], rb[1][ib]
        out.append((seed, float(np.median(va)), float(np.median(vb)),
                    stats.wilcoxon_test(stats.radius_diffs(va, vb))))
    return out
