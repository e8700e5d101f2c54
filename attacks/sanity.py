"""Sanity checks of a robustness evaluation: signs that the attacks under-performed.

Carlini, Athalye, Papernot, Brendel, Rauber, Tsipras, Goodfellow, Madry & Kurakin, "On
Evaluating Adversarial Robustness", arXiv:1902.06705 (2019), §5 and its checklist. A robustness
figure is only as good as the attack behind it; each check below is a way an attack is known to
fail silently (wrong clipping, too few steps, a bug, gradient masking):

    gradients               the input gradient is finite and not zero (masking: a step function
                            such as a quantised activation has a zero gradient, so every
                            gradient attack is blind; BPDA is the remedy, ``attacks.bpda``),
                            and the softmax is not saturated past the float range (defensive
                            distillation's masking: the loss gradient underflows; attacks on
                            the logits are the remedy, Carlini & Wagner 2016)
    iterative_vs_single     BIM / PGD at least as strong as FGSM at the same eps
    monotone_in_eps         accuracy does not rise as eps grows
    large_eps               at an eps covering the whole data range, accuracy is ~0
    unbounded_succeed       minimal-perturbation attacks (DeepFool, C&W, …) fool ~every example
    noise_weaker            random noise of the same norm is no stronger than the attack
    random_forward, logits  the forward pass is deterministic and the logits are not
                            probabilities (``masking``, AutoAttack's checks of the model)

Each check is a ``Check(name, passed, detail)``; ``detail`` gives the figures. Where a check
needs an attack or eps the evaluation did not run, it runs it itself on the first ``subset``
examples and compares on those. Accuracies are compared with a slack of max(tol, 1 / n) for n
compared examples, so that one example's flip never fails a check.

Not guaranteed: passing every check does not show the evaluation is right — they catch the
common failures, not all of them (Carlini et al. §5: "a checklist, not a proof").
"""

import numpy as np

from ._common import check_clip_pair, check_float, check_int, check_progress
from .bpda import masked_layers
from .checks import Check
from .masking import check_logits, check_random_forward
from .registry import (MINIMAL_NORM, NOISE, attack_names, attack_spec, iterative_attacks,
                       noise_attack, resolve_attack, single_step_attack)


class _Runs:
    """Per-example correctness under (attack, eps), from the evaluation or computed here.

    ``correct`` holds the evaluation's (N,) results; what it lacks is computed on the first
    ``subset`` examples (noise, which costs one forward pass, on all N when compared with a
    result on all N)."""

    def __init__(self, net, x, y, correct, clean_ok, subset, clip, batch_size, seed, progress):
        self.net, self.x, self.y, self.clip = net, x, y, clip
        self.batch_size, self.seed, self.progress = batch_size, seed, progress
        self.full = dict(correct)
        self.full[("clean", None)] = clean_ok
        self.n_sub = min(len(x), subset)
        self.sub = {}

    def _run(self, attack, eps, n):
        """Correctness (n,) after ``attack`` at ``eps`` on the first n examples."""
        fn = resolve_attack(attack, "sanity_checks")
        x, y = self.x[:n], self.y[:n]
        x_adv = fn(self.net, x, y, eps, clip=self.clip, batch_size=self.batch_size,
                   seed=self.seed, progress=self.progress)
        return self.net.predict(x_adv, batch_size=self.batch_size) == y

    def has(self, attack, eps):
        return (attack, eps) in self.full

    def correct(self, keys):
        """{key: (n,) bool} for (attack, eps) keys, over one common set of examples: all N if
        every key has a full result (noise is computed on all N), else the subset."""
        cheap = {k for k in keys if k[0] != "clean" and attack_spec(k[0]).kind == NOISE
                 and not self.has(*k)}
        if all(self.has(*k) or k in cheap for k in keys):
            for k in cheap:
                self.full[k] = self._run(k[0], k[1], len(self.x))
            return {k: self.full[k] for k in keys}
        out = {}
        for k in keys:
            if self.has(*k):
                out[k] = self.full[k][:self.n_sub]
            else:
                if k not in self.sub:
                    self.sub[k] = self._run(k[0], k[1], self.n_sub)
                out[k] = self.sub[k]
        return out


