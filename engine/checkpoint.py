"""Model and training checkpoints in HDF5, written atomically and verified when read.

One file holds the architecture (``Net.spec()`` as JSON), every parameter and buffer, and for
training checkpoints the optimizer's velocities, the epoch reached, the history and the run's
settings. A SHA-256 over the arrays catches flipped bytes that HDF5 itself would not notice.
Loading reads only numeric arrays and JSON text: nothing from the file is executed or unpickled.

Layout (format ``robustcnn-checkpoint``, version 1):

    attrs:  format, version, spec (JSON), meta (JSON), sha256
    /state/<layer>/<name>      parameters and buffers
    /velocity/<layer>/<name>   SGD momentum buffers (training checkpoints only)
"""

import hashlib
import json
import os

import numpy as np

from ..atomic import atomic_path
from .net import Net

FORMAT = "robustcnn-checkpoint"
VERSION = 1


def _digest(groups):
    h = hashlib.sha256()
    for group_name in sorted(groups):
        for key in sorted(groups[group_name]):
            a = np.ascontiguousarray(groups[group_name][key])
            h.update(f"{group_name}/{key}:{a.dtype.str}:{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()


def save_checkpoint(path, net, *, velocity=None, meta=None):
    """Write ``net`` (and SGD ``velocity`` {"layer/param": array}) to ``path`` atomically.

    ``meta`` is JSON-able data (epoch, history, run settings, dataset, accuracy …).
    """
    import h5py

    groups = {"state": net.state_dict()}
    if velocity:
        groups["velocity"] = dict(velocity)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["version"] = VERSION
            f.attrs["spec"] = json.dumps(net.spec())
            f.attrs["meta"] = json.dumps(meta or {})
            f.attrs["sha256"] = _digest(groups)
            for group_name, arrays in groups.items():
                g = f.create_group(group_name)
                for key, a in arrays.items():
                    g.create_dataset(key, data=np.ascontiguousarray(a))


def _read_group(f, name, path):
    arrays = {}
    if name not in f:
        return arrays

    def visit(key, obj):
        import h5py

        if isinstance(obj, h5py.Dataset):
            if obj.dtype.kind not in "fiu":
                raise ValueError(f"{path}: {name}/{key} has dtype {obj.dtype}; only numbers are read")
            arrays[key] = obj[()]

    f[name].visititems(visit)
    return arrays


def read_checkpoint(path):
    """Read and verify a checkpoint → dict(spec, state, velocity, meta). Raises ValueError for a
    file that is not a robustcnn checkpoint, has another version, is truncated or was altered."""
    import h5py

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise ValueError(f"{path}: not a robustcnn checkpoint (format attribute "
                                 f"{f.attrs.get('format')!r})")
            version = int(f.attrs.get("version", -1))
            if version != VERSION:
                raise ValueError(f"{path}: checkpoint version {version} is not supported "
                                 f"(this robustcnn reads version {VERSION})")
            spec = str(f.attrs["spec"])
            meta = json.loads(str(f.attrs["meta"]))
            expected = str(f.attrs["sha256"])
            groups = {"state": _read_group(f, "state", path),
                      "velocity": _read_group(f, "velocity", path)}
    except (OSError, KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable or truncated checkpoint ({e})") from None
    if _digest({k: v for k, v in groups.items() if v}) != expected:
        raise ValueError(f"{path}: checksum mismatch: the file was altered or corrupted")
    return {"spec": spec, "state": groups["state"], "velocity": groups["velocity"], "meta": meta}


def load_net(path, *, dtype=None):
    """The Net stored in a checkpoint or model file → (net, meta)."""
    ckpt = read_checkpoint(path)
    net = Net.from_spec(ckpt["spec"], dtype=dtype, source=os.fspath(path))
    net.load_state_dict(ckpt["state"], source=os.fspath(path))
    return net, ckpt["meta"]
