"""The CPU time a study's grid will take, estimated before it starts.

The model: time = work × the measured cost of one unit of work of the model's architecture.

- Calibration (``calibrate``): each architecture of the grid is built fresh and its three
  passes timed on training images — a training step's (``Net.loss_and_grad``, train mode), an
  attack's gradient pass (``Net.loss_and_input_grad``) and a forward pass (``Net.logits``) —
  each as a cost per call plus a cost per example (``measure``: two batch sizes after a
  warm-up), then taken per example at the batch sizes the work uses (the recipe's for
  training, the study's ``batch_size`` for attacks: ``Timing``). Models of one architecture
  and kwargs share a calibration; a compressed, fine-tuned or factorised model is timed as its
  base's architecture (not measured in its own weight formats).
- A model's build: training examples × epochs × (one training pass, plus the gradient passes
  of adversarial examples where the recipe trains adversarially: ``fraction × steps`` per
  example; TRADES ``steps + 1``; plus the teacher's forward pass when distilling). Deep
  Compression: ``rounds × retrain_epochs + finetune_epochs`` epochs; a quantization method its
  ``epochs``. Models the database already holds cost nothing.
- A cell: test images × (the attack's gradient passes per image, ``attack_passes``, plus two
  forward passes: the clean and the adversarial predictions); a transfer attack's passes on
  its source model; a sanity cell: the attacks ``attacks.sanity.sanity_runs`` plans.

What is not guaranteed: attacks that stop early (C&W, FAB, Square, HopSkipJump, JSMA,
L-BFGS, APGD-T and AutoAttack, whose later stages only see the points still robust) are
counted at their full budget, so their cells' estimates are upper bounds
(``Estimate.upper_bound``); DeepFool at a typical iteration count (``DEEPFOOL_ITERATIONS``).
Pruning methods other than magnitude pruning (DNS, HYDRA, ADMM) are counted with magnitude
pruning's epochs, not their own. The calibration measures this machine now, under its present
load, from one timed call per batch size: other load during the run shifts the real time.
Numba kernels not yet compiled compile during the calibration's warm-up (minutes in a fresh
checkout), which the study would spend anyway (``Estimate.warm_up_seconds``).
"""

import inspect
import time
from dataclasses import dataclass, field

import numpy as np

# Images of the timed passes: a warm-up, then a small and a larger batch, whose difference
# separates the cost per call from the cost per example. 32 keeps the calibration of a net that
# trains at 15 ms an image at about 1 s.
WARM_UP, SMALL, CALIBRATION_BATCH = 2, 4, 32
# DeepFool's iterations, counted at a typical value rather than its budget of 50: Moosavi-
# Dezfooli et al. 2016 report 2 to 3 on average for MNIST and CIFAR-10 nets (an adversarially
# trained net needs more). Each iteration takes the gradients of its candidate classes.
DEEPFOOL_ITERATIONS = 3


@dataclass
class Cost:
    """The seconds of one pass over a batch of n examples: ``call + n · example`` (a fixed
    cost per call — Python, the thread pool waking — and a cost per example)."""

    call: float
    example: float

    def per_example(self, batch):
        """Seconds per example when the work comes in batches of ``batch``."""
        return self.call / max(batch, 1) + self.example


@dataclass
class Timing:
    """Seconds per example of one architecture, at the batch sizes its work uses: a training
    pass (forward and the weights' backward, train mode, at the recipe's batch), an attack's
    gradient pass (forward and the input's backward) and a forward pass (both at the study's
    attack batch)."""

    train: float
    grad: float
    forward: float