class _Plan(_Runs):
    """``_Runs`` that attacks nothing: it records the (attack, eps, n) runs the checks ask for
    (and answers "all correct"), so that a progress bar knows their total beforehand."""

    def __init__(self, *args):
        super().__init__(*args)
        self.asked = []

    def _run(self, attack, eps, n):
        self.asked.append((attack, eps, n))
        return np.ones(n, dtype=bool)


def _pct(v):
    return f"{100 * v:.1f}%"


def _slack(tol, n):
    return max(tol, 1.0 / max(n, 1))


def saturation_margin(dtype):
    """The logit margin z_y − max_{k≠y} z_k above which every other class's softmax
    probability, exp(−margin) at most, is below the smallest normal number of ``dtype``
    (float32: 87.3): the cross-entropy's gradient then underflows to zero or to a few bits."""
    return float(-np.log(np.finfo(dtype).tiny))


def check_gradients(net, x, y, *, batch_size=256, max_zero=0.01, bpda=False, progress=None):
    """The input gradient of the loss is finite everywhere and not identically zero, and the
    softmax is not saturated past the dtype's range (``saturation_margin``), on more than
    ``max_zero`` of the examples together; and no step-function layer back-propagates its true
    (zero) gradient (``bpda.masked_layers``). ``progress``: None, or called with the examples
    done after each batch."""
    nonfinite = zero = saturated = 0
    norms, margins = [], []
    limit = saturation_margin(net.dtype)
    for lo in range(0, len(x), batch_size):
        xb, yb = x[lo:lo + batch_size], np.asarray(y[lo:lo + batch_size])
        _, dx = net.loss_and_input_grad(xb, yb)
        if progress is not None:
            progress(len(dx))
        logits = net.logits(xb, batch_size=batch_size)
        rows = dx.reshape(len(dx), -1).astype(np.float64)
        finite = np.isfinite(rows).all(axis=1)
        nonfinite += int((~finite).sum())
        zero += int((finite & (rows == 0).all(axis=1)).sum())
        norms.append(np.abs(rows[finite]).sum(axis=1))
        z = logits.astype(np.float64)
        true = z[np.arange(len(z)), yb]
        z[np.arange(len(z)), yb] = -np.inf
        margin = true - z.max(axis=1)
        margins.append(margin)
        saturated += int((finite & (rows != 0).any(axis=1) & (margin > limit)).sum())
    n = len(x)
    norms = np.concatenate(norms) if norms else np.zeros(0)
    median = float(np.median(norms)) if norms.size else float("nan")
    margins = np.concatenate(margins) if margins else np.zeros(0)
    masked = masked_layers(net)
    passed = nonfinite == 0 and zero + saturated <= max_zero * n and not masked
    detail = (f"{n} examples: {nonfinite} with a non-finite gradient, {zero} with an all-zero "
              f"gradient, {saturated} more with a saturated softmax (logit margin > "
              f"{limit:.1f}: the loss gradient underflows; at most {_pct(max_zero)} allowed); "
              f"median L1 norm {median:.3g}, median logit margin "
              f"{float(np.median(margins)) if margins.size else float('nan'):.3g}")
    if masked:
        names = ", ".join(f"{layer.name} ({layer.type})" for layer in masked)
        detail += (f"; GRADIENT MASKING: {names} back-propagate their true gradient, zero almost "
                   f"everywhere, so gradient attacks see nothing and the accuracies above "
                   f"overstate robustness: re-run with --bpda (BPDA, the straight-through "
                   f"estimate)")
    elif zero + saturated > max_zero * n and np.mean(margins > limit) > max_zero:
        detail += ("; SOFTMAX SATURATION: the logits are so large that the loss gradient "
                   "underflows (gradient masking, as defensive distillation's; Carlini & Wagner "
                   "2016): attacks on the loss see nothing, attacks on the logits (cw, deepfool) "
                   "do not suffer from it")
    elif zero > max_zero * n or nonfinite:
        detail += "; gradient attacks cannot work on these examples (masking or a numerical fault)"
    if bpda:
        detail += "; BPDA on (step layers back-propagate the straight-through estimate)"
    return Check("gradients", passed, detail)


