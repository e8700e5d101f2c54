"""Adversarial training: a training objective (for ``engine.train.fit``) that replaces part of
every batch by adversarial examples crafted on the current weights.

Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015:
training on FGSM examples as a regulariser. Kurakin, Goodfellow & Bengio, "Adversarial Machine
Learning at Scale", ICLR 2017: each batch mixes clean examples and adversarial versions of the
others (half and half by default). Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep
Learning Models Resistant to Adversarial Attacks", ICLR 2018: the min-max formulation, every
example replaced by its PGD adversary (``fraction=1``):

    min_θ  E_(x,y) [ max_{‖δ‖∞ ≤ eps} L(θ, x + δ, y) ]

    loss = mean over the mixed batch of cross-entropy(net(x̃), y),
    x̃ = attack(x, y) for the first ``round(fraction · N)`` examples, x for the rest.

Kurakin et al. weight the adversarial part of the loss by λ = 0.3; here every example of the
mixed batch counts the same (λ = 1), as in Madry et al.

The other adversarial objective, TRADES (Zhang et al. 2019: clean cross-entropy plus β times
the KL between the clean and the adversarial outputs), is ``trades.TradesObjective``;
``adversarial_objective`` builds either from a settings record.
"""

import zlib
from dataclasses import dataclass

import numpy as np

from ._common import check_eps, check_float, check_int
from .registry import attack_names, attack_spec


@dataclass
class AdversarialObjective:
    """Training loss on batches partly replaced by adversarial examples (see the module).

    Parameters
    ----------
    attack : the name or alias of a bounded attack of the registry ("fgsm", "pgd", "pgd-l2",
        "bim", …; ``registry.attack_names(bounded=True)``). FGSM is Goodfellow et al.'s and
        Kurakin et al.'s choice, PGD Madry et al.'s.
    eps : the attack's radius in data units (0 trains on the clean batch).
    fraction : share of each batch replaced by its adversarial version, in [0, 1]; 0.5 is
        Kurakin et al.'s mix, 1.0 Madry et al.'s all-adversarial training.
    steps : iterations of an iterative attack (None: the attack's own default, 40 for PGD;
        7 to 10 is usual for training). Only for attacks that take steps
        (``AttackSpec.steps``: bim, illc and pgd).
    alpha : step size of an iterative attack in data units (None: the attack's default rule);
        only for attacks that take one (``AttackSpec.step_size``).
    seed : with the bytes of the batch, seeds the attack's randomness (PGD's random start), so
        training is deterministic and a resumed run crafts the same examples.

    The examples are crafted against the **true labels**. Kurakin et al. (2017, section 4.3)
    note that single-step examples crafted from the true label "leak" it: the model learns to
    read the label from the perturbation, and its accuracy on adversarial examples can exceed
    its clean accuracy; they suggest crafting from the model's predictions instead. We use the
    true labels, as Madry et al. do, because early in training the predictions are mostly
    wrong; so with FGSM, check robustness with an iterative attack (PGD), not with FGSM alone.
    (``illc``, Kurakin et al.'s "step l.l." remedy, ignores the labels: it targets the
    least-likely class.)

    Crafting runs in eval mode (dropout off, batch-norm statistics untouched) on the current
    weights with ``clip=(0, 1)`` (the inputs must lie in [0, 1]); the training pass then runs in
    the mode the caller set (``fit`` sets train mode). Not guaranteed: robustness to other
    attacks or radii than the one trained against.
    """

    attack: str = "fgsm"
    eps: float = 0.1
    fraction: float = 0.5
    steps: int = None
    alpha: float = None
    seed: int = 0

    def __post_init__(self):
        name = "AdversarialObjective"
        spec = attack_spec(self.attack, at=name)
        if not spec.bounded:
            raise ValueError(f"{name}: attack {self.attack!r} is not a bounded attack; use one "
                             f"of {sorted(attack_names(bounded=True))}")
        key = self.attack = spec.name
        self.eps = check_eps(self.eps, name)
        self.fraction = check_float(self.fraction, "fraction", name, low=0.0, high=1.0)
        if self.steps is not None:
            self.steps = check_int(self.steps, "steps", name)
        if self.alpha is not None:
            self.alpha = check_float(self.alpha, "alpha", name, low=0.0, low_open=True)
        asked = [k for k, v in (("steps", self.steps), ("step_size", self.alpha)) if v is not None]
        if not all(getattr(spec, k) for k in asked):
            takes = attack_names(**dict.fromkeys(asked, True))
            raise ValueError(f"{name}: steps and alpha apply to the iterative attacks "
                             f"{list(takes)}, not to {key!r}")
        self.seed = check_int(self.seed, "seed", name, minimum=0)
        self._attack = spec.attack

    def adversarial_batch(self, net, xb, yb):
        """The mixed batch → x̃ (a new array in the net's dtype): the first
        ``round(fraction · N)`` examples replaced by their adversarial versions, crafted in eval
        mode against the labels ``yb``. The net's mode is restored afterwards."""
        x = np.array(xb, dtype=net.dtype)  # a copy: the caller's batch is not modified
        k = int(round(self.fraction * len(x)))
        if k == 0 or self.eps == 0:
            return x
        kwargs = {}
        if self.steps is not None:
            kwargs["steps"] = self.steps
        if self.alpha is not None:
            kwargs["alpha"] = self.alpha
        training = net.training
        net.eval()
        try:
            x[:k] = self._attack(net, x[:k], np.asarray(yb[:k]), self.eps, clip=(0.0, 1.0),
                                 seed=self._batch_seed(x), **kwargs)
        finally:
            net.training = training
        return x

    def __call__(self, net, xb, yb):
        """Mean cross-entropy over the mixed batch → (loss, logits); gradients in ``net.grads``."""
        return net.loss_and_grad(self.adversarial_batch(net, xb, yb), yb)

    def _batch_seed(self, x):
        """A seed from ``seed`` and the batch's bytes: the same batch gets the same start."""
        crc = zlib.crc32(np.ascontiguousarray(x).view(np.uint8).reshape(-1))
        return int(np.random.SeedSequence([self.seed, crc]).generate_state(1)[0])

    def config(self):
        """JSON-ready settings (what a training checkpoint records)."""
        return {"objective": "adversarial", "attack": self.attack, "eps": self.eps,
                "fraction": self.fraction, "steps": self.steps, "alpha": self.alpha,
                "labels": "true", "seed": self.seed}


