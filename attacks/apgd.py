"""Auto-PGD (APGD): PGD with momentum and a step size that halves itself at checkpoints; its
losses cross-entropy, DLR and targeted DLR; APGD-T over the top target classes.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, §3 (Algorithm 1) and §4. From x⁽⁰⁾ (a random point of the
ball's surface) and a step η⁽⁰⁾ = 2·eps, with P the projection onto the ball and the box:

    z⁽ᵏ⁺¹⁾ = P(x⁽ᵏ⁾ + η⁽ᵏ⁾ · normalize(∇f(x⁽ᵏ⁾)))
    x⁽ᵏ⁺¹⁾ = P(x⁽ᵏ⁾ + α · (z⁽ᵏ⁺¹⁾ − x⁽ᵏ⁾) + (1 − α) · (x⁽ᵏ⁾ − x⁽ᵏ⁻¹⁾))     α = 0.75 (1 at k = 0)

At each checkpoint w_j (``checkpoints``) the step halves (``halve_step``) if
  1. the loss rose in at most ρ·(w_j − w_{j−1}) of the steps since the last checkpoint, or
  2. the step was not halved at the last checkpoint and the best loss has not improved since;
and the iterate then restarts from the best point found. ρ = 0.75.

The loop is written once over an objective (``apgd_run``); the losses (``dlr``) and the norm
hooks (``norms.normalize``, ``norms.project``) are the only places the variants differ.
"""

import numpy as np

from ..engine import softmax_cross_entropy
from ._common import (WorkMeter, check_clip, check_clip_pair, check_eps, check_float,
                      check_inputs, check_int, check_progress, check_untargeted, clip_to,
                      logits_and_grad)
from .dlr import dlr, dlr_targeted
from .norms import check_norm, normalize, project

RHO = 0.75        # the share of rising steps below which the step halves (condition 1)
MOMENTUM = 0.75   # α, the weight of the new gradient step against the previous move
FIRST_STEP = 2.0  # η⁽⁰⁾ in units of eps
LOSSES = ("ce", "dlr")


def checkpoints(n_iter):
    """The iteration counts after which APGD checks its step size, for ``n_iter`` iterations.

    The paper's p₀ = 0, p₁ = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06), w_j = p_j · n,
    computed as in the authors' code in whole iterations: a first interval of ⌊0.22 n⌋, each
    next one shorter by ⌊0.03 n⌋ down to ⌊0.06 n⌋ (every interval at least 1). For n = 100:
    22, 41, 57, 70, 80, 87, 93, 99.
    """
    n_iter = int(n_iter)
    interval = max(int(0.22 * n_iter), 1)
    shortest = max(int(0.06 * n_iter), 1)
    shrink = max(int(0.03 * n_iter), 1)
    out, w = [], 0
    while w + interval <= n_iter:
        w += interval
        out.append(w)
        interval = max(interval - shrink, shortest)
    return out


def halve_step(window, rho, reduced_before, best_before, best_now):
    """Which examples halve their step at a checkpoint → (N,) bool.

    window : (k + 1, N) losses f(x⁽ⁱ⁾) of the iterates from the last checkpoint w_{j−1} to this
        one w_j = w_{j−1} + k (the first window starts at the starting point x⁽⁰⁾).
    rho : condition 1 holds where Σᵢ 1[f(x⁽ⁱ⁺¹⁾) > f(x⁽ⁱ⁾)] ≤ rho · k (≤ as in the authors'
        code; the paper writes <, which differs only when rho · k is a whole number).
    reduced_before : (N,) bool, the step was halved at the last checkpoint (all True at the
        first one, where condition 2 does not apply).
    best_before, best_now : (N,) the best loss at the last checkpoint and now; condition 2
        holds where the step was not halved then and best_before ≥ best_now.
    """
    window = np.asarray(window, dtype=np.float64)
    k = window.shape[0] - 1
    rises = (window[1:] > window[:-1]).sum(axis=0)
    stalled = ~np.asarray(reduced_before, dtype=bool) & (np.asarray(best_before)
                                                         >= np.asarray(best_now))
    return (rises <= rho * k) | stalled


