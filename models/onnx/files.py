"""Reading ONNX files into the ``onnx`` package's messages and NumPy arrays, checked.

    is_onnx_file("model.onnx")                   # cheap content sniffing, no parse
    model, source, folder = read_model("model.onnx")      # ModelProto, never onnx.load
    array = tensor_array(tensor, at, folder)     # a TensorProto → ndarray, sizes checked first

Nothing a file declares is trusted before it is checked against what the file holds: a tensor's
dims against its stored bytes before ``np.frombuffer``, an external data file's size, offset
and length against the dims before a byte is read, and its location against the model's folder
(no absolute paths, no ``..``, no symbolic link out of it). No size written in a file makes
this module allocate more than the bytes it stores. Nothing is evaluated; a problem raises
ValueError naming the file (and the tensor).
"""

import math
import os

import numpy as np

from ... import limits

# protobuf cannot parse a message of 2 GiB or more.
MAX_MODEL_BYTES = 2**31 - 1
# Values in one tensor (initializer, attribute, folded constant): 2**31 float32 is 8 GiB.
MAX_TENSOR_VALUES = 2**31
# How much of a file ``is_onnx_file`` reads.
SNIFF_BYTES = 1 << 16

# TensorProto.DataType → the little-endian NumPy dtype of its raw bytes, and the typed field
# that holds its values otherwise (float16 and bfloat16 as their bit patterns in int32_data).
DTYPES = {
    1: ("<f4", "float_data"), 2: ("u1", "int32_data"), 3: ("i1", "int32_data"),
    4: ("<u2", "int32_data"), 5: ("<i2", "int32_data"), 6: ("<i4", "int32_data"),
    7: ("<i8", "int64_data"), 9: ("?", "int32_data"), 10: ("<f2", "int32_data"),
    11: ("<f8", "double_data"), 12: ("<u4", "uint64_data"), 13: ("<u8", "uint64_data"),
    16: ("<u2", "int32_data"),  # bfloat16: the top half of a float32
}
DTYPE_NAMES = {0: "UNDEFINED", 1: "FLOAT", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16",
               6: "INT32", 7: "INT64", 8: "STRING", 9: "BOOL", 10: "FLOAT16", 11: "DOUBLE",
               12: "UINT32", 13: "UINT64", 14: "COMPLEX64", 15: "COMPLEX128", 16: "BFLOAT16"}
BFLOAT16 = 16
EXTERNAL = 1  # TensorProto.DataLocation

# ModelProto's fields: number → protobuf wire type (0 varint, 2 length-delimited).
_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}
_GRAPH_FIELD = 7
_MAX_IR_VERSION = 64


def _varint(data, pos):
    """(value, next position) of the varint at ``pos``, or (None, pos) if cut or too long."""
    value = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    return None, pos


