"""SqueezeNet v1.0 compressed with Deep Compression: the published 660 KB ImageNet model.

Iandola et al. 2016, "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and <0.5MB
model size" (arXiv:1602.07360); Han, Mao & Dally 2016, "Deep Compression" (ICLR). The files in
``data/squeezenet_v1.0_deep_compression/`` are those of songhan/SqueezeNet-Deep-Compression
(BSD licence and provenance beside them): ``SqueezeNet_deploy.prototxt`` and
``compressed_SqueezeNet.net``, pruned weights with trained quantization and no Huffman stage.

    net = squeezenet_v1_0_deep_compression()              # sparse codebooks, eval mode
    x = caffe_input(image_rgb_256x256)                    # (1, 3, 227, 227), BGR minus the mean
    probs = softmax_forward(net.logits(x))                # 1000 ImageNet classes
    top5 = top_k(probs[0], 5)                             # [(index, name, probability), ...]
    layers = load_deep_compression_arrays()               # {layer name: CompressedLayer}

**The file** (the layout decode.py of that repository reads; little-endian, no header magic):

    uint32 nnz[L]                       stored entries per weighted layer, in prototxt order
    then for each weighted layer, back to back:
      float32 codebook[2^bits]          bits = 8 if 'conv' is in the layer's name, else 4
      float32 bias[num_output]
      uint8   code stream               ⌈nnz·bits/8⌉ bytes; 4-bit codes: low nibble first
      uint8   gap stream                ⌈nnz/2⌉ bytes of 4-bit gaps, low nibble first

Entry k sits at ``position[k] = Σ_{j≤k} (gap[j] + 1) − 1`` in the flattened (O, C/g, kh, kw)
weight (C order) and has the value ``codebook[code[k]]``; every other weight is
``codebook[0]``. A run of more than 15 zeros between two weights is bridged by filler entries
with code 0, whose value is therefore ``codebook[0]`` too — 0.0 in every layer of this file.

The packaged file is verified against its known SHA-256 (``WEIGHTS_SHA256``) whenever it is
read, by path or as ``robustcnn.load``'s weights: a damaged copy is refused, not computed on.
"""

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import limits
from ..engine import Conv2d, Linear
from ..engine.formats import SparseCodebookWeight
from .caffe import load_caffe

# Every gap in the file is a 4-bit field (decode.py reads two per byte).
GAP_BITS = 4

DATA = Path(__file__).resolve().parent / "data"
MODEL_DIR = DATA / "squeezenet_v1.0_deep_compression"
PROTOTXT = MODEL_DIR / "SqueezeNet_deploy.prototxt"
WEIGHTS = MODEL_DIR / "compressed_SqueezeNet.net"
WEIGHTS_SHA256 = "e4ab6960ae8cd81505e1c2136921201507e930966c53deaf15862a395b3a3261"
CLASSES = DATA / "imagenet_classes.txt"

# Caffe's training preprocessing (SqueezeNet_trainval.prototxt): BGR, 0–255, minus this mean,
# a 227×227 crop of an image resized to 256×256.
MEAN_BGR = (104.0, 117.0, 123.0)
CROP = 227
# The same as the net's bounds and preprocessing (``engine.preprocess``); ``robustcnn.load``
# gives them to the packaged file's net too.
BOUNDS = (0.0, 255.0)
PREPROCESSING = {"mean": list(MEAN_BGR), "channel_order": "bgr", "resize": [256, 256],
                 "crop": CROP}


@dataclass(frozen=True, eq=False)
class CompressedLayer:
    """One layer of a Deep Compression file, as plain arrays (one entry per stored weight).

    ``codes`` and ``gaps`` are the decoded streams (uint8, one value per entry); ``positions``
    (int64) are the flat indices into the weight the gaps lead to. ``centroids`` is the codebook.
    """

    name: str
    shape: tuple  # weight shape, (O, C/g, kh, kw) or (O, I)
    bits: int  # code width: 8 or 4
    centroids: np.ndarray  # float32 (2**bits,)
    bias: np.ndarray  # float32 (O,)
    codes: np.ndarray  # uint8 (nnz,), each < 2**bits
    gaps: np.ndarray  # uint8 (nnz,), each < 16
    positions: np.ndarray  # int64 (nnz,), strictly increasing, each < prod(shape)

    @property
    def size(self):
        """Number of weights, prod(shape)."""
        return math.prod(self.shape)

    @property
    def nnz(self):
        """Stored entries, filler entries included."""
        return len(self.codes)

    @property
    def fillers(self):
        """Stored entries with code 0 (value centroids[0]): gap bridges, or weights equal to it."""
        return int(np.count_nonzero(self.codes == 0))


def densify(layer):
    """The dense float32 weight of a ``CompressedLayer``, as decode.py rebuilds it: every
    position not stored holds ``centroids[0]``, stored ones ``centroids[code]``."""
    w = np.full(layer.size, layer.centroids[0], dtype=np.float32)
    w[layer.positions] = layer.centroids[layer.codes]
    return w.reshape(layer.shape)