def _per_example(v, like):
    """(N,) values shaped to broadcast over (N, …) arrays like ``like``."""
    return np.asarray(v).reshape((-1,) + (1,) * (like.ndim - 1))


def apgd_run(objective, x, start, *, eps, norm, n_iter, bounds, rho=RHO, momentum=MOMENTUM):
    """One APGD run over a batch (the loop of Algorithm 1; arguments already checked).

    objective(x_adv, rows) → (loss (m,), grad (m, …), fooled (m,) bool) at the iterates
    ``x_adv`` of the batch's examples ``rows`` (indices into ``x``); APGD maximises the loss.
    x, start : (N, …) the clean inputs and the starting points (inside the ball and the box).

    Every example is independent; an example stops as soon as an iterate fools the net (the
    authors' code runs it to the end; its result does not change). Returns a dict:
    ``fooled`` (N,) bool, ``x_fooled`` (the fooling iterate where fooled), ``x_best`` and
    ``loss_best`` (the highest-loss iterate and its loss), ``zero_grad_start`` (N,) bool (the
    gradient at the start is exactly zero), ``steps`` (n_iter + 1, N) the step size before
    each iteration and at the end (an example that stopped keeps its last).
    """
    n = len(x)
    x_adv = start.copy()
    everyone = np.arange(n)
    loss, grad, fooled = objective(x_adv, everyone)
    zero_start = ~grad.reshape(n, -1).any(axis=1)
    x_best, grad_best = x_adv.copy(), grad.copy()
    loss_best = np.asarray(loss, dtype=np.float64).copy()
    found, x_found = fooled.copy(), x_adv.copy()
    step = np.full(n, FIRST_STEP * eps)
    steps = np.empty((n_iter + 1, n))
    x_prev = x_adv.copy()
    history = np.zeros((n_iter + 1, n))
    history[0] = loss_best
    reduced = np.ones(n, dtype=bool)
    best_at_check = loss_best.copy()
    marks, last = set(checkpoints(n_iter)), 0
    active = np.flatnonzero(~found)
    for i in range(n_iter):
        steps[i] = step
        if not active.size:
            continue
        a = 1.0 if i == 0 else momentum
        xa, x0 = x_adv[active], x[active]
        move = _per_example(step[active], xa) * normalize(grad[active], norm)
        z = clip_to(x0 + project(xa + move.astype(xa.dtype) - x0, eps, norm), bounds)
        nxt = xa + a * (z - xa) + (1 - a) * (xa - x_prev[active])
        nxt = clip_to(x0 + project(nxt - x0, eps, norm), bounds)
        x_prev[active], x_adv[active] = xa, nxt
        loss, g, fool = objective(nxt, active)
        loss = np.asarray(loss, dtype=np.float64)
        grad[active] = g
        history[i + 1, active] = loss
        better = loss > loss_best[active]
        up = active[better]
        x_best[up], grad_best[up], loss_best[up] = nxt[better], g[better], loss[better]
        x_found[active[fool]] = nxt[fool]
        found[active[fool]] = True
        if i + 1 in marks:
            halve = halve_step(history[last:i + 2, active], rho, reduced[active],
                               best_at_check[active], loss_best[active])
            reduced[active] = halve
            best_at_check[active] = loss_best[active]
            h = active[halve]
            step[h] /= 2.0
            x_adv[h], grad[h] = x_best[h], grad_best[h]
            last = i + 1
        active = active[~fool]
    steps[n_iter] = step
    return {"fooled": found, "x_fooled": x_found, "x_best": x_best, "loss_best": loss_best,
            "zero_grad_start": zero_start, "steps": steps}


