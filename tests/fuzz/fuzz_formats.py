"""The fuzzed formats: one ``FuzzFormat`` entry per file format robustcnn reads.

An entry says how to make its seed files (small, valid, written by the project's own writers),
how to load a file of it (as the command does: ``robustcnn.load`` and one forward pass for a
model, the dataset or study readers otherwise) and which structured mutations it knows besides
the byte-level ones every format gets (``fuzz_harness.BYTE_MUTATORS``): header fields rewritten
to declare absurd sizes, with the checksums recomputed so that the reader gets past them.

Adding a format is one more entry in ``FORMATS``.
"""

import hashlib
import io
import json
import math
import os
import re
import sqlite3
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

# Values a mutated size or count field takes: limits of the integer types, round numbers that
# make large allocations, and the small ones that divide by zero.
INTERESTING_INTS = (0, 1, 2, -1, 3, 7, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1,
                    2**32, 2**53, 2**63 - 1, 10**6, 10**8, 10**9, 10**12, 10**18)
INTERESTING_JSON = INTERESTING_INTS + (-2**31, 1e308, -1e308, 0.5, -0.5, float("inf"),
                                       float("nan"), "x", "", None, True, [], [1, 2], {}, [[]])


@dataclass
class FuzzFormat:
    """One fuzzed format.

    ``seeds(directory)`` writes the companion files its loads need into ``directory`` and
    returns the seeds, {seed name: bytes}; ``target(seed name)`` is the file name a mutant of
    that seed is written as (in that directory). ``load(path, directory)`` reads the file at
    ``path`` as robustcnn does. ``mutators``: structured mutations, each
    ``(data, rng) → bytes``.
    """

    name: str
    seeds: callable
    load: callable
    mutators: dict = field(default_factory=dict)
    target: callable = lambda seed: seed


# ---------------------------------------------------------------------------------------------
# Loading as the command does


FORWARD_VALUES = 1 << 24  # a forward pass is run when no blob of one example is larger


def load_model(path, weights=None):
    """``robustcnn.load`` and, for a net of sane activation sizes, one forward pass on one
    example (as eval does first)."""
    import robustcnn

    net, meta = robustcnn.load(path, weights=weights)
    if max(math.prod(s) for s in net.blob_shapes.values()) <= FORWARD_VALUES:
        x = np.random.default_rng(0).random((1,) + net.input_shape).astype(net.dtype)
        net.forward(x)
    return net


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _json_edit(obj, rng):
    """Replace one random leaf (or a key's value) of a JSON document by an interesting value,
    delete a key, or duplicate a list entry → the edited document (a copy)."""
    obj = json.loads(json.dumps(obj))
    paths = []

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                paths.append(path + [k])
                walk(v, path + [k])
        elif isinstance(node, list):
            for i, v in enumerate(node):
                paths.append(path + [i])
                walk(v, path + [i])

    walk(obj, [])
    if not paths:
        return _pick(rng, INTERESTING_JSON)
    path = _pick(rng, paths)
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    action = rng.integers(10)
    if action == 0 and isinstance(parent, dict):
        del parent[path[-1]]
    elif action == 1 and isinstance(parent, list):
        parent.insert(path[-1], parent[path[-1]])
    else:
        parent[path[-1]] = _pick(rng, INTERESTING_JSON)
    return obj


def _json_dumps(obj):
    return json.dumps(obj, separators=(",", ":"))  # NaN and Infinity spelled as JS does


# ---------------------------------------------------------------------------------------------
# A small net of several layer types and weight formats


def small_net():
    from robustcnn.engine import BatchNorm, Conv2d, Linear, MaxPool2d, Net, ReLU

    net = Net([Conv2d("conv1", 4, kernel=3, padding=1), BatchNorm("bn1"), ReLU("relu1"),
               MaxPool2d("pool1", kernel=2, stride=2), Conv2d("conv2", 6, kernel=3),
               ReLU("relu2"), Linear("ip1", 12), ReLU("relu3"), Linear("ip2", 3)],
              (1, 8, 8), name="small")
    rng = np.random.default_rng(1)
    net["bn1"].buffers["mean"][...] = rng.normal(0, 0.1, 4)
    net["bn1"].buffers["var"][...] = rng.uniform(0.5, 2, 4)
    return net


def compressed_net():
    """``small_net`` with a layer in each compressed format (CSR, codebook, sparse codebook,
    Huffman-coded)."""
    from robustcnn.compress.prune import prune
    from robustcnn.engine.formats import HuffmanCodebookWeight

    net = small_net()
    prune(net, {"conv2": 0.5, "ip1": 0.7, "ip2": 0.3})
    net.convert("conv1", "codebook", bits=4)
    net.convert("ip1", "sparse_codebook", code_bits=4, gap_bits=3)
    sparse = net.convert("ip2", "sparse_codebook", code_bits=3, gap_bits=4)
    net["ip2"].set_weight_format(HuffmanCodebookWeight.from_sparse_codebook(sparse))
    return net


