"""Make one model of a study: train it, compress it, fine-tune, distil or factorise it.

``build_model(study, name, seed, data, parents)`` is a pure step: given the training data and
the already-built parent nets (``parents``: name → Net, see ``ModelSpec.parents``) it returns
the new net and what to record about its making. Where it runs — in this process or on a Dask
worker — and where the result is stored is the runner's business (``runner.py``).
"""

import time

from .config import TRAINED_FROM_SCRATCH


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
        from ..attacks.adversarial_training import adversarial_objective

        return adversarial_objective(recipe["adversarial"], seed)
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


def architecture(study, spec, seed, x):
    """A fresh net of a dense, compact or distilled model's architecture for the training
    images ``x`` (sized to ``params`` parameters when the spec asks; the small zoo nets
    initialised from data: ``models.architectures.fresh_net``) → (net, kwargs used)."""
    from ..models.architectures import fresh_net
    from ..models.datasets import DATASETS

    shape, classes = tuple(x.shape[1:]), len(DATASETS[study.dataset])
    try:
        return fresh_net(spec.arch, x, classes, seed=seed, params=spec.options.get("params"),
                         **spec.kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{study.source}: model {spec.name} ({spec.arch}): cannot build it "
                         f"for {shape} inputs with kwargs {spec.kwargs}: {e}") from None


def imported(study, spec, x):
    """An imported model's net for the study's [0, 1] images ``x``: loaded (``robustcnn.load``,
    with the study's bounds and preprocessing over the file's), planned for their size when
    fully convolutional, and with its preprocessing in front taking [0, 1] images mapped onto
    its bounds (``Net.with_preprocessing``), so eps are in [0, 1] units as for every model."""
    from ..loading import load
    from ..models.datasets import DATASETS

    net, _ = load(spec.path, weights=spec.weights, input_shape=tuple(x.shape[1:]),
                  bounds=spec.options.get("bounds"))
    try:
        net.preprocessing = {**net.preprocessing, **spec.options.get("preprocessing", {})}
    except ValueError as e:
        raise ValueError(f"{study.source}: model {spec.name}: {e}") from None
    classes = len(DATASETS[study.dataset])
    if net.num_classes < classes:
        raise ValueError(f"{study.source}: model {spec.name}: {spec.path} has "
                         f"{net.num_classes} outputs, {study.dataset} {classes} classes")
    return net.with_preprocessing(from_range=(0.0, 1.0))


def file_meta(study, name, seed):
    """The ``meta`` of the model file of ``name`` for ``seed`` (its header: part of its
    bytes, so a ``match_bytes`` model's trials count it too)."""
    return {"model": name, "kind": study.model(name).kind, "dataset": study.dataset,
            "identity": study.model_identity(name, seed)}


MATCH_TOLERANCE = 0.01  # the share a match_bytes model's trial file may miss its target by
MATCH_RETRY = 0.03  # a match_bytes model's file further off is compressed once more


def sized_settings(study, spec, net, parent_bytes, extra, *, meta=None, aim=None):
    """A compressed model's CompressionSettings fields (``Study.compression``) with its
    ``code_bits`` given to every weighted layer ``settings.bits`` does not name, and its kept
    shares scaled to its size target: ``target_ratio`` by the estimate
    (``compress.target.settings_for_ratio``); ``match_bytes``, the matched model's file size
    (``parent_bytes``: name → bytes), by trials that compress ``net`` without training and
    count the file's bytes, ``meta`` (``file_meta``) included (``settings_for_bytes``, to
    ``MATCH_TOLERANCE``; ``aim``: the bytes the trials aim at instead, the target recorded
    still the matched file's). A base without a preset's shares starts from
    ``compress.target.generic_settings`` (the code bits only if the quantize stage runs).
    Records the target, the shares chosen and the trials in ``extra``."""
    from dataclasses import replace

    from ..compress.pipeline import CompressionSettings
    from ..compress.report import dense_parameter_bytes
    from ..compress.target import generic_settings, settings_for_bytes, settings_for_ratio

    settings = study.compression(spec)
    code_bits = spec.options.get("code_bits")
    if code_bits:  # every weighted layer, but those settings.bits names
        weighted = [layer.name for layer in net.layers if hasattr(layer, "weight_format")]
        settings["bits"] = {**{n: code_bits for n in weighted},
                            **spec.settings.get("bits", {})}
        extra["bits"] = settings["bits"]
    ratio = spec.options.get("target_ratio")
    what = f"target_ratio {ratio:g}" if ratio else None
    target = None
    if spec.match:
        target = int(parent_bytes[spec.match])
        ratio = dense_parameter_bytes(net) / target
        what = f"match_bytes {spec.match} ({target:,} bytes, {ratio:.3g}× its base)"
        extra["target_bytes"] = target
    if ratio is None:
        return settings
    base = CompressionSettings(**settings)
    if not base.kept:  # no preset's shares to scale: every weighted layer, generic
        generic = generic_settings(net)
        quantized = "quantize" in spec.options.get("stages", ("quantize",))
        base = replace(base, kept=generic.kept,
                       bits=base.bits or (generic.bits if quantized else {}),
                       gap_bits={**generic.gap_bits, **base.gap_bits})
    try:
        if target is None:
            chosen = settings_for_ratio(net, ratio, base=base)
        else:
            chosen, trials = settings_for_bytes(net, aim or target, base=base, meta=meta,
                                                tolerance=MATCH_TOLERANCE)
            extra["size_trials"] = [[round(r, 4), int(b)] for r, b in trials]
    except ValueError as e:
        raise ValueError(f"{study.source}: model {spec.name}: {what}: {e}") from None
    extra["kept"] = chosen.kept
    return {**settings, "kept": chosen.kept, "bits": chosen.bits, "gap_bits": chosen.gap_bits}


