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

Bounds (``robustcnn.limits``): a file of more than ``max_bytes`` is not read; the arrays must
account for the data exactly; the header inflates to at most 64 MiB of JSON, without NaN or
Infinity; the net is built from the spec only up to ``max_bytes`` of parameters (and of any
blob of one example), with no initial weights drawn (every array comes from the file).

    data = encode_model(net, meta)        # the file's bytes; decode_model(data) → (net, meta)
    save_model(path, net, meta)           # the same bytes, written atomically; load_model(path)
    read_model_bytes(data)                # verified spec, meta and arrays, nothing built
                                          # (read_model_file(path) for a file)
    encoded_size(spec, meta, arrays)      # the size from the array table alone (the size
                                          # estimate of compress/target.py)
"""

import hashlib
import json
import os
import struct
import zlib

import numpy as np

from .. import limits
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


def integer_dtype(lo, hi):
    """The dtype string of the narrowest integer type holding every value in [lo, hi] (unsigned
    before signed of the same width): how integers are stored."""
    for pair in (("|u1", "|i1"), ("<u2", "<i2"), ("<u4", "<i4"), ("<u8", "<i8")):
        for name in pair:
            info = np.iinfo(np.dtype(name))
            if info.min <= lo and hi <= info.max:
                return name
    raise ValueError(f"integers in [{lo}, {hi}] are out of the 64-bit range")


def _storage(a):
    """The array as it is stored: float32 floats, the narrowest integer type for integers."""
    a = np.ascontiguousarray(a)
    if a.dtype.kind == "f":
        return a.astype("<f4")
    if a.dtype.kind not in "iu":
        raise TypeError(f"cannot store arrays of dtype {a.dtype}")
    lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
    return a.astype(integer_dtype(lo, hi))


def _header(spec, meta, arrays):
    """The header's bytes: the zlib-compressed JSON of the architecture, meta and array table."""
    return zlib.compress(json.dumps({"spec": spec, "meta": meta or {}, "arrays": arrays},
                                    separators=(",", ":")).encode(), 9)


def encoded_size(spec, meta, arrays):
    """The size in bytes of the file of the architecture ``spec``, ``meta`` and arrays described
    by ``arrays`` (the header's table: [{"name", "dtype", "shape", "nbytes"}], in order), from
    the table alone: what ``encode_model`` gives for a net with these arrays."""
    return (_PREFIX.size + len(_header(spec, meta, arrays))
            + sum(int(a["nbytes"]) for a in arrays) + _DIGEST)


def encode_model(net, meta=None):
    """The model file's bytes for ``net`` (any weight formats) and ``meta`` (JSON-ready)."""
    entries, chunks = [], []
    for name, array in net.state_dict().items():
        stored = _storage(array)
        entries.append({"name": name, "dtype": stored.dtype.str, "shape": list(stored.shape),
                        "nbytes": int(stored.nbytes)})
        chunks.append(stored.tobytes())
    header = _header(net.spec(), meta, entries)
    body = _PREFIX.pack(MAGIC, VERSION, len(header)) + header + b"".join(chunks)
    return body + hashlib.sha256(body).digest()


def save_model(path, net, meta=None):
    """Write ``net`` (any weight formats) to ``path`` atomically → the file's size in bytes."""
    data = encode_model(net, meta)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return len(data)


