"""The fast adaptive boundary attack (FAB): a minimal adversarial perturbation in L∞ or L2,
untargeted or towards a target class; FAB-T over the top target classes.

Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive boundary attack",
ICML 2020, Algorithm 1. At the iterate x⁽ᵏ⁾ of the clean input x₀ (class y), each decision
boundary z_s = z_y is linearised; FAB picks the closest one in the dual norm,

    s = argmin_{s≠y} |f_s(x⁽ᵏ⁾)| / ‖∇f_s(x⁽ᵏ⁾)‖_q,   f_s = z_s − z_y     (targeted: s = t)

and projects both x⁽ᵏ⁾ and x₀ onto that hyperplane inside the box (``hyperplane``), giving the
steps δ⁽ᵏ⁾ and δ₀; then, with the biased weight α = min(‖δ⁽ᵏ⁾‖ / (‖δ⁽ᵏ⁾‖ + ‖δ₀‖), α_max),

    x⁽ᵏ⁺¹⁾ = clip((1 − α) · (x⁽ᵏ⁾ + η δ⁽ᵏ⁾) + α · (x₀ + η δ₀))

and whenever x⁽ᵏ⁺¹⁾ is adversarial it is kept if it is the smallest so far and pulled back,
x⁽ᵏ⁺¹⁾ ← x₀ + β (x⁽ᵏ⁺¹⁾ − x₀). η = 1.05, α_max = 0.1, β = 0.9 (the paper's).
"""

import numpy as np

from ._common import (WorkMeter, check_clip, check_clip_pair, check_eps, check_float,
                      check_inputs, check_int, check_progress, check_untargeted, clip_to,
                      flat_bounds, logit_grads, logits_and_grad)
from .apgd import apgd_start, target_classes
from .hyperplane import project_hyperplane_box
from .norms import check_norm


def _norms(d, norm):
    """‖d[n]‖ in ``norm`` over (M, D) rows, float64."""
    d = np.asarray(d, dtype=np.float64)
    return np.abs(d).max(axis=1, initial=0.0) if norm == "linf" else np.sqrt((d * d).sum(axis=1))


def _dual(g, norm):
    """The dual norm (L1 for L∞, L2 for L2) of (…, D) gradients over the last axis."""
    return np.abs(g).sum(axis=-1) if norm == "linf" else np.sqrt((g * g).sum(axis=-1))


def _boundaries(net, x1, y, target, max_rows):
    """The linearised boundaries at x1 → (f (m, S), ∇f (m, S, D)) float64: f_s = z_s − z_y for
    every class s (z_y − z_y is set to +inf: never chosen), or only s = target when given."""
    m, k = len(x1), net.num_classes
    rows = np.arange(m)
    if target is not None:
        coeffs = np.zeros((m, k))
        coeffs[rows, target] += 1.0
        coeffs[rows, y] -= 1.0
        logits, grad = logits_and_grad(net, x1, lambda z, s: coeffs[s], max_rows=max_rows)
        z = logits.astype(np.float64)
        f = (z[rows, target] - z[rows, y])[:, None]
        return f, grad.reshape(m, 1, -1).astype(np.float64)
    coeffs = np.repeat(np.eye(k)[None], m, axis=0)
    coeffs[:, :, :] -= np.eye(k)[y][:, None, :]                     # e_s − e_y
    grads, logits = logit_grads(net, x1, coeffs, max_rows=max_rows)
    z = logits.astype(np.float64)
    f = z - z[rows, y][:, None]
    f[rows, y] = np.inf
    return f, grads.reshape(m, k, -1).astype(np.float64)


