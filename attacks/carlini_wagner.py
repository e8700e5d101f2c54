"""The Carlini & Wagner L2 attack.

Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017,
section V.A. With the change of variables x' = mid + half · tanh(w) (the box [low, high] =
[mid − half, mid + half]), minimise over w with Adam

    ‖x' − x‖₂² + c · max(margin(x') + κ, 0)
    margin = z_y − max_{k≠y} z_k                 (untargeted)
    margin = max_{k≠t} z_k − z_t                 (targeted)

on the logits z, for each example a binary search over c: c grows ×10 until an attack
succeeds, then bisects between the largest failing and the smallest succeeding c. The result
is the successful x' with the smallest L2 distance over the whole search. The gradient of the
objective w.r.t. x' is 2 (x' − x) plus the margin's, from ``Net.backward(of="logits")``.
"""

import numpy as np

from ._common import (batch_slices, check_clip, check_clip_pair, check_eps, check_float,
                      check_inputs, check_int, check_progress, clip_to, logits_and_grad,
                      margin)
from .norms import project

# Adam's constants (Kingma & Ba 2015), as in Carlini's reference code (TensorFlow's defaults).
_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8


def carlini_wagner_l2(net, x, y=None, eps=None, *, confidence=0.0, initial_const=1e-3,
                      binary_search_steps=9, max_iter=1000, learning_rate=1e-2, abort_early=True,
                      clip=(0.0, 1.0), targeted=False, batch_size=256, seed=0, progress=None):
    """The smallest-L2 adversarial example C&W's optimisation finds, per example.

    Carlini & Wagner 2017, "Towards Evaluating the Robustness of Neural Networks" (IEEE S&P).

    Parameters
    ----------
    net : robustcnn ``Net`` (eval mode, any weight formats); the margin uses its logits (before
        a final Softmax), as the paper's Z.
    x : (N, …) inputs inside ``clip``.
    y : (N,) labels to move away from; None (default) uses the net's predictions (no label
        leaking). With ``targeted=True``, the target classes.
    eps : None (default): unbounded. A number caps the final L2 norm: a longer perturbation is
        scaled down to ‖x' − x‖₂ = eps (which may undo it). ``eps == 0`` returns a copy of x.
    confidence : κ ≥ 0, the logit margin a success must have (0: just across the boundary).
    initial_const : the first c of every example's search (1e-3, the paper's code).
    binary_search_steps : values of c tried per example (9, the paper's code).
    max_iter : Adam steps per value of c (default 1000; the paper's code uses 10 000).
    learning_rate : Adam's step size (1e-2, the paper's code), in the tanh variable w: near x a
        step moves x' by about learning_rate · (high − low) / 2, which bounds the precision
        of the distance found (≈ 0.005 for [0, 1]; coarser for boxes much wider than the data).
    abort_early : stop optimising an example for the current c when its objective has not
        fallen by 0.01% over the last max_iter / 10 steps (the paper's test, applied per
        example instead of per batch).
    clip : (low, high), the box the tanh change of variables enforces; None optimises x'
        directly without a box.
    targeted : reach ``y`` (with margin κ) instead of leaving it.
    batch_size : examples optimised together (rows per forward/backward pass).
    seed : unused (deterministic); accepted so every attack takes it.
    progress : None, or called with the number of examples just finished after each batch
        of the outer loop (a progress bar); the result does not depend on it.

    Returns the net's dtype. An example for which no c succeeded is returned unchanged (x).

    Not guaranteed: the minimal perturbation (a local, non-convex optimisation), or success.
    With a box, x' = mid + half · tanh(w) reproduces untouched pixels only up to ~1e-6 of the
    range, so an unmodified pixel may differ from x by that much.
    """
    name = "carlini_wagner_l2"
    eps = check_eps(eps, name, allow_none=True)
    confidence = check_float(confidence, "confidence", name, low=0)
    initial_const = check_float(initial_const, "initial_const", name, low=0, low_open=True)
    binary_search_steps = check_int(binary_search_steps, "binary_search_steps", name)
    max_iter = check_int(max_iter, "max_iter", name)
    learning_rate = check_float(learning_rate, "learning_rate", name, low=0, low_open=True)
    batch_size = check_int(batch_size, "batch_size", name)
    check_progress(progress, name)
    check_clip_pair(clip, name)
    x, y = check_inputs(net, x, y, name)
    bounds = check_clip(clip, x, name)
    if eps == 0:
        return x.copy()
    out = x.copy()
    for s in batch_slices(len(x), batch_size, progress):
        out[s] = _cw_batch(net, x[s], y[s], targeted, confidence, initial_const,
                           binary_search_steps, max_iter, learning_rate, abort_early, bounds,
                           batch_size)
    if eps is not None:
        out = clip_to(x + project(out - x, eps, "l2"), bounds)
    return out


