"""Run a study's grid in this process: models trained or compressed once (cached as ``.rcnn``
files recorded in the database), then one database row per (model, attack, eps, seed) cell.

``run_study(study, db)`` skips cells the database already holds, so a killed run resumes where
it stopped; ``run_cells`` is that loop on its own (any cell function), which the resume test
drives directly.
"""

import os
import sys
import time

from .store import Store, versions

MODEL_DIR = "models"  # beside the database


def _bar(progress):
    if progress:
        from tqdm.auto import tqdm

        return tqdm

    class _Null:
        def __init__(self, iterable=None, **kwargs):
            self.iterable = iterable

        def __iter__(self):
            return iter(self.iterable)

        def update(self, n=1):
            pass

        def set_postfix_str(self, s):
            pass

        def set_description_str(self, s):
            pass

        def close(self):
            pass

    return _Null


def run_cells(store, items, cell_fn, *, progress=False, describe=str):
    """For each (key, cell) of ``items`` not yet in ``store``: ``row = cell_fn(cell)``, then the
    row is written under ``key`` in its own transaction → number of rows written.

    A cell killed before its write leaves nothing; the next run does it again.
    """
    done = store.done_keys()
    pending = [(k, c) for k, c in items if k not in done]
    tqdm = _bar(progress)
    overall = tqdm(total=len(pending), desc="study", unit="cell", position=0)
    written = 0
    try:
        for key, cell in pending:
            overall.set_postfix_str(describe(cell))
            row = dict(cell_fn(cell))
            row["key"] = key
            written += store.write_cell(row)
            overall.update()
    finally:
        overall.close()
    return written


def load_data(study):
    """(x, y, xt, yt) of the study's dataset, cut to its train_examples / test_examples."""
    from ..models.datasets import load_dataset

    x, y = load_dataset(study.dataset, "train", data_dir=study.data_dir)
    xt, yt = load_dataset(study.dataset, "test", data_dir=study.data_dir)
    if study.train_examples:
        x, y = x[:study.train_examples], y[:study.train_examples]
    if study.test_examples:
        xt, yt = xt[:study.test_examples], yt[:study.test_examples]
    return x, y, xt, yt


def _build(study, spec, seed, input_shape, num_classes):
    from ..models.lenet import MODELS, build_model
    from ..models.zoo import build_zoo

    make = build_model if spec.arch in MODELS else build_zoo
    try:
        return make(spec.arch, input_shape=tuple(input_shape), num_classes=num_classes,
                    seed=seed, **spec.kwargs)
    except TypeError as e:
        raise ValueError(f"{study.source}: model {spec.name} ({spec.arch}): cannot build it "
                         f"for {tuple(input_shape)} inputs with kwargs {spec.kwargs}: "
                         f"{e}") from None


