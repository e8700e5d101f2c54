"""Reading Caffe's files into the schema's messages and arrays, checked.

    net = read_net("deploy.prototxt")             # Message NetParameter: what load_caffe reads
    msg = read_prototxt("deploy.prototxt")        # protobuf NetParameter, from the text format
    msg = read_caffemodel("net.caffemodel")       # protobuf NetParameter, from the binary format
    blobs = read_weights("net.caffemodel")        # {layer name: [array, …]}; also .caffemodel.h5
    mean = read_mean_file("mean.binaryproto")     # a data layer's mean_file, (C, H, W)

A prototxt is read with protobuf's text format when protobuf is installed and with the
project's own parser (prototxt.py) otherwise; ``read_net`` gives the same ``Message`` either way.
The binary formats (.caffemodel, .binaryproto) need protobuf; HDF5 weights need h5py only.

Everything a file declares is checked against what it holds before it is used: a blob's shape
against its values, an HDF5 dataset's size against the expected one (and against what the file
stores for it) before it is read. No size written in a file makes this module allocate more
than the file's own size; a weights file of more than ``max_bytes`` (``robustcnn.limits``) is
not read. Nothing is evaluated or unpickled. A problem raises ValueError naming the file (and
the layer and blob).
"""

import os

import numpy as np

from ... import limits
from .message import Message, from_protobuf
from .prototxt import MAX_TEXT_DEPTH, parse_net
from .schema import has_protobuf, messages, require_protobuf

# protobuf cannot parse a binary message of 2 GiB or more.
MAX_BINARY_BYTES = 2**31 - 1
# A net description of more than this is not a prototxt.
MAX_TEXT_BYTES = 64 * 2**20

# The deprecated V1 layer type enum → the type names of the current format.
V1_TYPES = {
    "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DATA": "Data", "DECONVOLUTION": "Deconvolution", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}