def _cw_batch(net, x, y, targeted, kappa, c_init, search_steps, max_iter, lr, abort_early,
              bounds, max_rows):
    n, k = len(x), net.num_classes
    x64 = x.astype(np.float64)
    shape = (-1,) + (1,) * (x.ndim - 1)
    if bounds is not None:
        mid, half = (bounds[0] + bounds[1]) / 2, (bounds[1] - bounds[0]) / 2
        w0 = np.arctanh(np.clip((x64 - mid) / half, -1, 1) * (1 - 1e-6))

        def to_x(w):
            return mid + half * np.tanh(w)

        def dx_dw(w):
            return half * (1 - np.tanh(w) ** 2)
    else:
        w0 = x64.copy()

        def to_x(w):
            return w

        def dx_dw(w):
            return 1.0

    c = np.full(n, c_init)
    lower, upper = np.zeros(n), np.full(n, 1e10)
    best_l2 = np.full(n, np.inf)
    best = x.copy()
    check_every = max(1, max_iter // 10)
    eye = np.eye(k)
    for _ in range(search_steps):
        w = w0.copy()
        m1, m2 = np.zeros_like(w), np.zeros_like(w)
        t = np.zeros(n)
        prev = np.full(n, np.inf)
        active = np.ones(n, dtype=bool)
        succeeded = np.zeros(n, dtype=bool)
        for it in range(max_iter):
            idx = np.flatnonzero(active)
            if not idx.size:
                break
            xa = to_x(w[idx])
            xa_net = xa.astype(x.dtype)
            ya, ca = y[idx], c[idx]
            state = {}

            def dlogits_of(z, rows, ya=ya, ca=ca, state=state):
                marg, other = margin(z, ya[rows], targeted)
                state.setdefault("margin", []).append(marg)
                on = (marg + kappa > 0) * ca[rows]
                real = eye[ya[rows]]
                strongest = eye[other]
                d = (strongest - real) if targeted else (real - strongest)
                return d * on[:, None]

            _, grad = logits_and_grad(net, xa_net, dlogits_of, max_rows=max_rows)
            marg = np.concatenate(state["margin"])
            diff = xa - x64[idx]
            l2sq = (diff.reshape(len(idx), -1) ** 2).sum(axis=1)
            loss = l2sq + ca * np.maximum(marg + kappa, 0)
            success = marg + kappa < 0
            improve = success & (l2sq < best_l2[idx])
            best_l2[idx[improve]] = l2sq[improve]
            best[idx[improve]] = xa_net[improve]
            succeeded[idx[success]] = True
            # Adam on w for the active examples.
            g = (2 * diff + grad.astype(np.float64)) * dx_dw(w[idx])
            t[idx] += 1
            m1[idx] = _BETA1 * m1[idx] + (1 - _BETA1) * g
            m2[idx] = _BETA2 * m2[idx] + (1 - _BETA2) * g * g
            tt = t[idx].reshape(shape)
            step = lr * np.sqrt(1 - _BETA2 ** tt) / (1 - _BETA1 ** tt)
            w[idx] -= step * m1[idx] / (np.sqrt(m2[idx]) + _ADAM_EPS)
            if abort_early and it % check_every == 0:
                stalled = loss > prev[idx] * 0.9999
                active[idx[stalled]] = False
                prev[idx] = loss
        # Binary search on c, per example.
        upper = np.where(succeeded, np.minimum(upper, c), upper)
        lower = np.where(succeeded, lower, np.maximum(lower, c))
        bracketed = upper < 1e9
        c = np.where(bracketed, (lower + upper) / 2, c * 10)
    return best
