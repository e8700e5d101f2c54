"""Robustness evaluation: accuracy under attack over a list of eps, with perturbation sizes,
and the worst case over several attacks."""

import numpy as np

from .norms import L0_TOL, perturbation_norms


def _resolve(attack, name):
    if callable(attack):
        return attack
    from . import ATTACKS  # late: the registry imports this module

    if attack not in ATTACKS:
        raise ValueError(f"{name}: unknown attack {attack!r}; known: {sorted(ATTACKS)}")
    return ATTACKS[attack]


def robustness_table(net, x, y, eps_list, *, attack, batch_size=256, **attack_kwargs):
    """One row per eps: clean and adversarial accuracy, attack success rate, perturbation norms.

    ``attack`` is an attack function or a name of ``ATTACKS``. ``y`` are the true labels; they
    are what the attack pushes away from. The success rate is over the examples the net
    classified correctly before the attack. Perturbation sizes are per example, then averaged:
    ``l0_*`` counts changed input values (by more than ``norms.L0_TOL`` = 1e-6), ``l2_*`` and
    ``linf_*`` are norms in data units; ``*_mean`` and ``*_median`` over all examples.
    """
    attack = _resolve(attack, "robustness_table")
    y = np.asarray(y)
    clean_pred = net.predict(x, batch_size=batch_size)
    clean_ok = clean_pred == y
    rows = []
    for eps in eps_list:
        x_adv = attack(net, x, y, eps, batch_size=batch_size, **attack_kwargs)
        adv_ok = net.predict(x_adv, batch_size=batch_size) == y
        sizes = perturbation_norms(x, x_adv)
        row = {
            "eps": None if eps is None else float(eps),
            "clean_accuracy": float(clean_ok.mean()),
            "adversarial_accuracy": float(adv_ok.mean()),
            "success_rate": float((clean_ok & ~adv_ok).sum() / max(clean_ok.sum(), 1)),
            "examples": int(len(x)),
        }
        for norm in ("l0", "l2", "linf"):
            values = sizes[norm]
            row[f"{norm}_mean"] = float(values.mean()) if len(values) else float("nan")
            row[f"{norm}_median"] = float(np.median(values)) if len(values) else float("nan")
        rows.append(row)
    return rows


def format_table(rows):
    """The rows of ``robustness_table`` as aligned text."""
    header = (f"{'eps':>6}  {'clean acc':>9}  {'adv acc':>8}  {'success':>8}  {'mean Linf':>9}  "
              f"{'mean L2':>8}  {'mean L0':>8}")
    lines = [header]
    for r in rows:
        eps = "  none" if r["eps"] is None else f"{r['eps']:6.3f}"
        lines.append(f"{eps}  {100 * r['clean_accuracy']:8.2f}%  "
                     f"{100 * r['adversarial_accuracy']:7.2f}%  {100 * r['success_rate']:7.2f}%  "
                     f"{r['linf_mean']:9.4f}  {r['l2_mean']:8.4f}  {r.get('l0_mean', 0):8.1f}")
    return "\n".join(lines)


def worst_case(net, x, y, attacks_with_kwargs, *, batch_size=256):
    """Robust accuracy as the per-example worst case over several attacks.

    An example counts as robust only if the net classifies it correctly clean and after every
    attack (each attack run on the clean input, with the true labels ``y``).

    Parameters
    ----------
    net : the ``Net`` to evaluate.
    x, y : inputs and their true labels.
    attacks_with_kwargs : a list of (attack, kwargs) pairs, or a dict {attack: kwargs}; attack
        is a name of ``ATTACKS`` or a function called ``attack(net, x, y, **kwargs)`` (pass eps
        in kwargs). Names label the results; functions are labelled ``name#i`` by position.
    batch_size : passed to every attack and to the predictions.

    Returns a dict: ``correct`` {label: (N,) bool} per attack, plus "clean"; ``robust`` (N,)
    bool, the per-example minimum; ``accuracy`` {label: float}; ``worst_case_accuracy``;
    ``worst_attack`` (N,) the label of the first attack that broke each example ("clean" if it
    was wrong clean, None if robust).
    """
    name = "worst_case"
    y = np.asarray(y)
    items = list(attacks_with_kwargs.items()) if isinstance(attacks_with_kwargs, dict) \
        else list(attacks_with_kwargs)
    if not items:
        raise ValueError(f"{name}: needs at least one attack")
    correct = {"clean": net.predict(x, batch_size=batch_size) == y}
    for i, item in enumerate(items):
        try:
            attack, kwargs = item
        except (TypeError, ValueError):
            raise ValueError(f"{name}: item {i} must be an (attack, kwargs) pair, got {item!r}") \
                from None
        label = attack if isinstance(attack, str) else \
            f"{getattr(attack, '__name__', 'attack')}#{i}"
        if label in correct:
            label = f"{label}#{i}"
        fn = _resolve(attack, name)
        x_adv = fn(net, x, y, batch_size=batch_size, **dict(kwargs or {}))
        correct[label] = net.predict(x_adv, batch_size=batch_size) == y
    robust = np.logical_and.reduce(list(correct.values()))
    worst = np.full(len(y), None, dtype=object)
    for label, ok in reversed(list(correct.items())):
        worst[~ok] = label
    return {"correct": correct, "robust": robust,
            "accuracy": {k: float(v.mean()) if len(v) else float("nan")
                         for k, v in correct.items()},
            "worst_case_accuracy": float(robust.mean()) if len(robust) else float("nan"),
            "worst_attack": worst}


__all__ = ["robustness_table", "format_table", "worst_case", "L0_TOL"]
