"""DeepFool: the minimal L2 perturbation to the nearest decision boundary, by linearisation.

Moosavi-Dezfooli, Fawzi & Frossard, "DeepFool: a simple and accurate method to fool deep
neural networks", CVPR 2016, Algorithm 2 (multi-class). At the current point x_i, with k₀ the
original class and f_k = z_k − z_{k₀}, w_k = ∇ₓ f_k for each candidate class k ≠ k₀:

    l = argmin_k |f_k| / ‖w_k‖₂,      r_i = (|f_l| + 1e-4) / ‖w_l‖₂² · w_l
    r = Σ_i r_i,                      x_{i+1} = clip(x + (1 + overshoot) · r)

until the label of x_{i+1} is no longer k₀. The 1e-4 and the overshoot (0.02) are the
authors' reference code's; candidates are the ``candidates`` classes with the highest clean
logits (the reference code's ``num_classes = 10``).
"""

import numpy as np

from ._common import (batch_slices, check_clip, check_clip_pair, check_eps, check_float,
                      check_inputs, check_int, check_progress, check_untargeted, clip_to,
                      logit_grads)
from .norms import project


def deepfool(net, x, y=None, eps=None, *, candidates=10, overshoot=0.02, max_iter=50,
             clip=(0.0, 1.0), targeted=False, batch_size=256, seed=0, progress=None):
    """The smallest L2 perturbation DeepFool finds that changes the label, per example.

    Moosavi-Dezfooli et al. 2016, "DeepFool: a simple and accurate method to fool deep neural
    networks" (CVPR).

    Parameters
    ----------
    net : robustcnn ``Net`` (eval mode, any weight formats). Uses the logits (before a final
        Softmax).
    x : (N, …) inputs inside ``clip``.
    y : (N,) the classes k₀ to move away from; None (default) uses the net's predictions.
        An example whose prediction already differs from y[n] is returned unchanged.
    eps : None (default): unbounded, the attack's own minimal perturbation. A number caps the
        final L2 norm: a longer perturbation is scaled down to ‖x' − x‖₂ = eps (which may undo
        the attack). ``eps == 0`` returns a copy of ``x``.
    candidates : classes considered, the original one included: the (candidates − 1) others
        with the highest clean logits (default 10; capped at the number of classes; >= 2).
    overshoot : the final perturbation is (1 + overshoot) times the accumulated one (0.02).
    max_iter : iterations per example (default 50; the reference code's).
    clip : (low, high) valid range applied to every iterate, or None (the paper's setting).
    targeted : must be False (DeepFool is untargeted).
    batch_size : rows per forward/backward pass: each iteration runs (candidates − 1) backward
        passes per example, as one batch of repeated examples (``logit_grads``).
    seed : unused (deterministic); accepted so every attack takes it.
    progress : None, or called with the number of examples just finished after each batch
        of the outer loop (a progress bar); the result does not depend on it.

    Returns the perturbed inputs in the net's dtype. Examples stop being updated as soon as
    their label changes (per-example early stopping).

    Not guaranteed: a minimal perturbation (DeepFool linearises; it approximates the
    distance to the nearest boundary and is exact only for affine classifiers), or success
    within ``max_iter`` iterations, with clipping, or with the eps cap. An example whose logit
    differences all have a zero gradient cannot move and is returned as it is.
    """
    name = "deepfool"
    eps = check_eps(eps, name, allow_none=True)
    candidates = check_int(candidates, "candidates", name, minimum=2)
    overshoot = check_float(overshoot, "overshoot", name, low=0)
    max_iter = check_int(max_iter, "max_iter", name)
    batch_size = check_int(batch_size, "batch_size", name)
    check_progress(progress, name)
    check_untargeted(targeted, name, "DeepFool moves to the nearest boundary of any class")
    check_clip_pair(clip, name)
    if net.num_classes < 2:
        raise ValueError(f"{name}: needs a net with at least 2 classes")
    x, y = check_inputs(net, x, y, name)
    bounds = check_clip(clip, x, name)
    if eps == 0:
        return x.copy()
    out = x.copy()
    m = min(candidates, net.num_classes) - 1
    for s in batch_slices(len(x), batch_size, progress):
        out[s] = _deepfool_batch(net, x[s], y[s], m, overshoot, max_iter, bounds, batch_size)
    if eps is not None:
        out = clip_to(x + project(out - x, eps, "l2"), bounds)
    return out


def _deepfool_batch(net, x, y, m, overshoot, max_iter, bounds, max_rows):
    n, k = len(x), net.num_classes
    # The m other classes with the highest clean logits, per example.
    z0 = net.logits(x, batch_size=max_rows).astype(np.float64)
    z0[np.arange(n), y] = -np.inf
    others = np.argsort(-z0, axis=1, kind="stable")[:, :m]
    coeffs = np.zeros((n, m, k))
    rows = np.arange(n)[:, None]
    coeffs[rows, np.arange(m)[None, :], others] = 1.0
    coeffs[rows, np.arange(m)[None, :], y[:, None]] -= 1.0  # f_j = z_{others[j]} − z_y
    r_total = np.zeros(x.shape, dtype=np.float64)
    x_adv = x.copy()
    stuck = np.zeros(n, dtype=bool)
    for _ in range(max_iter):
        active = np.flatnonzero((net.logits(x_adv, batch_size=max_rows).argmax(axis=1) == y)
                                & ~stuck)
        if not active.size:
            break
        grads, logits = logit_grads(net, x_adv[active], coeffs[active], max_rows=max_rows)
        w = grads.reshape(len(active), m, -1).astype(np.float64)  # (A, m, D)
        f = np.einsum("amk,ak->am", coeffs[active], logits.astype(np.float64))
        w_norm = np.sqrt((w ** 2).sum(axis=2))
        with np.errstate(divide="ignore", invalid="ignore"):
            dist = np.where(w_norm > 0, np.abs(f) / w_norm, np.inf)
        best = dist.argmin(axis=1)
        pick = np.arange(len(active))
        cannot_move = ~np.isfinite(dist[pick, best])
        stuck[active[cannot_move]] = True
        wl = w[pick, best]
        wl_norm = np.where(cannot_move, 1.0, w_norm[pick, best])
        scale = np.where(cannot_move, 0.0, (np.abs(f[pick, best]) + 1e-4) / wl_norm ** 2)
        r_total[active] += (scale[:, None] * wl).reshape((len(active),) + x.shape[1:])
        x_adv[active] = clip_to((x[active] + (1 + overshoot) * r_total[active]).astype(x.dtype),
                                bounds)
    return x_adv
