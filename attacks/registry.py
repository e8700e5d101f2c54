"""The attack registry: what each attack of the package is, in one record per attack.

Every table and lookup about attacks derives from ``SPECS`` below: ``attacks.ATTACKS`` (name →
function), ``evaluate.BOUNDED`` / ``UNBOUNDED`` / ``ALIASES``, the names ``evaluate``, the
study and the command line accept, the attacks adversarial training can iterate, the
single-step / iterative / noise attack of each norm the sanity checks compare. Adding an attack
is its module (one function of the common signature), one ``AttackSpec`` in ``SPECS``, and its
export and table line in ``attacks/__init__.py`` (a test checks all three agree).

The common signature every registered function takes:

    attack(net, x, y=None, eps=..., *, clip=(0.0, 1.0), targeted=False, batch_size=256,
           seed=0, progress=None, **its own options)  → x_adv, same shape as x, net's dtype

Order matters in one place: within a kind and norm, the sanity checks take the first
single-step and noise attack and the last iterative one as their references. APGD's records
come before PGD's so that the reference the checks run themselves stays PGD (40 steps, one
target), not APGD-T (100 iterations towards each of 9 targets).
"""

import inspect
from dataclasses import dataclass, field, fields
from functools import cached_property, partial, update_wrapper
from types import MappingProxyType
from typing import Callable, Mapping, Optional

from .apgd import apgd, apgd_t
from .autoattack import autoattack
from .bim import bim, illc
from .carlini_wagner import carlini_wagner_l2
from .deepfool import deepfool
from .fab import fab, fab_t
from .fgm import fgm
from .fgsm import fgsm
from .hop_skip_jump import hop_skip_jump
from .jsma import jsma
from .lbfgs import lbfgs
from .noise import random_noise
from .pgd import pgd
from .spsa import spsa
from .square import square

NORMS = ("linf", "l2", "l0")

# What kind of method an attack is.
SINGLE_STEP = "single-step"        # one gradient step (FGSM)
ITERATIVE = "iterative"            # gradient steps inside the eps-ball (BIM, PGD)
MINIMAL_NORM = "minimal-norm"      # searches the smallest perturbation that fools (DeepFool, C&W)
NOISE = "noise"                    # a random baseline of the same norm, no model gradient
SCORE_BASED = "score-based"        # queries the logits / probabilities only (Square, SPSA)
DECISION_BASED = "decision-based"  # queries the predicted label only (HopSkipJump)
ENSEMBLE = "ensemble"              # several attacks, the per-example worst case (AutoAttack)
KINDS = (SINGLE_STEP, ITERATIVE, MINIMAL_NORM, NOISE, SCORE_BASED, DECISION_BASED, ENSEMBLE)
QUERY_KINDS = (SCORE_BASED, DECISION_BASED)

# The parameters every registered function takes, in this order after net (what callers pass).
COMMON_PARAMETERS = ("x", "y", "eps", "clip", "targeted", "batch_size", "seed", "progress")


@dataclass(frozen=True)
class AttackSpec:
    """One attack: its names, its function, and the facts the rest of the package asks about.

    name : the canonical name, lower case ("pgd-linf"): a key of ``ATTACKS``, a row's
        ``attack``, what study files and ``robustcnn attack --attack`` say.
    function : the module's function (``pgd``), of the common signature.
    paper : a short citation ("Madry et al. 2018"); None for a baseline from no paper.
    norm : "linf", "l2" or "l0": the norm of eps and the one the attack is judged in.
    bounded : True if eps is a radius (one run per eps, ‖x' − x‖ ≤ eps); False for a
        minimal-perturbation attack, run once with eps=None, judged by the sizes it needed.
    kind : one of ``KINDS``.
    aliases : other names accepted for it, lower case ("pgd" for "pgd-linf").
    options : keyword arguments fixed for this entry, besides the norm (which is bound in
        whenever the function takes ``norm``): a version or a loss of one function
        registered under several names, e.g. {"loss": "dlr"}.
    steps : takes ``steps`` (the number of iterations).
    step_size : takes ``alpha`` (the step size, in data units).
    targeted : accepts ``targeted=True`` with ``y`` as the target classes.
    own_target : run untargeted, it aims at one class of its own choosing (ILLC: the least
        likely; JSMA and L-BFGS: the runner-up), not at any class but y — so it need not be
        as strong as FGSM at changing the label, and the sanity checks do not require it.
    gradients : needs the input gradient (``Net.backward``); False for noise and query-based
        attacks, which only call the net forward.
    """

    name: str
    function: Callable
    paper: Optional[str]
    norm: str
    bounded: bool
    kind: str
    aliases: tuple = ()
    options: Mapping = field(default_factory=dict, hash=False)
    steps: bool = False
    step_size: bool = False
    targeted: bool = True
    own_target: bool = False
    gradients: bool = True

    def __post_init__(self):
        where = f"attack registry: {self.name!r}"
        if not isinstance(self.name, str) or self.name != self.name.strip().lower() or \
                not self.name:
            raise ValueError(f"{where}: the name must be a non-empty lower-case string")
        if not callable(self.function):
            raise ValueError(f"{where}: function {self.function!r} is not callable")
        if self.norm not in NORMS:
            raise ValueError(f"{where}: norm {self.norm!r} is not one of {NORMS}")
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind {self.kind!r} is not one of {KINDS}")
        aliases = tuple(self.aliases)
        if any(not isinstance(a, str) or a != a.strip().lower() or not a for a in aliases):
            raise ValueError(f"{where}: aliases must be non-empty lower-case strings, got "
                             f"{aliases!r}")
        object.__setattr__(self, "aliases", aliases)
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    @property
    def query_based(self):
        """True for attacks that only query the net's outputs (score- or decision-based)."""
        return self.kind in QUERY_KINDS

    @cached_property
    def attack(self):
        """The callable of the common signature: ``function`` itself, or with the norm (where
        it takes one) and ``options`` bound in, named after the entry (``pgd_l2``)."""
        keywords = dict(self.options)
        if "norm" in inspect.signature(self.function).parameters:
            keywords["norm"] = self.norm
        if not keywords:
            return self.function
        bound = update_wrapper(partial(self.function, **keywords), self.function)
        del bound.__wrapped__  # so inspect.signature shows the bound defaults, not the function's
        bound.__name__ = self.name.replace("-", "_")
        return bound