def fab_run(net, x0, y, start, *, target, success_of, eps, norm, n_iter, alpha_max, eta, beta,
            bounds, max_rows):
    """One FAB run over a batch (arguments already checked).

    x0 : (m, …) clean inputs of classes y; start : the first iterate; target : (m,) classes to
    linearise towards, or None (the closest boundary); success_of(logits, rows) → (m',) bool.
    With ``eps``, an example stops once it has an adversarial point within eps (the authors'
    code keeps shrinking it; whether it counts does not change).
    → (best (m,) smallest adversarial norm found, inf if none; x_best (m, …)).
    """
    bounds = flat_bounds(bounds, x0.shape[1:])  # the iterates are flattened rows
    m = len(x0)
    shape = x0.shape
    flat0 = x0.reshape(m, -1).astype(np.float64)
    x1 = start.reshape(m, -1).astype(np.float64)
    best = np.full(m, np.inf)
    x_best = x0.copy()
    active = np.arange(m)
    for _ in range(n_iter):
        if not active.size:
            break
        xa = x1[active]
        f, g = _boundaries(net, xa.reshape((-1,) + shape[1:]).astype(x0.dtype), y[active],
                           None if target is None else target[active], max_rows)
        dist = np.abs(f) / (1e-12 + _dual(g, norm))
        s = dist.argmin(axis=1)
        pick = np.arange(len(active))
        w = g[pick, s]
        b = -f[pick, s] + (w * xa).sum(axis=1)
        d = project_hyperplane_box(np.concatenate([xa, flat0[active]]), np.concatenate([w, w]),
                                   np.concatenate([b, b]), norm, bounds)
        d1, d2 = d[:len(active)], d[len(active):]
        a1 = np.maximum(_norms(d1, norm), 1e-8)
        a2 = np.maximum(_norms(d2, norm), 1e-8)
        alpha = np.clip(a1 / (a1 + a2), 0.0, alpha_max)[:, None]
        nxt = clip_to((xa + eta * d1) * (1 - alpha) + (flat0[active] + eta * d2) * alpha, bounds)
        nxt = nxt.astype(x0.dtype).astype(np.float64)  # what the net sees, and its size
        logits = net.logits(nxt.reshape((-1,) + shape[1:]).astype(x0.dtype), batch_size=max_rows)
        adv = success_of(logits, active)
        size = _norms(nxt - flat0[active], norm)
        smaller = adv & (size < best[active])
        keep = active[smaller]
        best[keep] = size[smaller]
        x_best[keep] = nxt[smaller].reshape((-1,) + shape[1:]).astype(x0.dtype)
        nxt[adv] = flat0[active[adv]] + beta * (nxt[adv] - flat0[active[adv]])
        x1[active] = nxt
        if eps is not None:
            active = active[~(best[active] <= eps)]
    return best, x_best


def _check(name, eps, norm, n_iter, restarts, alpha_max, eta, beta, batch_size, clip):
    eps = check_eps(eps, name, allow_none=True)
    norm = check_norm(norm, name)
    n_iter = check_int(n_iter, "n_iter", name)
    restarts = check_int(restarts, "restarts", name)
    alpha_max = check_float(alpha_max, "alpha_max", name, low=0, high=1)
    eta = check_float(eta, "eta", name, low=1)
    beta = check_float(beta, "beta", name, low=0, high=1, low_open=True)
    batch_size = check_int(batch_size, "batch_size", name)
    check_clip_pair(clip, name)
    return eps, norm, n_iter, restarts, alpha_max, eta, beta, batch_size


