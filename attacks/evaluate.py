"""Robustness evaluation: accuracy under attack over a list of eps, with perturbation sizes,
the worst case over several attacks, and ``evaluate``, the whole evaluation the ``robustcnn
attack`` command runs (rows per attack and eps, worst case per eps, sanity checks)."""

import inspect
import time
from contextlib import contextmanager

import numpy as np

from . import registry
from .bpda import bpda as straight_through, step_layers
from .norms import L0_TOL, perturbation_norms
from .registry import NORMS, attack_spec, attack_specs, canonical_name, resolve_attack
from .sanity import format_checks, sanity_checks, sanity_work

# The threat model of each attack (``registry.AttackSpec.bounded`` and ``norm``): bounded attacks
# take eps as a radius in their norm and get one row per eps. Unbounded (minimal-perturbation)
# attacks run once, with eps=None: their row reports how large the perturbations they needed
# are, and an example they fool counts against a radius eps of norm p only where
# ‖x' − x‖_p ≤ eps (``evaluate``). These three tables are derived from the registry and kept
# for callers that read them; the package itself asks the registry.
BOUNDED = {s.name: s.norm for s in attack_specs(bounded=True)}
UNBOUNDED = {s.name: s.norm for s in attack_specs(bounded=False)}
ALIASES = dict(registry.ALIASES)
# Relative slack on ‖x' − x‖_p ≤ eps for unbounded attacks: float32 rounding of x'.
_NORM_SLACK = 1e-6


def attack_row(x, x_adv, clean_ok, adv_ok, eps):
    """One table row from an attack's result: accuracies, success rate and perturbation sizes.

    ``clean_ok`` / ``adv_ok``: (N,) bool, correct before / after the attack. The success rate
    is over the examples correct before the attack (0 when there are none). Sizes are per
    example (``norms.perturbation_norms``), then summarised: ``*_mean``, ``*_median`` and
    ``*_max`` over all examples (NaN for N = 0).
    """
    sizes = perturbation_norms(x, x_adv)
    row = {
        "eps": None if eps is None else float(eps),
        "clean_accuracy": _mean(clean_ok),
        "adversarial_accuracy": _mean(adv_ok),
        "success_rate": float((clean_ok & ~adv_ok).sum() / max(clean_ok.sum(), 1)),
        "examples": int(len(x)),
    }
    for norm in ("l0", "l2", "linf"):
        values = sizes[norm]
        row[f"{norm}_mean"] = float(values.mean()) if len(values) else float("nan")
        row[f"{norm}_median"] = float(np.median(values)) if len(values) else float("nan")
        row[f"{norm}_max"] = float(values.max()) if len(values) else float("nan")
    return row


def _mean(ok):
    return float(np.mean(ok)) if len(ok) else float("nan")


def robustness_table(net, x, y, eps_list, *, attack, batch_size=256, **attack_kwargs):
    """One row per eps: clean and adversarial accuracy, attack success rate, perturbation norms.

    ``attack`` is an attack function or a name of ``ATTACKS``. ``y`` are the true labels; they
    are what the attack pushes away from. The success rate is over the examples the net
    classified correctly before the attack. Perturbation sizes are per example, then averaged:
    ``l0_*`` counts changed input values (by more than ``norms.L0_TOL`` = 1e-6), ``l2_*`` and
    ``linf_*`` are norms in data units; ``*_mean``, ``*_median`` and ``*_max`` over all
    examples (see ``attack_row``).
    """
    attack = resolve_attack(attack, "robustness_table")
    y = np.asarray(y)
    clean_ok = net.predict(x, batch_size=batch_size) == y
    rows = []
    for eps in eps_list:
        x_adv = attack(net, x, y, eps, batch_size=batch_size, **attack_kwargs)
        adv_ok = net.predict(x_adv, batch_size=batch_size) == y
        rows.append(attack_row(x, x_adv, clean_ok, adv_ok, eps))
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
        fn = resolve_attack(attack, name)
        x_adv = fn(net, x, y, batch_size=batch_size, **dict(kwargs or {}))
        correct[label] = net.predict(x_adv, batch_size=batch_size) == y
    return worst_case_of(correct)