def check_iterative_vs_single(runs, eps_list, norms, *, tol=0.01):
    """At every eps, each iterative attack's accuracy ≤ the single-step attack's + slack
    (``registry.single_step_attack`` and ``iterative_attacks`` of each norm: those the
    evaluation ran, else the strongest)."""
    parts, passed = [], True
    for norm in norms:
        single = single_step_attack(norm)
        known = iterative_attacks(norm)
        iterative = [a for a in known if any(runs.has(a, e) for e in eps_list)] or known[-1:]
        for eps in eps_list:
            keys = [(single, eps)] + [(a, eps) for a in iterative]
            ok = runs.correct(keys)
            n = len(ok[keys[0]])
            acc = {k: float(v.mean()) for k, v in ok.items()}
            bad = [k[0] for k in keys[1:] if acc[k] > acc[keys[0]] + _slack(tol, n)]
            passed &= not bad
            parts.append(f"eps {eps:g}: " + ", ".join(f"{k[0]} {_pct(acc[k])}" for k in keys)
                         + (f" (n={n})" if n != len(runs.x) else "")
                         + (f" — {', '.join(bad)} WEAKER than {single}" if bad else ""))
    return Check("iterative_vs_single", passed, "; ".join(parts) or "no eps given")


def check_monotone(runs, eps_list, attacks, *, tol=0.01):
    """For each attack, accuracy at a larger eps ≤ accuracy at a smaller one (clean first) +
    slack."""
    parts, passed = [], True
    eps_sorted = sorted(set(eps_list))
    for attack in attacks:
        keys = [("clean", None)] + [(attack, e) for e in eps_sorted]
        ok = runs.correct(keys)
        n = len(ok[keys[0]])
        acc = [float(ok[k].mean()) for k in keys]
        rises = [f"{keys[i][1] if keys[i][1] is not None else 'clean'}→{keys[i + 1][1]:g}"
                 for i in range(len(acc) - 1) if acc[i + 1] > acc[i] + _slack(tol, n)]
        passed &= not rises
        parts.append(f"{attack}: clean {_pct(acc[0])}, "
                     + ", ".join(f"{k[1]:g} {_pct(a)}" for k, a in zip(keys[1:], acc[1:]))
                     + (f" (n={n})" if n != len(runs.x) else "")
                     + (f" — RISES at {', '.join(rises)}" if rises else ""))
    return Check("monotone_in_eps", passed, "; ".join(parts) or "no bounded attack")


def check_large_eps(runs, large_eps, *, near_zero=0.02):
    """PGD (L∞: the strongest of ``registry.iterative_attacks("linf")``) at ``large_eps`` (the
    whole data range: any input is reachable) leaves at most ``near_zero`` accuracy."""
    attack = iterative_attacks("linf")[-1]
    key = (attack, large_eps)
    ok = runs.correct([key])[key]
    acc = float(ok.mean()) if len(ok) else 0.0
    passed = acc <= near_zero
    detail = (f"{attack} at eps {large_eps:g}: accuracy {_pct(acc)} on {len(ok)} examples "
              f"(want <= {_pct(near_zero)})")
    if not passed:
        detail += " — the attack cannot reach inputs it is allowed to: masking or a bug"
    return Check("large_eps", passed, detail)