def _head(path_or_bytes):
    """(the first SNIFF_BYTES bytes, total size) of a path or bytes; None if unreadable."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes[:SNIFF_BYTES])
        return data, len(path_or_bytes)
    try:
        size = os.path.getsize(path_or_bytes)
        with open(path_or_bytes, "rb") as f:
            return f.read(SNIFF_BYTES), size
    except (OSError, TypeError, ValueError):
        return None, 0


def is_onnx_file(path_or_bytes):
    """Whether a file (a path, or its bytes) looks like an ONNX model, by its first bytes.

    A serialised ModelProto starts with its ``ir_version`` (field 1, a small varint); the
    fields after it are ModelProto's, with their wire types, up to the graph (field 7), whose
    length fits in the file. Only the head of the file is read and nothing is parsed: a True
    here does not mean the model loads (``load_onnx`` checks everything), a False means it is
    not an ONNX model. Caffe, Keras HDF5 and robustcnn's own files all answer False.
    """
    data, size = _head(path_or_bytes)
    if not data or data[0] != 0x08:
        return False
    ir_version, pos = _varint(data, 1)
    if ir_version is None or not 1 <= ir_version <= _MAX_IR_VERSION:
        return False
    while pos < len(data):
        key, pos = _varint(data, pos)
        if key is None:
            return False
        number, wire = key >> 3, key & 7
        if _MODEL_FIELDS.get(number) != wire:
            return False
        value, pos = _varint(data, pos)
        if value is None:
            return False
        if wire == 2:
            if pos + value > size:
                return False
            if number == _GRAPH_FIELD:
                return True
            pos += value
    return pos == size and size > 2  # a whole (graph-less) header that ended cleanly


def _read_bytes(path_or_bytes, max_bytes=None):
    """(bytes, source name, folder for external data or None), at most MAX_MODEL_BYTES and
    ``max_bytes`` (``robustcnn.limits``)."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        limits.check_bytes("<onnx>", "the model", len(path_or_bytes), max_bytes)
        data = bytes(path_or_bytes)
        source, folder = "<onnx>", None
    else:
        source = os.fspath(path_or_bytes)
        try:
            size = os.path.getsize(source)
            if size > MAX_MODEL_BYTES:
                raise ValueError(f"{source}: {size:,} bytes is more than an ONNX model file can "
                                 f"hold ({MAX_MODEL_BYTES:,}; larger weights go in external "
                                 f"data files)")
            limits.check_bytes(source, "the model file", size, max_bytes)
            with open(source, "rb") as f:
                data = f.read(size + 1)  # read(n) reserves n bytes before reading
            if len(data) != size:
                raise ValueError(f"{source}: the file changed while it was read")
        except OSError as e:
            raise ValueError(f"{source}: cannot read the file ({e.strerror or e})") from None
        folder = os.path.dirname(os.path.abspath(source))
    if len(data) > MAX_MODEL_BYTES:
        raise ValueError(f"{source}: more than {MAX_MODEL_BYTES:,} bytes, too large for an ONNX "
                         f"model")
    return data, source, folder


def read_model(path_or_bytes, *, max_bytes=None):
    """An ONNX file (a path or its bytes) → (ModelProto, source name, folder).

    Parsed with protobuf only: no external data is loaded here (``tensor_array`` reads each
    tensor's, checked) and nothing is run. ``folder``: where external data files are looked
    up (None for bytes, which then cannot have any). A file of more than ``max_bytes``
    (``robustcnn.limits``) is not read.
    """
    from google.protobuf.message import DecodeError
    from onnx import ModelProto

    data, source, folder = _read_bytes(path_or_bytes, max_bytes)
    if not data:
        raise ValueError(f"{source}: the file is empty")
    model = ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError, RecursionError) as e:
        raise ValueError(f"{source}: not an ONNX model ({limits.one_line(e, 200)})") from None
    if not model.HasField("graph"):
        raise ValueError(f"{source}: not an ONNX model (it holds no graph)")
    return model, source, folder


def text(value):
    """A string field as str (protobuf hands back bytes when the file's are not UTF-8), with
    control characters escaped: names from a file go into one-line error messages."""
    value = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in value)


def tensor_dims(tensor, at):
    """The dims of a TensorProto, checked (sizes >= 0, at most MAX_TENSOR_VALUES values)."""
    dims = tuple(int(d) for d in tensor.dims)
    if any(d < 0 for d in dims):
        raise ValueError(f"{at}: negative size in its dims {dims}")
    count = math.prod(dims)  # Python ints: no overflow, whatever the file declares
    if count > MAX_TENSOR_VALUES:
        raise ValueError(f"{at}: its dims {dims} declare {count:,} values, more than "
                         f"{MAX_TENSOR_VALUES:,}")
    return dims, count


def tensor_nbytes(tensor, at):
    """The bytes reading a TensorProto allocates, from its dims and type (its typed fields
    widen to 8 bytes a value on the way), checked (``tensor_dims``) before anything is read."""
    _, count = tensor_dims(tensor, at)
    itemsize = np.dtype(DTYPES[int(tensor.data_type)][0]).itemsize \
        if int(tensor.data_type) in DTYPES else 8
    stored_raw = tensor.data_location == EXTERNAL or bool(tensor.raw_data)
    return count * (itemsize if stored_raw else max(itemsize, 8))