SPECS = (
    AttackSpec("fgsm", fgsm, "Goodfellow et al. 2015", "linf", True, SINGLE_STEP),
    AttackSpec("fgm-l2", fgm, "Goodfellow et al. 2015", "l2", True, SINGLE_STEP),
    AttackSpec("bim", bim, "Kurakin et al. 2017", "linf", True, ITERATIVE, steps=True,
               step_size=True),
    AttackSpec("illc", illc, "Kurakin et al. 2017", "linf", True, ITERATIVE, steps=True,
               step_size=True, targeted=False, own_target=True),
    # APGD (Croce & Hein 2020): one record per loss and norm; APGD-T the top-9 targets.
    AttackSpec("apgd-ce-linf", apgd, "Croce & Hein 2020", "linf", True, ITERATIVE,
               aliases=("apgd-ce", "apgd"), options={"loss": "ce"}),
    AttackSpec("apgd-ce-l2", apgd, "Croce & Hein 2020", "l2", True, ITERATIVE,
               options={"loss": "ce"}),
    AttackSpec("apgd-dlr-linf", apgd, "Croce & Hein 2020", "linf", True, ITERATIVE,
               aliases=("apgd-dlr",), options={"loss": "dlr"}),
    AttackSpec("apgd-dlr-l2", apgd, "Croce & Hein 2020", "l2", True, ITERATIVE,
               options={"loss": "dlr"}),
    AttackSpec("apgd-t-linf", apgd_t, "Croce & Hein 2020", "linf", True, ITERATIVE,
               aliases=("apgd-t",), targeted=False),
    AttackSpec("apgd-t-l2", apgd_t, "Croce & Hein 2020", "l2", True, ITERATIVE, targeted=False),
    AttackSpec("pgd-linf", pgd, "Madry et al. 2018", "linf", True, ITERATIVE, aliases=("pgd",),
               steps=True, step_size=True),
    AttackSpec("pgd-l2", pgd, "Madry et al. 2018", "l2", True, ITERATIVE, steps=True,
               step_size=True),
    AttackSpec("deepfool", deepfool, "Moosavi-Dezfooli et al. 2016", "l2", False, MINIMAL_NORM,
               targeted=False),
    AttackSpec("cw-l2", carlini_wagner_l2, "Carlini & Wagner 2017", "l2", False, MINIMAL_NORM,
               aliases=("cw", "carlini-wagner")),
    AttackSpec("jsma", jsma, "Papernot et al. 2016", "l0", False, MINIMAL_NORM,
               own_target=True),
    AttackSpec("lbfgs", lbfgs, "Szegedy et al. 2014", "l2", False, MINIMAL_NORM,
               own_target=True),
    AttackSpec("fab-linf", fab, "Croce & Hein 2020", "linf", False, MINIMAL_NORM,
               aliases=("fab",)),
    AttackSpec("fab-l2", fab, "Croce & Hein 2020", "l2", False, MINIMAL_NORM),
    AttackSpec("fab-t-linf", fab_t, "Croce & Hein 2020", "linf", False, MINIMAL_NORM,
               aliases=("fab-t",), targeted=False),
    AttackSpec("fab-t-l2", fab_t, "Croce & Hein 2020", "l2", False, MINIMAL_NORM,
               targeted=False),
    AttackSpec("square-linf", square, "Andriushchenko et al. 2020", "linf", True, SCORE_BASED,
               aliases=("square",), gradients=False),
    AttackSpec("square-l2", square, "Andriushchenko et al. 2020", "l2", True, SCORE_BASED,
               gradients=False),
    AttackSpec("spsa", spsa, "Uesato et al. 2018", "linf", True, SCORE_BASED, steps=True,
               gradients=False),
    AttackSpec("hsj-l2", hop_skip_jump, "Chen et al. 2020", "l2", False, DECISION_BASED,
               aliases=("hsj", "hopskipjump"), steps=True, gradients=False),
    AttackSpec("hsj-linf", hop_skip_jump, "Chen et al. 2020", "linf", False, DECISION_BASED,
               steps=True, gradients=False),
    AttackSpec("autoattack-linf", autoattack, "Croce & Hein 2020", "linf", True, ENSEMBLE,
               aliases=("autoattack", "aa"), targeted=False),
    AttackSpec("autoattack-l2", autoattack, "Croce & Hein 2020", "l2", True, ENSEMBLE,
               targeted=False),
    AttackSpec("noise-linf", random_noise, None, "linf", True, NOISE, aliases=("noise",),
               targeted=False, gradients=False),
    AttackSpec("noise-l2", random_noise, None, "l2", True, NOISE, targeted=False,
               gradients=False),
)