def _unpack_nibbles(stream, count):
    # stream: (⌈count/2⌉,) uint8 → (count,) uint8; byte b: entry 2b low nibble, 2b+1 high
    out = np.empty(2 * len(stream), dtype=np.uint8)
    out[0::2] = stream & 0x0F
    out[1::2] = stream >> 4
    return out[:count]


def decode_bits(name):
    """decode.py's code width for a layer: 8 bits if 'conv' is in its name, else 4."""
    return 8 if "conv" in name else 4


def is_packaged_weights(path):
    """Whether ``path`` is the packaged Deep Compression file (the same file, not a copy)."""
    try:
        return os.path.samefile(path, WEIGHTS)
    except OSError:
        return False


def read_deep_compression(path, layer_shapes, *, bits=decode_bits, sha256=None,
                          max_bytes=None):
    """Read a Deep Compression file → {layer name: CompressedLayer}, in file order.

    ``layer_shapes``: {name: weight shape} (or (name, shape) pairs) of the weighted layers in the
    order of the file — the prototxt order; ``weight_shapes(net)`` gives it. ``bits``: 8 or 4, a
    {name: bits} dict, or a function of the name (default: decode.py's rule). The bias has
    ``shape[0]`` entries.

    Everything is checked before it is used: each block's size against the bytes that remain,
    every position against the weight's size, no bytes left after the last layer, finite
    codebooks and biases, a zero unused high nibble at the end of a 4-bit stream with an odd
    entry count (as the published encoder wrote it). ``sha256``: the file's known SHA-256 (hex),
    checked first; the packaged file (``WEIGHTS``) is always checked against ``WEIGHTS_SHA256``.
    ``max_bytes``: the largest file read (``robustcnn.limits``). A problem raises ValueError
    naming the file, the layer and what was expected vs found.
    """
    path = os.fspath(path)
    shapes = list(layer_shapes.items() if hasattr(layer_shapes, "items") else layer_shapes)
    if not shapes:
        raise ValueError(f"{path}: no layer shapes given")
    data = limits.read_file(path, max_bytes, "Deep Compression file")
    if sha256 is None and is_packaged_weights(path):
        sha256 = WEIGHTS_SHA256
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"{path}: SHA-256 {hashlib.sha256(data).hexdigest()} is not the known "
                         f"{sha256}: the file is damaged or was altered")
    L = len(shapes)
    if len(data) < 4 * L:
        raise ValueError(f"{path}: truncated: the header of {L} uint32 counts needs {4 * L} "
                         f"bytes, the file has {len(data)}")
    counts = np.frombuffer(data, dtype="<u4", count=L).astype(np.int64)
    offset = 4 * L
    layers = {}
    for (name, shape), nnz in zip(shapes, counts):
        shape = tuple(int(s) for s in shape)
        at = f"{path}: {name}"
        if len(shape) < 2 or min(shape) < 1:
            raise ValueError(f"{at}: weight shape {shape} must have two or more positive sizes")
        b = bits if isinstance(bits, int) else bits[name] if isinstance(bits, dict) else bits(name)
        if b not in (4, 8):
            raise ValueError(f"{at}: code width must be 4 or 8 bits, got {b}")
        size, out = math.prod(shape), shape[0]
        if nnz > size:
            raise ValueError(f"{at}: the header says {nnz} stored entries, more than the "
                             f"{size} weights of shape {shape}")
        n_codebook, n_codes, n_gaps = 1 << b, (nnz * b + 7) // 8, (nnz + 1) // 2
        need = 4 * n_codebook + 4 * out + n_codes + n_gaps
        if need > len(data) - offset:
            raise ValueError(f"{at}: truncated: the layer needs {need} bytes at offset {offset} "
                             f"({n_codebook} centroids, {out} biases, {nnz} entries), "
                             f"{len(data) - offset} remain")
        centroids = np.frombuffer(data, "<f4", n_codebook, offset).astype(np.float32)
        offset += 4 * n_codebook
        bias = np.frombuffer(data, "<f4", out, offset).astype(np.float32)
        offset += 4 * out
        code_stream = np.frombuffer(data, np.uint8, n_codes, offset)
        offset += n_codes
        gap_stream = np.frombuffer(data, np.uint8, n_gaps, offset)
        offset += n_gaps
        for what, a in (("codebook", centroids), ("bias", bias)):
            if not np.isfinite(a).all():
                raise ValueError(f"{at}: the {what} has {np.count_nonzero(~np.isfinite(a))} "
                                 f"non-finite value(s)")
        for what, stream in (("code", code_stream), ("gap", gap_stream)):
            if nnz % 2 and (what == "gap" or b == 4) and stream[-1] >> 4:
                raise ValueError(f"{at}: the {what} stream's unused last nibble is "
                                 f"{stream[-1] >> 4}, expected 0 (wrong count?)")
        codes = code_stream.copy() if b == 8 else _unpack_nibbles(code_stream, nnz)
        gaps = _unpack_nibbles(gap_stream, nnz)
        positions = np.cumsum(gaps.astype(np.int64) + 1) - 1
        if nnz and positions[-1] >= size:
            first = int(np.argmax(positions >= size))
            raise ValueError(f"{at}: entry {first} of {nnz} lands at position {positions[first]}, "
                             f"past the {size} weights of shape {shape} (wrong count or shape?)")
        layers[name] = CompressedLayer(name, shape, b, centroids, bias, codes, gaps, positions)
    if offset != len(data):
        raise ValueError(f"{path}: {len(data) - offset} trailing byte(s) after the last layer "
                         f"({shapes[-1][0]}, ending at offset {offset}); wrong counts or shapes?")
    return layers