@dataclass
class Estimate:
    """Estimated seconds of a grid's work still to do: ``builds`` (model, seed) → seconds,
    ``cells`` cell key → seconds (the cell's own work, not its models' builds); ``upper_bound``
    the attack labels whose cells are counted at their full budget; ``timings`` model name →
    Timing; ``calibration_seconds`` what measuring took, ``warm_up_seconds`` the part of it
    spent on the first calls (Numba kernels loaded from the cache or compiled, which the run
    would do anyway)."""

    builds: dict = field(default_factory=dict)
    cells: dict = field(default_factory=dict)
    upper_bound: set = field(default_factory=set)
    timings: dict = field(default_factory=dict)
    calibration_seconds: float = 0.0
    warm_up_seconds: float = 0.0

    @property
    def total(self):
        return sum(self.builds.values()) + sum(self.cells.values())

    def per_cell(self, study, items):
        """Cell key → estimated seconds of running it in the order of ``items`` ((key, cell)
        pairs): its own work plus the builds of the models it is the first to need."""
        from .models import needed_models

        out, built = {}, set()
        for key, cell in items:
            seconds = self.cells.get(key, 0.0)
            for pair in needed_models(study, [cell]):
                if pair not in built:
                    built.add(pair)
                    seconds += self.builds.get(pair, 0.0)
            out[key] = seconds
        return out

    def lines(self, items):
        """The printed estimate: one line per kind of work and the total."""
        labels = {key: cell.attack for key, cell in items}
        by_kind = {}
        for key, seconds in self.cells.items():
            kind = "sanity checks" if labels.get(key) == "sanity" else labels.get(key, "?")
            n, s = by_kind.get(kind, (0, 0.0))
            by_kind[kind] = (n + 1, s + seconds)
        builds = sum(self.builds.values())
        out = [f"estimated time of the {len(self.cells)} cell(s) to run on this machine: "
               f"{duration(self.total)} (calibrated in {self.calibration_seconds:.1f} s, "
               f"{self.warm_up_seconds:.1f} s of it loading kernels)",
               f"  building {len(self.builds)} model(s): {duration(builds)}"]
        for kind, (n, seconds) in sorted(by_kind.items(), key=lambda kv: -kv[1][1]):
            bound = " (at most: stops early)" if kind in self.upper_bound else ""
            out.append(f"  {kind}: {n} cell(s), {duration(seconds)}{bound}")
        return out


def duration(seconds):
    """Seconds as a short text: 42 s, 12.5 min, 3.1 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def measure(fn, x, y, spent=None):
    """The ``Cost`` of ``fn(x_batch, y_batch)``: warmed up on ``WARM_UP`` images (kernels
    compiled or loaded from the cache), then timed once on ``SMALL`` and once on
    ``CALIBRATION_BATCH`` images; the line through the two points, its slope at least a tenth
    of the large batch's mean and its intercept at least 0 (one noisy point cannot make either
    negative). ``spent["warm_up"]`` (a dict, optional) adds up the warm-ups' seconds."""
    t0 = time.perf_counter()
    fn(x[:WARM_UP], y[:WARM_UP])
    if spent is not None:
        spent["warm_up"] = spent.get("warm_up", 0.0) + time.perf_counter() - t0
    times = []
    for n in (SMALL, CALIBRATION_BATCH):
        t0 = time.perf_counter()
        fn(x[:n], y[:n])
        times.append(time.perf_counter() - t0)
    example = max((times[1] - times[0]) / (CALIBRATION_BATCH - SMALL),
                  0.1 * times[1] / CALIBRATION_BATCH)
    return Cost(max(times[1] - CALIBRATION_BATCH * example, 0.0), example)


def time_net(net, x, y, *, train_batch, attack_batch, spent=None):
    """The ``Timing`` of ``net`` on the images ``x`` (labels ``y``, at least
    ``CALIBRATION_BATCH`` of them) for training batches of ``train_batch`` and attack batches
    of ``attack_batch``."""
    if len(x) < CALIBRATION_BATCH:
        x = np.resize(x, (CALIBRATION_BATCH,) + x.shape[1:])
        y = np.resize(y, CALIBRATION_BATCH)
    was_training = net.training
    net.train()
    try:
        train = measure(net.loss_and_grad, x, y, spent)
    finally:
        net.train() if was_training else net.eval()
    grad = measure(net.loss_and_input_grad, x, y, spent)
    forward = measure(lambda xb, yb: net.logits(xb, batch_size=len(xb)), x, y, spent)
    return Timing(train.per_example(train_batch), grad.per_example(attack_batch),
                  forward.per_example(attack_batch))


def _signature_defaults(fn):
    target = getattr(fn, "func", fn)
    out = {k: p.default for k, p in inspect.signature(target).parameters.items()
           if p.default is not inspect.Parameter.empty}
    out.update(getattr(fn, "keywords", None) or {})
    return out