def check_unbounded(runs, attacks, *, min_success=0.99):
    """Every unbounded attack fools at least ``min_success`` of the correctly classified
    examples (the first minimal-norm attack of the registry, DeepFool, the cheapest, on the
    subset if the evaluation ran none)."""
    parts, passed = [], True
    for attack in attacks or attack_names(kind=MINIMAL_NORM)[:1]:
        ok = runs.correct([("clean", None), (attack, None)])
        clean, adv = ok[("clean", None)], ok[(attack, None)]
        success = float((clean & ~adv).sum() / max(clean.sum(), 1))
        passed &= success >= min_success
        parts.append(f"{attack}: fools {_pct(success)} of {int(clean.sum())} correctly "
                     f"classified examples (want >= {_pct(min_success)})"
                     + (f" (n={len(clean)})" if len(clean) != len(runs.x) else ""))
    return Check("unbounded_succeed", passed, "; ".join(parts))


def check_noise(runs, eps_list, attacks, *, tol=0.01):
    """Random noise of the attack's norm and eps leaves at least the attack's accuracy − slack
    (``noise.random_noise``)."""
    parts, passed = [], True
    for attack in attacks:
        noise = noise_attack(attack_spec(attack).norm)
        for eps in eps_list:
            keys = [(attack, eps), (noise, eps)]
            ok = runs.correct(keys)
            n = len(ok[keys[0]])
            a, b = (float(ok[k].mean()) for k in keys)
            bad = b + _slack(tol, n) < a
            passed &= not bad
            parts.append(f"{attack} eps {eps:g}: {_pct(a)} vs {noise} {_pct(b)}"
                         + (f" (n={n})" if n != len(runs.x) else "")
                         + (" — NOISE STRONGER" if bad else ""))
    return Check("noise_weaker", passed, "; ".join(parts) or "no eps given")


def sanity_checks(net, x, y, correct, eps_list, *, clean_ok=None, clip=(0.0, 1.0), subset=256,
                  large_eps=None, tol=0.01, near_zero=0.02, min_success=0.99, max_zero=0.01,
                  batch_size=256, seed=0, bpda=False, progress=None):
    """Every check of this module on one evaluation → [Check].

    Parameters
    ----------
    net, x, y : the evaluated net, inputs and true labels.
    correct : {(attack, eps): (N,) bool}, correct after each attack the evaluation ran
        (canonical names of the registry: bounded attacks with their eps, unbounded ones with
        eps None).
    eps_list : the evaluation's eps.
    clean_ok : (N,) bool, correct before any attack (computed if None).
    clip : the valid range; its span is the default ``large_eps``.
    subset : the first ``subset`` examples are where the checks run attacks the evaluation did
        not (e.g. PGD at ``large_eps``, FGSM when only PGD was asked for).
    tol : slack in accuracy for comparisons (at least one example's worth).
    near_zero, min_success, max_zero : the large-eps, unbounded-attack and zero-gradient
        thresholds (2%, 99%, 1%).
    batch_size, seed : passed to the attacks the checks run.
    bpda : whether the caller runs them under ``attacks.bpda`` (reported; it must hold the
        context itself).
    progress : passed to the attacks the checks run and to the gradient check (None, or
        called with the number of examples just finished after each batch; they add up to
        ``sanity_work`` with the same arguments); the verdicts do not depend on it.
    """
    runs, eps, large_eps, tols = _setup(net, x, y, correct, eps_list, clean_ok, clip, subset,
                                        large_eps, tol, near_zero, min_success, max_zero,
                                        batch_size, seed, progress, _Runs)
    gradients = check_gradients(net, x, runs.y, batch_size=batch_size, max_zero=max_zero,
                                bpda=bpda, progress=progress)
    return ([gradients] + _checks(runs, correct, eps, large_eps, *tols)
            + [check_random_forward(net, x[:subset]), check_logits(net, x[:subset])])


def sanity_work(net, x, y, correct, eps_list, *, clip=(0.0, 1.0), subset=256, large_eps=None,
                batch_size=256):
    """How many examples ``sanity_checks`` with these arguments will run through the net (the
    gradient check's and those of every attack it runs itself) — a progress bar's total. Runs
    nothing: the checks are walked with attacks that answer at once."""
    return len(x) + sum(n for _, _, n in _planned(net, x, y, correct, eps_list, clip, subset,
                                                  large_eps, batch_size))