def apgd_start(x, eps, norm, key, bounds):
    """A random start on the ball's surface for every example, as in the authors' code:
    L∞ x + eps · u / max|u| with u uniform in [−1, 1]ᵈ, L2 x + eps · g / ‖g‖₂ with g standard
    normal; clipped to the box. Drawn from ``np.random.default_rng(key)`` over the whole of x,
    so an example's start does not depend on the batch size."""
    rng = np.random.default_rng(key)
    if norm == "linf":
        u = rng.uniform(-1.0, 1.0, size=x.shape)
        scale = np.abs(u).reshape(len(x), -1).max(axis=1, initial=0.0)
    else:
        u = rng.standard_normal(size=x.shape)
        scale = np.sqrt((u.reshape(len(x), -1) ** 2).sum(axis=1))
    u = u / _per_example(np.where(scale > 0, scale, 1.0), u)
    return clip_to((x + eps * u).astype(x.dtype), bounds)


def _objective(net, loss_of, success_of, max_rows):
    """APGD's objective over a net: the loss ``loss_of(logits, rows)`` → (loss, dloss/dlogits)
    and its input gradient from one forward + backward, and ``success_of(logits, rows)``.
    (Nets with random layers: attack ``eot.eot(net, k)``, whose passes average k draws.)"""

    def objective(x_adv, rows):
        losses = np.empty(len(rows))

        def dlogits_of(z, s):
            value, dz = loss_of(z, rows[s])
            losses[s] = value
            return dz

        logits, grad = logits_and_grad(net, x_adv, dlogits_of, max_rows=max_rows)
        return losses, grad, success_of(logits, rows)

    return objective


def _cross_entropy(labels, sign):
    def loss_of(z, rows):
        value, dz = softmax_cross_entropy(z, labels[rows])
        return sign * value.astype(np.float64), sign * dz
    return loss_of


def _check_common(name, eps, norm, n_iter, restarts, rho, batch_size, clip):
    eps = check_eps(eps, name)
    norm = check_norm(norm, name)
    n_iter = check_int(n_iter, "n_iter", name)
    restarts = check_int(restarts, "restarts", name)
    rho = check_float(rho, "rho", name, low=0, high=1, low_open=True)
    batch_size = check_int(batch_size, "batch_size", name)
    check_clip_pair(clip, name)
    return eps, norm, n_iter, restarts, rho, batch_size


def _runs(net, x, y, runs, *, eps, norm, n_iter, rho, bounds, batch_size, progress,
          fooled_at_x):
    """Run APGD once per entry of ``runs`` — (loss_of, success_of, rng key) — each on the
    examples no earlier run has fooled. → (x_adv, info dict); see ``apgd``."""
    n = len(x)
    fooled = fooled_at_x.copy()
    attacked = ~fooled_at_x
    out = x.copy()
    best_loss = np.full(n, -np.inf)
    zero_start = np.zeros(n, dtype=bool)
    meter = WorkMeter(progress, n)
    for r, (loss_of, success_of, key) in enumerate(runs):
        todo = np.flatnonzero(~fooled)
        if not todo.size:
            break
        start = apgd_start(x, eps, norm, key, bounds)
        objective = _objective(net, loss_of, success_of, batch_size)
        for lo in range(0, len(todo), batch_size):
            idx = todo[lo:lo + batch_size]

            def on_batch(x_adv, rows, idx=idx):
                return objective(x_adv, idx[rows])

            res = apgd_run(on_batch, x[idx], start[idx], eps=eps, norm=norm, n_iter=n_iter,
                           bounds=bounds, rho=rho)
            if r == 0:
                zero_start[idx] = res["zero_grad_start"]
            hit = res["fooled"]
            out[idx[hit]] = res["x_fooled"][hit]
            fooled[idx[hit]] = True
            better = ~hit & (res["loss_best"] > best_loss[idx])
            out[idx[better]] = res["x_best"][better]
            best_loss[idx[better]] = res["loss_best"][better]
            meter.add(len(idx) / len(todo) / len(runs))
    meter.finish()
    info = {"fooled": fooled & attacked, "attacked": attacked, "zero_grad_start": zero_start,
            "runs": len(runs)}
    return out, info


