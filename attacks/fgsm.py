"""The fast gradient sign method (FGSM), untargeted and targeted.

Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015:

    x' = clip(x + eps · sign(∇ₓ L(x, y)))          (untargeted: move up the loss of y)
    x' = clip(x − eps · sign(∇ₓ L(x, t)))          (targeted: move down the loss of target t)

The gradient is the engine's own (``Net.loss_and_input_grad``), on whatever weights the net has.
"""

import numpy as np

from ._common import check_clip, check_eps, check_inputs


def fgsm(net, x, y=None, eps=0.1, *, clip=(0.0, 1.0), targeted=False, batch_size=256):
    """Adversarial examples by one signed-gradient step of size ``eps`` (L∞ radius).

    Parameters
    ----------
    net : robustcnn Net, run in eval mode.
    x : (N, …) inputs inside ``clip``.
    y : (N,) labels; the true labels, or (if None) the net's own predictions, which avoids label
        leaking. With ``targeted=True``, the target classes.
    eps : step size in the units of the data (pixels in [0, 1] → eps 0.1 is 10% of the range).
        ``eps == 0`` returns a copy of ``x``.
    clip : (low, high) valid range applied after the step, or None for no clipping.
    targeted : step towards ``y`` instead of away from it.
    batch_size : examples per gradient evaluation.

    Returns the adversarial inputs, same shape and dtype as the net. Not guaranteed: that the
    label changes (FGSM is a single linearised step), or any optimality of the perturbation.
    Where the gradient is exactly zero the pixel is left unchanged (sign(0) = 0).
    """
    name = "fgsm"
    eps = check_eps(eps, name)
    x, y = check_inputs(net, x, y, name)
    bounds = check_clip(clip, x, name)
    if batch_size < 1:
        raise ValueError(f"{name}: batch_size must be >= 1, got {batch_size}")
    if eps == 0:
        return x.copy()
    direction = -1.0 if targeted else 1.0
    out = np.empty_like(x)
    for lo in range(0, len(x), batch_size):
        xb = x[lo:lo + batch_size]
        _, grad = net.loss_and_input_grad(xb, y[lo:lo + batch_size])
        step = xb + (direction * eps) * np.sign(grad)
        out[lo:lo + batch_size] = step if bounds is None else np.clip(step, *bounds)
    return out