def _fab_runs(net, x, y, runs, *, eps, norm, n_iter, alpha_max, eta, beta, bounds, batch_size,
              seed, progress, fooled_at_x):
    """Every run of ``runs`` — (target (N,) or None, success_of, restart index) — on the
    examples not yet fooled within eps (eps None: every example; a restart only where an
    adversarial point was found, to shrink it). → (x_adv, info)."""
    n = len(x)
    best = np.full(n, np.inf)
    x_best = x.copy()
    attacked = ~fooled_at_x
    meter = WorkMeter(progress, n)
    for i, (target, success_of, restart) in enumerate(runs):
        if eps is not None:
            todo = np.flatnonzero(attacked & ~(best <= eps))
        elif restart > 0:
            todo = np.flatnonzero(attacked & np.isfinite(best))
        else:
            todo = np.flatnonzero(attacked)
        if restart == 0:
            start = x
        else:  # a random point at half the distance that is known to suffice
            radius = 0.5 * np.minimum(best, np.inf if eps is None else eps)
            unit = apgd_start(np.zeros_like(x, dtype=np.float64), 1.0, norm, [seed, i], None)
            start = clip_to((x + unit * np.where(np.isfinite(radius), radius, 0.0).reshape(
                (-1,) + (1,) * (x.ndim - 1))).astype(x.dtype), bounds)
        for lo in range(0, len(todo), batch_size):
            idx = todo[lo:lo + batch_size]

            def success(z, rows, idx=idx):
                return success_of(z, idx[rows])

            found, x_found = fab_run(net, x[idx], y[idx], start[idx],
                                     target=None if target is None else target[idx],
                                     success_of=success, eps=eps, norm=norm, n_iter=n_iter,
                                     alpha_max=alpha_max, eta=eta, beta=beta, bounds=bounds,
                                     max_rows=batch_size)
            smaller = found < best[idx]
            best[idx[smaller]] = found[smaller]
            x_best[idx[smaller]] = x_found[smaller]
            meter.add(len(idx) / max(len(todo), 1) / len(runs))
        if not len(todo):
            meter.add(1.0 / len(runs))
    meter.finish()
    fooled = np.isfinite(best) if eps is None else best <= eps
    out = np.where(fooled.reshape((-1,) + (1,) * (x.ndim - 1)), x_best, x)
    return out, {"fooled": fooled, "attacked": attacked, "norms": best, "runs": len(runs)}


def fab(net, x, y=None, eps=None, *, norm="linf", n_iter=100, restarts=1, alpha_max=0.1,
        eta=1.05, beta=0.9, clip=(0.0, 1.0), targeted=False, batch_size=256, seed=0,
        progress=None, return_info=False):
    """FAB: the smallest perturbation (L∞ or L2) it finds that changes the label (or reaches a
    target).

    Croce & Hein 2020, "Minimally distorted adversarial examples with a fast adaptive boundary
    attack" (ICML), Algorithm 1.

    Parameters
    ----------
    net : robustcnn ``Net`` (eval mode, any weight formats). Untargeted FAB takes the gradient
        of every logit difference: K backward passes per example and iteration.
    x : (N, …) inputs inside ``clip``.
    y : (N,) labels; None uses the net's predictions. With ``targeted=True``, the targets
        (the clean prediction is the class to leave).
    eps : None (default): minimal-norm, every example runs all iterations and the smallest
        adversarial point is returned. A radius: only a perturbation within eps counts (the
        example is returned unchanged otherwise), an example stops once it has one, and the
        random restarts start at distance eps/2. ``eps == 0`` returns a copy of x.
    norm : "linf" or "l2", the norm minimised.
    n_iter : iterations per run (100, AutoAttack's).
    restarts : runs; the first starts at x, restart r > 0 at a random point (``apgd_start``'s
        draw with the key [seed, r]) at distance min(best found, eps) / 2, on the examples not
        yet fooled within eps (eps None: on those already fooled, to shrink the perturbation).
    alpha_max, eta, beta : the paper's α_max = 0.1, η = 1.05 (overshoot), β = 0.9 (the pull
        back towards x after a success).
    clip : (low, high) valid range (the box of the projection), or None.
    targeted : linearise towards y[n] and succeed when it is reached.
    batch_size, seed : as for the other attacks.
    progress : called with the number of examples just finished, or None.
    return_info : also return {"fooled": (N,) bool, "attacked": (N,) bool, "norms": (N,) the
        size of the perturbation found (inf where none), "runs"}.

    Returns x_adv (and info): the smallest adversarial point found (within eps, if given),
    else x. Not guaranteed: a minimal perturbation (FAB linearises; it is exact for affine
    classifiers in one step), or success within n_iter. Defined difference from the authors'
    code: with eps, an example stops at its first point within eps.
    """
    name = "fab"
    eps, norm, n_iter, restarts, alpha_max, eta, beta, batch_size = _check(
        name, eps, norm, n_iter, restarts, alpha_max, eta, beta, batch_size, clip)
    check_progress(progress, name)
    if net.num_classes < 2:
        raise ValueError(f"{name}: needs a net with at least 2 classes")
    x, y = check_inputs(net, x, y, name)
    bounds = check_clip(clip, x, name)
    pred = net.predict(x, batch_size=batch_size)
    at_x = pred == y if targeted else pred != y
    if eps == 0 or not len(x):
        return _nothing(x, at_x, return_info)
    if targeted:
        labels, target = pred, y

        def success_of(z, rows):
            return z.argmax(axis=1) == y[rows]
    else:
        labels, target = y, None

        def success_of(z, rows):
            return z.argmax(axis=1) != y[rows]

    runs = [(target, success_of, r) for r in range(restarts)]
    x_adv, info = _fab_runs(net, x, labels, runs, eps=eps, norm=norm, n_iter=n_iter,
                            alpha_max=alpha_max, eta=eta, beta=beta, bounds=bounds,
                            batch_size=batch_size, seed=seed, progress=progress,
                            fooled_at_x=at_x)
    return (x_adv, info) if return_info else x_adv