def quantized_net():
    """``small_net`` with a rANS-coded sparse codebook layer and a power-of-two layer."""
    from robustcnn.compress.prune import prune
    from robustcnn.engine.formats import Pow2Weight, RansCodebookWeight

    net = small_net()
    prune(net, {"ip1": 0.7})
    sparse = net.convert("ip1", "sparse_codebook", code_bits=4, gap_bits=3)
    net["ip1"].set_weight_format(RansCodebookWeight.from_sparse_codebook(sparse))
    net["conv2"].set_weight_format(Pow2Weight.from_dense(net["conv2"].dense_weight(), 4))
    return net


def cm_net():
    """``small_net`` with two context-mixing-coded sparse codebook layers (conv and FC)."""
    from robustcnn.compress.prune import prune
    from robustcnn.engine.formats import CmCodebookWeight

    net = small_net()
    prune(net, {"ip1": 0.7, "conv2": 0.6})
    for name, bits in (("ip1", (4, 3)), ("conv2", (5, 2))):
        sparse = net.convert(name, "sparse_codebook", code_bits=bits[0], gap_bits=bits[1])
        net[name].set_weight_format(CmCodebookWeight.from_sparse_codebook(sparse))
    return net


# ---------------------------------------------------------------------------------------------
# Checkpoints (HDF5)


def _h5_edit(data, edit):
    """Apply ``edit(h5py.File)`` to the HDF5 file ``data`` → the new bytes."""
    import h5py

    buf = io.BytesIO(data)
    with h5py.File(buf, "r+") as f:
        edit(f)
    return buf.getvalue()


def checkpoint_digest(f):
    """The version-2 checkpoint digest of an open file, as its docstring defines it (written
    here independently of engine/checkpoint.py)."""
    import h5py

    h = hashlib.sha256()
    for label in ("spec", "meta"):
        text = f.attrs[label]
        text = text if isinstance(text, str) else str(text)
        h.update(f"{label}:{len(text.encode())}:".encode() + text.encode())
    for group in ("state", "velocity"):
        if group not in f:
            continue
        found = {}
        f[group].visititems(lambda k, o: found.__setitem__(k, o[()])
                            if isinstance(o, h5py.Dataset) else None)
        for key in sorted(found):
            a = np.ascontiguousarray(found[key])
            h.update(f"{group}/{key}:{a.dtype.str}:{a.shape}".encode() + a.tobytes())
    return h.hexdigest()


def _resign(f):
    """The digest recomputed, where every dataset is small enough to read here."""
    import h5py

    sizes = []
    f.visititems(lambda k, o: sizes.append(o.size) if isinstance(o, h5py.Dataset) else None)
    if max(sizes, default=0) > 1 << 20:
        return
    try:
        f.attrs["sha256"] = checkpoint_digest(f)
    except Exception:  # an edit that left it unreadable: the reader must say so
        pass


def _datasets(f):
    import h5py

    found = []
    f.visititems(lambda k, o: found.append(k) if isinstance(o, h5py.Dataset) else None)
    return sorted(found)


def _absurd_dataset(rng):
    def edit(f):
        names = _datasets(f)
        if not names:
            return
        name = _pick(rng, names)
        del f[name]
        dims = int(rng.integers(1, 4))
        shape = tuple(int(_pick(rng, (2**31, 10**6, 2**20, 3, 2**16, 10**9))) for _ in range(dims))
        f.create_dataset(name, shape=shape, dtype=_pick(rng, ("f4", "f8", "u1", "i8")),
                         chunks=(1,) * (dims - 1) + (min(shape[-1], 1024),))
        if rng.random() < 0.5:
            _resign(f)
    return edit


def _dataset_edit(rng):
    def edit(f):
        names = _datasets(f)
        if not names:
            return
        name = _pick(rng, names)
        if f[name].size > 1 << 20:
            return
        old = f[name][()]
        del f[name]
        choice = rng.integers(6)
        if choice == 0:
            new = old.reshape(-1)[: max(old.size - 1, 0)]
        elif choice == 1:
            new = np.concatenate([old.reshape(-1), old.reshape(-1)])
        elif choice == 2:
            new = old.astype(_pick(rng, ("i4", "u1", "f2", "f8", ">f4")))
        elif choice == 3:
            new = np.full(old.shape, _pick(rng, (1e38, 3e38, -1e30, np.nan, np.inf)), "f4")
        elif choice == 4:
            new = np.array([b"text"])
        else:
            new = old.reshape(-1, 1) if old.ndim == 1 else old.reshape(-1)
        f.create_dataset(name, data=new)
        _resign(f)
    return edit