def attack_passes(name, eps, options, num_classes):
    """(gradient passes, forward passes, whether it is an upper bound) per attacked image of
    the registered attack ``name`` at ``eps`` with the study's ``options``: the attack's
    iterations from its options or its function's defaults."""
    from ..attacks.registry import NOISE, SINGLE_STEP, attack_spec

    spec = attack_spec(name)
    if spec.kind == SINGLE_STEP:
        return 1, 0, False
    if spec.kind == NOISE:
        return 0, 0, False
    kw = {**_signature_defaults(spec.attack), **options}
    fn = spec.function.__name__
    others = max(num_classes - 1, 1)
    restarts = kw.get("restarts", 1)
    if fn in ("bim", "illc"):
        steps = kw.get("steps")
        if steps is None:
            from ..attacks.bim import kurakin_defaults

            steps = kurakin_defaults(eps, (0.0, 1.0))[1]
        return steps, 0, False
    if fn in ("pgd", "apgd"):
        steps = kw.get("steps", kw.get("n_iter", 1))
        return steps * restarts, 0, False
    if fn == "apgd_t":
        return kw["n_iter"] * min(kw["n_targets"], others) * restarts, 0, True
    if fn == "deepfool":  # a typical count, not its budget (see DEEPFOOL_ITERATIONS)
        return min(kw["max_iter"], DEEPFOOL_ITERATIONS) * min(kw["candidates"], num_classes), \
            0, False
    if fn == "carlini_wagner_l2":
        return kw["binary_search_steps"] * kw["max_iter"], 0, True
    if fn == "lbfgs":
        return kw["search_steps"] * kw["max_iter"], 0, True
    if fn == "jsma":
        return num_classes * 100, 0, True  # about 100 saliency steps, a Jacobian each
    if fn == "fab":
        return kw["n_iter"] * num_classes * restarts, 0, True
    if fn == "fab_t":
        return kw["n_iter"] * 2 * min(kw["n_targets"], others) * restarts, 0, True
    if fn == "square":
        return 0, kw["n_queries"], True
    if fn == "spsa":
        return 0, kw["steps"] * 2 * kw["samples"], False
    if fn == "hop_skip_jump":
        return 0, kw["n_queries"], True
    if fn == "autoattack":
        from ..attacks.autoattack import VERSIONS

        grads = forwards = 0
        n_iter, n_queries = kw["n_iter"], kw["n_queries"]
        for stage, skw in VERSIONS[kw["version"]].items():
            r = skw.get("restarts", 1)
            targets = min(skw.get("n_targets", 1), others)
            if stage.startswith("apgd"):
                grads += n_iter * targets * r
            elif stage == "fab":
                grads += n_iter * num_classes * r
            elif stage == "fab-t":
                grads += n_iter * 2 * targets * r
            else:
                forwards += n_queries
        return grads, forwards, True
    return 1, 0, True  # an attack this model does not know: one pass, flagged


def _adversarial_passes(adversarial):
    """Extra gradient passes per training example of an adversarial recipe (None: 0)."""
    if not adversarial:
        return 0.0
    if adversarial.get("objective") == "trades":
        return float(adversarial.get("steps", 10)) + 1.0
    steps, _, _ = attack_passes(adversarial.get("attack", "fgsm"), adversarial.get("eps", 0.1),
                                {"steps": adversarial["steps"]} if adversarial.get("steps")
                                else {}, 10)
    return adversarial.get("fraction", 0.5) * steps


def _arch_key(study, name):
    """The architecture a model is timed as: (arch, kwargs) of it or of its base."""
    m = study.model(name)
    if m.kind == "imported":
        return ("imported", name)
    if m.arch is None:
        return _arch_key(study, m.base)
    return (m.arch, repr(sorted(m.kwargs.items())), m.options.get("params"))


def calibrate(study, x, y, names=None, spent=None):
    """model name → ``Timing``, measuring each distinct architecture of ``names`` (default:
    every model) once on the training images ``x``, ``y``; ``spent`` as ``measure``'s."""
    from .build import architecture, imported

    by_arch, out = {}, {}
    for name in names or [m.name for m in study.models]:
        key = _arch_key(study, name)
        if key not in by_arch:
            m = study.model(name)
            while m.arch is None and m.kind != "imported":
                m = study.model(m.base)
            # Initialised from the calibration's images only: its speed is what counts.
            net = imported(study, m, x) if m.kind == "imported" else \
                architecture(study, m, 0, x[:CALIBRATION_BATCH])[0]
            train_batch = (m.train or {}).get("batch_size") or 64
            by_arch[key] = time_net(net, x, y, train_batch=train_batch,
                                    attack_batch=study.batch_size, spent=spent)
        out[name] = by_arch[key]
    return out


