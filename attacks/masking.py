"""Flags of gradient masking: signs that a gradient attack's robust accuracy overstates the
net's robustness.

Croce & Hein 2020 (AutoAttack's checks of the model before and during the evaluation) and
Athalye, Carlini & Wagner 2018 ("Obfuscated gradients give a false sense of security"):

    random_forward      the forward pass is random (outputs of 5 passes differ by > 1e-4):
                        gradients are of one sample only; evaluate with EOT
                        (``autoattack(version="rand")``)
    logits              the net's logits are probabilities (rows in [0, 1] summing to 1): the
                        cross-entropy's gradient vanishes where the softmax saturates
    zero_gradient       the input gradient at the start of APGD is exactly zero on more than 1%
                        of the points attacked: those points are invisible to gradient attacks
    square_vs_whitebox  Square, which uses no gradient, broke points that every white-box attack
                        of the ensemble missed (robust accuracy lower by > 0.2 pp)
    differentiable      some layer back-propagates a zero gradient almost everywhere (a
                        quantised activation): attack through it with BPDA (``attacks.bpda``)

Each flag is a ``sanity.Check`` (passed = no sign of masking). Not guaranteed: a net that raises
no flag may still mask its gradients in ways these do not test.
"""

import numpy as np

from .bpda import masked_layers
from .checks import Check

PASSES = 5
RANDOM_TOL = 1e-4
MAX_ZERO_SHARE = 0.01
MAX_SQUARE_GAIN = 0.002  # 0.2 percentage points


def check_random_forward(net, x, *, passes=PASSES, tol=RANDOM_TOL):
    """``passes`` forward passes of ``x`` in the net's own mode (``net.training``) agree to
    ``tol``. A net in train mode is put back as it was (its parameters and batch-norm
    statistics; its dropout generator moves on)."""
    saved = {k: v.copy() for k, v in net.state_dict().items()} if net.training else None
    try:
        outs = [np.asarray(net.forward(x), dtype=np.float64) for _ in range(passes)]
    finally:
        if saved is not None:
            net.load_state_dict(saved, source="check_random_forward")
    spread = max((float(np.abs(o - outs[0]).max(initial=0.0)) for o in outs[1:]), default=0.0)
    passed = spread <= tol
    mode = "train" if net.training else "eval"
    detail = (f"{passes} forward passes of {len(x)} examples in {mode} mode differ by at most "
              f"{spread:.3g} (allowed {tol:g})")
    if not passed:
        detail += ("; RANDOM FORWARD PASS: every gradient is one sample of a random function, "
                   "so gradient attacks are weakened; evaluate with expectation over "
                   "transformation (autoattack version='rand'), and note that the accuracies "
                   "are measured in eval mode")
    return Check("random_forward", passed, detail)


def check_logits(net, x):
    """The logits the attacks use are not probabilities (every row in [0, 1], summing to 1)."""
    from ..engine.layers import Softmax

    z = np.asarray(net.logits(x), dtype=np.float64)
    probabilities = bool(len(z)) and z.min() >= -1e-6 and z.max() <= 1 + 1e-6 and \
        bool(np.all(np.abs(z.sum(axis=1) - 1.0) <= 1e-4))
    ends_in_softmax = any(isinstance(layer, Softmax) for layer in net.layers)
    detail = f"logits of {len(z)} examples span [{z.min(initial=0):.3g}, {z.max(initial=0):.3g}]"
    if ends_in_softmax:
        detail += "; the net has a Softmax output, and the attacks use its input (the logits)"
    if probabilities:
        detail += ("; THE LOGITS ARE PROBABILITIES (a softmax inside the net): the "
                   "cross-entropy's gradient vanishes where it saturates, which masks "
                   "gradients; attack the logits before it (the DLR loss is scale-invariant "
                   "but not enough)")
    return Check("logits", not probabilities, detail)


def check_zero_gradient(zero, attacked, *, max_share=MAX_ZERO_SHARE):
    """At most ``max_share`` of the attacked points have an all-zero input gradient at APGD's
    start. ``zero``, ``attacked``: (N,) bool."""
    zero, attacked = np.asarray(zero, dtype=bool), np.asarray(attacked, dtype=bool)
    n, k = int(attacked.sum()), int((zero & attacked).sum())
    share = k / n if n else 0.0
    passed = share <= max_share
    detail = (f"{k} of {n} points attacked by APGD have an all-zero input gradient at its start "
              f"({100 * share:.2f}%, allowed {100 * max_share:g}%)")
    if not passed:
        detail += ("; ZERO GRADIENTS: gradient attacks cannot move these points (masking or "
                   "saturation); if the net has step-function layers use BPDA")
    return Check("zero_gradient", passed, detail)


def check_square_vs_whitebox(broken_by_square, total, *, max_gain=MAX_SQUARE_GAIN):
    """Square broke at most ``max_gain`` (a share of all ``total`` points) of the points every
    white-box attack of the ensemble left robust."""
    gain = broken_by_square / total if total else 0.0
    passed = gain <= max_gain
    detail = (f"Square broke {broken_by_square} of {total} points the white-box attacks missed "
              f"(robust accuracy {100 * gain:.2f} pp lower; allowed {100 * max_gain:g} pp)")
    if not passed:
        detail += ("; A GRADIENT-FREE ATTACK DID BETTER: the gradients mislead the white-box "
                   "attacks (masking); trust the lower figure")
    return Check("square_vs_whitebox", passed, detail)


def check_differentiable(net):
    """No layer back-propagates its true, zero-almost-everywhere gradient."""
    masked = masked_layers(net)
    if not masked:
        return Check("differentiable", True, "every layer back-propagates a useful gradient "
                                              "(step-function layers, if any, under BPDA)")
    names = ", ".join(f"{layer.name} ({layer.type})" for layer in masked)
    return Check("differentiable", False,
                 f"NON-DIFFERENTIABLE: {names} have a zero gradient almost everywhere, so "
                 f"gradient attacks see nothing; use BPDA (robustcnn attack --bpda, or "
                 f"`with robustcnn.attacks.bpda(net): …`), the straight-through gradient")


def net_flags(net, x, *, examples=100):
    """The flags that look at the net alone, on the first ``examples`` points: random forward
    pass, probabilities for logits, non-differentiable layers."""
    sample = x[:examples]
    return [check_random_forward(net, sample), check_logits(net, sample),
            check_differentiable(net)]


__all__ = ["check_random_forward", "check_logits", "check_zero_gradient",
           "check_square_vs_whitebox", "check_differentiable", "net_flags"]