def _attr_edit(rng):
    def edit(f):
        key = _pick(rng, ("spec", "meta", "version", "format", "sha256"))
        if key in ("spec", "meta") and key in f.attrs:
            f.attrs[key] = _json_dumps(_json_edit(json.loads(f.attrs[key]), rng))
        elif key == "version":
            f.attrs[key] = _pick(rng, (0, 1, 2, 3, -1, 2**40, "2", 2.0))
        elif key == "format":
            f.attrs[key] = _pick(rng, ("robustcnn-checkpoint ", "", "keras"))
        else:
            f.attrs[key] = _pick(rng, ("", "0" * 64, "zz"))
        if key != "sha256":
            _resign(f)
    return edit


def _h5_mutators(*makers):
    return {m.__name__.strip("_"): (lambda data, rng, m=m: _h5_edit(data, m(rng)))
            for m in makers}


def checkpoint_seeds(directory):
    from robustcnn.engine.checkpoint import save_checkpoint

    net = small_net()
    out = {}
    save_checkpoint(os.path.join(directory, "model.h5"), net,
                    meta={"dataset": "mnist", "test_accuracy": 0.5})
    velocity = {k: np.full_like(v, 0.01) for k, v in net.named_params()}
    save_checkpoint(os.path.join(directory, "train.h5"), net, velocity=velocity,
                    meta={"run": {"seed": 0}, "epoch": 1, "history": [{"epoch": 1}]})
    for name in ("model.h5", "train.h5"):
        with open(os.path.join(directory, name), "rb") as f:
            out[name] = f.read()
    return out


# ---------------------------------------------------------------------------------------------
# The .rcnn model file


def _rcnn_parts(data):
    magic, version, hlen = struct.unpack_from("<8sHI", data)
    header = json.loads(zlib.decompress(data[14:14 + hlen]))
    return magic, version, header, data[14 + hlen:-32]


def _rcnn_bytes(magic, version, header, payload):
    h = zlib.compress(_json_dumps(header).encode(), 9)
    body = struct.pack("<8sHI", magic, version, len(h)) + h + payload
    return body + hashlib.sha256(body).digest()


def _rcnn_header_edit(data, rng):
    magic, version, header, payload = _rcnn_parts(data)
    part = _pick(rng, ("spec", "spec", "arrays", "arrays", "meta", None))
    if part is None:
        header = _json_edit(header, rng)
    else:
        header[part] = _json_edit(header[part], rng)
    return _rcnn_bytes(magic, version, header, payload)


def _rcnn_payload_edit(data, rng):
    """Random bytes inside the arrays (a Huffman stream, codes, indices), checksum resealed:
    what the weight formats' own validation must catch."""
    magic, version, header, payload = _rcnn_parts(data)
    payload = bytearray(payload)
    for _ in range(int(rng.integers(1, 6))):
        payload[int(rng.integers(len(payload)))] = int(rng.integers(256))
    return _rcnn_bytes(magic, version, header, bytes(payload))


def _rcnn_absurd_shape(data, rng):
    magic, version, header, payload = _rcnn_parts(data)
    layers = [l for l in header["spec"]["layers"] if l.get("class") in ("Linear", "Conv2d")]
    layer = _pick(rng, layers)
    key = "out_features" if "out_features" in layer else "out_channels"
    layer[key] = int(_pick(rng, (10**5, 10**8, 2**31, 10**12, 0, -3)))
    if rng.random() < 0.3:
        header["spec"]["input_shape"] = [int(_pick(rng, (1, 10**5, 2**31))) for _ in range(3)]
    return _rcnn_bytes(magic, version, header, payload)


def rcnn_seeds(directory):
    from robustcnn.compress.modelfile import encode_model

    return {"small.rcnn": encode_model(compressed_net(), {"model": "small", "dataset": "mnist"}),
            "dense.rcnn": encode_model(small_net(), {}),
            "quantized.rcnn": encode_model(quantized_net(), {}),
            "cm.rcnn": encode_model(cm_net(), {})}


# ---------------------------------------------------------------------------------------------
# Caffe: prototxt, binary caffemodel, Caffe HDF5 weights, Deep Compression .net