def tensor_array(tensor, at, folder=None):
    """A TensorProto → a NumPy array of its dims, every size checked before anything is read.

    float16/bfloat16/float64 and the integer types come out as stored (bfloat16 as float32);
    strings and complex numbers are refused. ``folder``: where its external data file is.
    """
    dims, count = tensor_dims(tensor, at)
    kind = int(tensor.data_type)
    if kind not in DTYPES:
        raise ValueError(f"{at}: data type {DTYPE_NAMES.get(kind, kind)} is not supported")
    if tensor.HasField("segment"):
        raise ValueError(f"{at}: a segmented tensor is not supported")
    dtype, field = np.dtype(DTYPES[kind][0]), DTYPES[kind][1]
    if tensor.data_location == EXTERNAL:
        raw = _external_bytes(tensor, at, folder, count * dtype.itemsize)
        array = np.frombuffer(raw, dtype=dtype)
    elif tensor.raw_data:
        if len(tensor.raw_data) != count * dtype.itemsize:
            raise ValueError(f"{at}: its dims {dims} need {count * dtype.itemsize:,} bytes of "
                             f"{DTYPE_NAMES[kind]}, raw_data holds {len(tensor.raw_data):,}")
        array = np.frombuffer(tensor.raw_data, dtype=dtype)
    else:
        values = getattr(tensor, field)
        if len(values) != count:
            raise ValueError(f"{at}: its dims {dims} need {count:,} values, {field} holds "
                             f"{len(values):,}")
        if field == "int32_data" and dtype.itemsize < 4 and dtype.kind != "b":
            # float16, bfloat16 and the small integers: the bit patterns / values, widened
            bits = np.asarray(values, dtype=np.int64)
            if dtype.kind == "f" or kind == BFLOAT16:
                array = (bits & 0xFFFF).astype(np.uint16).view(dtype)
            else:
                array = bits.astype(dtype)
        else:
            array = np.asarray(values, dtype=np.int64 if field == "int32_data" else None)
            array = array.astype(dtype)
    if kind == BFLOAT16:
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array.reshape(dims).astype(array.dtype.newbyteorder("="), copy=True)


def _external_entries(tensor, at):
    entries = {}
    for entry in tensor.external_data:
        key, value = text(entry.key), text(entry.value)
        if key in entries:
            raise ValueError(f"{at}: external data key {key!r} given twice")
        entries[key] = value
    return entries


def external_location(location, folder, at):
    """The path of an external data file, inside ``folder`` (relative, no ``..``, no link out)."""
    if folder is None:
        raise ValueError(f"{at}: its values are in an external file ({location!r}); load the "
                         f"model from its path, not from bytes")
    if not location or "\x00" in location or os.path.isabs(location) \
            or location.startswith(("/", "\\")) or ":" in location:
        raise ValueError(f"{at}: external data location {location!r} must be a relative path "
                         f"inside the model's folder")
    parts = location.replace("\\", "/").split("/")
    if ".." in parts:
        raise ValueError(f"{at}: external data location {location!r} leaves the model's folder")
    path = os.path.join(folder, *parts)
    real, base = os.path.realpath(path), os.path.realpath(folder)
    if os.path.commonpath([real, base]) != base:
        raise ValueError(f"{at}: external data location {location!r} leads out of the model's "
                         f"folder")
    return path


def _external_bytes(tensor, at, folder, nbytes):
    """The ``nbytes`` bytes of an external tensor, checked against the file before reading."""
    entries = _external_entries(tensor, at)
    path = external_location(entries.get("location", ""), folder, at)
    try:
        offset = int(entries.get("offset", 0))
        length = int(entries["length"]) if "length" in entries else None
    except ValueError:
        raise ValueError(f"{at}: external data offset/length {entries.get('offset')!r}/"
                         f"{entries.get('length')!r} are not integers") from None
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise ValueError(f"{at}: cannot read its external data file {path} "
                         f"({e.strerror or e})") from None
    if length is None:
        length = size - offset
    if offset < 0 or length < 0 or offset + length > size:
        raise ValueError(f"{at}: external data at offset {offset:,}, length {length:,} does not "
                         f"fit in {path} ({size:,} bytes)")
    if length != nbytes:
        raise ValueError(f"{at}: its dims need {nbytes:,} bytes, the external data holds "
                         f"{length:,}")
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    if len(data) != length:
        raise ValueError(f"{at}: {path} ended before {length:,} bytes were read")
    return data
