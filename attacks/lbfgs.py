"""Box-constrained L-BFGS: the first adversarial-example attack.

Szegedy, Zaremba, Sutskever, Bruna, Erhan, Goodfellow & Fergus, "Intriguing properties of
neural networks", ICLR 2014, section 4.1: for a target label l,

    minimise  c · ‖r‖₂² + loss(x + r, l)   subject to x + r ∈ [low, high]

with L-BFGS-B (``scipy.optimize.minimize(method="L-BFGS-B", bounds=...)``), one example at a
time, and a line search over c. The paper writes ‖r‖ and asks for the "minimum c"; with c
weighting the distance, small c means a large r, so the smallest perturbation comes from the
*largest* c whose minimiser still reaches l — that is the c this search looks for. loss is the
softmax cross-entropy; its gradient is the engine's (``Net.forward_for_backward`` +
``Net.backward``).
"""

import math

import numpy as np
from scipy.optimize import minimize

from ._common import (check_clip, check_clip_pair, check_eps, check_float, check_inputs,
                      check_int, check_progress, clip_to, loss_grad_logits, runner_up)
from .norms import project


def lbfgs(net, x, y=None, eps=None, *, initial_const=0.1, search_steps=8, max_iter=100,
          clip=(0.0, 1.0), targeted=False, batch_size=256, seed=0, progress=None):
    """The smallest-L2 perturbation reaching a target that the c-search over L-BFGS-B finds.

    Szegedy et al. 2014, "Intriguing properties of neural networks" (ICLR).

    Parameters
    ----------
    net : robustcnn ``Net`` (eval mode, any weight formats).
    x : (N, …) inputs inside ``clip``.
    y : with ``targeted=True`` the (N,) target labels (required). Untargeted, the labels to
        leave (None: the net's predictions) and the target l of each example is its most
        likely other class (a convention of this library: the paper's attack is targeted).
    eps : None (default): unbounded. A number caps the final L2 norm: a longer perturbation is
        scaled down to ‖x' − x‖₂ = eps (which may undo it). ``eps == 0`` returns a copy of x.
    initial_const : the first c of every example's search (0.1).
    search_steps : values of c tried per example (8): ×10 while the minimiser succeeds (÷10
        while it fails) until both a succeeding and a failing c are known, then geometric
        bisection between them.
    max_iter : L-BFGS-B iterations per value of c (100).
    clip : (low, high), the box constraint; None for no box.
    targeted : reach ``y`` instead of the runner-up class.
    batch_size : examples per pass when computing the clean predictions (the optimisation
        itself runs one example at a time).
    seed : unused (deterministic); accepted so every attack takes it.
    progress : None, or called with 1 after each example (the outer loop: one example at a
        time); the result does not depend on it.

    Cost: per example, up to search_steps × (max_iter + line-search) single-example forward +
    backward passes, from Python; meant for small N.

    Returns the net's dtype. An example for which no c reached the target is returned
    unchanged (x). Not guaranteed: the minimal perturbation (the problem is non-convex), or
    success. The search runs in float64 whatever the net's dtype.
    """
    name = "lbfgs"
    eps = check_eps(eps, name, allow_none=True)
    initial_const = check_float(initial_const, "initial_const", name, low=0, low_open=True)
    search_steps = check_int(search_steps, "search_steps", name)
    max_iter = check_int(max_iter, "max_iter", name)
    batch_size = check_int(batch_size, "batch_size", name)
    check_progress(progress, name)
    check_clip_pair(clip, name)
    if net.num_classes < 2:
        raise ValueError(f"{name}: needs a net with at least 2 classes")
    if targeted and y is None:
        raise ValueError(f"{name}: targeted=True needs the target classes y")
    x, y = check_inputs(net, x, y, name)
    bounds = check_clip(clip, x, name)
    if eps == 0:
        return x.copy()
    target = y if targeted else runner_up(net.logits(x, batch_size=batch_size), y)
    out = x.copy()
    for i in range(len(x)):
        out[i] = _lbfgs_one(net, x[i], int(target[i]), initial_const, search_steps, max_iter,
                            bounds)
        if progress is not None:
            progress(1)
    if eps is not None:
        out = clip_to(x + project(out - x, eps, "l2"), bounds)
    return out


def _lbfgs_one(net, x, target, c, search_steps, max_iter, bounds):
    x0 = x.astype(np.float64).reshape(-1)
    labels = np.array([target], dtype=np.int64)
    lo, hi = (None, None) if bounds is None else \
        (end.reshape(-1) for end in bounds.full(x.shape))  # per input value
    box = None if bounds is None else list(zip(lo, hi))

    def objective(v, c):
        xv = v.reshape((1,) + x.shape).astype(net.dtype)
        loss, grad, _ = loss_grad_logits(net, xv, labels)
        r = v - x0
        return (c * float(r @ r) + float(loss[0]),
                2 * c * r + grad.reshape(-1).astype(np.float64))

    best, best_l2 = x.copy(), math.inf
    succeeding, failing = None, None  # the largest c that reached the target, the smallest not
    for _ in range(search_steps):
        result = minimize(objective, x0.copy(), args=(c,), jac=True, method="L-BFGS-B",
                          bounds=box, options={"maxiter": max_iter})
        v = result.x if bounds is None else np.clip(result.x, lo, hi)
        xv = v.reshape((1,) + x.shape).astype(net.dtype)
        ok = int(net.logits(xv).argmax(axis=1)[0]) == target
        if ok:
            l2 = float(np.linalg.norm(xv.reshape(-1).astype(np.float64) - x0))
            if l2 < best_l2:
                best, best_l2 = xv[0], l2
            succeeding = c if succeeding is None else max(succeeding, c)
        else:
            failing = c if failing is None else min(failing, c)
        if failing is None:
            c *= 10
        elif succeeding is None:
            c /= 10
        else:
            c = math.sqrt(succeeding * failing)
    return best