def worst_case_of(correct):
    """The per-example worst case of known results: ``correct`` {label: (N,) bool}, one entry
    per attack (plus "clean" if the clean predictions should count) → the dict ``worst_case``
    returns: ``correct``, ``robust`` (N,) (correct under every entry), ``accuracy`` per label,
    ``worst_case_accuracy`` and ``worst_attack`` (N,), the first label (in ``correct``'s order)
    under which each example is wrong, None where robust."""
    if not correct:
        raise ValueError("worst_case_of: needs at least one result")
    correct = {label: np.asarray(ok, dtype=bool) for label, ok in correct.items()}
    sizes = {ok.shape for ok in correct.values()}
    if len(sizes) != 1 or len(next(iter(sizes))) != 1:
        raise ValueError(f"worst_case_of: every result must be (N,) of one N, got shapes "
                         f"{sorted(sizes)}")
    robust = np.logical_and.reduce(list(correct.values()))
    worst = np.full(len(robust), None, dtype=object)
    for label, ok in reversed(list(correct.items())):
        worst[~ok] = label
    return {"correct": correct, "robust": robust,
            "accuracy": {k: _mean(v) for k, v in correct.items()},
            "worst_case_accuracy": _mean(robust),
            "worst_attack": worst}


def canonical_attack(name, at="evaluate"):
    """The ``ATTACKS`` name of ``name`` (which may be an alias, any case):
    ``registry.canonical_name``."""
    return canonical_name(name, at)