def _train(net, x, y, recipe, seed, progress, checkpoint=None):
    from ..engine.train import SGD, Schedule, fit

    steps = max(len(x) // recipe["batch_size"], 1)
    total = max(recipe["epochs"] * steps, 1)
    schedule = Schedule(recipe["schedule"], recipe["lr"], total=total,
                        step_size=max(total // 3, 1), warmup=steps // 2)
    return fit(net, x, y, epochs=recipe["epochs"], batch_size=recipe["batch_size"],
               optimizer=SGD(recipe["momentum"], recipe["weight_decay"]), schedule=schedule,
               seed=seed, checkpoint=checkpoint, progress=progress,
               log=None) if recipe["epochs"] else []


def model_info(net, path, extra=None):
    from ..compress.report import dense_parameter_bytes

    dense = dense_parameter_bytes(net)
    size = os.path.getsize(path)
    # params: every weight and bias of the architecture (a compressed net's trainable
    # parameters are its centroids, which says nothing about its size).
    return {"params": int(dense // 4), "dense_bytes": int(dense), "file_bytes": int(size),
            "compression_ratio": dense / size, **(extra or {})}


def obtain_model(study, store, name, seed, data, *, progress=False, log=None):
    """The model ``name`` for ``seed``: loaded from its stored artifact when the database has
    one whose file matches its checksum, else trained (dense, compact) or compressed from its
    base, written to ``models/`` beside the database and recorded → (net, info).

    The returned net is always the one read back from the file, so a fresh run and a rerun that
    reuses the artifact evaluate the same weights.
    """
    from ..compress.modelfile import load_model, save_model

    key = study.model_key(name, seed)
    found = store.artifact(key)
    if found is not None:
        net, _ = load_model(found[0])
        return net, found[1]
    spec = study.model(name)
    x, y, xt, yt = data
    say = log or (lambda line: None)
    t0 = time.perf_counter()
    extra = {}
    models = os.path.join(store.root, MODEL_DIR)
    os.makedirs(models, exist_ok=True)
    path = os.path.join(models, f"{name}-s{seed}-{key}.rcnn")
    # Training saves a checkpoint every epoch: a killed run resumes it after the last epoch.
    checkpoint = os.path.join(models, f"{name}-s{seed}-{key}.training.h5")
    if spec.kind == "compressed":
        from ..compress.pipeline import CompressionSettings, compress

        net, _ = obtain_model(study, store, spec.base, seed, data, progress=progress, log=log)
        say(f"compressing {spec.base} → {name} (seed {seed})")
        settings = CompressionSettings(**{**study.compression(spec), "seed": seed})
        report = compress(net, x, y, settings, val=None, progress=progress, log=None)
        extra["stages"] = [{k: s[k] for k in ("stage", "seconds")} for s in report["stages"]]
    else:
        say(f"training {name} ({spec.arch}, seed {seed})")
        from ..models.datasets import DATASETS

        net = _build(study, spec, seed, x.shape[1:], len(DATASETS[study.dataset]))
        _train(net, x, y, spec.train, seed, progress, checkpoint)
    extra["build_seconds"] = time.perf_counter() - t0
    save_model(path, net, meta={"model": name, "kind": spec.kind, "dataset": study.dataset,
                                "identity": study.model_identity(name, seed)})  # atomic
    net, _ = load_model(path)
    info = model_info(net, path, extra)
    store.put_artifact(key, name, spec.kind, path, info)
    if os.path.exists(checkpoint):
        os.unlink(checkpoint)
    return net, info


def evaluate_cell(study, net, info, cell, xt, yt, *, progress=False):
    """One cell's row (without its key): ``attacks.evaluate`` of one attack at one eps, with
    the sanity checks attached."""
    from ..attacks.evaluate import evaluate

    spec = study.model(cell.model)
    base = study.model(spec.base) if spec.kind == "compressed" else spec
    bar = _bar(progress)(total=2 if study.sanity else 1, desc=f"{cell.model} {cell.attack} "
                         f"eps {cell.eps:g}", unit="step", leave=False, position=1)
    started = time.time()
    t0 = time.perf_counter()
    try:
        result = evaluate(net, xt, yt, [cell.attack], [cell.eps], sanity=study.sanity,
                          sanity_examples=study.sanity_examples, batch_size=study.batch_size,
                          seed=cell.seed, log=lambda line: bar.update())
    finally:
        bar.close()
    (row,) = result["rows"]
    row = dict(row)
    row.pop("seconds")  # timings stay out of the metrics: equal seeds give equal metrics
    settings = study.compression(spec) if spec.kind == "compressed" else \
        {"train": spec.train, "kwargs": spec.kwargs}
    return {"study": study.name, "model": cell.model,
            "model_key": study.model_key(cell.model, cell.seed), "kind": spec.kind,
            "arch": base.arch, "settings": settings, "attack": cell.attack, "norm": row["norm"],
            "eps": cell.eps, "seed": cell.seed, "examples": row["examples"],
            "clean_accuracy": row["clean_accuracy"],
            "adversarial_accuracy": row["adversarial_accuracy"],
            "success_rate": row["success_rate"], "linf_mean": row["linf_mean"],
            "l2_mean": row["l2_mean"],
            "sanity_passed": result["sanity_passed"] if study.sanity else None,
            "metrics": row, "sanity": result["sanity"],
            "model_info": {k: v for k, v in info.items()
                           if k not in ("build_seconds", "stages")},
            "seconds": time.perf_counter() - t0, "started": started, "finished": time.time(),
            "versions": versions()}


def run_study(study, db, *, limit=None, progress=True, log=None):
    """Run the cells of ``study`` missing from the database ``db`` (a path), at most ``limit``
    of them → {"cells": total, "done_before": n, "written": n, "remaining": n, "seconds": s}."""
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    t0 = time.perf_counter()
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    with Store(db) as store:
        cells = [(study.cell_key(c), c) for c in study.cells()]
        done = store.done_keys()
        pending = [(k, c) for k, c in cells if k not in done]
        todo = pending[:limit] if limit else pending
        written = 0
        if todo:
            data = load_data(study)
            xt, yt = data[2], data[3]
            cache = {}

            def cell_fn(cell):
                model = (cell.model, cell.seed)
                if model not in cache:
                    cache.clear()  # one model in memory at a time
                    cache[model] = obtain_model(study, store, cell.model, cell.seed, data,
                                                progress=progress, log=say)
                net, info = cache[model]
                return evaluate_cell(study, net, info, cell, xt, yt, progress=progress)

            written = run_cells(store, todo, cell_fn, progress=progress,
                                describe=lambda c: f"{c.model} {c.attack} eps {c.eps:g} "
                                                   f"seed {c.seed}")
        remaining = len(pending) - written
    return {"cells": len(cells), "done_before": len(cells) - len(pending), "written": written,
            "remaining": remaining, "seconds": time.perf_counter() - t0}
