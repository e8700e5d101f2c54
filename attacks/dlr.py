"""The difference of logits ratio (DLR) loss and its targeted form, with their logit gradients.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, §4 (eq. 6 and the targeted DLR of §4.1). With z the logits
sorted as z_π1 ≥ z_π2 ≥ z_π3 ≥ …:

    DLR(z, y)      = −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3)
    DLR_t(z, y, t) = −(z_y − z_t) / (z_π1 − (z_π3 + z_π4) / 2)

Both are invariant to shifting and to (positive) rescaling of the logits, so a softmax-saturated
or temperature-scaled net gives the same attack as its plain logits; DLR > 0 once y no longer
wins, DLR_t > 0 once t beats y. The attacks maximise them. As in the authors' code, the
denominators get + 1e-12 (a net whose top logits tie everywhere would divide by zero).

Each function returns (loss (N,), dloss/dlogits (N, K)) in float64; the gradient is exact where
the sorted order has no ties, one of the subgradients where it has (ties go to the lower class
index: ``np.argsort(-z, kind="stable")``).

DLR needs at least 3 classes. The targeted DLR needs 4 for z_π4; with 3 classes it uses
z_π1 − z_π3 (the untargeted DLR's scale), a defined extension the paper does not cover.
"""

import numpy as np

_TINY = 1e-12


def _ranked(logits):
    """float64 logits (N, K) and the class indices by decreasing logit (N, K), ties to the
    lower index."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"dlr: logits must be (N, K), got shape {z.shape}")
    return z, np.argsort(-z, axis=1, kind="stable")


def dlr(logits, y):
    """The untargeted DLR loss and its gradient w.r.t. the logits → (loss (N,), dlogits (N, K)).

    DLR = −(z_y − z_o) / (z_π1 − z_π3 + 1e-12) with o = argmax_{i≠y} z_i; its gradient is
    −(e_y − e_o) / d + (z_y − z_o) / d² · (e_π1 − e_π3) with d the denominator.
    """
    z, order = _ranked(logits)
    n, k = z.shape
    if k < 3:
        raise ValueError(f"dlr: needs at least 3 classes (z_π3), got {k}")
    rows = np.arange(n)
    y = np.asarray(y, dtype=np.int64)
    top, third = order[:, 0], order[:, 2]
    other = np.where(top == y, order[:, 1], top)  # the strongest class other than y
    num = z[rows, y] - z[rows, other]
    den = z[rows, top] - z[rows, third] + _TINY
    loss = -num / den
    grad = np.zeros_like(z)
    np.add.at(grad, (rows, y), -1.0 / den)
    np.add.at(grad, (rows, other), 1.0 / den)
    np.add.at(grad, (rows, top), num / den ** 2)
    np.add.at(grad, (rows, third), -num / den ** 2)
    return loss, grad


def dlr_targeted(logits, y, target):
    """The targeted DLR loss and its gradient w.r.t. the logits → (loss (N,), dlogits (N, K)).

    DLR_t = −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e-12) (with 3 classes: z_π1 − z_π3);
    its gradient is −(e_y − e_t) / d + (z_y − z_t) / d² · ∂d/∂z.
    """
    z, order = _ranked(logits)
    n, k = z.shape
    if k < 3:
        raise ValueError(f"dlr_targeted: needs at least 3 classes, got {k}")
    rows = np.arange(n)
    y = np.asarray(y, dtype=np.int64)
    t = np.asarray(target, dtype=np.int64)
    top = order[:, 0]
    num = z[rows, y] - z[rows, t]
    grad = np.zeros_like(z)
    if k >= 4:
        third, fourth = order[:, 2], order[:, 3]
        den = z[rows, top] - 0.5 * (z[rows, third] + z[rows, fourth]) + _TINY
        np.add.at(grad, (rows, third), -0.5 * num / den ** 2)
        np.add.at(grad, (rows, fourth), -0.5 * num / den ** 2)
    else:
        third = order[:, 2]
        den = z[rows, top] - z[rows, third] + _TINY
        np.add.at(grad, (rows, third), -num / den ** 2)
    np.add.at(grad, (rows, top), num / den ** 2)
    np.add.at(grad, (rows, y), -1.0 / den)
    np.add.at(grad, (rows, t), 1.0 / den)
    return -num / den, grad