def apgd(net, x, y=None, eps=8 / 255, *, norm="linf", loss="ce", n_iter=100, restarts=1,
         rho=RHO, clip=(0.0, 1.0), targeted=False, batch_size=256, seed=0, progress=None,
         return_info=False):
    """APGD with the cross-entropy (APGD-CE) or the DLR loss (APGD-DLR), L∞ or L2.

    Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
    diverse parameter-free attacks" (ICML), Algorithm 1.

    Parameters
    ----------
    net : robustcnn ``Net`` (eval mode, any weight formats), or a net-like view such as
        ``eot.eot(net, k)`` for nets with random layers (expectation over transformation).
        Attacks the logits.
    x : (N, …) inputs inside ``clip``.
    y : (N,) labels to move away from; None (default) uses the net's predictions. With
        ``targeted=True``, the target classes.
    eps : radius of the ball in data units, in ``norm``. ``eps == 0`` returns a copy of x.
    norm : "linf" or "l2".
    loss : "ce" (cross-entropy) or "dlr" (difference of logits ratio, ``dlr.dlr``; needs 3
        classes). Targeted: the cross-entropy of the target is minimised, or the targeted DLR
        ``dlr.dlr_targeted`` (with the clean prediction as the class to leave) maximised.
    n_iter : iterations per restart (100, the paper's).
    restarts : runs from fresh random starts (``apgd_start`` with the key [seed, restart]),
        each on the examples no earlier run fooled.
    rho : condition 1's threshold (0.75).
    clip : (low, high) valid range, or None.
    targeted : reach ``y`` instead of leaving it.
    batch_size : examples per forward/backward pass.
    seed : seeds the random starts; the result is a deterministic function of the seed.
    progress : called with the number of examples just finished (a share of every run), or
        None.
    return_info : also return a dict: ``fooled`` (N,) bool (the attack found an adversarial
        example), ``attacked`` (N,) bool (not already fooled at x), ``zero_grad_start`` (N,)
        bool (the input gradient at the first run's start is exactly zero: gradient masking
        where many are), ``runs``.

    Returns x_adv (and info): for a fooled example the iterate that fooled the net, otherwise
    the iterate of highest loss over every run; an example the net already gets wrong (or that
    is already at its target) is returned unchanged. ‖x_adv − x‖ ≤ eps (L2: up to float
    rounding), inside ``clip``.

    Not guaranteed: finding an adversarial example when one exists (a local search). Defined
    differences from the authors' code: an example stops iterating once fooled (its result does
    not change); the first checkpoint window compares f(x⁽¹⁾) with the start's loss f(x⁽⁰⁾) as
    the paper says (the code compares it with 0); NumPy's random numbers, not torch's.
    """
    name = "apgd"
    eps, norm, n_iter, restarts, rho, batch_size = _check_common(
        name, eps, norm, n_iter, restarts, rho, batch_size, clip)
    check_progress(progress, name)
    if loss not in LOSSES:
        raise ValueError(f"{name}: loss must be one of {list(LOSSES)}, got {loss!r}")
    if loss == "dlr" and net.num_classes < 3:
        raise ValueError(f"{name}: the DLR loss needs at least 3 classes, the net has "
                         f"{net.num_classes}")
    x, y = check_inputs(net, x, y, name)
    bounds = check_clip(clip, x, name)
    pred = net.predict(x, batch_size=batch_size)
    at_x = pred == y if targeted else pred != y
    if eps == 0 or not len(x):
        x_adv, info = x.copy(), {"fooled": np.zeros(len(x), dtype=bool), "attacked": ~at_x,
                                 "zero_grad_start": np.zeros(len(x), dtype=bool), "runs": 0}
        return (x_adv, info) if return_info else x_adv
    if loss == "ce":
        loss_of = _cross_entropy(y, -1.0 if targeted else 1.0)
    elif targeted:
        def loss_of(z, rows):
            return dlr_targeted(z, pred[rows], y[rows])
    else:
        def loss_of(z, rows):
            return dlr(z, y[rows])

    def success_of(z, rows):
        return (z.argmax(axis=1) == y[rows]) if targeted else (z.argmax(axis=1) != y[rows])

    runs = [(loss_of, success_of, [seed, r]) for r in range(restarts)]
    x_adv, info = _runs(net, x, y, runs, eps=eps, norm=norm, n_iter=n_iter, rho=rho,
                        bounds=bounds, batch_size=batch_size, progress=progress, fooled_at_x=at_x)
    return (x_adv, info) if return_info else x_adv