PROTOTXT = '''name: "small"
input: "data"
input_shape { dim: 1 dim: 2 dim: 6 dim: 6 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3 pad: 1 stride: 1 group: 1 } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "prelu" type: "PReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "lrn" type: "LRN" bottom: "pool" top: "lrn" lrn_param { local_size: 3 } }
layer { name: "sum" type: "Eltwise" bottom: "lrn" bottom: "pool" top: "sum"
        eltwise_param { coeff: 1 coeff: -0.5 } }
layer { name: "cat" type: "Concat" bottom: "sum" bottom: "pool" top: "cat" }
layer { name: "fc" type: "InnerProduct" bottom: "cat" top: "fc"
        inner_product_param { num_output: 4 } }
layer { name: "drop" type: "Dropout" bottom: "fc" top: "fc" }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
'''

PROTOTXT_V1 = '''name: "v1"
input: "data"
input_dim: 1 input_dim: 1 input_dim: 5 input_dim: 5
layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv"
         convolution_param { num_output: 2 kernel_size: 2 } }
layers { name: "relu" type: RELU bottom: "conv" top: "conv" }
layers { name: "fc" type: INNER_PRODUCT bottom: "conv" top: "fc"
         inner_product_param { num_output: 3 } }
'''

_NUMBER = re.compile(r"(?<![\w.])-?\d+(\.\d+)?(e-?\d+)?(?![\w.])")


def _text_mutation(data, rng):
    """Line- and token-level edits of a text file: numbers made absurd, lines deleted,
    duplicated or swapped, braces added, deep nesting."""
    text = data.decode("utf-8", "replace")
    lines = text.split("\n")
    choice = rng.integers(7)
    if choice <= 2:
        numbers = list(_NUMBER.finditer(text))
        if numbers:
            m = _pick(rng, numbers)
            value = _pick(rng, [str(v) for v in INTERESTING_INTS] + ["1e308", "-0.5", "nan",
                                                                      "inf", "1e-45", "3.5"])
            text = text[:m.start()] + value + text[m.end():]
            return text.encode()
    if choice == 3 and len(lines) > 1:
        del lines[int(rng.integers(len(lines)))]
    elif choice == 4:
        i = int(rng.integers(len(lines)))
        lines[i:i] = [lines[i]] * int(rng.integers(1, 4))
    elif choice == 5 and len(lines) > 1:
        i, j = (int(v) for v in rng.integers(len(lines), size=2))
        lines[i], lines[j] = lines[j], lines[i]
    else:
        depth = int(_pick(rng, (1, 30, 70, 3000)))
        i = int(rng.integers(len(lines)))
        lines.insert(i, _pick(rng, ("layer {", "}", "{" * depth + "}" * depth,
                                    "a = " + "[" * depth + "]" * depth)))
    return "\n".join(lines).encode()


def caffe_seeds(directory):
    """The prototxts; also writes the weights seeds' companions."""
    return {"small.prototxt": PROTOTXT.encode(), "v1.prototxt": PROTOTXT_V1.encode()}


def _caffe_weights(directory):
    from robustcnn.models.caffe import load_caffe

    proto = os.path.join(directory, "net.prototxt")
    with open(proto, "w") as f:
        f.write(PROTOTXT)
    net = load_caffe(proto)
    rng = np.random.default_rng(0)
    for layer in net.layers:
        for key, value in {**layer.params, **layer.buffers}.items():
            value[...] = rng.uniform(0.5, 1.5, value.shape) if key in ("var", "slope") \
                else rng.normal(0, 0.3, value.shape)
    return net


def caffemodel_seeds(directory):
    from robustcnn.models.caffe import save_caffe

    net = _caffe_weights(directory)
    save_caffe(net, os.path.join(directory, "exported.prototxt"),
               os.path.join(directory, "net.caffemodel"))
    with open(os.path.join(directory, "net.caffemodel"), "rb") as f:
        return {"net.caffemodel": f.read()}


def _caffemodel_edit(data, rng):
    from robustcnn.models.caffe.schema import messages

    msg = messages()["NetParameter"]()
    msg.ParseFromString(data)
    layers = [l for l in msg.layer if len(l.blobs)]
    blob = _pick(rng, [b for l in layers for b in l.blobs])
    choice = rng.integers(4)
    if choice == 0 and len(blob.shape.dim):
        i = int(rng.integers(len(blob.shape.dim)))
        blob.shape.dim[i] = int(_pick(rng, [v for v in INTERESTING_INTS if v >= 0 and v < 2**63]))
    elif choice == 1:
        del blob.data[int(rng.integers(max(len(blob.data), 1))):]
    elif choice == 2:
        blob.ClearField("shape")
        blob.num, blob.channels, blob.height, blob.width = (
            int(_pick(rng, (0, 1, 2, 3, 2**20, 2**31 - 1))) for _ in range(4))
    else:
        blob.double_data.extend([float(v) for v in blob.data])
        if rng.random() < 0.5:
            blob.ClearField("data")
    return msg.SerializeToString()


