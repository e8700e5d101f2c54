"""The fast gradient method (FGM) under the L∞ norm (= FGSM) or the L2 norm.

Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015
(the sign step); the L2 variant scales the gradient to unit L2 norm instead (Miyato et al.
2016; CleverHans' ``fast_gradient_method``):

    x' = clip(x + eps · normalize(∇ₓ L(x, y)))        (untargeted: move up the loss of y)
    x' = clip(x − eps · normalize(∇ₓ L(x, t)))        (targeted: move down the loss of t)

with normalize = sign for L∞ and g / ‖g‖₂ for L2 (``attacks.norms``). ``fgm_step`` is the
single step the iterative attacks (BIM, ILLC, PGD) compose.
"""

import numpy as np

from ._common import (batch_slices, check_clip, check_clip_pair, check_eps, check_int,
                      check_inputs, check_progress, clip_to, loss_grad_logits)
from .norms import check_norm, normalize


def fgm_step(net, x, y, step, norm, targeted, bounds):
    """One fast-gradient step of size ``step`` on a batch whose arguments are already checked.

    → (x', loss at x (N,), logits at x (N, K)). ``norm`` is "linf" or "l2"; ``bounds`` a
    (low, high) pair or None.
    """
    loss, grad, logits = loss_grad_logits(net, x, y)
    signed = -step if targeted else step
    x_next = x + (signed * normalize(grad, norm)).astype(x.dtype, copy=False)
    return clip_to(x_next, bounds), loss, logits


def fgm(net, x, y=None, eps=0.1, *, norm="linf", clip=(0.0, 1.0), targeted=False,
        batch_size=256, seed=0, progress=None):
    """Adversarial examples by one normalised gradient step of size ``eps``.

    Goodfellow et al. 2015, "Explaining and Harnessing Adversarial Examples" (ICLR).

    Parameters
    ----------
    net : robustcnn ``Net``; run in eval mode, on whatever weight formats its layers use.
    x : (N, …) inputs inside ``clip``; cast to the net's dtype.
    y : (N,) integer labels to move away from; None (the default) uses the net's own
        predictions, which avoids label leaking (Kurakin et al. 2017). With ``targeted=True``,
        the target classes.
    eps : step length in data units, in the chosen norm (pixels in [0, 1] → eps 0.1 is 10% of
        the range per pixel for L∞). ``eps == 0`` returns a copy of ``x``.
    norm : "linf" (sign of the gradient: FGSM) or "l2" (gradient / ‖gradient‖₂); also np.inf, 2.
    clip : (low, high) valid range applied after the step, or None for no clipping.
    targeted : step towards ``y`` (down its loss) instead of away from it.
    batch_size : examples per forward/backward pass.
    seed : unused (the attack is deterministic); accepted so every attack takes it.
    progress : None, or called with the number of examples just finished after each batch
        of the outer loop (a progress bar); the result does not depend on it.

    Returns the adversarial inputs, same shape as ``x`` and the net's dtype; ‖x' − x‖ ≤ eps in
    the chosen norm and x' inside ``clip``.

    Not guaranteed: that the label changes (one linearised step), or any optimality of the
    perturbation. Where the gradient is exactly zero the input is left unchanged (sign(0) = 0;
    a zero L2 gradient gives no step); clipping shortens the step, so ‖x' − x‖ may be < eps.
    """
    return fast_gradient("fgm", net, x, y, eps, norm, clip, targeted, batch_size, progress)


def fast_gradient(name, net, x, y, eps, norm, clip, targeted, batch_size, progress=None):
    """``fgm``'s body, with the attack's name for the error messages (fgm, fgsm)."""
    eps = check_eps(eps, name)
    norm = check_norm(norm, name)
    batch_size = check_int(batch_size, "batch_size", name)
    check_progress(progress, name)
    check_clip_pair(clip, name)
    x, y = check_inputs(net, x, y, name)
    bounds = check_clip(clip, x, name)
    if eps == 0:
        return x.copy()
    out = np.empty_like(x)
    for s in batch_slices(len(x), batch_size, progress):
        out[s], _, _ = fgm_step(net, x[s], y[s], eps, norm, targeted, bounds)
    return out