# What a record of adversarial training holds (``CompressionSettings.adversarial``, a study's
# ``train.adversarial``): the objective's settings but the seed, which is the run's.
# ``objective`` names the objective: "mixed" (the default, ``AdversarialObjective``) or
# "trades" (``attacks.trades.TradesObjective``: eps, beta, steps, alpha).
SETTINGS = ("attack", "eps", "fraction", "steps", "alpha")
OBJECTIVES = {"mixed": SETTINGS, "trades": ("eps", "beta", "steps", "alpha")}


def adversarial_objective(settings, seed, *, where="adversarial"):
    """The objective a record of settings describes → an ``AdversarialObjective`` or a
    ``trades.TradesObjective``, or None (plain cross-entropy) when ``settings`` is None.

    ``settings``: a dict of some of ``SETTINGS`` (attack, eps, fraction, steps, alpha), or
    with ``objective="trades"`` of eps, beta, steps, alpha; ``seed``: the run's seed.
    ``where`` names the record in error messages, e.g. "compression settings: adversarial"
    for ``compress.pipeline.CompressionSettings``.
    """
    if settings is None:
        return None
    if not isinstance(settings, dict):
        raise ValueError(f"{where} must be a dict of AdversarialObjective settings or None, "
                         f"got {settings!r}")
    settings = dict(settings)
    kind = settings.pop("objective", "mixed")
    if kind not in OBJECTIVES:
        raise ValueError(f"{where}: unknown objective {kind!r}; known: {', '.join(OBJECTIVES)}")
    for key in settings:
        if key not in OBJECTIVES[kind]:
            why = " (the seed is the settings' seed)" if key == "seed" else ""
            raise ValueError(f"{where} has unknown key {key!r}{why}; known: "
                             f"{', '.join(('objective',) + OBJECTIVES[kind])}")
    if kind == "trades":
        from .trades import TradesObjective

        if "eps" not in settings:
            raise ValueError(f"{where}: the trades objective needs eps")
        return TradesObjective(**settings, seed=seed)
    return AdversarialObjective(**settings, seed=seed)