def fab_t(net, x, y=None, eps=None, *, norm="linf", n_targets=9, n_iter=100, restarts=1,
          alpha_max=0.1, eta=1.05, beta=0.9, clip=(0.0, 1.0), targeted=False, batch_size=256,
          seed=0, progress=None, return_info=False):
    """FAB-T: targeted FAB towards each of the top ``n_targets`` other classes in turn, each
    run on the examples not yet fooled (within eps); success is any change of the label.

    Croce & Hein 2020 (ICML, "Reliable evaluation …", §4.2); AutoAttack's third attack. One
    backward pass per example and iteration, against K for untargeted ``fab``.

    Parameters
    ----------
    net, x, eps, norm, n_iter, alpha_max, eta, beta, clip, batch_size, seed, progress,
    return_info : as for ``fab``.
    y : (N,) labels; None uses the net's predictions.
    n_targets : the classes with the 2nd, 3rd, … highest clean logits (9; capped at the
        number of classes − 1).
    restarts : runs per target class (1 in AutoAttack).
    targeted : must be False (FAB-T chooses its targets).

    Returns as ``fab``. Not guaranteed: a minimal perturbation or success.
    """
    name = "fab_t"
    eps, norm, n_iter, restarts, alpha_max, eta, beta, batch_size = _check(
        name, eps, norm, n_iter, restarts, alpha_max, eta, beta, batch_size, clip)
    check_progress(progress, name)
    n_targets = check_int(n_targets, "n_targets", name)
    check_untargeted(targeted, name, "it succeeds when the label changes, towards targets it "
                                     "chooses itself")
    if net.num_classes < 2:
        raise ValueError(f"{name}: needs a net with at least 2 classes")
    x, y = check_inputs(net, x, y, name)
    bounds = check_clip(clip, x, name)
    logits = net.logits(x, batch_size=batch_size)
    at_x = logits.argmax(axis=1) != y
    if eps == 0 or not len(x):
        return _nothing(x, at_x, return_info)
    targets = target_classes(logits, y, n_targets)

    def success_of(z, rows):
        return z.argmax(axis=1) != y[rows]

    runs = [(targets[:, j], success_of, r) for j in range(targets.shape[1])
            for r in range(restarts)]
    x_adv, info = _fab_runs(net, x, y, runs, eps=eps, norm=norm, n_iter=n_iter,
                            alpha_max=alpha_max, eta=eta, beta=beta, bounds=bounds,
                            batch_size=batch_size, seed=seed, progress=progress,
                            fooled_at_x=at_x)
    info["targets"] = targets
    return (x_adv, info) if return_info else x_adv


def _nothing(x, at_x, return_info):
    info = {"fooled": np.zeros(len(x), dtype=bool), "attacked": ~at_x,
            "norms": np.full(len(x), np.inf), "runs": 0}
    return (x.copy(), info) if return_info else x.copy()