def caffe_hdf5_seeds(directory):
    import h5py

    net = _caffe_weights(directory)
    from robustcnn.models.caffe.exporter import save_caffe

    save_caffe(net, os.path.join(directory, "exported.prototxt"),
               os.path.join(directory, "tmp.caffemodel"))
    from robustcnn.models.caffe import read_weights

    weights = read_weights(os.path.join(directory, "tmp.caffemodel"))
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        for name, blobs in weights.items():
            for i, (b, _) in enumerate(blobs):
                f.create_dataset(f"data/{name}/{i}", data=np.asarray(b, dtype=np.float32))
    return {"net.caffemodel.h5": buf.getvalue()}


# The Deep Compression layout (models/squeezenet_dc.py's docstring) of a small net, written
# here: uint32 counts, then per layer codebook, bias, code stream, 4-bit gap stream.
DC_PROTOTXT = '''name: "dc"
input: "data"
input_shape { dim: 1 dim: 2 dim: 8 dim: 8 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc2" type: "InnerProduct" bottom: "pool1" top: "fc2"
        inner_product_param { num_output: 5 } }
'''


def _nibbles(values):
    values = list(values) + ([0] if len(values) % 2 else [])
    return bytes(values[i] | (values[i + 1] << 4) for i in range(0, len(values), 2))


def deep_compression_bytes(layers, rng):
    """A Deep Compression file of ``layers`` [(name, weight shape, bits)], weights drawn at
    random with about a third kept."""
    counts, blocks = [], []
    for name, shape, bits in layers:
        size = math.prod(shape)
        positions = np.flatnonzero(rng.random(size) < 0.35)
        codes, gaps, prev = [], [], -1
        for p in positions:
            while p - prev - 1 > 15:  # a filler entry (code 0) bridges a long run of zeros
                codes.append(0)
                gaps.append(15)
                prev += 16
            codes.append(int(rng.integers(1, 1 << bits)))
            gaps.append(int(p - prev - 1))
            prev = p
        codebook = np.concatenate([[0.0], rng.normal(0, 0.3, (1 << bits) - 1)]).astype("<f4")
        bias = rng.normal(0, 0.1, shape[0]).astype("<f4")
        stream = bytes(codes) if bits == 8 else _nibbles(codes)
        counts.append(len(codes))
        blocks.append(codebook.tobytes() + bias.tobytes() + stream + _nibbles(gaps))
    return np.asarray(counts, "<u4").tobytes() + b"".join(blocks)


def dc_seeds(directory):
    with open(os.path.join(directory, "dc.prototxt"), "w") as f:
        f.write(DC_PROTOTXT)
    rng = np.random.default_rng(2)
    return {"dc.net": deep_compression_bytes([("conv1", (4, 2, 3, 3), 8), ("fc2", (5, 36), 4)],
                                             rng)}


def _dc_count_edit(data, rng):
    data = bytearray(data)
    i = int(rng.integers(2))
    struct.pack_into("<I", data, 4 * i,
                     int(_pick(rng, [v for v in INTERESTING_INTS if 0 <= v < 2**32])))
    return bytes(data)


# ---------------------------------------------------------------------------------------------
# Keras HDF5


def keras_seeds(directory):
    from robustcnn.models.keras import save_keras

    path = os.path.join(directory, "model.h5")
    save_keras(small_net(), path)
    with open(path, "rb") as f:
        return {"model.h5": f.read()}


def _keras_config_edit(rng):
    def edit(f):
        cfg = json.loads(f.attrs["model_config"])
        f.attrs["model_config"] = _json_dumps(_json_edit(cfg, rng))
    return edit


def _keras_names_edit(rng):
    def edit(f):
        import h5py

        groups = []
        f.visititems(lambda k, o: groups.append(k) if isinstance(o, h5py.Group)
                     and "weight_names" in o.attrs else None)
        if groups:
            g = f[_pick(rng, groups)]
            names = list(g.attrs["weight_names"])
            g.attrs["weight_names"] = names[::-1] if rng.random() < 0.5 else names + names
    return edit


# ---------------------------------------------------------------------------------------------
# Datasets: IDX (MNIST's format), CIFAR-10's binary batches


def idx_seeds(directory):
    from robustcnn.models.idx import write_idx

    rng = np.random.default_rng(3)
    out = {}
    for name, array, gz in (("images-idx3-ubyte", rng.integers(0, 256, (4, 28, 28), np.uint8),
                             False),
                            ("labels-idx1-ubyte.gz", rng.integers(0, 10, 50, np.uint8), True),
                            ("floats-idx2", rng.normal(size=(7, 5)).astype(np.float32), False)):
        path = os.path.join(directory, name)
        write_idx(path, array, gzip=gz)
        with open(path, "rb") as f:
            out[name] = f.read()
    return out


