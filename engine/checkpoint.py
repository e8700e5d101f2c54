"""Model and training checkpoints in HDF5, written atomically and verified when read.

One file holds the architecture (``Net.spec()`` as JSON), every parameter and buffer, and for
training checkpoints the optimizer's velocities, the epoch reached, the history and the run's
settings. A SHA-256 over the architecture, the metadata and the arrays catches flipped bytes
that HDF5 itself would not notice and edits to any of them. Loading reads only numeric arrays
and JSON text: nothing from the file is executed or unpickled.

Layout (format ``robustcnn-checkpoint``, version 2):

    attrs:  format, version, spec (JSON), meta (JSON), sha256
    /state/<layer>/<name>      parameters and buffers
    /velocity/<layer>/<name>   SGD momentum buffers (training checkpoints only)

    sha256 = SHA-256 of  "spec:<n>:" spec  "meta:<n>:" meta  (n: the UTF-8 byte count of the
             attribute's text), then for each group and array in sorted order
             "<group>/<name>:<dtype>:<shape>" and the array's bytes

Version 1 files (written before the digest covered spec and meta) are still read, their
digest checked as it was written: over the arrays only. Their architecture and metadata are
therefore not protected; saving them again (any training or ``save_checkpoint``) writes
version 2.

Reading is bounded (``robustcnn.limits``): every dataset's shape, type and storage are checked,
and their total against ``max_bytes``, before any is read; the net is built from the spec only
up to ``max_bytes`` of parameters, with no initial weights drawn. A damaged file, whatever HDF5
raises for it, is one ValueError naming the file.
"""

import hashlib
import json
import os

import numpy as np

from .. import limits
from ..atomic import atomic_path
from .net import Net

FORMAT = "robustcnn-checkpoint"
VERSION = 2
READ_VERSIONS = (1, 2)


def _digest(groups, spec=None, meta=None):
    """The checksum: over ``spec`` and ``meta`` (JSON texts; None for version 1), then the
    arrays of ``groups`` ({group: {name: array}})."""
    h = hashlib.sha256()
    if spec is not None:
        for label, text in (("spec", spec), ("meta", meta)):
            data = text.encode("utf-8")
            h.update(f"{label}:{len(data)}:".encode())
            h.update(data)
    for group_name in sorted(groups):
        for key in sorted(groups[group_name]):
            a = np.ascontiguousarray(groups[group_name][key])
            h.update(f"{group_name}/{key}:{a.dtype.str}:{a.shape}".encode())
            h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()


def save_checkpoint(path, net, *, velocity=None, meta=None):
    """Write ``net`` (and SGD ``velocity`` {"layer/param": array}) to ``path`` atomically.

    ``meta`` is JSON-able data (epoch, history, run settings, dataset, accuracy …).
    """
    import h5py

    groups = {"state": net.state_dict()}
    if velocity:
        groups["velocity"] = dict(velocity)
    spec, meta_text = json.dumps(net.spec()), json.dumps(meta or {})
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["version"] = VERSION
            f.attrs["spec"] = spec
            f.attrs["meta"] = meta_text
            f.attrs["sha256"] = _digest(groups, spec, meta_text)
            for group_name, arrays in groups.items():
                g = f.create_group(group_name)
                for key, a in arrays.items():
                    g.create_dataset(key, data=np.ascontiguousarray(a))


def _text(f, name, path):
    """A string attribute as str."""
    if name not in f.attrs:
        raise ValueError(f"{path}: the checkpoint has no {name} attribute")
    value = f.attrs[name]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{path}: the {name} attribute is not UTF-8 text") from None
    if not isinstance(value, str):
        raise ValueError(f"{path}: the {name} attribute is not text")
    return value


def _datasets(f, name, path):
    """{key: dataset} of the group ``name`` (nested keys joined with /)."""
    import h5py

    found = {}
    if name not in f:
        return found
    if not isinstance(f[name], h5py.Group):
        raise ValueError(f"{path}: {name} is not a group")

    def visit(key, obj):
        if isinstance(obj, h5py.Dataset):
            found[key] = obj

    f[name].visititems(visit)
    return found


def _read_file(f, path, max_bytes):
    """(version, spec, meta and sha256 texts, {group: {name: array}}) of an open checkpoint,
    every dataset checked and their total bounded before any is read."""
    fmt = f.attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode("utf-8", "replace")
    if fmt != FORMAT:
        raise ValueError(f"{path}: not a robustcnn checkpoint (format attribute {fmt!r})")
    version = f.attrs.get("version", -1)
    if isinstance(version, np.integer):
        version = int(version)
    if not isinstance(version, int) or version not in READ_VERSIONS:
        raise ValueError(f"{path}: checkpoint version {version!r} is not supported (this "
                         f"robustcnn reads versions {', '.join(map(str, READ_VERSIONS))})")
    spec, meta_text, expected = (_text(f, k, path) for k in ("spec", "meta", "sha256"))
    found = {g: _datasets(f, g, path) for g in ("state", "velocity")}
    total = sum(limits.dataset_nbytes(ds, path, f"{g}/{k}")
                for g, datasets in found.items() for k, ds in datasets.items())
    limits.check_bytes(path, "the checkpoint's arrays", total, max_bytes)
    groups = {g: {k: limits.read_dataset(ds, path, f"{g}/{k}") for k, ds in datasets.items()}
              for g, datasets in found.items()}
    return int(version), spec, meta_text, expected, groups


def read_checkpoint(path, *, max_bytes=None):
    """Read and verify a checkpoint → dict(spec, state, velocity, meta, version). Raises
    ValueError for a file that is not a robustcnn checkpoint, has another version, is
    truncated, was altered, or declares more than ``max_bytes`` of arrays."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such checkpoint")
    version, spec, meta_text, expected, groups = limits.read_hdf5(
        path, lambda f: _read_file(f, path, max_bytes), "checkpoint", max_bytes)
    covered = (spec, meta_text) if version >= 2 else ()
    if _digest({k: v for k, v in groups.items() if v}, *covered) != expected:
        raise ValueError(f"{path}: checksum mismatch: the file was altered or corrupted")
    try:
        meta = json.loads(meta_text)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{path}: the meta attribute is not JSON ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: the meta attribute is not a JSON object")
    return {"spec": spec, "state": groups["state"], "velocity": groups["velocity"], "meta": meta,
            "version": version}


def load_net(path, *, dtype=None, max_bytes=None):
    """The Net stored in a checkpoint → (net, meta)."""
    max_bytes = limits.resolve(max_bytes)
    ckpt = read_checkpoint(path, max_bytes=max_bytes)
    source = os.fspath(path)
    try:
        net = Net.from_spec(ckpt["spec"], dtype=dtype, source=source, init=False,
                            max_bytes=max_bytes)
        net.load_state_dict(ckpt["state"], source=source)
    except (TypeError, KeyError, IndexError, OverflowError) as e:  # arrays of the wrong kind
        raise ValueError(f"{source}: {type(e).__name__}: {e}") from None
    return net, ckpt["meta"]