def _source_bytes(path_or_bytes, limit, what):
    """(bytes, source name) from a path or the bytes themselves, refusing more than ``limit``."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data, source = bytes(path_or_bytes), f"<{what}>"
    else:
        source = os.fspath(path_or_bytes)
        size = os.path.getsize(source)
        if size > limit:
            raise ValueError(f"{source}: {size} bytes is more than a {what} can hold "
                             f"({limit} bytes at most)")
        with open(source, "rb") as f:
            data = f.read(size + 1)  # read(n) reserves n bytes before reading
        if len(data) != size:
            raise ValueError(f"{source}: the file changed while it was read")
    if len(data) > limit:
        raise ValueError(f"{source}: more than {limit} bytes, too large for a {what}")
    return data, source


def _text_depth(text):
    """The deepest nesting of ``{``/``<`` outside strings and comments (an upper bound)."""
    depth = deepest = 0
    quote = None
    comment = False
    escaped = False
    for ch in text:
        if comment:
            comment = ch != "\n"
        elif quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote or ch == "\n":
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            comment = True
        elif ch in "{<":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "}>":
            depth -= 1
    return deepest


def _is_text(path_or_text):
    """A str holding a newline or ``{`` is a prototxt's text; any other str is a path."""
    return isinstance(path_or_text, str) and ("\n" in path_or_text or "{" in path_or_text)


def source_name(path_or_text, what):
    """The name errors give a file: its path, or ``<what>`` for text or bytes passed in."""
    if isinstance(path_or_text, (bytes, bytearray, memoryview)) or _is_text(path_or_text):
        return f"<{what}>"
    return str(os.fspath(path_or_text))


def _prototxt_text(path_or_text):
    """(text, source name) of a prototxt given as a path, its text or its bytes; refuses what
    cannot be one (too large, not UTF-8, NUL bytes, nested too deep)."""
    if _is_text(path_or_text):
        data, source = path_or_text.encode("utf-8"), "<prototxt>"
    else:
        data, source = _source_bytes(path_or_text, MAX_TEXT_BYTES, "prototxt")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{source}: not a text file (byte {e.start} is not UTF-8)") from None
    if "\x00" in text:
        raise ValueError(f"{source}: not a text file (it holds NUL bytes; a binary "
                         f".caffemodel?)")
    if _text_depth(text) > MAX_TEXT_DEPTH:
        raise ValueError(f"{source}: nested more than {MAX_TEXT_DEPTH} levels deep")
    return text, source


def read_prototxt(path_or_text):
    """A Caffe net in protobuf text format → protobuf NetParameter (needs protobuf; ``read_net``
    does not).

    ``path_or_text``: a path, or the text itself (a str containing a newline or ``{``), or
    bytes. Fields the schema does not declare are errors naming the line and column.
    """
    require_protobuf(f"{source_name(path_or_text, 'prototxt')}: reading a prototxt into a "
                     f"protobuf message")
    from google.protobuf import text_format

    text, source = _prototxt_text(path_or_text)
    msg = messages()["NetParameter"]()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as e:
        raise ValueError(f"{source}:{e}") from None
    return msg


PARSERS = ("auto", "protobuf", "text")


def read_net(path_or_text, *, parser="auto"):
    """A Caffe net in protobuf text format → ``Message`` (NetParameter): what ``load_caffe``
    translates.

    ``path_or_text``: a path, the text itself (a str containing a newline or ``{``) or bytes.
    ``parser``: "protobuf" (protobuf's text format), "text" (the project's parser, prototxt.py)
    or "auto" (protobuf if installed, else the project's). Both give equal messages for a
    valid file; a malformed one, or a field the schema does not declare, is a ValueError
    naming the file and the line either way.
    """
    if parser not in PARSERS:
        raise ValueError(f"parser must be one of {PARSERS}, got {parser!r}")
    if parser == "protobuf" or (parser == "auto" and has_protobuf()):
        return from_protobuf(read_prototxt(path_or_text))
    text, source = _prototxt_text(path_or_text)
    return parse_net(text, source=source)


def read_caffemodel(path_or_bytes, *, max_bytes=None):
    """A binary ``.caffemodel`` (a serialised NetParameter) → NetParameter.

    Fields the schema does not declare (parameters of other layer types) are skipped."""
    return _parse_binary(path_or_bytes, "NetParameter", "caffemodel", max_bytes)[0]


def _parse_binary(path_or_bytes, message, what, max_bytes=None):
    """(message parsed from a binary file, source name); ValueError if it is not one."""
    require_protobuf(f"{source_name(path_or_bytes, what)}: reading a binary .{what}")
    from google.protobuf.message import DecodeError

    data, source = _source_bytes(path_or_bytes,
                                 min(MAX_BINARY_BYTES, limits.resolve(max_bytes)), what)
    msg = messages()[message]()
    try:
        msg.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError, RecursionError) as e:
        raise ValueError(f"{source}: not a Caffe binary {message} ({e})") from None
    return msg, source


def layer_type(layer):
    """The type name of a V2 ``layer`` or V1 ``layers`` entry (``CONVOLUTION`` → Convolution),
    a ``Message`` or a protobuf message."""
    if isinstance(layer, Message):
        if layer.message_type == "V1LayerParameter":
            return V1_TYPES.get(layer.type, layer.type)
        return layer.type
    if layer.DESCRIPTOR.name == "V1LayerParameter":
        enum = layer.DESCRIPTOR.fields_by_name["type"].enum_type
        name = enum.values_by_number[layer.type].name if layer.type in enum.values_by_number \
            else str(layer.type)
        return V1_TYPES.get(name, name)
    return text(layer.type)


def net_layers(msg, source):
    """The layers of a NetParameter (a ``Message`` or a protobuf message), V2 ``layer`` or V1
    ``layers`` (not both)."""
    if len(msg.layer) and len(msg.layers):
        raise ValueError(f"{source}: has both 'layer' (current) and 'layers' (V1) entries")
    return list(msg.layer) if len(msg.layer) else list(msg.layers)


def blob_array(blob, at):
    """A BlobProto → float32 or float64 array in its declared shape, checked.

    The shape is ``shape.dim`` or, in files from before Caffe had it, (num, channels, height,
    width). The values must be exactly as many as the shape says."""
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    elif blob.num or blob.channels or blob.height or blob.width:
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = None  # no shape at all: a flat vector of the values
    single, double = len(blob.data), len(blob.double_data)
    if single and double:
        raise ValueError(f"{at}: holds both float and double values")
    values = np.asarray(blob.double_data if double else blob.data,
                        dtype=np.float64 if double else np.float32)
    if shape is None:
        return values.copy(), False
    if any(d < 0 for d in shape):
        raise ValueError(f"{at}: negative size in its shape {shape}")
    count = 1
    for d in shape:
        count *= d  # Python ints: no overflow, whatever the file declares
    if count != values.size:
        raise ValueError(f"{at}: its shape {shape} holds {count} values, the file has "
                         f"{values.size}")
    return values.reshape(shape), not blob.HasField("shape")


def text(value):
    """A string field as str: protobuf hands back bytes when the file's are not UTF-8."""
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def _weights_protobuf(msg, source):
    weights = {}
    for i, layer in enumerate(net_layers(msg, source)):
        if not len(layer.blobs):
            continue
        name = text(layer.name) or f"#{i}"
        if name in weights:
            raise ValueError(f"{source}: two layers named {name!r} hold weights")
        weights[name] = [blob_array(b, f"{source}: {name} ({layer_type(layer)}) blob {k}")
                         for k, b in enumerate(layer.blobs)]
    return weights


def _is_hdf5(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89HDF\r\n\x1a\n"


class LazyH5Blob:
    """A dataset of a Caffe HDF5 weight file, read only once its shape was checked (and then
    as ``limits.read_dataset`` reads: its storage checked, in slabs)."""

    def __init__(self, path, key, shape, dtype):
        self.path, self.key, self.shape, self.dtype = path, key, tuple(shape), np.dtype(dtype)
        self.size = int(np.prod(self.shape, dtype=np.float64)) if self.shape else 1

    def read(self):
        return limits.read_hdf5(self.path, lambda f: limits.read_dataset(
            f[self.key], self.path, self.key), "Caffe HDF5 weights file")


def _weights_hdf5(path):
    """Caffe's HDF5 weights (``Net::ToHDF5``): group ``data``, one group per layer, datasets
    ``0``, ``1``, … — its blobs. Returned lazily: the caller checks shapes before reading."""
    return limits.read_hdf5(path, lambda f: _blobs_hdf5(f, path), "Caffe HDF5 weights file")


def _blobs_hdf5(f, path):
    """{layer: [(LazyH5Blob, False), …]} of an open Caffe HDF5 weights file."""
    import h5py

    weights = {}
    if "data" not in f or not isinstance(f["data"], h5py.Group):
        raise ValueError(f"{path}: no 'data' group; not Caffe HDF5 weights")
    for name, group in f["data"].items():
        if not isinstance(group, h5py.Group):
            raise ValueError(f"{path}: data/{name} is not a group of blobs")
        keys = sorted(group.keys(), key=lambda k: int(k) if k.isdigit() else -1)
        if keys != [str(i) for i in range(len(keys))]:
            raise ValueError(f"{path}: data/{name} holds {sorted(group.keys())}, expected "
                             f"datasets named 0, 1, …")
        blobs = []
        for k in keys:
            ds = group[k]
            if not isinstance(ds, h5py.Dataset) or ds.dtype.kind != "f":
                raise ValueError(f"{path}: data/{name}/{k} is not a float dataset")
            blobs.append((LazyH5Blob(path, f"data/{name}/{k}", ds.shape, ds.dtype), False))
        if blobs:
            weights[name] = blobs
    return weights


def read_weights(path_or_bytes, *, max_bytes=None):
    """The weights of a ``.caffemodel`` (binary protobuf) or ``.caffemodel.h5`` (Caffe's HDF5)
    → {layer name: [(array, legacy), …]} for the layers that hold blobs, in file order.

    ``legacy`` is True for a blob shaped by the old (num, channels, height, width) fields. HDF5
    blobs come as ``LazyH5Blob`` (``shape``, ``read()``) so that nothing is read before its size
    is checked against the net. A binary .caffemodel needs protobuf, HDF5 weights do not.
    ``max_bytes``: the largest binary file read (``robustcnn.limits``)."""
    if not isinstance(path_or_bytes, (bytes, bytearray, memoryview)) \
            and _is_hdf5(os.fspath(path_or_bytes)):
        return _weights_hdf5(os.fspath(path_or_bytes))
    msg = read_caffemodel(path_or_bytes, max_bytes=max_bytes)
    return _weights_protobuf(msg, source_name(path_or_bytes, "caffemodel"))


def read_mean_file(path_or_bytes):
    """A ``mean_file`` (``.binaryproto``: one serialised BlobProto) → float array, (C, H, W)
    for Caffe's usual (1, C, H, W) blob (the leading 1 dropped)."""
    blob, source = _parse_binary(path_or_bytes, "BlobProto", "binaryproto")
    array, _ = blob_array(blob, source)
    if array.size == 0:
        raise ValueError(f"{source}: holds no values")
    return array[0] if array.ndim == 4 and array.shape[0] == 1 else array