def target_classes(logits, y, n_targets):
    """The ``n_targets`` classes other than y[n] with the highest logits, strongest first →
    (N, min(n_targets, K − 1)) int64 (ties to the lower class index)."""
    z = np.array(logits, dtype=np.float64)
    z[np.arange(len(y)), y] = -np.inf
    n_targets = min(n_targets, z.shape[1] - 1)
    return np.argsort(-z, axis=1, kind="stable")[:, :n_targets].astype(np.int64)


def apgd_t(net, x, y=None, eps=8 / 255, *, norm="linf", n_targets=9, n_iter=100, restarts=1,
           rho=RHO, clip=(0.0, 1.0), targeted=False, batch_size=256, seed=0, progress=None,
           return_info=False):
    """APGD-T: APGD on the targeted DLR loss towards each of the top ``n_targets`` other
    classes in turn, each run only on the examples still correctly classified.

    Croce & Hein 2020 (ICML), §4.1; AutoAttack's second attack.

    Parameters
    ----------
    net, x, eps, norm, n_iter, rho, clip, batch_size, progress, return_info : as for ``apgd``.
    y : (N,) labels; None uses the net's predictions.
    n_targets : the classes with the 2nd, 3rd, … highest clean logits are the targets
        (9, the paper's; capped at the number of classes − 1). Needs 3 classes.
    restarts : random restarts per target class (1 in AutoAttack).
    targeted : must be False: APGD-T chooses its targets and succeeds when the label changes.
    seed : the start of target j's restart r is ``apgd_start`` with the key
        [seed, j · restarts + r].

    Returns as ``apgd``: the fooling iterate, or else the iterate of highest targeted DLR over
    every target's runs. Not guaranteed: success; the authors' code and this one differ as
    listed for ``apgd``.
    """
    name = "apgd_t"
    eps, norm, n_iter, restarts, rho, batch_size = _check_common(
        name, eps, norm, n_iter, restarts, rho, batch_size, clip)
    check_progress(progress, name)
    n_targets = check_int(n_targets, "n_targets", name)
    check_untargeted(targeted, name, "it succeeds when the label changes, towards targets "
                                     "it chooses itself")
    if net.num_classes < 3:
        raise ValueError(f"{name}: the targeted DLR loss needs at least 3 classes, the net has "
                         f"{net.num_classes}")
    x, y = check_inputs(net, x, y, name)
    bounds = check_clip(clip, x, name)
    logits = net.logits(x, batch_size=batch_size)
    at_x = logits.argmax(axis=1) != y
    if eps == 0 or not len(x):
        x_adv, info = x.copy(), {"fooled": np.zeros(len(x), dtype=bool), "attacked": ~at_x,
                                 "zero_grad_start": np.zeros(len(x), dtype=bool), "runs": 0}
        return (x_adv, info) if return_info else x_adv
    targets = target_classes(logits, y, n_targets)

    def success_of(z, rows):
        return z.argmax(axis=1) != y[rows]

    runs = []
    for j in range(targets.shape[1]):
        def loss_of(z, rows, t=targets[:, j]):
            return dlr_targeted(z, y[rows], t[rows])
        runs += [(loss_of, success_of, [seed, j * restarts + r]) for r in range(restarts)]
    x_adv, info = _runs(net, x, y, runs, eps=eps, norm=norm, n_iter=n_iter, rho=rho,
                        bounds=bounds, batch_size=batch_size, progress=progress, fooled_at_x=at_x)
    info["targets"] = targets
    return (x_adv, info) if return_info else x_adv