def evaluate(net, x, y, attacks, eps_list, *, clip=(0.0, 1.0), bpda=False, sanity=True,
             sanity_examples=256, batch_size=256, seed=0, log=None, options=None,
             progress=None, on_examples=None):
    """Accuracy under each attack at each eps, the worst case per eps and the sanity checks.

    Parameters
    ----------
    net : the ``Net`` to evaluate (dense or compressed weights).
    x, y : inputs inside ``clip`` and their true labels (what the attacks move away from).
    attacks : names or aliases of the registry (``attacks.registry``, any case), run with their
        own defaults: see each attack's docstring (BIM: Kurakin's α = 1/255 and steps; PGD: 40
        steps of 2.5 · eps / 40 from a random start, one restart; DeepFool: 10 candidate
        classes, overshoot 0.02).
    eps_list : radii in data units, for the bounded attacks (``AttackSpec.bounded``); the
        unbounded ones run once with eps=None.
    clip : the valid range, passed to every attack.
    bpda : attack through ``attacks.bpda.bpda(net)``: step-function layers (QuantizedReLU)
        back-propagate the straight-through estimate. The forward pass does not change.
    sanity : run ``sanity.sanity_checks`` on the results (on the same BPDA setting).
    sanity_examples : how many of the first examples the checks attack themselves when they
        need an attack or eps the evaluation did not run.
    batch_size, seed : passed to every attack.
    log : called with a line of progress after each attack and eps (e.g. ``print``), or None.
    options : {attack name or alias: keyword arguments} for particular attacks, e.g.
        ``{"autoattack": {"version": "plus"}}``.
    progress : None; a callable, passed to every attack, the sanity checks' included (called
        with the number of examples just finished after each batch); or True: a progress bar
        with its ETA for each attack and eps, and one for the sanity checks (their total from
        ``sanity.sanity_work``). The result does not depend on it.
    on_examples : None, or called as ``on_examples(attack, eps, x_adv, clean_ok, adv_ok)``
        after each attack and eps with its adversarial examples (a detector's evaluation,
        ``defences.squeeze.DetectionRecorder``).

    Returns a dict, JSON-ready: ``examples``, ``clean_accuracy``, ``bpda``, ``step_layers``
    (names of the net's step-function layers and whether they were masked), ``rows`` (one per
    bounded attack and eps, one per unbounded attack: ``attack``, ``norm``, ``seconds`` and the
    fields of ``attack_row``; attacks that report details add them: AutoAttack its
    ``stages`` (robust accuracy after each attack) and ``flags``, Square its ``queries``),
    ``worst_case`` (per norm of the attacks and eps: the fraction of
    examples correct clean and under every attack: bounded attacks of that norm at that eps,
    unbounded ones where they needed ‖x' − x‖ ≤ eps in that norm), ``sanity`` (a list of
    {name, passed, detail}, the gradient-masking flags the attacks raised included),
    ``flags`` (those flags alone), ``sanity_passed`` (every check passed; vacuously true when
    none ran) and ``sanity_run`` (whether they ran).
    """
    names = []
    for a in attacks:
        key = canonical_name(a, "evaluate")
        if key not in names:
            names.append(key)
    if not names:
        raise ValueError("evaluate: needs at least one attack")
    values = []
    for e in eps_list:
        try:
            v = float(e)
        except (TypeError, ValueError):
            v = float("nan")
        if not (np.isfinite(v) and v >= 0):
            raise ValueError(f"evaluate: every eps must be finite and >= 0, got {e!r}")
        values.append(v)
    eps_list = list(dict.fromkeys(values))
    extra = {}
    for a, kwargs in (options or {}).items():
        if not isinstance(kwargs, dict):
            raise ValueError(f"evaluate: options[{a!r}] must be a dict of keyword arguments, "
                             f"got {kwargs!r}")
        extra[canonical_name(a, "evaluate")] = dict(kwargs)
    specs = {a: attack_spec(a) for a in names}
    bounded = [a for a in names if specs[a].bounded]
    if bounded and not eps_list:
        raise ValueError(f"evaluate: the bounded attacks {bounded} need at least one eps")
    y = np.asarray(y)
    if not (progress is None or isinstance(progress, bool) or callable(progress)):
        raise ValueError(f"evaluate: progress must be None, a bool or a callable, got "
                         f"{progress!r}")
    say = log or (lambda line: None)
    layers = {layer.name: "straight-through" if bpda or layer.straight_through else "masked"
              for layer in step_layers(net)}
    with straight_through(net, enabled=bpda):
        clean_ok = net.predict(x, batch_size=batch_size) == y
        rows, correct, sizes, flags = [], {}, {}, {}
        for attack in names:
            fn = resolve_attack(attack, "evaluate")
            norm = specs[attack].norm
            details = "return_info" in inspect.signature(fn).parameters
            for eps in (eps_list if specs[attack].bounded else [None]):
                shown = "" if eps is None else f" eps {eps:g}"
                t0 = time.perf_counter()
                with _following(progress, f"{attack}{shown}", len(x)) as report:
                    out = fn(net, x, y, eps, clip=clip, batch_size=batch_size, seed=seed,
                             progress=report, **extra.get(attack, {}),
                             **({"return_info": True} if details else {}))
                seconds = time.perf_counter() - t0
                x_adv, info = out if details else (out, None)
                adv_ok = net.predict(x_adv, batch_size=batch_size) == y
                row = {"attack": attack, "norm": norm}
                row.update(attack_row(x, x_adv, clean_ok, adv_ok, eps))
                row["seconds"] = seconds
                row.update(attack_details(info))
                for flag in row.get("flags", []):
                    flags.setdefault((flag["name"], flag["detail"]), dict(
                        flag, detail=f"{attack}{shown}: {flag['detail']}"))
                rows.append(row)
                correct[(attack, eps)] = adv_ok
                if on_examples is not None:
                    on_examples(attack, eps, x_adv, clean_ok, adv_ok)
                if eps is None:
                    sizes[attack] = perturbation_norms(x, x_adv)
                say(f"{attack}{shown}: adversarial accuracy "
                    f"{100 * row['adversarial_accuracy']:.2f}% ({seconds:.1f} s)")
        worst = _worst_case_rows(names, eps_list, clean_ok, correct, sizes)
        checks = []
        if sanity:
            say("sanity checks")
            total = sanity_work(net, x, y, correct, eps_list, clip=clip, subset=sanity_examples,
                                batch_size=batch_size) if progress is True else None
            with _following(progress, "sanity checks", total) as done:
                checks = sanity_checks(net, x, y, correct, eps_list, clean_ok=clean_ok,
                                       clip=clip, subset=sanity_examples,
                                       batch_size=batch_size, seed=seed, bpda=bpda,
                                       progress=done)
    flags = list(flags.values())
    # The attacks' flags join the checks, except where a check of that name already ran.
    ran = {c.name for c in checks}
    sanity_rows = [c.to_dict() for c in checks] + \
        ([f for f in flags if f["name"] not in ran] if sanity else [])
    return {"examples": int(len(x)), "clean_accuracy": _mean(clean_ok), "bpda": bool(bpda),
            "step_layers": layers, "attacks": names, "eps": eps_list, "rows": rows,
            "worst_case": worst, "sanity_run": bool(sanity), "sanity": sanity_rows, "flags": flags,
            "sanity_passed": all(c["passed"] for c in sanity_rows)}


