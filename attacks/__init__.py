"""Adversarial attacks computed on the engine's own gradients, and robustness evaluation.

One module and one function per attack, with a common signature:

    attack(net, x, y=None, eps=..., *, clip=(0.0, 1.0), targeted=False, batch_size=256, seed=0,
           progress=None, ...)  → x_adv, same shape as x, in the net's dtype

``eps`` is in the units of the data (a radius for the bounded attacks; a cap on the final
perturbation for the minimal-perturbation ones, unbounded when None); ``y`` defaults to the
net's own predictions (no label leaking); ``eps == 0`` returns a copy of x; ``progress``, if
given, is called with the number of examples just finished after each batch (a progress bar).

What each attack is lives in one record of ``registry`` (``registry.SPECS``): its names, its
function, its norm, bounded (eps is a radius) or minimal (finds its own size), its kind, its
paper. ``ATTACKS`` maps each name to its function of the common signature, with the norm bound
in where the function takes one (``fgm``, ``pgd``, ``random_noise``):

    name             norm  eps      kind            function           paper
    fgsm             linf  radius   single-step     fgsm               Goodfellow et al. 2015
    fgm-l2           l2    radius   single-step     fgm                Goodfellow et al. 2015
    bim              linf  radius   iterative       bim                Kurakin et al. 2017
    illc             linf  radius   iterative       illc               Kurakin et al. 2017 (bim.py)
    apgd-ce-linf     linf  radius   iterative       apgd               Croce & Hein 2020, loss ce
    apgd-ce-l2       l2    radius   iterative       apgd               Croce & Hein 2020, loss ce
    apgd-dlr-linf    linf  radius   iterative       apgd               Croce & Hein 2020, loss dlr
    apgd-dlr-l2      l2    radius   iterative       apgd               Croce & Hein 2020, loss dlr
    apgd-t-linf      linf  radius   iterative       apgd_t             Croce & Hein 2020 (apgd.py)
    apgd-t-l2        l2    radius   iterative       apgd_t             Croce & Hein 2020 (apgd.py)
    pgd-linf         linf  radius   iterative       pgd                Madry et al. 2018
    pgd-l2           l2    radius   iterative       pgd                Madry et al. 2018
    deepfool         l2    minimal  minimal-norm    deepfool           Moosavi-Dezfooli et al. 2016
    cw-l2            l2    minimal  minimal-norm    carlini_wagner_l2  Carlini & Wagner 2017
    jsma             l0    minimal  minimal-norm    jsma               Papernot et al. 2016
    lbfgs            l2    minimal  minimal-norm    lbfgs              Szegedy et al. 2014
    fab-linf         linf  minimal  minimal-norm    fab                Croce & Hein 2020
    fab-l2           l2    minimal  minimal-norm    fab                Croce & Hein 2020
    fab-t-linf       linf  minimal  minimal-norm    fab_t              Croce & Hein 2020 (fab.py)
    fab-t-l2         l2    minimal  minimal-norm    fab_t              Croce & Hein 2020 (fab.py)
    square-linf      linf  radius   score-based     square             Andriushchenko et al. 2020
    square-l2        l2    radius   score-based     square             Andriushchenko et al. 2020
    spsa             linf  radius   score-based     spsa               Uesato et al. 2018
    hsj-l2           l2    minimal  decision-based  hop_skip_jump      Chen et al. 2020
    hsj-linf         linf  minimal  decision-based  hop_skip_jump      Chen et al. 2020
    autoattack-linf  linf  radius   ensemble        autoattack         Croce & Hein 2020
    autoattack-l2    l2    radius   ensemble        autoattack         Croce & Hein 2020
    noise-linf       linf  radius   noise           random_noise       a baseline (noise.py)
    noise-l2         l2    radius   noise           random_noise       a baseline (noise.py)

    aliases: pgd = pgd-linf, cw = cw-l2, carlini-wagner = cw-l2, noise = noise-linf,
             apgd-ce = apgd-ce-linf, apgd = apgd-ce-linf, apgd-dlr = apgd-dlr-linf,
             apgd-t = apgd-t-linf, fab = fab-linf, fab-t = fab-t-linf, square = square-linf,
             hsj = hsj-l2, hopskipjump = hsj-l2, autoattack = autoattack-linf,
             aa = autoattack-linf

Each function lives in the module named after it (carlini_wagner_l2 in carlini_wagner.py),
illc, apgd_t, fab_t and random_noise where the table says; AutoAttack's version (standard,
plus, rand) is its ``version`` option. Outside the registry (they do not take the common
signature):

    adversarial_patch   Brown et al. 2017 (returns a patch; apply_patch pastes it) patch.py
    transfer            craft on one net, evaluate on another                     transfer.py
    trades_perturbation TRADES' inner maximisation of the KL (Zhang et al. 2019)   trades.py

Training objectives for ``engine.train.fit``: ``adversarial_training.AdversarialObjective``
(mixed clean and adversarial batches) and ``trades.TradesObjective`` (TRADES).

The shared norm hooks (normalize, project, random_start) are in ``norms``.

``evaluate`` runs several attacks over a list of eps with the worst case and the sanity checks
of ``sanity`` (Carlini et al. 2019); ``bpda`` attacks through step-function layers
(Athalye et al. 2018); ``eot(net, samples)`` is a view of a net with random layers that
averages its passes (expectation over transformation, Athalye et al. 2018), which any attack
takes in place of the net.
"""

from . import registry
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

# name → function of the common signature, in registry order (derived: see ``registry``).
ATTACKS = {spec.name: spec.attack for spec in registry.SPECS}

__all__ = ["fgm", "fgsm", "bim", "illc", "pgd", "deepfool", "carlini_wagner_l2", "jsma", "lbfgs",
           "random_noise", "adversarial_patch", "apply_patch", "patch_success_rate",
           "random_locations", "transfer", "transfer_accuracy", "robustness_table",
           "format_table", "worst_case", "evaluate", "format_evaluation", "sanity_checks",
           "format_checks", "bpda", "apgd", "apgd_t", "fab", "fab_t", "square", "spsa",
           "hop_skip_jump", "autoattack", "eot", "ATTACKS", "registry"]