def _idx_header_edit(data, rng):
    gz = data[:2] == b"\x1f\x8b"
    import gzip

    raw = bytearray(gzip.decompress(data) if gz else data)
    field = int(rng.integers(4))
    if field == 0:
        raw[2] = int(_pick(rng, (0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0xFF)))
    elif field == 1:
        raw[3] = int(_pick(rng, (0, 1, 2, 3, 8, 9, 255)))
    else:
        ndim = max(min(raw[3], (len(raw) - 4) // 4), 1)
        at = 4 + 4 * int(rng.integers(ndim))
        if at + 4 <= len(raw):
            struct.pack_into(">I", raw, at,
                             int(_pick(rng, [v for v in INTERESTING_INTS if 0 <= v < 2**32])))
    return gzip.compress(bytes(raw), mtime=0) if gz else bytes(raw)


def cifar_seeds(directory):
    import tarfile

    rng = np.random.default_rng(4)
    records = np.concatenate([rng.integers(0, 10, (3, 1)), rng.integers(0, 256, (3, 3072))],
                             axis=1).astype(np.uint8).tobytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-bin/test_batch.bin")
        info.size = len(records)
        tar.addfile(info, io.BytesIO(records))
    return {"test_batch.bin": records, "cifar-10-binary.tar.gz": buf.getvalue()}


def _cifar_load(path, directory):
    from robustcnn.models.datasets import load_cifar10

    return load_cifar10("test", data_dir=os.path.dirname(path))


# ---------------------------------------------------------------------------------------------
# The study's TOML and SQLite files


def toml_seeds(directory):
    from importlib import resources

    examples = resources.files("robustcnn.study") / "examples"
    return {name: (examples / name).read_bytes() for name in ("demo.toml", "paper.toml")}


def _toml_value_edit(data, rng):
    text = data.decode("utf-8", "replace")
    keys = list(re.finditer(r"^(\s*[\w.-]+\s*=\s*)(.*)$", text, re.MULTILINE))
    if not keys:
        return data
    m = _pick(rng, keys)
    value = _pick(rng, ("12", "0", "-1", "1e400", "nan", "inf", '"x"', "[1, 2]", '["a"]', "{}",
                        "{ a = 1 }", "true", str(2**63 - 1), "[" * 500 + "]" * 500,
                        '"' + "a" * 10000 + '"', "[[0.1]]", '"ip9"', "99"))
    return (text[:m.start(2)] + value + text[m.end(2):]).encode()


def _toml_layer_edit(data, rng):
    """Layer names and code bits of the compressed models' settings."""
    text = data.decode("utf-8", "replace")
    names = list(re.finditer(r"\b(conv1|conv2|ip1|ip2|ip3)\b", text))
    if names and rng.random() < 0.6:
        m = _pick(rng, names)
        return (text[:m.start()] + _pick(rng, ("ip9", "relu1", "pool1", "conv3", '"x"'))
                + text[m.end():]).encode()
    return text.replace("bits = {", "bits = { ip1 = 12, ", 1).encode()


def store_seeds(directory):
    """A study database with per-image outcomes and provenance, and an unbounded attack's
    perturbation sizes (schema version 4)."""
    import numpy as np

    from robustcnn.study.store import Store, encode_outcomes

    def outcomes(adversarial, sizes=False):
        right = np.arange(100)
        return encode_outcomes(right, right < 90, right < round(100 * adversarial),
                               right / 100 if sizes else None)

    path = os.path.join(directory, "seed.sqlite")
    with Store(path) as store:
        for i, (model, kind, size) in enumerate((("dense", "dense", 4000),
                                                 ("dc", "compressed", 100),
                                                 ("small", "compact", 120))):
            for seed in (0, 1):
                for eps in (0.1, None):
                    store.write_cell({
                        "key": f"{model}-{seed}-{eps}", "study": "t", "model": model,
                        "model_key": f"k{i}", "kind": kind, "arch": "lenet5",
                        "attack": "fgsm" if eps else "deepfool", "norm": "linf", "eps": eps,
                        "seed": seed, "examples": 100, "clean_accuracy": 0.9,
                        "adversarial_accuracy": 0.5 + 0.1 * i, "success_rate": 0.4,
                        "linf_mean": eps, "l2_mean": 1.0, "sanity_passed": True,
                        "metrics": {"success_rate": 0.4, "l2_median": 0.3},
                        "sanity": [{"name": "large_eps", "passed": True, "detail": ""}],
                        "model_info": {"params": 1000, "dense_bytes": 4000, "file_bytes": size,
                                       "compression_ratio": 4000 / size},
                        "seconds": 1.0, "versions": {"robustcnn": "0", "numpy": "1"},
                        "outcomes": outcomes(0.5 + 0.1 * i, sizes=eps is None),
                        "provenance": {"config": "ab" * 32, "code": {"version": "0",
                                                                    "commit": None},
                                       "machine": {"platform": "p", "cpus": 2, "cpu": "c"}}})
    with open(path, "rb") as f:
        return {"study.sqlite": f.read()}


def _sql_edit(data, rng):
    """An edit through SQLite itself: a column given a value of another type, a JSON column
    garbage, a table dropped or the schema version changed."""
    import tempfile

    from robustcnn.study.store import COLUMNS

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x.sqlite")
        with open(path, "wb") as f:
            f.write(data)
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            choice = rng.integers(5)
            value = _pick(rng, ("x", 3.5, 2**62, -1, None, b"\x00\xff", "[1]", '{"a": [}',
                                '[{"name": 1}]', '{"file_bytes": "big"}', "nan", "[" * 5000))
            if choice <= 2:
                conn.execute(f"UPDATE cells SET {_pick(rng, COLUMNS)} = ? WHERE rowid = ?",
                             (value, int(rng.integers(1, 13))))
            elif choice == 3:
                conn.execute(f"DROP TABLE {_pick(rng, ('meta', 'cells', 'artifacts'))}")
            else:
                conn.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'",
                             (str(_pick(rng, (1, 2, 3, 5, "x", 2**40))),))
        except sqlite3.Error:
            pass
        finally:
            conn.close()
        with open(path, "rb") as f:
            return f.read()


def _report_load(path, directory):
    from robustcnn.study.report import csv_text, markdown
    from robustcnn.study.store import Store

    for suffix in ("-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    with Store(path, readonly=True) as store:
        rows = store.rows()
    return markdown(rows, source=os.path.basename(path)), csv_text(rows)


# ---------------------------------------------------------------------------------------------
# The table


# ---------------------------------------------------------------------------------------------
# ONNX


def onnx_seeds(directory):
    """The small net written by the exporter, dense and with its pruned layers as sparse
    initializers, and a graph whose weight comes from folded shape arithmetic
    (ConstantOfShape), so that mutated shapes reach the folding."""
    from onnx import TensorProto, helper

    from robustcnn.models.onnx import onnx_model

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    folded = helper.make_model(helper.make_graph(
        [helper.make_node("ConstantOfShape", ["shape"], ["w"],
                          value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5])),
         helper.make_node("Gemm", ["x", "w"], ["y"])],
        "folded", [x], [y],
        [helper.make_tensor("shape", TensorProto.INT64, [2], [6, 4])]),
        opset_imports=[helper.make_opsetid("", 17)])
    return {"small.onnx": onnx_model(small_net()).SerializeToString(),
            "sparse.onnx": onnx_model(compressed_net(), sparse=True).SerializeToString(),
            "folded.onnx": folded.SerializeToString()}


