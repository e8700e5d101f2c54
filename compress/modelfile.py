"""The compressed model file: one self-describing, versioned, checksummed binary file.

Layout (little-endian; ``.rcnn`` by convention):

    offset     size  field
    0          8     magic b"RCNNMDL\\0"
    8          2     format version (uint16), currently 1
    10         4     header length H (uint32)
    14         H     header: zlib-compressed UTF-8 JSON, see below
    14 + H     D     array data: every array's bytes back to back, C order, in header order
    14 + H + D 32    SHA-256 of all the bytes before it

    header = {"spec": the architecture (Net.spec()), "meta": free JSON (dataset, accuracy,
              the pipeline's settings, …), "arrays": [{"name": "conv2/codes", "dtype": "|u1",
              "shape": [4802], "nbytes": 4802}, …]}

Arrays are the layers' state (``Net.state_dict()``: each weight format's own arrays and the
biases). Floats are stored as float32; integers in the narrowest type that holds their values
(lossless), widened again on load. Reading checks the magic, version, sizes, checksum and every
array entry before building anything, then rebuilds the net from the JSON spec and validates
each weight format: nothing in the file is executed or unpickled. Writes are atomic.
"""

import hashlib
import json
import os
import struct
import zlib

import numpy as np

from ..atomic import atomic_path
from ..engine.net import Net

MAGIC = b"RCNNMDL\0"
VERSION = 1
SUFFIX = ".rcnn"
_PREFIX = struct.Struct("<8sHI")
_DIGEST = 32
# What the header may declare: little-endian numbers only.
_DTYPES = {"<f4", "<f8", "|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8"}
_MAX_HEADER = 64 << 20  # decompressed JSON; refuses zip bombs


def _storage(a):
    """The array as it is stored: float32 floats, the narrowest integer type for integers."""
    a = np.ascontiguousarray(a)
    if a.dtype.kind == "f":
        return a.astype("<f4")
    if a.dtype.kind not in "iu":
        raise TypeError(f"cannot store arrays of dtype {a.dtype}")
    lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
    for t in (("|u1", "|i1"), ("<u2", "<i2"), ("<u4", "<i4"), ("<u8", "<i8")):
        for name in t:
            info = np.iinfo(np.dtype(name))
            if info.min <= lo and hi <= info.max:
                return a.astype(name)
    raise ValueError("integer values out of the 64-bit range")


def save_model(path, net, meta=None):
    """Write ``net`` (any weight formats) to ``path`` atomically → the file's size in bytes."""
    state = net.state_dict()
    entries, chunks = [], []
    for name, array in state.items():
        stored = _storage(array)
        entries.append({"name": name, "dtype": stored.dtype.str, "shape": list(stored.shape),
                        "nbytes": int(stored.nbytes)})
        chunks.append(stored.tobytes())
    header = zlib.compress(json.dumps({"spec": net.spec(), "meta": meta or {}, "arrays": entries},
                                      separators=(",", ":")).encode(), 9)
    body = _PREFIX.pack(MAGIC, VERSION, len(header)) + header + b"".join(chunks)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(body)
        f.write(hashlib.sha256(body).digest())
    return len(body) + _DIGEST


def is_model_file(path):
    """Whether ``path`` starts with this format's magic."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def read_model_file(path):
    """Read and verify a model file → dict(spec, meta, state {name: array}, file_bytes).

    Raises ValueError naming the file for anything that is not an intact version-1 file.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < _PREFIX.size + _DIGEST:
        raise ValueError(f"{path}: too short to be a robustcnn model file ({len(data)} bytes)")
    magic, version, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"{path}: not a robustcnn model file (bad magic {magic!r})")
    if version != VERSION:
        raise ValueError(f"{path}: model file version {version} is not supported (this "
                         f"robustcnn reads version {VERSION})")
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise ValueError(f"{path}: checksum mismatch: the file is truncated or was altered")
    start = _PREFIX.size
    if start + header_len > len(body):
        raise ValueError(f"{path}: the header runs past the end of the file")
    try:
        inflate = zlib.decompressobj()
        text = inflate.decompress(data[start:start + header_len], _MAX_HEADER)
        if inflate.unconsumed_tail:
            raise ValueError("header too large")
        header = json.loads(text.decode("utf-8"))
    except (zlib.error, ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: unreadable header ({e})") from None
    if not isinstance(header, dict) or not {"spec", "meta", "arrays"} <= set(header):
        raise ValueError(f"{path}: the header lacks spec, meta or arrays")
    payload = memoryview(body)[start + header_len:]
    state, offset = {}, 0
    for entry in header["arrays"]:
        name, dtype, shape, nbytes = _check_entry(entry, path)
        if offset + nbytes > len(payload):
            raise ValueError(f"{path}: array {name} runs past the end of the data")
        state[name] = np.frombuffer(payload[offset:offset + nbytes], dtype=dtype).reshape(shape).copy()
        offset += nbytes
    if offset != len(payload):
        raise ValueError(f"{path}: {len(payload) - offset} bytes of data belong to no array")
    return {"spec": header["spec"], "meta": header["meta"], "state": state,
            "file_bytes": len(data), "header_bytes": header_len}


def _check_entry(entry, path):
    try:
        name, dtype, shape, nbytes = entry["name"], entry["dtype"], entry["shape"], entry["nbytes"]
    except (KeyError, TypeError):
        raise ValueError(f"{path}: malformed array entry {entry!r}") from None
    if not isinstance(name, str) or dtype not in _DTYPES:
        raise ValueError(f"{path}: array {name!r} has an unsupported dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise ValueError(f"{path}: array {name} has a bad shape {shape!r}")
    if nbytes != int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize:
        raise ValueError(f"{path}: array {name} declares {nbytes} bytes for shape {shape} of {dtype}")
    return name, np.dtype(dtype), tuple(shape), nbytes


def load_model(path, *, dtype=None):
    """The Net stored in a model file, its layers in their stored formats → (net, meta)."""
    model = read_model_file(path)
    net = Net.from_spec(model["spec"], dtype=dtype, source=os.fspath(path))
    net.load_state_dict(model["state"], source=os.fspath(path))
    return net, model["meta"]