def _index(specs):
    """Every name and alias → its record; a name given twice is a ValueError."""
    index = {}
    for spec in specs:
        for key in (spec.name,) + spec.aliases:
            if key in index:
                raise ValueError(f"attack registry: {key!r} names both {index[key].name!r} and "
                                 f"{spec.name!r}")
            index[key] = spec
    return index


_BY_NAME = _index(SPECS)
# alias → canonical name, in registry order.
ALIASES = MappingProxyType({a: s.name for s in SPECS for a in s.aliases})
_FILTERS = frozenset(f.name for f in fields(AttackSpec)) | {"query_based"}


def attack_spec(name, at="attacks"):
    """The record of ``name``: a canonical name or an alias, in any case (a record is returned
    as it is).

    An unknown name is a one-line ``ValueError`` starting with ``at`` that lists the known
    names (bounded first, then unbounded, each sorted) and the aliases."""
    if isinstance(name, AttackSpec):
        return name
    spec = _BY_NAME.get(str(name).strip().lower())
    if spec is None:
        known = sorted(s.name for s in SPECS if s.bounded) + \
            sorted(s.name for s in SPECS if not s.bounded)
        raise ValueError(f"{at}: unknown attack {name!r}; known: {', '.join(known)} (aliases: "
                         f"{', '.join(f'{a}={b}' for a, b in ALIASES.items())})")
    return spec


def canonical_name(name, at="attacks"):
    """The canonical name of ``name`` (a name or an alias, any case); ValueError if unknown."""
    return attack_spec(name, at).name


def resolve_attack(attack, at="attacks"):
    """A function of the common signature: ``attack`` itself if callable, else the bound
    function of its record (``AttackSpec.attack``), found by name or alias."""
    if callable(attack):
        return attack
    return attack_spec(attack, at).attack


def attack_specs(**where):
    """The records whose properties equal the given ones, in registry order:
    ``attack_specs(bounded=True, norm="l2")``. Properties: the fields of ``AttackSpec`` and
    ``query_based``."""
    unknown = sorted(set(where) - _FILTERS)
    if unknown:
        raise ValueError(f"attack_specs: unknown property {unknown[0]!r}; known: "
                         f"{', '.join(sorted(_FILTERS))}")
    return tuple(s for s in SPECS if all(getattr(s, k) == v for k, v in where.items()))


def attack_names(**where):
    """The canonical names of ``attack_specs(**where)``, in registry order."""
    return tuple(s.name for s in attack_specs(**where))


def _one(kind, norm, pick):
    names = attack_names(kind=kind, norm=norm, gradients=kind != NOISE)
    if not names:
        raise ValueError(f"attack registry: no {kind} attack for the norm {norm!r}")
    return names[pick]


def single_step_attack(norm):
    """The single-step gradient attack of ``norm`` (the first registered): "fgsm" for L∞."""
    return _one(SINGLE_STEP, norm, 0)


def iterative_attacks(norm):
    """The iterative gradient attacks of ``norm`` that aim at any class but the label (not
    ``own_target`` ones such as ILLC), in registry order: the last is the strongest, the one
    the sanity checks run where the evaluation ran none. Empty if there is none."""
    return attack_names(kind=ITERATIVE, norm=norm, gradients=True, own_target=False)


def noise_attack(norm):
    """The random-noise baseline of ``norm`` (the first registered): "noise-linf" for L∞."""
    return _one(NOISE, norm, 0)


__all__ = ["AttackSpec", "SPECS", "ALIASES", "NORMS", "KINDS", "QUERY_KINDS", "SINGLE_STEP",
           "ITERATIVE", "MINIMAL_NORM", "NOISE", "SCORE_BASED", "DECISION_BASED", "ENSEMBLE",
           "COMMON_PARAMETERS", "attack_spec", "canonical_name", "resolve_attack",
           "attack_specs", "attack_names", "single_step_attack", "iterative_attacks",
           "noise_attack"]
