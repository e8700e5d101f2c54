"""The Jacobian-based saliency map attack (JSMA), increasing features two at a time.

Papernot, McDaniel, Jha, Fredrikson, Celik & Swami, "The Limitations of Deep Learning in
Adversarial Settings", IEEE EuroS&P 2016, Algorithms 2–3. For the target t and a search
domain Γ of features that may still increase, pick the pair

    (p, q) = argmax  α_pq · |β_pq|   over p < q in Γ with α_pq > 0 and β_pq < 0,
    α_pq = Σ_{i∈{p,q}} ∂z_t/∂x_i,     β_pq = Σ_{i∈{p,q}} Σ_{j≠t} ∂z_j/∂x_i,

raise both by θ (clipped to the range), drop them from Γ, and repeat until the net predicts t
or a fraction γ of the features has been changed. The derivatives are those of the logits z
(the variant Carlini & Wagner 2017 call JSMA-Z). Σ_{j≠t} ∇z_j is one gradient, of the sum of
the other logits, so an iteration costs two backward passes per example, not one per class.
"""

import numpy as np
from numba import njit

from ..engine._jit import JIT
from ._common import (batch_slices, check_clip, check_clip_pair, check_eps, check_float,
                      check_inputs, check_int, check_progress, logit_grads, runner_up)


@njit(**JIT)
def best_pairs(alpha, beta, domain, pairs):
    # alpha, beta: (A, D) float64 target / other-classes derivatives; domain: (A, D) bool;
    # pairs: (A, 2) int64 out, the (p, q) maximising −(α_p + α_q)(β_p + β_q) with
    # α_p + α_q > 0 and β_p + β_q < 0, or (−1, −1) when no pair qualifies. O(|Γ|²) per row.
    A, D = alpha.shape
    idx = np.empty(D, dtype=np.int64)
    for a in range(A):
        count = 0
        for i in range(D):
            if domain[a, i]:
                idx[count] = i
                count += 1
        best = 0.0
        bp = -1
        bq = -1
        for i in range(count):
            p = idx[i]
            ap = alpha[a, p]
            bp_ = beta[a, p]
            for j in range(i + 1, count):
                q = idx[j]
                s_a = ap + alpha[a, q]
                s_b = bp_ + beta[a, q]
                if s_a > 0.0 and s_b < 0.0:
                    score = -s_a * s_b
                    if score > best:
                        best = score
                        bp = p
                        bq = q
        pairs[a, 0] = bp
        pairs[a, 1] = bq


def jsma(net, x, y=None, eps=None, *, gamma=0.145, clip=(0.0, 1.0), targeted=False,
         batch_size=256, seed=0, progress=None):
    """Adversarial examples that change few features (L0), by the saliency map.

    Papernot et al. 2016, "The Limitations of Deep Learning in Adversarial Settings"
    (IEEE EuroS&P).

    Parameters
    ----------
    net : robustcnn ``Net`` (eval mode, any weight formats); derivatives of its logits.
    x : (N, …) inputs inside ``clip``.
    y : with ``targeted=True`` the (N,) target classes (required). Untargeted, the labels to
        leave (None: the net's predictions) and the target of each example is the most likely
        other class of the clean input (a convention of this library, not of the paper).
    eps : how far each chosen feature is raised, in data units (the paper's θ times the
        range): None (default) raises it to the top of ``clip`` (θ = +1); a number caps the
        L∞ norm at eps. ``eps == 0`` returns a copy of x. Requires ``clip`` when None.
    gamma : the largest fraction of the features that may change (the paper's Υ, 14.5% on
        MNIST): at most floor(γ · D / 2) pairs.
    clip : (low, high) valid range (None: unbounded features; then ``eps`` must be given).
    targeted : reach ``y`` instead of the runner-up class.
    batch_size : rows per forward/backward pass (2 rows per example).
    seed : unused (deterministic); accepted so every attack takes it.
    progress : None, or called with the number of examples just finished after each batch
        of the outer loop (a progress bar); the result does not depend on it.

    Cost per iteration: one forward pass and two forward + backward passes per example, and the
    O(|Γ|²) pair search (≈ 300 000 pairs for 28×28 inputs). Examples stop at success.

    Returns the net's dtype; features only increase. Not guaranteed: success (the attack stops
    when no pair both raises the target and lowers the others, or at the γ budget).
    """
    name = "jsma"
    eps = check_eps(eps, name, allow_none=True)
    gamma = check_float(gamma, "gamma", name, low=0, high=1, low_open=True)
    batch_size = check_int(batch_size, "batch_size", name)
    check_progress(progress, name)
    bounds = check_clip_pair(clip, name)
    if eps is None and bounds is None:
        raise ValueError(f"{name}: with clip=None the step eps must be given (θ = +1 means "
                         f"'to the top of the range')")
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
    per_batch = max(1, batch_size // 2)
    for s in batch_slices(len(x), per_batch, progress):
        out[s] = _jsma_batch(net, x[s], target[s], eps, gamma, bounds, batch_size)
    return out


def _jsma_batch(net, x, target, eps, gamma, bounds, max_rows):
    n, k = len(x), net.num_classes
    d = int(np.prod(x.shape[1:]))
    high = np.inf if bounds is None else bounds.full(x.shape[1:])[1].reshape(-1)  # per feature
    x_adv = x.copy()
    flat = x_adv.reshape(n, d)
    domain = flat < high
    coeffs = np.zeros((n, 2, k))
    coeffs[np.arange(n), 0, target] = 1.0  # ∇ z_t
    coeffs[:, 1, :] = 1.0
    coeffs[np.arange(n), 1, target] = 0.0  # ∇ Σ_{j≠t} z_j
    max_pairs = int(gamma * d) // 2
    stuck = np.zeros(n, dtype=bool)
    for _ in range(max_pairs):
        pred = net.logits(x_adv, batch_size=max_rows).argmax(axis=1)
        active = np.flatnonzero((pred != target) & ~stuck & (domain.sum(axis=1) >= 2))
        if not active.size:
            break
        grads, _ = logit_grads(net, x_adv[active], coeffs[active], max_rows=max_rows)
        g = grads.reshape(len(active), 2, d).astype(np.float64)
        pairs = np.empty((len(active), 2), dtype=np.int64)
        best_pairs(np.ascontiguousarray(g[:, 0]), np.ascontiguousarray(g[:, 1]),
                   np.ascontiguousarray(domain[active]), pairs)
        found = pairs[:, 0] >= 0
        stuck[active[~found]] = True
        rows, pairs = active[found], pairs[found]
        for col in (0, 1):
            p = pairs[:, col]
            top = high if np.ndim(high) == 0 else high[p]
            raised = flat[rows, p] + (top - flat[rows, p] if eps is None else eps)
            flat[rows, p] = np.minimum(raised, top)
            domain[rows, p] = False
    return x_adv
