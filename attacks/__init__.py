"""Adversarial attacks computed on the engine's own gradients, and robustness evaluation.

One module and one function per attack, with a common signature:

    attack(net, x, y=None, eps=..., *, clip=(0.0, 1.0), targeted=False, batch_size=256, seed=0, ...)
        → x_adv, same shape as x, in the net's dtype

``eps`` is in the units of the data (a radius for the bounded attacks; a cap on the final L2
norm for the minimal-perturbation ones, unbounded when None); ``y`` defaults to the net's own
predictions (no label leaking); ``eps == 0`` returns a copy of x.

    fgm / fgsm          Goodfellow et al. 2015, fast gradient (L∞ sign or L2)     fgm.py, fgsm.py
    bim / illc          Kurakin et al. 2017, iterative FGSM, least-likely class    bim.py
    pgd                 Madry et al. 2018, L∞ / L2 with random restarts            pgd.py
    deepfool            Moosavi-Dezfooli et al. 2016                               deepfool.py
    carlini_wagner_l2   Carlini & Wagner 2017                                      carlini_wagner.py
    jsma                Papernot et al. 2016, saliency map                         jsma.py
    lbfgs               Szegedy et al. 2014, box-constrained L-BFGS               lbfgs.py
    random_noise        the same-norm noise baseline                               noise.py
    square              Andriushchenko et al. 2020, score-based random search      square.py
    spsa                Uesato et al. 2018, gradient estimates from logits (L∞)    spsa.py
    hop_skip_jump       Chen et al. 2020, decision-based (labels only), L2 / L∞    hop_skip_jump.py
    adversarial_patch   Brown et al. 2017 (returns a patch; apply_patch pastes it) patch.py
    transfer            craft on one net, evaluate on another                     transfer.py
    apgd / apgd_t       Croce & Hein 2020, Auto-PGD (CE, DLR; APGD-T top targets) apgd.py
    fab / fab_t         Croce & Hein 2020, fast adaptive boundary (min-norm)       fab.py
    autoattack          Croce & Hein 2020, the ensemble (standard, plus, rand)     autoattack.py

``ATTACKS`` maps a name to a function of the common signature (the norm bound in for fgm, pgd
and the noise). The shared norm hooks (normalize, project, random_start) are in ``norms``.

``evaluate`` runs several attacks over a list of eps with the worst case and the sanity checks
of ``sanity`` (Carlini et al. 2019); ``bpda`` attacks through step-function layers
(Athalye et al. 2018); ``eot(net, samples)`` is a view of a net with random layers that
averages its passes (expectation over transformation, Athalye et al. 2018), which any attack
takes in place of the net.
"""

from functools import partial, update_wrapper

from .apgd import apgd, apgd_t
from .autoattack import autoattack
from .bim import bim, illc
from .bpda import bpda
from .carlini_wagner import carlini_wagner_l2
from .deepfool import deepfool
from .eot import eot
from .evaluate import evaluate, format_evaluation, format_table, robustness_table, worst_case
from .fab import fab, fab_t
from .fgm import fgm
from .fgsm import fgsm
from .hop_skip_jump import hop_skip_jump
from .jsma import jsma
from .lbfgs import lbfgs
from .noise import random_noise
from .patch import adversarial_patch, apply_patch, patch_success_rate, random_locations
from .pgd import pgd
from .sanity import format_checks, sanity_checks
from .spsa import spsa
from .square import square
from .transfer import transfer, transfer_accuracy


def _with_norm(fn, norm, name, **fixed):
    bound = update_wrapper(partial(fn, norm=norm, **fixed), fn)
    bound.__name__ = name
    return bound


ATTACKS = {
    "fgsm": fgsm,
    "fgm-l2": _with_norm(fgm, "l2", "fgm_l2"),
    "bim": bim,
    "illc": illc,
    "pgd-linf": _with_norm(pgd, "linf", "pgd_linf"),
    "pgd-l2": _with_norm(pgd, "l2", "pgd_l2"),
    "deepfool": deepfool,
    "cw-l2": carlini_wagner_l2,
    "jsma": jsma,
    "lbfgs": lbfgs,
    "noise-linf": _with_norm(random_noise, "linf", "noise_linf"),
    "noise-l2": _with_norm(random_noise, "l2", "noise_l2"),
    # APGD and FAB (Croce & Hein 2020): one entry per loss or variant and norm.
    "apgd-ce-linf": _with_norm(apgd, "linf", "apgd_ce_linf", loss="ce"),
    "apgd-ce-l2": _with_norm(apgd, "l2", "apgd_ce_l2", loss="ce"),
    "apgd-dlr-linf": _with_norm(apgd, "linf", "apgd_dlr_linf", loss="dlr"),
    "apgd-dlr-l2": _with_norm(apgd, "l2", "apgd_dlr_l2", loss="dlr"),
    "apgd-t-linf": _with_norm(apgd_t, "linf", "apgd_t_linf"),
    "apgd-t-l2": _with_norm(apgd_t, "l2", "apgd_t_l2"),
    "fab-linf": _with_norm(fab, "linf", "fab_linf"),
    "fab-l2": _with_norm(fab, "l2", "fab_l2"),
    "fab-t-linf": _with_norm(fab_t, "linf", "fab_t_linf"),
    "fab-t-l2": _with_norm(fab_t, "l2", "fab_t_l2"),
    "autoattack-linf": _with_norm(autoattack, "linf", "autoattack_linf"),
    "autoattack-l2": _with_norm(autoattack, "l2", "autoattack_l2"),
}
# Gradient-free attacks (issue 13), until the registry's records list them.
ATTACKS.update({
    "square-linf": _with_norm(square, "linf", "square_linf"),
    "square-l2": _with_norm(square, "l2", "square_l2"),
    "spsa": spsa,
    "hsj-l2": _with_norm(hop_skip_jump, "l2", "hsj_l2"),
    "hsj-linf": _with_norm(hop_skip_jump, "linf", "hsj_linf"),
})

__all__ = ["fgm", "fgsm", "bim", "illc", "pgd", "deepfool", "carlini_wagner_l2", "jsma", "lbfgs",
           "random_noise", "adversarial_patch", "apply_patch", "patch_success_rate",
           "random_locations", "transfer", "transfer_accuracy", "robustness_table",
           "format_table", "worst_case", "evaluate", "format_evaluation", "sanity_checks",
           "format_checks", "bpda", "square", "spsa", "hop_skip_jump", "eot", "ATTACKS"]
__all__ += ["apgd", "apgd_t", "fab", "fab_t", "autoattack"]