def _onnx_edit(data, edit, rng):
    """Apply ``edit(model, rng)`` to the parsed ONNX model ``data`` → the new bytes (the input
    back when it does not parse)."""
    from onnx import ModelProto

    model = ModelProto()
    try:
        model.ParseFromString(data)
    except Exception:  # noqa: BLE001: an earlier byte mutation broke it; nothing to edit
        return data
    edit(model, rng)
    return model.SerializeToString()


def _onnx_tensors(model):
    """Every TensorProto of the graph: initializers, sparse initializers' values and indices,
    tensor attributes of nodes."""
    g = model.graph
    found = list(g.initializer)
    for s in g.sparse_initializer:
        found += [s.values, s.indices]
    for node in g.node:
        found += [a.t for a in node.attribute if a.HasField("t")]
    return found


def _onnx_dims(data, rng):
    """A tensor's dims made absurd (or a sparse initializer's dense dims), its data kept."""
    def edit(model, rng):
        sparse = list(model.graph.sparse_initializer)
        if sparse and rng.random() < 0.3:
            target = _pick(rng, sparse)
        else:
            tensors = _onnx_tensors(model)
            if not tensors:
                return
            target = _pick(rng, tensors)
        dims = list(target.dims) or [1]
        dims[int(rng.integers(len(dims)))] = int(_pick(rng, (0, 2**16, 2**27, 2**28 + 1, 2**31,
                                                              10**6, 10**12, -1)))
        if rng.random() < 0.3:
            dims.append(int(_pick(rng, (2**16, 2**20, 10**6))))
        del target.dims[:]
        target.dims.extend(dims)
    return _onnx_edit(data, edit, rng)


