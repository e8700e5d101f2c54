"""One way to load any model: ``robustcnn.load(path, weights=None)`` → (net, meta).

The file's format is read from its content, never from its name:

    format         what the file is                                  read by
    rcnn           robustcnn's compressed model file (magic RCNNMDL) compress.modelfile
    checkpoint     robustcnn's HDF5 checkpoint (train's output)      engine.checkpoint
    keras          a Keras 2 / Keras 3 legacy ``.h5`` model            models.keras
    onnx           an ONNX model (needs the ``onnx`` extra)           models.onnx
    caffe          a Caffe ``.prototxt`` net, with ``weights``:       models.caffe
                   a binary ``.caffemodel``, Caffe's HDF5 weights,
                   or a Deep Compression ``.net`` file (the layout of
                   models.squeezenet_dc); without weights, the
                   prototxt's fillers

``meta`` is the metadata the file stores (dataset, accuracy, settings …; {} where the format
keeps none) plus ``meta["loaded_from"] = {"format", "path", "weights"}``. Every problem is a
ValueError (FileNotFoundError for a missing file) naming the file and what is wrong.

What the images are — ``net.bounds`` and ``net.preprocessing`` (``engine.preprocess``) — comes
from the file where it says (a checkpoint's or ``.rcnn``'s spec, ONNX metadata, a Caffe data
layer), or from the caller (``bounds=``, ``preprocessing=``: the command line's ``--bounds``,
``--mean`` …), which replaces what the file says.

Reading is bounded by ``max_bytes`` (``robustcnn.limits``, default 512 MiB): a model or weights
file larger than that is not read, and each reader checks what the file declares (arrays, the
architecture's parameters, each blob of one example) against it before allocating; nets whose
weights come from the file are built without drawing initial weights.
"""

import os

import numpy as np

from . import limits

FORMATS = ("rcnn", "checkpoint", "keras", "onnx", "caffe")

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_SNIFF_BYTES = 64 << 10  # enough of a text file to tell a prototxt


def load(path, *, weights=None, dtype=None, input_shape=None, preprocessing=None,
         bounds=None, max_bytes=None):
    """The net stored in ``path`` (any format of ``FORMATS``) → (net, meta).

    ``weights``: for a Caffe prototxt, its weights file (binary caffemodel, Caffe HDF5 or a
    Deep Compression ``.net``); refused for formats that carry their own weights.
    ``dtype``: float32 (default) or float64. ``input_shape``: the per-example input shape
    (C, H, W): for a Caffe net fed by a data layer without a declared shape, an ONNX model
    whose dims are symbolic, or another image size for a fully convolutional net of any format
    (``Net.at_input_shape``; a layer that fixes the size is a ValueError naming it).
    ``preprocessing`` (a dict) and ``bounds`` ((low, high)) replace what the file says.
    ``max_bytes``: the most the files may make it allocate (default ``limits.MAX_BYTES``,
    512 MiB).
    """
    max_bytes = limits.resolve(max_bytes)
    path = _existing(path, "model")
    limits.check_bytes(path, "the model file", os.path.getsize(path), max_bytes)
    kind = detect_format(path)
    if weights is not None:
        weights = _existing(weights, "weights")
        if kind != "caffe":
            raise ValueError(f"{weights}: weights are given separately only for a Caffe "
                             f"prototxt; {path} is a {kind} file, which holds its own")
        limits.check_bytes(weights, "the weights file", os.path.getsize(weights), max_bytes)
    try:
        net, meta = _LOADERS[kind](path, weights, dtype, input_shape, max_bytes)
    except ValueError as e:  # every message names the file it is about
        if path in str(e) or (weights is not None and weights in str(e)):
            raise
        raise ValueError(f"{path}: {e}") from None
    if input_shape is not None and tuple(input_shape) != net.input_shape:
        try:
            net = net.at_input_shape(input_shape)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    meta = dict(meta or {})
    meta["loaded_from"] = {"format": kind, "path": path, "weights": weights}
    try:
        if preprocessing is not None:
            net.preprocessing = preprocessing
            meta["loaded_from"]["preprocessing"] = net.preprocessing
        if bounds is not None:
            net.bounds = bounds
            meta["loaded_from"]["bounds"] = net.spec()["bounds"]
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return net, meta


def detect_format(path):
    """Which of ``FORMATS`` the file at ``path`` holds, from its content; ValueError naming
    the file (and what it looks like) when it is none of them."""
    path = _existing(path, "model")
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    from .compress.modelfile import MAGIC, SUFFIX

    if head.startswith(MAGIC):
        return "rcnn"
    if _is_hdf5(path, head):
        return _hdf5_kind(path)
    onnx = _onnx_module()
    if onnx is not None and onnx.is_onnx_file(path):
        return "onnx"
    if _looks_like_prototxt(head):
        return "caffe"
    if path.endswith(SUFFIX) or (len(head) >= len(MAGIC) and
                                 sum(a != b for a, b in zip(head, MAGIC)) <= 2):
        raise ValueError(f"{path}: not a robustcnn model file: it starts with "
                         f"{head[:len(MAGIC)]!r}, not the .rcnn magic {MAGIC!r} (damaged?)")
    if _looks_like_caffemodel(head):
        raise ValueError(f"{path}: looks like Caffe weights (a binary caffemodel or a Deep "
                         f"Compression file): pass the net's .prototxt as the model and this "
                         f"file as its weights (--weights)")
    hint = "" if onnx is not None else \
        " (ONNX files need the onnx extra: pip install 'robustcnn[onnx]')"
    raise ValueError(f"{path}: not a model file robustcnn reads: neither a .rcnn model, an HDF5 "
                     f"checkpoint or Keras model, an ONNX model nor a Caffe prototxt{hint}")