def is_model_file(path):
    """Whether ``path`` starts with this format's magic."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _no_constants(name):
    raise ValueError(f"the header holds {name}, which JSON does not allow")


def read_model_bytes(data, *, source="<model bytes>", max_bytes=None):
    """Verify a model file's bytes → dict(spec, meta, state {name: array}, file_bytes,
    header_bytes), building nothing.

    Raises ValueError naming ``source`` for anything that is not an intact version-1 file, or
    for more than ``max_bytes`` of it (``robustcnn.limits``).
    """
    limits.check_bytes(source, "the model file", len(data), max_bytes)
    data = bytes(data)
    if len(data) < _PREFIX.size + _DIGEST:
        raise ValueError(f"{source}: too short to be a robustcnn model file ({len(data)} bytes)")
    magic, version, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"{source}: not a robustcnn model file (bad magic {magic!r})")
    if version != VERSION:
        raise ValueError(f"{source}: model file version {version} is not supported (this "
                         f"robustcnn reads version {VERSION})")
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise ValueError(f"{source}: checksum mismatch: the file is truncated or was altered")
    start = _PREFIX.size
    if start + header_len > len(body):
        raise ValueError(f"{source}: the header runs past the end of the file")
    try:
        inflate = zlib.decompressobj()
        text = inflate.decompress(data[start:start + header_len], _MAX_HEADER)
        if inflate.unconsumed_tail:
            raise ValueError("header too large")
        header = json.loads(text.decode("utf-8"), parse_constant=_no_constants)
    except (zlib.error, ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"{source}: unreadable header ({type(e).__name__}: {e})") from None
    if not isinstance(header, dict) or not {"spec", "meta", "arrays"} <= set(header):
        raise ValueError(f"{source}: the header lacks spec, meta or arrays")
    if not isinstance(header["arrays"], list):
        raise ValueError(f"{source}: the header's arrays is not a list")
    if not isinstance(header["meta"], dict):  # found by the fuzzing: meta = 3
        raise ValueError(f"{source}: the header's meta is not a JSON object")
    payload = memoryview(body)[start + header_len:]
    state, offset = {}, 0
    for entry in header["arrays"]:
        name, dtype, shape, nbytes = _check_entry(entry, source)
        if offset + nbytes > len(payload):
            raise ValueError(f"{source}: array {name} runs past the end of the data")
        chunk = payload[offset:offset + nbytes]
        state[name] = np.frombuffer(chunk, dtype=dtype).reshape(shape).copy()
        offset += nbytes
    if offset != len(payload):
        raise ValueError(f"{source}: {len(payload) - offset} bytes of data belong to no array")
    return {"spec": header["spec"], "meta": header["meta"], "state": state,
            "file_bytes": len(data), "header_bytes": header_len}


def decode_model(data, *, source="<model bytes>", dtype=None, max_bytes=None):
    """The Net of a model file's bytes, its layers in their stored formats → (net, meta).
    ``source`` names the bytes in error messages (a path, a model's name); ``max_bytes``
    bounds what it may allocate (``robustcnn.limits``)."""
    max_bytes = limits.resolve(max_bytes)
    model = read_model_bytes(data, source=source, max_bytes=max_bytes)
    net = Net.from_spec(model["spec"], dtype=dtype, source=source, init=False,
                        max_bytes=max_bytes)
    try:
        net.load_state_dict(model["state"], source=source)
    except (TypeError, KeyError, IndexError, OverflowError) as e:  # arrays of the wrong kind
        raise ValueError(f"{source}: {type(e).__name__}: {e}") from None
    return net, model["meta"]


def read_model_file(path, *, max_bytes=None):
    """Read and verify a model file → dict(spec, meta, state {name: array}, file_bytes,
    header_bytes) (``read_model_bytes`` of its bytes)."""
    data = limits.read_file(path, max_bytes, "model file")
    return read_model_bytes(data, source=os.fspath(path), max_bytes=max_bytes)


def _check_entry(entry, source):
    try:
        name, dtype, shape, nbytes = entry["name"], entry["dtype"], entry["shape"], entry["nbytes"]
    except (KeyError, TypeError):
        raise ValueError(f"{source}: malformed array entry {entry!r}") from None
    if not isinstance(name, str) or not isinstance(dtype, str) or dtype not in _DTYPES:
        raise ValueError(f"{source}: array {name!r} has an unsupported dtype {dtype!r}")
    # JSON's true/false are Python ints, and NumPy refuses dimensions of 2^63 or more
    if not isinstance(shape, list) or not all(type(s) is int and 0 <= s < 1 << 62
                                              for s in shape):
        raise ValueError(f"{source}: array {name} has a bad shape {shape!r}")
    if nbytes != int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize:
        raise ValueError(f"{source}: array {name} declares {nbytes} bytes for shape {shape} "
                         f"of {dtype}")
    return name, np.dtype(dtype), tuple(shape), nbytes


def load_model(path, *, dtype=None, max_bytes=None):
    """The Net stored in a model file, its layers in their stored formats → (net, meta)."""
    data = limits.read_file(path, max_bytes, "model file")
    return decode_model(data, source=os.fspath(path), dtype=dtype, max_bytes=max_bytes)
