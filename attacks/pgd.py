"""Projected gradient descent (PGD) under the L∞ or L2 norm, with random restarts.

Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018:

    x₀ = clip(x + δ₀),  δ₀ uniform in the eps-ball (``norms.random_start``)
    x_{k+1} = clip( x + project(x_k + α · normalize(∇ₓ L(x_k, y)) − x, eps) )

i.e. the basic iterative method (``bim.projected_iterations``, which composes ``fgm_step``)
from a random start, repeated ``restarts`` times.
"""

import numpy as np

from ._common import (batch_slices, check_clip, check_clip_pair, check_eps, check_float,
                      check_inputs, check_int, check_progress, clip_to)
from .bim import projected_iterations
from .norms import check_norm, random_start


def restart_start(x, eps, norm, seed, restart, bounds):
    """The start of restart ``restart``: x + δ with δ = ``norms.random_start`` drawn from
    ``np.random.default_rng([seed, restart])`` over the whole of ``x`` (so the start of an
    example does not depend on the batch size), clipped to the valid range."""
    rng = np.random.default_rng([seed, restart])
    delta = random_start(rng, x.shape, eps, norm, dtype=x.dtype)
    return clip_to(x + delta, bounds)


def pgd(net, x, y=None, eps=8 / 255, *, norm="linf", alpha=None, steps=40, restarts=1,
        random_init=True, clip=(0.0, 1.0), targeted=False, batch_size=256, seed=0,
        progress=None):
    """Projected gradient descent in the eps-ball, from random starts.

    Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks" (ICLR).

    Parameters
    ----------
    net : robustcnn ``Net`` (eval mode, any weight formats).
    x : (N, …) inputs inside ``clip``.
    y : (N,) labels to move away from; None (default) uses the net's predictions (no label
        leaking). With ``targeted=True``, the target classes.
    eps : radius in data units in the chosen norm (default 8/255, L∞). ``eps == 0`` returns a
        copy of ``x``. (Madry et al. use eps = 0.3 on MNIST, 8/255 on CIFAR-10.)
    norm : "linf" (signed steps) or "l2" (steps along gradient / ‖gradient‖₂).
    alpha : step size in data units; default 2.5 · eps / steps (the rule of Madry's lab's
        ``robustness`` library: 40 steps of eps/16 can cross the ball from side to side; Madry
        et al. used 0.01 with 40 steps for eps = 0.3 on MNIST).
    steps : iterations per restart (default 40, Madry et al.'s MNIST training attack).
    restarts : random restarts. Restart r starts from ``restart_start(x, eps, norm, seed, r)``;
        restarts after the first run only on the examples no restart has fooled yet.
    random_init : start from a uniform point of the ball (True, Madry et al.) or from x itself
        (then PGD is BIM and restarts must be 1).
    clip : (low, high) valid range, applied after every step, or None.
    targeted : step towards ``y`` (down its loss).
    batch_size : examples per forward/backward pass.
    seed : seeds the random starts; the result is a deterministic function of the seed.
    progress : None, or called with the number of examples just finished after each batch
        of each restart (a progress bar: up to N · restarts in all); the result does not
        depend on it.

    Returns, per example, the last iterate of the first restart that fooled the net (its label
    changed, or reached the target), or else of the restart with the highest loss (the lowest
    target loss when targeted). ‖x' − x‖ ≤ eps (L2: up to float rounding), x' inside ``clip``.

    Not guaranteed: finding an adversarial example when one exists (PGD is a local search;
    more restarts and steps only lower the odds of missing one); every restart runs all its
    steps, so the returned iterate is the last one, not the best along the way.
    """
    name = "pgd"
    eps = check_eps(eps, name)
    norm = check_norm(norm, name)
    steps = check_int(steps, "steps", name)
    restarts = check_int(restarts, "restarts", name)
    alpha = 2.5 * eps / steps if alpha is None else check_float(alpha, "alpha", name, low=0,
                                                                low_open=True)
    if not random_init and restarts > 1:
        raise ValueError(f"{name}: restarts > 1 need random_init=True (the restarts would all be "
                         f"the same), got restarts={restarts}")
    batch_size = check_int(batch_size, "batch_size", name)
    check_progress(progress, name)
    check_clip_pair(clip, name)
    x, y = check_inputs(net, x, y, name)
    bounds = check_clip(clip, x, name)
    if eps == 0:
        return x.copy()
    best = x.copy()
    best_loss = np.full(len(x), -np.inf)
    done = np.zeros(len(x), dtype=bool)
    for r in range(restarts):
        start = restart_start(x, eps, norm, seed, r, bounds) if random_init else x.copy()
        todo = np.flatnonzero(~done)
        for s in batch_slices(len(todo), batch_size, progress):
            idx = todo[s]
            x_adv, loss, success, _ = projected_iterations(
                net, x[idx], y[idx], start[idx], eps=eps, alpha=alpha, steps=steps, norm=norm,
                targeted=targeted, bounds=bounds)
            score = -loss if targeted else loss
            better = success | (score > best_loss[idx])
            best[idx[better]] = x_adv[better]
            best_loss[idx[better]] = score[better]
            done[idx[success]] = True
        if done.all():
            break
    return best