def weight_shapes(net):
    """{layer name: weight shape} for the Convolution and InnerProduct layers, in net order."""
    return {l.name: tuple(getattr(l, "weight_shape", None) or l.params["weight"].shape)
            for l in net.layers if isinstance(l, (Conv2d, Linear))}


def dense_state_dict(layers):
    """{"layer/weight": dense weight, "layer/bias": bias} for ``Net.load_state_dict``."""
    state = {}
    for name, layer in layers.items():
        state[f"{name}/weight"] = densify(layer)
        state[f"{name}/bias"] = layer.bias
    return state


def _architecture(dtype=np.float32):
    return load_caffe(PROTOTXT, dtype=dtype, name="squeezenet-v1.0-deep-compression",
                      init=False)  # every weight comes from the file


def load_deep_compression_arrays(path=WEIGHTS):
    """The packaged model's compressed layers → {layer name: CompressedLayer}, prototxt order."""
    return read_deep_compression(path, weight_shapes(_architecture()))


def sparse_codebook_weight(layer, *, dtype=np.float32):
    """A file layer as the engine's sparse-codebook weight: the stored codes and gaps as they
    are (fillers included), no dense round trip."""
    return SparseCodebookWeight.from_entries(layer.shape, layer.codes, layer.gaps, layer.centroids,
                                             layer.bits, GAP_BITS, dtype=dtype, at=layer.name)


def squeezenet_v1_0_deep_compression(dense=False, *, dtype=np.float32):
    """SqueezeNet v1.0 with the Deep Compression weights (ImageNet, 1000 classes).

    By default every convolution computes on its sparse-codebook weight read straight from the
    file (``dense=True`` densifies them instead, for comparison).
    Input: (N, 3, 227, 227) BGR pixels in 0–255 minus ``MEAN_BGR`` (``caffe_input`` makes it).
    Output: the logits, (N, 1000, 1, 1) from the final global average pool; the deploy file has
    no Softmax. ``net.bounds`` (0, 255) and ``net.preprocessing`` say so: an image resized to
    256×256, its centre 227×227, BGR, minus the mean (``net.with_preprocessing()`` takes RGB
    0–255 crops and does the rest).
    """
    net = _architecture(dtype)
    net.bounds = BOUNDS
    net.preprocessing = PREPROCESSING
    layers = read_deep_compression(WEIGHTS, weight_shapes(net))
    if dense:
        net.load_state_dict(dense_state_dict(layers), source=os.fspath(WEIGHTS))
        return net
    for name, layer in layers.items():
        target = net.layer(name)
        target.set_weight_format(sparse_codebook_weight(layer, dtype=dtype))
        target.params["bias"][...] = layer.bias
    return net


# ---------------------------------------------------------------------------------------------
# Input and labels


def caffe_input(images, *, crop=CROP, mean_bgr=MEAN_BGR):
    """RGB images in 0–255, (H, W, 3) or (N, H, W, 3), at least ``crop`` pixels each way →
    (N, 3, crop, crop) float32: the centre crop, channels reversed to BGR, minus ``mean_bgr``.

    Resizing is the caller's (Caffe's ImageNet models saw images resized to 256×256).
    Values are taken as 0–255 whatever the dtype: scale [0, 1] floats first.
    """
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype.kind not in "uif":
        raise ValueError(f"caffe_input: expected RGB images (H, W, 3) or (N, H, W, 3) of numbers, "
                         f"got shape {x.shape} dtype {x.dtype}")
    H, W = x.shape[1:3]
    if H < crop or W < crop:
        raise ValueError(f"caffe_input: images of {H}×{W} are smaller than the {crop}×{crop} "
                         f"crop")
    top, left = (H - crop) // 2, (W - crop) // 2
    x = x[:, top:top + crop, left:left + crop, ::-1].astype(np.float32)
    x -= np.asarray(mean_bgr, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def imagenet_classes(path=CLASSES):
    """The 1000 ImageNet classes in Caffe's index order → list of (wnid, names)."""
    classes = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                wnid, _, names = line.rstrip("\n").partition("\t")
                classes.append((wnid, names))
    if len(classes) != 1000:
        raise ValueError(f"{path}: expected 1000 classes, found {len(classes)}")
    return classes


def top_k(probs, k=5, classes=None):
    """The ``k`` most probable classes of one example → [(index, name, probability), …]."""
    probs = np.asarray(probs).reshape(-1)
    classes = classes or imagenet_classes()
    if len(probs) != len(classes):
        raise ValueError(f"top_k: {len(probs)} scores for {len(classes)} classes")
    order = np.argsort(-probs, kind="stable")[:k]
    return [(int(i), classes[i][1], float(probs[i])) for i in order]