def compressed(study, spec, seed, x, y, parents, parent_bytes, extra, say, progress):
    """A compressed model's net: its base compressed by the sized settings. A ``match_bytes``
    model whose file misses its target by more than ``MATCH_RETRY`` (retraining moved the
    codes' histogram, which Huffman coding packs: ``compress.target.trial_file_bytes``) is
    compressed once more from its base, its trials aimed off by the drift measured (target² /
    the first file's bytes; kept if that aim is out of reach); the first file's bytes are
    recorded as ``extra["first_bytes"]``."""
    from ..attacks.adversarial_training import adversarial_objective
    from ..compress.modelfile import encode_model
    from ..compress.pipeline import CompressionSettings, compress, stages_of

    meta = file_meta(study, spec.name, seed)
    aim, net = None, None
    for attempt in (1, 2):
        base = parents[spec.base].copy()
        try:
            settings = sized_settings(study, spec, base, parent_bytes, extra, meta=meta,
                                      aim=aim)
        except ValueError as e:
            if net is None:
                raise
            extra["retry"] = str(e)  # the aim is out of reach: the first net stays
            break
        net = base
        settings["seed"] = seed
        extra["compression_stages"] = list(stages_of(settings))
        say(f"compressing {spec.base} → {spec.name} (seed {seed})"
            + (f", again aiming at {aim:,.0f} bytes" if aim else ""))
        objective = adversarial_objective(settings.get("adversarial"), seed,
                                          where=f"{study.source}: model {spec.name}: "
                                                f"adversarial")
        report = compress(net, x, y, CompressionSettings(**settings), objective=objective,
                          val=None, progress=progress, log=None)
        extra["stages"] = [{k: s[k] for k in ("stage", "seconds")} for s in report["stages"]]
        target = extra.get("target_bytes")
        if target is None or attempt == 2:
            break
        size = len(encode_model(net, meta))
        if abs(size - target) <= MATCH_RETRY * target:
            break
        extra["first_bytes"] = size
        aim = target * target / size
    return net


def build_model(study, name, seed, data, parents, *, progress=False, checkpoint=None,
                log=None, parent_bytes=None):
    """Make the model ``name`` for ``seed`` from the data (x, y, xt, yt) and its built
    ``parents`` (name → Net; they are not modified) → (net, extra), ``extra`` a JSON-ready
    record of how it was made (seconds, stages, sizes chosen). ``parent_bytes`` (name → file
    bytes of the parents) gives a ``match_bytes`` model its target."""
    spec = study.model(name)
    x, y = data[0], data[1]
    say = log or (lambda line: None)
    t0 = time.perf_counter()
    extra = {}
    if spec.kind in TRAINED_FROM_SCRATCH:
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
        net = compressed(study, spec, seed, x, y, parents, parent_bytes or {}, extra, say,
                         progress)
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
    elif spec.kind == "imported":
        net = imported(study, spec, x)
        say(f"imported {name} from {spec.path}"
            + (f", fine-tuning (seed {seed})" if spec.train["epochs"] else ""))
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
