"""Make one model of a study: train it, compress it, fine-tune, distil or factorise it.

``build_model(study, name, seed, data, parents)`` is a pure step: given the training data and
the already-built parent nets (``parents``: name → Net, see ``ModelSpec.parents``) it returns
the new net and what to record about its making. Where it runs — in this process or on a Dask
worker — and where the result is stored is the runner's business (``runner.py``).
"""

import time


def training_objective(recipe, seed, teacher=None, options=None):
    """The ``fit`` objective of a recipe: adversarial (``recipe["adversarial"]``), distillation
    (a ``teacher``) or None for plain cross-entropy."""
    if teacher is not None:
        from ..compress.distill import DistillationObjective

        if recipe.get("adversarial"):
            raise ValueError("a distilled model cannot also train adversarially (yet)")
        return DistillationObjective(teacher, temperature=options["temperature"],
                                     alpha=options["alpha"])
    if recipe.get("adversarial"):
        from ..attacks.adversarial_training import AdversarialObjective

        return AdversarialObjective(**recipe["adversarial"], seed=seed)
    return None


def train(net, x, y, recipe, seed, *, progress=False, checkpoint=None, objective=None):
    """``engine.train.fit`` with a study recipe (epochs, batch_size, lr, momentum,
    weight_decay, schedule) → history. Warm-up: half an epoch."""
    from ..engine.train import SGD, Schedule, fit

    if not recipe["epochs"]:
        return []
    steps = max(len(x) // recipe["batch_size"], 1)
    total = max(recipe["epochs"] * steps, 1)
    schedule = Schedule(recipe["schedule"], recipe["lr"], total=total,
                        step_size=max(total // 3, 1), warmup=steps // 2)
    kwargs = {"objective": objective} if objective is not None else {}
    return fit(net, x, y, epochs=recipe["epochs"], batch_size=recipe["batch_size"],
               optimizer=SGD(recipe["momentum"], recipe["weight_decay"]), schedule=schedule,
               seed=seed, checkpoint=checkpoint, progress=progress, log=None, **kwargs)


# Examples ``models.zoo.data_init`` scales a fresh small zoo net on (the first N of the
# training set): the engine's batch norm does not normalise a net trained from scratch by
# itself, and SqueezeNet has none, so these deep narrow nets start with unit-variance layers.
DATA_INIT_EXAMPLES = 256


def architecture(study, spec, seed, x):
    """A fresh net of a dense, compact or distilled model's architecture for the training
    images ``x`` (sized to ``params`` parameters when the spec asks; the small zoo nets
    initialised from data) → (net, kwargs used)."""
    from ..models.datasets import DATASETS
    from ..models.lenet import MODELS, build_model as build_lenet
    from ..models.zoo import WIDTH_KNOBS, build_zoo, compact_for_params, data_init

    shape, classes = tuple(x.shape[1:]), len(DATASETS[study.dataset])
    kwargs = dict(spec.kwargs)
    try:
        if "params" in spec.options:
            kwargs = compact_for_params(spec.arch, spec.options["params"], input_shape=shape,
                                        num_classes=classes, **kwargs)
            kwargs = {k: v for k, v in kwargs.items() if k not in ("input_shape", "num_classes")}
        make = build_lenet if spec.arch in MODELS else build_zoo
        net = make(spec.arch, input_shape=shape, num_classes=classes, seed=seed, **kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{study.source}: model {spec.name} ({spec.arch}): cannot build it "
                         f"for {shape} inputs with kwargs {kwargs}: {e}") from None
    if spec.arch in WIDTH_KNOBS:
        data_init(net, x[:DATA_INIT_EXAMPLES])
    return net, kwargs


def build_model(study, name, seed, data, parents, *, progress=False, checkpoint=None,
                log=None):
    """Make the model ``name`` for ``seed`` from the data (x, y, xt, yt) and its built
    ``parents`` (name → Net; they are not modified) → (net, extra), ``extra`` a JSON-ready
    record of how it was made (seconds, stages, sizes chosen)."""
    spec = study.model(name)
    x, y = data[0], data[1]
    say = log or (lambda line: None)
    t0 = time.perf_counter()
    extra = {}
    if spec.kind in ("dense", "compact", "distilled"):
        net, kwargs = architecture(study, spec, seed, x)
        if kwargs != spec.kwargs:
            extra["kwargs"] = kwargs
        teacher = parents[spec.teacher] if spec.teacher else None
        say(f"training {name} ({spec.arch}, seed {seed})"
            + (f", distilled from {spec.teacher}" if teacher is not None else ""))
        objective = training_objective(spec.train, seed, teacher, spec.options)
        train(net, x, y, spec.train, seed, progress=progress, checkpoint=checkpoint,
              objective=objective)
    elif spec.kind == "compressed":
        from ..attacks.adversarial_training import adversarial_objective
        from ..compress.pipeline import CompressionSettings, compress

        net = parents[spec.base].copy()
        settings = {**study.compression(spec), "seed": seed}
        if "target_ratio" in spec.options:
            from ..compress.target import settings_for_ratio

            chosen = settings_for_ratio(net, spec.options["target_ratio"],
                                        base=CompressionSettings(**settings))
            settings = {**settings, "kept": chosen.kept, "bits": chosen.bits,
                        "gap_bits": chosen.gap_bits}
            extra["kept"] = chosen.kept
        say(f"compressing {spec.base} → {name} (seed {seed})")
        objective = adversarial_objective(settings.get("adversarial"), seed,
                                          where=f"{study.source}: model {name}: adversarial")
        report = compress(net, x, y, CompressionSettings(**settings), objective=objective,
                          val=None, progress=progress, log=None)
        extra["stages"] = [{k: s[k] for k in ("stage", "seconds")} for s in report["stages"]]
    elif spec.kind == "quantized":
        from ..compress.methods import METHODS, run_method

        net = parents[spec.base].copy()
        method = spec.options["method"]
        options = dict(spec.options["method_options"])
        if "seed" in METHODS[method].defaults:
            options["seed"] = seed
        say(f"quantizing {spec.base} → {name} by {method} (seed {seed})")
        net, report = run_method(method, net, x, y, options, val=None, progress=progress,
                                 log=None)
        extra["stages"] = [{k: s[k] for k in ("stage", "seconds")} for s in report["stages"]]
    elif spec.kind == "finetuned":
        net = parents[spec.base].copy()
        say(f"fine-tuning {spec.base} → {name} (seed {seed})")
        train(net, x, y, spec.train, seed, progress=progress, checkpoint=checkpoint,
              objective=training_objective(spec.train, seed))
    elif spec.kind == "lowrank":
        from ..compress.lowrank import factorise, ranks_for_ratio

        base = parents[spec.base]
        ranks = spec.options.get("ranks") or ranks_for_ratio(base, spec.options["ratio"])
        extra["ranks"] = {k: int(v) for k, v in ranks.items()}
        say(f"factorising {spec.base} → {name} (ranks {extra['ranks']}, seed {seed})")
        net = factorise(base, ranks)
        train(net, x, y, spec.train, seed, progress=progress, checkpoint=checkpoint,
              objective=training_objective(spec.train, seed))
    else:  # parse_config admits only the kinds above
        raise ValueError(f"{study.source}: model {name}: unknown kind {spec.kind!r}")
    extra["build_seconds"] = time.perf_counter() - t0
    return net, extra
