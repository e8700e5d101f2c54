"""The fast gradient sign method (FGSM): the fast gradient method under L∞ (see ``fgm``).

Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015:

    x' = clip(x + eps · sign(∇ₓ L(x, y)))          (untargeted: move up the loss of y)
    x' = clip(x − eps · sign(∇ₓ L(x, t)))          (targeted: move down the loss of target t)

The gradient is the engine's own (``Net.forward_for_backward`` + ``Net.backward``), on whatever
weights the net has.
"""

from .fgm import fast_gradient


def fgsm(net, x, y=None, eps=0.1, *, clip=(0.0, 1.0), targeted=False, batch_size=256, seed=0,
         progress=None):
    """Adversarial examples by one signed-gradient step of size ``eps`` (L∞ radius).

    Goodfellow et al. 2015, "Explaining and Harnessing Adversarial Examples" (ICLR).

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
    seed : unused (deterministic); accepted so every attack takes it.
    progress : None, or called with the number of examples just finished after each batch
        of the outer loop (a progress bar); the result does not depend on it.

    Returns the adversarial inputs, same shape and dtype as the net. Not guaranteed: that the
    label changes (FGSM is a single linearised step), or any optimality of the perturbation.
    Where the gradient is exactly zero the pixel is left unchanged (sign(0) = 0).
    """
    return fast_gradient("fgsm", net, x, y, eps, "linf", clip, targeted, batch_size, progress)