def _onnx_values(data, rng):
    """An integer constant (a shape for ConstantOfShape or Reshape, sparse indices) or an
    attribute's integers set to interesting values."""
    def edit(model, rng):
        from onnx import numpy_helper

        ints = [t for t in _onnx_tensors(model) if t.data_type == 7]  # INT64
        attrs = [a for n in model.graph.node for a in n.attribute if a.ints or a.i]
        if ints and (not attrs or rng.random() < 0.5):
            t = _pick(rng, ints)
            a = numpy_helper.to_array(t).copy()
            if a.size:
                a.reshape(-1)[int(rng.integers(a.size))] = int(_pick(
                    rng, (0, -1, 2**27, 2**31, 10**9, 2**62)))
                t.CopyFrom(numpy_helper.from_array(a, t.name))
        elif attrs:
            a = _pick(rng, attrs)
            value = int(_pick(rng, (0, -1, 2**31, 10**6, 2**62)))
            if a.ints:
                a.ints[int(rng.integers(len(a.ints)))] = value
            else:
                a.i = value
    return _onnx_edit(data, edit, rng)


def _onnx_graph(data, rng):
    """A node's op type, inputs or outputs rewired, or the input's declared shape changed."""
    def edit(model, rng):
        g = model.graph
        choice = int(rng.integers(4))
        if choice == 0 and g.node:
            _pick(rng, g.node).op_type = _pick(rng, ("Relu", "Conv", "Gemm", "MaxPool", "Add",
                                                     "ConstantOfShape", "Tile", "Identity"))
        elif choice == 1 and g.node:
            node = _pick(rng, g.node)
            names = [n for m in g.node for n in m.output] + [i.name for i in g.initializer]
            if node.input and names:
                node.input[int(rng.integers(len(node.input)))] = _pick(rng, names)
        elif choice == 2 and g.input:
            dims = g.input[0].type.tensor_type.shape.dim
            if dims:
                dims[int(rng.integers(len(dims)))].dim_value = int(_pick(
                    rng, (0, 1, 2**20, 2**31, 10**5)))
        elif g.node:
            g.node.append(g.node[int(rng.integers(len(g.node)))])
    return _onnx_edit(data, edit, rng)


FORMATS = {f.name: f for f in (
    FuzzFormat("checkpoint", checkpoint_seeds, lambda p, d: load_model(p),
               _h5_mutators(_absurd_dataset, _dataset_edit, _attr_edit)),
    FuzzFormat("rcnn", rcnn_seeds, lambda p, d: load_model(p),
               {"header": _rcnn_header_edit, "payload": _rcnn_payload_edit,
                "absurd_shape": _rcnn_absurd_shape}),
    FuzzFormat("onnx", onnx_seeds, lambda p, d: load_model(p),
               {"dims": _onnx_dims, "values": _onnx_values, "graph": _onnx_graph}),
    FuzzFormat("caffe-prototxt", caffe_seeds, lambda p, d: load_model(p),
               {"text": _text_mutation}),
    FuzzFormat("caffemodel", caffemodel_seeds,
               lambda p, d: load_model(os.path.join(d, "net.prototxt"), p),
               {"blob": _caffemodel_edit}),
    FuzzFormat("caffe-hdf5", caffe_hdf5_seeds,
               lambda p, d: load_model(os.path.join(d, "net.prototxt"), p),
               _h5_mutators(_absurd_dataset, _dataset_edit)),
    FuzzFormat("keras", keras_seeds, lambda p, d: load_model(p),
               _h5_mutators(_keras_config_edit, _keras_config_edit, _absurd_dataset,
                            _dataset_edit, _keras_names_edit)),
    FuzzFormat("deep-compression", dc_seeds,
               lambda p, d: load_model(os.path.join(d, "dc.prototxt"), p),
               {"counts": _dc_count_edit}),
    FuzzFormat("idx", idx_seeds,
               lambda p, d: __import__("robustcnn.models.idx", fromlist=["read_idx"]).read_idx(p),
               {"header": _idx_header_edit}),
    FuzzFormat("cifar", cifar_seeds, _cifar_load),
    FuzzFormat("study-toml", toml_seeds,
               lambda p, d: __import__("robustcnn.study.config",
                                       fromlist=["load_config"]).load_config(p),
               {"value": _toml_value_edit, "layer": _toml_layer_edit, "text": _text_mutation}),
    FuzzFormat("study-sqlite", store_seeds, _report_load, {"sql": _sql_edit}),
)}
