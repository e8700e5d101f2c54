"""Run a study's grid: models made once (cached as ``.rcnn`` files recorded in the database),
then one database row per cell, written by this process cell by cell.

``run_study(study, db)`` runs in this process; ``run_study(..., scheduler="tcp://host:port")``
sends the model builds and the cells to a Dask distributed cluster (workers need only robustcnn
and its ``distributed`` extra): models travel as ``.rcnn`` bytes, and the results come back to
this process, which alone writes the database and the model files. Either way the cells the
database already holds are skipped, so a killed run resumes where it stopped; ``run_cells`` is
that loop on its own (any cell function), which the resume test drives directly.
"""

import os
import sys
import tempfile
import time

from .build import build_model
from .cell import evaluate_cell
from .store import Store

MODEL_DIR = "models"  # beside the database


def _bar(progress):
    from tqdm.auto import tqdm

    if progress:
        return tqdm
    return lambda *args, **kwargs: tqdm(*args, disable=True, **kwargs)


def run_cells(store, items, cell_fn, *, progress=False, describe=str):
    """For each (key, cell) of ``items`` not yet in ``store``: ``row = cell_fn(cell)``, then the
    row is written under ``key`` in its own transaction → number of rows written.

    A cell killed before its write leaves nothing; the next run does it again.
    """
    done = store.done_keys()
    pending = [(k, c) for k, c in items if k not in done]
    overall = _bar(progress)(total=len(pending), desc="study", unit="cell", position=0)
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


# -- models as bytes: what moves between the client, the workers and the disk ----------------

def net_to_bytes(net, meta):
    """A ``.rcnn`` file's bytes for ``net``."""
    from ..compress.modelfile import save_model

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.rcnn")
        save_model(path, net, meta=meta)
        with open(path, "rb") as f:
            return f.read()


def net_from_bytes(blob, name="model"):
    """The net of a ``.rcnn`` file's bytes (checked as the file reader checks a file)."""
    from ..compress.modelfile import load_model

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.rcnn")
        with open(path, "wb") as f:
            f.write(blob)
        return load_model(path)[0]


def model_info(net, size, extra=None):
    from ..compress.report import dense_parameter_bytes

    dense = dense_parameter_bytes(net)
    # params: every weight and bias of the architecture (a compressed net's trainable
    # parameters are its centroids, which says nothing about its size).
    return {"params": int(dense // 4), "dense_bytes": int(dense), "file_bytes": int(size),
            "compression_ratio": dense / size, **(extra or {})}


def make_model(study, name, seed, data, parent_blobs, *, progress=False, checkpoint=None,
               log=None):
    """Build the model ``name`` from its parents' ``.rcnn`` bytes → (its bytes, info). Runs in
    this process or on a worker; touches no database."""
    parents = {n: net_from_bytes(b, n) for n, b in parent_blobs.items()}
    net, extra = build_model(study, name, seed, data, parents, progress=progress,
                             checkpoint=checkpoint, log=log)
    spec = study.model(name)
    blob = net_to_bytes(net, {"model": name, "kind": spec.kind, "dataset": study.dataset,
                              "identity": study.model_identity(name, seed)})
    return blob, model_info(net, len(blob), extra)


def _artifact_path(store, study, name, seed, suffix=".rcnn"):
    return os.path.join(store.root, MODEL_DIR,
                        f"{name}-s{seed}-{study.model_key(name, seed)}{suffix}")


def store_model(store, study, name, seed, blob, info):
    """Write a model's bytes beside the database (atomically) and record them."""
    from ..atomic import atomic_path

    path = _artifact_path(store, study, name, seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(blob)
    store.put_artifact(study.model_key(name, seed), name, study.model(name).kind, path, info)
    return path


def stored_model(store, study, name, seed):
    """(bytes, info) of a model the database has (file present and matching), else None."""
    found = store.artifact(study.model_key(name, seed))
    if found is None:
        return None
    with open(found[0], "rb") as f:
        return f.read(), found[1]


def _ensure_stored(study, store, name, seed, data, *, progress=False, log=None):
    """(path, info) of the model ``name`` for ``seed``: its stored artifact when the database
    has one, else made from its parents (stored first, the same way), stored and recorded.
    Training checkpoints every epoch beside the database, so a killed run resumes after the
    last finished epoch."""
    found = store.artifact(study.model_key(name, seed))
    if found is not None:
        return found
    parents = {}
    for p in study.model(name).parents:
        path, _ = _ensure_stored(study, store, p, seed, data, progress=progress, log=log)
        with open(path, "rb") as f:
            parents[p] = f.read()
    checkpoint = _artifact_path(store, study, name, seed, ".training.h5")
    os.makedirs(os.path.dirname(checkpoint), exist_ok=True)
    blob, info = make_model(study, name, seed, data, parents, progress=progress,
                            checkpoint=checkpoint, log=log)
    path = store_model(store, study, name, seed, blob, info)
    if os.path.exists(checkpoint):
        os.unlink(checkpoint)
    return path, info


def obtain_model(study, store, name, seed, data, *, progress=False, log=None):
    """The model ``name`` for ``seed`` in this process → (net, info): read from its ``.rcnn``
    file, made first if the database has none (``_ensure_stored``)."""
    from ..compress.modelfile import load_model

    path, info = _ensure_stored(study, store, name, seed, data, progress=progress, log=log)
    return load_model(path)[0], info


def _needed_models(study, cells):
    """The (model, seed) pairs the cells evaluate, with their ancestors, parents first."""
    order = {m.name: i for i, m in enumerate(study.models)}
    need = set()

    def add(name, seed):
        if (name, seed) not in need:
            need.add((name, seed))
            for p in study.model(name).parents:
                add(p, seed)

    for c in cells:
        for m in study.cell_models(c):
            add(m, c.seed)
    return sorted(need, key=lambda ms: (ms[1], order[ms[0]]))


def _describe(cell):
    eps = "" if cell.eps is None else f" eps {cell.eps:g}"
    return f"{cell.model} {cell.attack}{eps} seed {cell.seed}"


def run_study(study, db, *, limit=None, progress=True, log=None, scheduler=None):
    """Run the cells of ``study`` missing from the database ``db`` (a path), at most ``limit``
    of them, in this process or (``scheduler``: a Dask scheduler address or a
    ``distributed.Client``) on a Dask cluster → {"cells": total, "done_before": n, "written":
    n, "remaining": n, "seconds": s}."""
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
        if todo and scheduler is not None:
            from .distributed import run_distributed

            written = run_distributed(study, store, todo, scheduler, progress=progress, log=say)
        elif todo:
            data = load_data(study)
            xt, yt = data[2], data[3]
            loaded = {}

            def cell_fn(cell):
                names = study.cell_models(cell)
                for name in names:
                    if (name, cell.seed) not in loaded:
                        if len(loaded) > 8:  # a few models in memory at a time
                            loaded.clear()
                        loaded[(name, cell.seed)] = obtain_model(
                            study, store, name, cell.seed, data, progress=progress, log=say)
                nets = {n: loaded[(n, cell.seed)][0] for n in names}
                infos = {n: loaded[(n, cell.seed)][1] for n in names}
                return evaluate_cell(study, cell, nets, infos, xt, yt, progress=progress)

            written = run_cells(store, todo, cell_fn, progress=progress, describe=_describe)
        remaining = len(pending) - written
    return {"cells": len(cells), "done_before": len(cells) - len(pending), "written": written,
            "remaining": remaining, "seconds": time.perf_counter() - t0}
