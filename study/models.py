"""A study's models: made once, kept as ``.rcnn`` files beside the database and recorded in it.

A model travels as its model file's bytes (``compress.modelfile.encode_model`` /
``decode_model``) between the client, Dask workers and the disk; nothing else about it needs to
move. ``make_model`` is the pure step (parents' bytes in, the model's bytes and info out) that
runs in this process or on a worker; ``store_model`` / ``stored_model`` write and find its file;
``obtain_model`` is what the in-process runner asks for: the model, made (with its ancestors)
only if the database has none.
"""

import os

from .build import build_model, file_meta

MODEL_DIR = "models"  # beside the database


def model_info(net, size, extra=None):
    """What the database records about a model whose file has ``size`` bytes."""
    from ..compress.report import dense_parameter_bytes

    dense = dense_parameter_bytes(net)
    formats = [layer.weight_format for layer in net.layers if hasattr(layer, "weight_format")]
    # params: every weight and bias of the architecture (a compressed net's trainable
    # parameters are its centroids, which says nothing about its size); weights: those of its
    # convolution and fully connected layers, nonzero_weights: those pruning left.
    return {"params": net.num_dense_params(), "dense_bytes": int(dense), "file_bytes": int(size),
            "compression_ratio": dense / size, "weights": int(sum(f.size for f in formats)),
            "nonzero_weights": int(sum(f.nnz() for f in formats)), **(extra or {})}


def net_from_bytes(blob, name="model"):
    """The net of a model file's bytes (verified as a file is); ``name`` names it in errors."""
    from ..compress.modelfile import decode_model

    return decode_model(blob, source=f"model {name}")[0]


def make_model(study, name, seed, data, parent_blobs, *, progress=False, checkpoint=None,
               log=None):
    """Build the model ``name`` from its parents' ``.rcnn`` bytes → (its bytes, info). Runs in
    this process or on a worker; touches no database."""
    from ..compress.modelfile import encode_model

    parents = {n: net_from_bytes(b, n) for n, b in parent_blobs.items()}
    net, extra = build_model(study, name, seed, data, parents, progress=progress,
                             checkpoint=checkpoint, log=log,
                             parent_bytes={n: len(b) for n, b in parent_blobs.items()})
    blob = encode_model(net, file_meta(study, name, seed))
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


def needed_models(study, cells):
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