def attack_details(info):
    """The JSON-ready details of an attack's ``return_info`` dict for its row: AutoAttack's
    ``version``, ``stages`` and ``flags``; Square's ``queries`` summarised (mean, median and
    total over the examples); APGD's count of zero gradients at its start. {} for None."""
    if not info:
        return {}
    out = {k: info[k] for k in ("version", "stages", "flags", "skipped") if k in info}
    if "queries" in info and np.ndim(info["queries"]) == 1:
        q = np.asarray(info["queries"], dtype=np.float64)
        out["queries"] = {"mean": float(q.mean()) if len(q) else None,
                          "median": float(np.median(q)) if len(q) else None,
                          "total": int(q.sum())}
    if "zero_grad_start" in info and "flags" not in info:
        out["zero_gradient_start"] = int(np.sum(info["zero_grad_start"]))
    return out


@contextmanager
def _following(progress, desc, total):
    """What an attack's ``progress`` is: the caller's callable (or None), or with
    ``progress=True`` the ``update`` of a bar with ``total`` (its ETA), closed after."""
    if progress is True:
        from ..progress import progress_bar

        with progress_bar(desc=desc, total=total, unit="ex", leave=False) as bar:
            yield bar.update
    else:
        yield progress or None


def _worst_case_rows(names, eps_list, clean_ok, correct, sizes):
    """Per (norm, eps): robust accuracy over every attack that applies (see ``evaluate``)."""
    specs = [attack_spec(a) for a in names]
    norms = [n for n in NORMS if any(s.bounded and s.norm == n for s in specs)]
    if not norms:  # only unbounded attacks: their own norms
        norms = list(dict.fromkeys(s.norm for s in specs))
    rows = []
    for norm in norms:
        for eps in eps_list:
            results = {"clean": clean_ok}
            for s in specs:
                a = s.name
                if s.bounded and s.norm == norm:
                    results[a] = correct[(a, eps)]
                elif not s.bounded:
                    within = sizes[a][norm] <= eps * (1 + _NORM_SLACK)
                    results[a] = correct[(a, None)] | ~within
            wc = worst_case_of(results)
            rows.append({"norm": norm, "eps": eps, "attacks": [k for k in results if k != "clean"],
                         "robust_accuracy": wc["worst_case_accuracy"],
                         "clean_accuracy": wc["accuracy"]["clean"]})
    return rows


def format_evaluation(result, *, sanity=True):
    """The tables of ``evaluate``'s result as text: per attack and eps, the worst case, and
    (``sanity``) the sanity checks, a failed one on a line starting with WARNING."""
    w = max([11] + [len(r["attack"]) for r in result["rows"]])
    header = (f"{'attack':<{w}} {'eps':>6}  {'clean acc':>9}  {'adv acc':>8}  {'success':>8}  "
              f"{'mean Linf':>9}  {'mean L2':>8}  {'med L2':>8}  {'mean L0':>8}  {'seconds':>7}")
    lines = [header]
    for r in result["rows"]:
        eps = "  none" if r["eps"] is None else f"{r['eps']:6.3f}"
        lines.append(f"{r['attack']:<{w}} {eps}  {100 * r['clean_accuracy']:8.2f}%  "
                     f"{100 * r['adversarial_accuracy']:7.2f}%  {100 * r['success_rate']:7.2f}%  "
                     f"{r['linf_mean']:9.4f}  {r['l2_mean']:8.4f}  {r['l2_median']:8.4f}  "
                     f"{r['l0_mean']:8.1f}  {r['seconds']:7.1f}")
    staged = [r for r in result["rows"] if r.get("stages")]
    if staged:
        lines += ["", "robust accuracy after each attack of the ensemble (each on the points "
                      "still robust):"]
        for r in staged:
            parts = [f"clean {100 * r['clean_accuracy']:.2f}%"] + [
                f"{s['attack']} {100 * s['robust_accuracy']:.2f}% ({s['seconds']:.1f} s)"
                for s in r["stages"]]
            lines.append(f"{r['attack']} eps {r['eps']:g} ({r.get('version', '')}): "
                         + " → ".join(parts))
    if result["worst_case"]:
        lines += ["", "worst case (per example, over the clean input and every attack):",
                  f"{'norm':<5} {'eps':>6}  {'robust acc':>10}  attacks"]
        for case in result["worst_case"]:
            lines.append(f"{case['norm']:<5} {case['eps']:6.3f}  "
                         f"{100 * case['robust_accuracy']:9.2f}%  {', '.join(case['attacks'])}")
    if sanity:
        lines += ["", "sanity checks (Carlini et al. 2019, On Evaluating Adversarial "
                      "Robustness):"]
        if result.get("sanity"):
            lines.append(format_checks(result["sanity"]))
        else:
            lines.append("  not run" + (" (--no-sanity)" if result.get("sanity_run") is False
                                        else ""))
    return "\n".join(lines)


