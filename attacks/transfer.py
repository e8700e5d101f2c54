"""Transfer (black-box) attacks: craft on one network, evaluate on another.

Szegedy et al. 2014 observed that adversarial examples transfer between networks; Papernot,
McDaniel & Goodfellow 2016 ("Transferability in Machine Learning") measured it. In this
project the usual pair is a dense network and its compressed version (Wijayanto et al. 2019):
does an example crafted on the dense net also fool the pruned/quantized one, and the reverse?
"""

import numpy as np

from ._common import check_inputs
from .registry import resolve_attack


def transfer(source_net, target_net, x, y=None, attack="fgsm", eps=0.1, **kwargs):
    """Adversarial examples crafted on ``source_net``, to be evaluated on ``target_net``.

    Parameters
    ----------
    source_net : the ``Net`` the attack sees (gradients, logits).
    target_net : the ``Net`` they are meant for; only checked to take the same inputs and
        classes (it is never queried).
    x : (N, …) inputs.
    y : (N,) labels handed to the attack; None lets the attack use the *source* net's
        predictions. Evaluate with the true labels (``transfer_accuracy``).
    attack : a name or alias of the registry ("fgsm", "pgd", …) or an attack function.
    eps : the attack's eps.
    **kwargs : passed to the attack (e.g. ``steps``, ``clip``, ``seed``, ``progress``).

    Returns the adversarial examples crafted on the source net (the source net's dtype).
    Not guaranteed: that they fool the target (that is what is being measured).
    """
    name = "transfer"
    fn = resolve_attack(attack, name)
    if tuple(source_net.input_shape) != tuple(target_net.input_shape):
        raise ValueError(f"{name}: the source net takes {source_net.input_shape} inputs, the "
                         f"target net {target_net.input_shape}")
    if source_net.num_classes != target_net.num_classes:
        raise ValueError(f"{name}: the source net has {source_net.num_classes} classes, the "
                         f"target net {target_net.num_classes}")
    return fn(source_net, x, y, eps, **kwargs)


def transfer_accuracy(target_net, x, x_adv, y, *, batch_size=256):
    """How the target net fares on transferred examples → dict.

    ``accuracy``: on x_adv against the labels y; ``clean_accuracy``: on x; ``success_rate``:
    the fraction of the examples the target got right on x that it gets wrong on x_adv (NaN
    if it got none right).
    """
    x, y = check_inputs(target_net, np.asarray(x), y, "transfer_accuracy")
    x_adv = np.asarray(x_adv)
    if x_adv.shape != x.shape:
        raise ValueError(f"transfer_accuracy: x_adv has shape {x_adv.shape}, x {x.shape}")
    clean_ok = target_net.predict(x, batch_size=batch_size) == y
    adv_ok = target_net.predict(x_adv, batch_size=batch_size) == y
    return {"accuracy": float(adv_ok.mean()) if len(y) else float("nan"),
            "clean_accuracy": float(clean_ok.mean()) if len(y) else float("nan"),
            "success_rate": float((clean_ok & ~adv_ok).sum() / clean_ok.sum())
            if clean_ok.any() else float("nan")}