def build_seconds(study, name, n_train, timings):
    """Estimated seconds of building the model ``name`` (its parents not counted)."""
    m = study.model(name)
    t = timings[name]
    if m.kind == "compressed":
        from ..compress.pipeline import STAGES

        s = study.compression(m)
        stages = m.options.get("stages", STAGES)
        sized = m.options.get("target_ratio") or m.match  # a base without a preset: every layer
        pruned = "prune" in stages and (sized or any(v < 1 for v in s["kept"].values()))
        quantized = "quantize" in stages and (s["bits"] or m.options.get("code_bits")
                                              or (sized and not s["kept"]))
        epochs = (s["rounds"] * s["retrain_epochs"] if pruned else 0) \
            + (s["finetune_epochs"] if quantized else 0)
        passes = 1.0 + _adversarial_passes(s.get("adversarial")) * t.grad / t.train
        return epochs * n_train * t.train * passes
    if m.kind == "quantized":
        from ..compress.methods import METHODS

        options = {**METHODS[m.options["method"]].defaults, **m.options["method_options"]}
        return options.get("epochs", 0) * n_train * t.train
    recipe = m.train
    per_example = t.train + _adversarial_passes(recipe.get("adversarial")) * t.grad
    if m.teacher:
        per_example += timings[m.teacher].forward
    return recipe.get("epochs", 0) * n_train * per_example


def cell_seconds(study, cell, n_test, timings):
    """(estimated seconds of one cell, whether it is an upper bound)."""
    from .config import SANITY

    t = timings[cell.model]
    classes = _num_classes(study)
    if cell.attack == SANITY:
        from ..attacks.sanity import sanity_runs

        n = min(study.sanity_examples, n_test)
        seconds, bound = n * (t.grad + t.forward), False  # the gradient check, clean accuracy
        for attack, eps, count in sanity_runs(n, study.bounded_eps() or [0.1]):
            g, f, b = attack_passes(attack, eps, {}, classes)
            seconds += count * (g * t.grad + (f + 1) * t.forward)
            bound |= b
        return seconds, bound
    spec = study.attacks[cell.attack]
    n_test = min(n_test, spec.examples or n_test)
    crafter = timings[spec.source] if spec.source else t
    g, f, bound = attack_passes(spec.name, cell.eps if cell.eps is not None else 0.1,
                                spec.options, classes)
    seconds = n_test * (g * crafter.grad + f * crafter.forward + 2 * t.forward)
    if spec.source:
        seconds += n_test * crafter.forward  # the source's clean accuracy
    return seconds, bound


def _num_classes(study):
    from ..models.datasets import DATASETS

    return len(DATASETS[study.dataset])


def estimate_grid(study, items, data, *, stored=None):
    """The ``Estimate`` of running the cells ``items`` ((key, cell) pairs) on ``data`` (x, y,
    xt, yt); ``stored(name, seed)`` says whether the database holds a model already."""
    from .models import needed_models

    t0 = time.perf_counter()
    x, y, xt = data[0], data[1], data[2]
    cells = [c for _, c in items]
    pairs = needed_models(study, cells)
    names = list(dict.fromkeys(n for n, _ in pairs))
    spent = {}
    est = Estimate(timings=calibrate(study, x, y, names, spent))
    est.warm_up_seconds = spent.get("warm_up", 0.0)
    for name, seed in pairs:
        if stored is None or not stored(name, seed):
            est.builds[(name, seed)] = build_seconds(study, name, len(x), est.timings)
    for key, cell in items:
        est.cells[key], bound = cell_seconds(study, cell, len(xt), est.timings)
        if bound:
            est.upper_bound.add("sanity checks" if cell.attack == "sanity" else cell.attack)
    est.calibration_seconds = time.perf_counter() - t0
    return est