CSV_COLUMNS = ("attack", "norm", "eps", "examples", "clean_accuracy", "adversarial_accuracy",
               "success_rate", "l0_mean", "l0_median", "l0_max", "l2_mean", "l2_median",
               "l2_max", "linf_mean", "linf_median", "linf_max", "seconds")


def csv_rows(result):
    """``evaluate``'s rows for a CSV file (``CSV_COLUMNS``), then one per worst-case entry with
    attack = "worst case" and its robust accuracy as the adversarial accuracy."""
    out = [[r.get(c, "") for c in CSV_COLUMNS] for r in result["rows"]]
    for w in result["worst_case"]:
        row = dict(attack="worst case", norm=w["norm"], eps=w["eps"],
                   examples=result["examples"], clean_accuracy=w["clean_accuracy"],
                   adversarial_accuracy=w["robust_accuracy"])
        out.append([row.get(c, "") for c in CSV_COLUMNS])
    return out


def plot_evaluation(result, path, *, title=None):
    """Accuracy vs eps as a PNG: one line per bounded attack and the worst case, one panel per
    norm, starting from the clean accuracy at eps 0. Needs matplotlib (the ``plot`` extra),
    imported here only. Written atomically."""
    from .. import plotting

    norms = list(dict.fromkeys(w["norm"] for w in result["worst_case"]))
    if not norms:
        raise ValueError("plot_evaluation: nothing to plot (no eps)")
    fig = plotting.figure("plot_evaluation", (5.5 * len(norms), 4.2))
    clean = result["clean_accuracy"]
    for i, norm in enumerate(norms):
        ax = fig.add_subplot(1, len(norms), i + 1)
        for attack in result["attacks"]:
            rows = sorted((r for r in result["rows"] if r["attack"] == attack and r["norm"] == norm
                           and r["eps"] is not None), key=lambda r: r["eps"])
            if rows:
                ax.plot([0.0] + [r["eps"] for r in rows],
                        [100 * clean] + [100 * r["adversarial_accuracy"] for r in rows],
                        marker="o", label=attack)
        worst = sorted((w for w in result["worst_case"] if w["norm"] == norm),
                       key=lambda w: w["eps"])
        ax.plot([0.0] + [w["eps"] for w in worst],
                [100 * clean] + [100 * w["robust_accuracy"] for w in worst], color="black",
                linestyle="--", linewidth=2, label="worst case")
        plotting.finish_percent_axes(
            ax, f"eps ({'L∞' if norm == 'linf' else norm.upper()}, data units)",
            "accuracy under attack (%)", title)
    plotting.save_png(fig, path)


__all__ = ["robustness_table", "attack_row", "attack_details", "format_table", "worst_case",
           "worst_case_of", "plot_evaluation", "evaluate", "format_evaluation", "csv_rows",
           "canonical_attack", "BOUNDED", "UNBOUNDED", "ALIASES", "CSV_COLUMNS", "L0_TOL"]