def _existing(path, what):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such {what} file")
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a directory, not a {what} file")
    return path


def _is_hdf5(path, head):
    if head.startswith(_HDF5_SIGNATURE):
        return True
    # HDF5 may sit behind a user block of 512, 1024, 2048 … bytes; h5py knows where to look.
    import h5py

    try:
        return bool(h5py.is_hdf5(path))
    except (OSError, ValueError):
        return False


def _hdf5_kind(path):
    """checkpoint or keras, from the root attributes of an HDF5 file."""
    from .engine.checkpoint import FORMAT

    attrs, fmt, groups = limits.read_hdf5(path, _root_facts)
    if isinstance(fmt, bytes):
        fmt = fmt.decode("utf-8", "replace")
    if fmt == FORMAT:
        return "checkpoint"
    if "model_config" in attrs:
        return "keras"
    if "data" in groups:
        raise ValueError(f"{path}: looks like Caffe HDF5 weights (a 'data' group, no net): pass "
                         f"the net's .prototxt as the model and this file as its weights "
                         f"(--weights)")
    raise ValueError(f"{path}: an HDF5 file that is neither a robustcnn checkpoint (format "
                     f"attribute {fmt!r}) nor a Keras model (no model_config attribute)")


def _root_facts(f):
    """(root attribute names, the format attribute or None, root member names) of an open
    HDF5 file."""
    attrs = set(f.attrs)
    return attrs, f.attrs.get("format") if "format" in attrs else None, set(f.keys())


def _looks_like_prototxt(head):
    """Protobuf text of a Caffe net: UTF-8 text naming layers or an input."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # a multi-byte character cut at the end of the sniffed block is still text
        try:
            text = head[:-4].decode("utf-8")
        except UnicodeDecodeError:
            return False
    if "\0" in text:
        return False
    import re

    return re.search(r"^\s*(layers?\s*[:{<]|input\s*:|input_shape\s*[:{<]|name\s*:)", text,
                     re.MULTILINE) is not None


def _looks_like_caffemodel(head):
    """Binary, not text: what a caffemodel or a Deep Compression file looks like at a glance."""
    return b"\0" in head or any(b > 0x7F for b in head[:256])


def _onnx_module():
    """models.onnx when it can be imported (the onnx extra), else None."""
    try:
        from .models import onnx
    except ImportError:
        return None
    return onnx


# ---------------------------------------------------------------------------------------------
# One reader per format: (path, weights, dtype, input_shape, max_bytes) → (net, meta)


def _load_rcnn(path, weights, dtype, input_shape, max_bytes):
    from .compress.modelfile import load_model

    return load_model(path, dtype=dtype, max_bytes=max_bytes)


def _load_checkpoint(path, weights, dtype, input_shape, max_bytes):
    from .engine.checkpoint import load_net

    return load_net(path, dtype=dtype, max_bytes=max_bytes)


def _load_keras(path, weights, dtype, input_shape, max_bytes):
    from .models.keras import load_keras

    return load_keras(path, dtype=dtype or np.float32, max_bytes=max_bytes), {}


def _load_onnx(path, weights, dtype, input_shape, max_bytes):
    net = _onnx_module().load_onnx(path, dtype=dtype or np.float32, input_shape=input_shape,
                                   max_bytes=max_bytes)
    return net, {"onnx": dict(net.onnx_info), "metadata": dict(net.metadata)}


def _load_caffe(path, weights, dtype, input_shape, max_bytes):
    try:
        return _read_caffe(path, weights, dtype or np.float32, input_shape, max_bytes)
    except ImportError as e:  # a binary caffemodel without protobuf: the message says what to do
        raise ValueError(str(e)) from None


def _read_caffe(path, weights, dtype, input_shape, max_bytes):
    from .models.caffe import load_caffe

    options = dict(input_shape=input_shape, dtype=dtype, max_bytes=max_bytes)
    if weights is None:
        return load_caffe(path, **options), \
            {"weights": "random (the prototxt's fillers): no weights file given"}
    with open(weights, "rb") as f:
        is_hdf5 = f.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE
    if is_hdf5:
        return load_caffe(path, weights, **options), {}
    # A Deep Compression file has no magic, but its layer counts must account for every byte
    # given the prototxt's shapes: tried first, it cannot mistake a caffemodel for itself.
    net = load_caffe(path, init=False, **options)  # every weight comes from the file
    try:
        return _with_deep_compression(net, weights, dtype, max_bytes), {}
    except ValueError as dc_error:
        try:
            return load_caffe(path, weights, **options), {}
        except ValueError as caffemodel_error:
            raise ValueError(f"{weights}: neither a binary caffemodel ({caffemodel_error}) nor "
                             f"a Deep Compression file for this prototxt ({dc_error})") from None


def _with_deep_compression(net, path, dtype, max_bytes=None):
    """``net`` (built from its prototxt) with the sparse-codebook weights of a Deep Compression
    file, computed on as stored (the packaged file verified against its known SHA-256)."""
    from .models.squeezenet_dc import BOUNDS, PREPROCESSING, is_packaged_weights, \
        read_deep_compression, sparse_codebook_weight, weight_shapes

    layers = read_deep_compression(path, weight_shapes(net), max_bytes=max_bytes)
    if is_packaged_weights(path) and net.bounds is None and not net.preprocessing:
        net.bounds, net.preprocessing = BOUNDS, PREPROCESSING  # the published SqueezeNet's
    for name, layer in layers.items():
        target = net.layer(name)
        target.set_weight_format(sparse_codebook_weight(layer, dtype=dtype))
        target.params["bias"][...] = layer.bias
    return net


_LOADERS = {"rcnn": _load_rcnn, "checkpoint": _load_checkpoint, "keras": _load_keras,
            "onnx": _load_onnx, "caffe": _load_caffe}
