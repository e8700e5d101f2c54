"""The basic iterative method (BIM, "iterative FGSM") and the iterative least-likely class
method (ILLC).

Kurakin, Goodfellow & Bengio, "Adversarial examples in the physical world", ICLR workshop 2017
(arXiv:1607.02533), section 2.2–2.3:

    x₀ = x,   x_{k+1} = Clip_{x,eps}( x_k + α · sign(∇ₓ L(x_k, y)) )          (BIM)
    x₀ = x,   x_{k+1} = Clip_{x,eps}( x_k − α · sign(∇ₓ L(x_k, y_LL)) )       (ILLC)

where Clip_{x,eps} keeps every pixel within eps of x and inside the valid range, and
y_LL = argmin_k p(k | x) is the clean input's least-likely class. The paper's parameters, in
0–255 pixel units: α = 1 and min(eps + 4, 1.25 · eps) iterations. Each iteration is one
``fgm_step`` followed by the norm's ``project``; PGD (``attacks.pgd``) is the same loop from a
random start.
"""

import math

import numpy as np

from ._common import (Bounds, batch_slices, check_clip, check_clip_pair, check_eps, check_float,
                      check_inputs, check_int, check_progress, check_untargeted, clip_to,
                      cross_entropy, fooled)
from .fgm import fgm_step
from .norms import project


def projected_iterations(net, x, y, start, *, eps, alpha, steps, norm, targeted, bounds):
    """``steps`` fast-gradient steps of size ``alpha`` from ``start``, each projected back onto
    the eps-ball around ``x`` (norm ``norm``) and the valid range. One batch, checked arguments.

    → (x_adv, loss at x_adv (N,), fooled at x_adv (N,) bool, fooled at any iterate (N,) bool).
    Every step runs for every example (as in the papers); success is tracked, not acted on.
    """
    x_adv = start
    ever = np.zeros(len(x), dtype=bool)
    for _ in range(steps):
        x_adv, _, logits = fgm_step(net, x_adv, y, alpha, norm, targeted, bounds)
        ever |= fooled(logits, y, targeted)  # the iterate the step started from
        x_adv = clip_to(x + project(x_adv - x, eps, norm), bounds)
    logits = net.logits(x_adv, batch_size=max(len(x_adv), 1))
    success = fooled(logits, y, targeted)
    return x_adv, cross_entropy(logits, y), success, ever | success


def kurakin_defaults(eps, bounds):
    """The paper's α and iteration count for an eps in data units → (alpha, steps).

    With e = eps in 0–255 pixel levels of the clip range (of a range of 1 when clip is None;
    of the widest channel's range when the bounds are per channel): α = one level,
    steps = ceil(min(e + 4, 1.25 · e)), at least 1.
    """
    span = 1.0 if bounds is None else Bounds(*bounds).span
    levels = eps * 255.0 / span
    alpha = span / 255.0
    steps = max(1, int(math.ceil(min(levels + 4.0, 1.25 * levels) - 1e-9)))
    return alpha, steps


def _check_iterative(name, eps, alpha, steps, batch_size, clip, progress):
    eps = check_eps(eps, name)
    bounds = check_clip_pair(clip, name)
    default_alpha, default_steps = kurakin_defaults(eps, bounds)
    alpha = default_alpha if alpha is None else check_float(alpha, "alpha", name, low=0,
                                                            low_open=True)
    steps = default_steps if steps is None else check_int(steps, "steps", name)
    batch_size = check_int(batch_size, "batch_size", name)
    check_progress(progress, name)
    return eps, alpha, steps, batch_size


def bim(net, x, y=None, eps=8 / 255, *, alpha=None, steps=None, clip=(0.0, 1.0), targeted=False,
        batch_size=256, seed=0, progress=None):
    """The basic iterative method: repeated FGSM steps, clipped to the L∞ eps-ball every step.

    Kurakin, Goodfellow & Bengio 2017, "Adversarial examples in the physical world".

    Parameters
    ----------
    net : robustcnn ``Net`` (eval mode, any weight formats).
    x : (N, …) inputs inside ``clip``.
    y : (N,) labels to move away from; None (default) uses the net's predictions (no label
        leaking). With ``targeted=True``, the target classes.
    eps : L∞ radius in data units (8/255 by default). ``eps == 0`` returns a copy of ``x``.
    alpha : step size in data units; default one pixel level, (high − low) / 255 (Kurakin's
        α = 1), or 1/255 when clip is None.
    steps : number of iterations; default Kurakin's ceil(min(e + 4, 1.25 e)) with e = eps in
        pixel levels (e.g. eps = 8/255 → 10 steps; eps = 0.3 on [0, 1] → 81 steps).
    clip : (low, high) valid range, applied after every step, or None.
    targeted : step towards ``y`` (down its loss).
    batch_size : examples per forward/backward pass.
    seed : unused (deterministic); accepted so every attack takes it.
    progress : None, or called with the number of examples just finished after each batch
        of the outer loop (a progress bar); the result does not depend on it.

    Returns the last iterate, the net's dtype: ‖x' − x‖∞ ≤ eps, x' inside ``clip``.

    Not guaranteed: success (the loss is only locally increased), or that the last iterate is
    the most adversarial one — as in the paper every example runs all steps and the last
    iterate is returned, even if an earlier one was misclassified and the last is not.
    """
    name = "bim"
    eps, alpha, steps, batch_size = _check_iterative(name, eps, alpha, steps, batch_size, clip,
                                                     progress)
    x, y = check_inputs(net, x, y, name)
    bounds = check_clip(clip, x, name)
    if eps == 0:
        return x.copy()
    out = np.empty_like(x)
    for s in batch_slices(len(x), batch_size, progress):
        out[s], _, _, _ = projected_iterations(net, x[s], y[s], x[s].copy(), eps=eps, alpha=alpha,
                                               steps=steps, norm="linf", targeted=targeted,
                                               bounds=bounds)
    return out


def illc(net, x, y=None, eps=8 / 255, *, alpha=None, steps=None, clip=(0.0, 1.0),
         targeted=False, batch_size=256, seed=0, progress=None):
    """The iterative least-likely class method: BIM targeted at each input's least-likely class.

    Kurakin, Goodfellow & Bengio 2017, "Adversarial examples in the physical world", eq. (3).

    Parameters
    ----------
    net, x, eps, alpha, steps, clip, batch_size, seed, progress : as for ``bim``.
    y : (N,) labels, checked but not used: the target is y_LL = argmin of the clean logits,
        whatever the labels are. Accepted so every attack takes the same arguments.
    targeted : must be False; ILLC chooses its own targets.

    Returns the last iterate (‖x' − x‖∞ ≤ eps, inside ``clip``). Success is usually measured as
    the label changing, not as reaching y_LL.

    Not guaranteed: reaching y_LL (it is the hardest target by construction), or that the
    label changes. Ties for the least-likely class go to the lowest class index.
    """
    name = "illc"
    eps, alpha, steps, batch_size = _check_iterative(name, eps, alpha, steps, batch_size, clip,
                                                     progress)
    check_untargeted(targeted, name, "it targets the least-likely class")
    x, y = check_inputs(net, x, y, name)
    check_clip(clip, x, name)
    if eps == 0:
        return x.copy()
    least_likely = net.logits(x, batch_size=batch_size).argmin(axis=1).astype(np.int64)
    return bim(net, x, least_likely, eps, alpha=alpha, steps=steps, clip=clip, targeted=True,
               batch_size=batch_size, progress=progress)