def sanity_runs(n, eps_list, *, clip=(0.0, 1.0), subset=256, large_eps=None):
    """The (attack, eps, examples) runs ``sanity_checks`` makes itself on ``n`` examples with
    no results given (``correct={}``, as a study's sanity cell calls it), besides its gradient
    check on all n: what a cost estimate multiplies. Runs nothing."""
    x = np.zeros((n, 1), dtype=np.float32)  # the plan looks at the count only
    return _planned(None, x, np.zeros(n, dtype=np.int64), {}, eps_list, clip, subset,
                    large_eps, 256)


def _planned(net, x, y, correct, eps_list, clip, subset, large_eps, batch_size):
    runs, eps, large_eps, tols = _setup(net, x, y, correct, eps_list,
                                        np.ones(len(x), dtype=bool), clip, subset, large_eps,
                                        0.01, 0.02, 0.99, 0.01, batch_size, 0, None, _Plan)
    _checks(runs, correct, eps, large_eps, *tols)
    return runs.asked


def _setup(net, x, y, correct, eps_list, clean_ok, clip, subset, large_eps, tol, near_zero,
           min_success, max_zero, batch_size, seed, progress, runs_class):
    """The checked arguments of ``sanity_checks`` → (runs, eps, large_eps, tolerances)."""
    name = "sanity_checks"
    subset = check_int(subset, "subset", name)
    batch_size = check_int(batch_size, "batch_size", name)
    check_progress(progress, name)
    tol = check_float(tol, "tol", name, low=0, high=1)
    for what, value in (("near_zero", near_zero), ("min_success", min_success),
                        ("max_zero", max_zero)):
        check_float(value, what, name, low=0, high=1)
    bounds = check_clip_pair(clip, name)
    if large_eps is None:
        if bounds is None:
            raise ValueError(f"{name}: give large_eps when clip is None")
        large_eps = bounds.span
    large_eps = check_float(large_eps, "large_eps", name, low=0, low_open=True)
    y = np.asarray(y)
    if clean_ok is None:
        clean_ok = net.predict(x, batch_size=batch_size) == y
    runs = runs_class(net, x, y, correct, clean_ok, subset, clip, batch_size, seed, progress)
    eps = [e for e in dict.fromkeys(eps_list) if e > 0]
    return runs, eps, large_eps, (tol, near_zero, min_success)


def _checks(runs, correct, eps, large_eps, tol, near_zero, min_success):
    """Every check but the gradients', on ``runs`` (which attacks, or plans)."""
    registered = set(attack_names())  # other keys of ``correct`` are not classified
    specs = [attack_spec(a) for a in dict.fromkeys(a for a, _ in correct) if a in registered]
    gradient = [s.name for s in specs if s.bounded and s.kind != NOISE]
    unbounded = [s.name for s in specs if not s.bounded]
    norms = list(dict.fromkeys(s.norm for s in specs if s.name in gradient)) or ["linf"]
    checks = [check_iterative_vs_single(runs, eps, norms, tol=tol)]
    single = [single_step_attack(n) for n in norms]
    bounded = gradient or single + [a for n in norms for a in iterative_attacks(n)[-1:]]
    checks.append(check_monotone(runs, eps, bounded, tol=tol))
    checks.append(check_large_eps(runs, large_eps, near_zero=near_zero))
    checks.append(check_unbounded(runs, unbounded, min_success=min_success))
    checks.append(check_noise(runs, eps, gradient or single, tol=tol))
    return checks


def format_checks(checks):
    """One line per check; a failed one starts with WARNING."""
    lines = []
    for c in checks:
        c = c if isinstance(c, Check) else Check(**c)
        if c.passed:
            lines.append(f"  ok       {c.name}: {c.detail}")
        else:
            lines.append(f"WARNING: sanity check FAILED: {c.name}: {c.detail}")
    return "\n".join(lines)


__all__ = ["Check", "sanity_checks", "sanity_work", "sanity_runs", "format_checks",
           "check_gradients", "saturation_margin"]
