"""Random noise of a given norm: the baseline every attack should beat at the same eps.

Not an attack from a paper; the control that shows an attack's effect is not just the
perturbation's size (e.g. Szegedy et al. 2014 compare with Gaussian noise of the same norm):

    L∞:  x' = clip(x + eps · s),   s uniform in {−1, +1}ᴰ        (a random FGSM-sized step)
    L2:  x' = clip(x + eps · u),   u uniform on the unit L2 sphere

Both are ``eps · normalize(n, norm)`` for a standard normal n (``attacks.norms``): its sign
for L∞, its direction for L2. The L∞ noise is the sign kind, not uniform in [−eps, eps], so
it spends the whole budget on every pixel as FGSM does.
"""

import numpy as np

from ._common import (check_clip, check_clip_pair, check_eps, check_inputs, check_int,
                      check_progress, check_untargeted, clip_to)
from .norms import check_norm, normalize


def random_noise(net, x, y=None, eps=0.1, *, norm="linf", clip=(0.0, 1.0), targeted=False,
                 batch_size=256, seed=0, progress=None):
    """x plus random noise of norm eps (see the module docstring), clipped to the range.

    Parameters
    ----------
    net : robustcnn ``Net``; only its dtype and input shape are used (the noise ignores the
        model).
    x : (N, …) inputs inside ``clip``.
    y : (N,) labels, checked if given but not used.
    eps : the noise's norm in data units; ``eps == 0`` returns a copy of x.
    norm : "linf" (±eps on every value) or "l2" (a uniform direction of length eps).
    clip : (low, high) valid range, or None.
    targeted : must be False.
    batch_size : checked, unused (no pass through the net).
    seed : the noise is drawn from ``np.random.default_rng(seed)`` over all of x at once
        (standard normals of x's shape), so it does not depend on the batch size.
    progress : None, or called once with N when the noise is drawn (a progress bar).

    Returns the net's dtype; ‖x' − x‖ ≤ eps (= eps before clipping).
    Not guaranteed: anything about the label — that is the point of a baseline.
    """
    name = "random_noise"
    eps = check_eps(eps, name)
    norm = check_norm(norm, name)
    batch_size = check_int(batch_size, "batch_size", name)
    check_progress(progress, name)
    check_untargeted(targeted, name, "noise does not aim at any class")
    check_clip_pair(clip, name)
    x, _ = check_inputs(net, x, y, name, predict=False)
    bounds = check_clip(clip, x, name)
    if eps == 0:
        return x.copy()
    rng = np.random.default_rng(seed)
    noise = eps * normalize(rng.standard_normal(size=x.shape), norm)
    out = clip_to(x + noise.astype(x.dtype), bounds)
    if progress is not None:
        progress(len(x))
    return out
