"""The engine's ``Net`` → an ONNX model file (opset 17), which onnxruntime runs and
``load_onnx`` reads back.

    save_onnx(net, "model.onnx")                 # dense weights
    save_onnx(net, "model.onnx", sparse=True)    # pruned layers as sparse initializers

Every engine layer becomes the ONNX node(s) that ``load_onnx`` maps back onto the same layer,
so that a net imported from ONNX and written again reads back with the same spec and weights.
Node names are the layer names; values are the blob names (a blob a layer rewrites in place,
as Caffe's ReLU does, gets a new name per version). The batch axis is symbolic (``N``).
Compressed weights (CSR, codebooks, Huffman) are written dense, or with ``sparse=True`` as
``sparse_initializer`` entries (values and linear int64 indices) for layers in a sparse
format. Every one of ``net.outputs`` is a graph output (``net.output`` first).
``net.preprocessing`` and ``net.bounds``, if set, are stored as JSON in the
``robustcnn.preprocessing`` and ``robustcnn.bounds`` metadata entries, where ``load_onnx``
finds them.

Refused with a ValueError naming the layer: LRNWithin and QuantizedReLU (no ONNX operator).
"""

import json
import os

import numpy as np

from ...atomic import atomic_path
from ...engine import (LRN, AvgPool2d, BatchNorm, Concat, Conv2d, Dropout, EltwiseMax,
                       EltwiseProd, EltwiseSum, Flatten, GlobalAvgPool2d, HardSigmoid,
                       HardSwish, Linear, MaxPool2d, Pad2d, Permute, PReLU, ReLU, ReLU6, Reshape,
                       Scale, Sigmoid, Softmax)
from .importer import BOUNDS_KEY, PREPROCESSING_KEY

OPSET = 17
IR_VERSION = 8  # what opset 17 needs; onnxruntime reads it
SPARSE_KINDS = ("csr", "sparse_codebook")


def _refuse(net, layer, why):
    return ValueError(f"{net.name}: {layer.at} cannot be written as ONNX: {why}")


class _Writer:
    def __init__(self, net, sparse):
        from onnx import helper

        self.net, self.sparse, self.helper = net, sparse, helper
        self.nodes, self.initializers, self.sparse_initializers = [], [], []
        self.names = set()

    def unique(self, name):
        out, k = name, 1
        while out in self.names:
            out, k = f"{name}_{k}", k + 1
        self.names.add(out)
        return out

    def const(self, name, array, dtype=np.float32, sparse=False):
        """An initializer holding ``array`` → its (unique) name."""
        from onnx import numpy_helper

        name = self.unique(name)
        array = np.array(array, dtype=dtype, order="C")  # (0-d stays 0-d)
        if sparse:
            flat = array.reshape(-1)
            where = np.flatnonzero(flat)
            values = numpy_helper.from_array(flat[where], name)
            indices = numpy_helper.from_array(where.astype(np.int64), f"{name}/indices")
            self.sparse_initializers.append(
                self.helper.make_sparse_tensor(values, indices, list(array.shape)))
        else:
            self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op, inputs, output, name, **attrs):
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=name, **attrs))
        return output


def _channel_shape(shape, C):
    """A per-channel constant's shape for a blob of per-example ``shape``: (C, 1, 1) or (C,)."""
    return (C,) + (1,) * (len(shape) - 1)


def _layer_nodes(w, layer, xs, out):
    """The nodes of one engine layer reading the ONNX values ``xs``, its output named ``out``."""
    net, name = w.net, layer.name
    x = xs[0]
    in_shape = layer.in_shapes[0]
    if isinstance(layer, (Conv2d, Linear)):
        kind = layer.weight_format.kind if layer.weight_format is not None else "dense"
        weight = w.const(f"{name}/weight", layer.dense_weight(),
                         sparse=w.sparse and kind in SPARSE_KINDS)
        inputs = [x, weight] + ([w.const(f"{name}/bias", layer.params["bias"])]
                                if layer.bias else [])
        if isinstance(layer, Conv2d):
            (ph, pw) = layer.padding
            return w.node("Conv", inputs, out, name, kernel_shape=list(layer.kernel),
                          strides=list(layer.stride), pads=[ph, pw, ph, pw],
                          dilations=list(layer.dilation), group=layer.groups)
        if len(in_shape) != 1:
            inputs[0] = w.node("Flatten", [x], w.unique(f"{name}/flatten"),
                               w.unique(f"{name}/flatten"), axis=1)
        return w.node("Gemm", inputs, out, name, transB=1)
    if isinstance(layer, BatchNorm):
        C = in_shape[0]
        gamma = layer.params.get("gamma", np.ones(C))
        beta = layer.params.get("beta", np.zeros(C))
        inputs = [x, w.const(f"{name}/gamma", gamma), w.const(f"{name}/beta", beta),
                  w.const(f"{name}/mean", layer.buffers["mean"]),
                  w.const(f"{name}/var", layer.buffers["var"])]
        return w.node("BatchNormalization", inputs, out, name, epsilon=layer.eps,
                      momentum=layer.momentum)
    if isinstance(layer, (MaxPool2d, AvgPool2d)):
        (ph, pw) = layer.padding
        attrs = dict(kernel_shape=list(layer.kernel), strides=list(layer.stride),
                     pads=[ph, pw, ph, pw], ceil_mode=int(layer.ceil_mode))
        if isinstance(layer, MaxPool2d):
            return w.node("MaxPool", [x], out, name, **attrs)
        return w.node("AveragePool", [x], out, name, count_include_pad=int(layer.count_pad),
                      **attrs)
    if isinstance(layer, GlobalAvgPool2d):
        return w.node("GlobalAveragePool", [x], out, name)
    if isinstance(layer, ReLU):
        if layer.negative_slope:
            return w.node("LeakyRelu", [x], out, name, alpha=layer.negative_slope)
        return w.node("Relu", [x], out, name)
    if isinstance(layer, ReLU6):
        low = w.const(f"{name}/min", np.float32(0.0))
        high = w.const(f"{name}/max", np.float32(6.0))
        return w.node("Clip", [x, low, high], out, name)
    if isinstance(layer, Sigmoid):
        return w.node("Sigmoid", [x], out, name)
    if isinstance(layer, HardSigmoid):
        return w.node("HardSigmoid", [x], out, name, alpha=layer.alpha, beta=layer.beta)
    if isinstance(layer, HardSwish):
        return w.node("HardSwish", [x], out, name)
    if isinstance(layer, LRN):
        return w.node("LRN", [x], out, name, size=layer.local_size, alpha=layer.alpha,
                      beta=layer.beta, bias=layer.k)
    if isinstance(layer, Dropout):
        return w.node("Dropout", [x, w.const(f"{name}/ratio", np.float32(layer.p))], out, name)
    if isinstance(layer, Flatten):
        return w.node("Flatten", [x], out, name, axis=1)
    if isinstance(layer, Softmax):
        return w.node("Softmax", [x], out, name, axis=1)
    if isinstance(layer, Concat):
        return w.node("Concat", xs, out, name, axis=layer.axis)
    if isinstance(layer, EltwiseSum):
        coeffs = layer.coeffs or [1.0] * len(xs)
        if all(c == 1.0 for c in coeffs):
            return w.node("Sum", xs, out, name)
        if coeffs == [1.0, -1.0]:
            return w.node("Sub", xs, out, name)
        terms = [w.node("Mul", [v, w.const(f"{name}/coeff{i}", np.float32(c))],
                        w.unique(f"{name}/term{i}"), w.unique(f"{name}/term{i}"))
                 for i, (v, c) in enumerate(zip(xs, coeffs))]
        return w.node("Sum", terms, out, name)
    if isinstance(layer, EltwiseProd):
        y = xs[0]
        for i, v in enumerate(xs[1:], start=1):
            last = i == len(xs) - 1
            target = out if last else w.unique(f"{name}/prod{i}")
            y = w.node("Mul", [y, v], target, name if last else target)
        return y
    if isinstance(layer, EltwiseMax):
        return w.node("Max", xs, out, name)
    if isinstance(layer, Scale):
        shape = _channel_shape(in_shape, in_shape[0])
        weight = w.const(f"{name}/weight", layer.params["weight"].reshape(shape))
        if not layer.bias:
            return w.node("Mul", [x, weight], out, name)
        scaled = w.node("Mul", [x, weight], w.unique(f"{name}/scaled"), name)
        bias = w.const(f"{name}/bias", layer.params["bias"].reshape(shape))
        return w.node("Add", [scaled, bias], out, w.unique(f"{name}/bias"))
    if isinstance(layer, PReLU):
        slope = layer.params["slope"]
        shape = (1,) if layer.channel_shared else _channel_shape(in_shape, in_shape[0])
        return w.node("PRelu", [x, w.const(f"{name}/slope", slope.reshape(shape))], out, name)
    if isinstance(layer, Reshape):
        target = w.const(f"{name}/shape", [0] + list(layer.out_shapes[0]), dtype=np.int64)
        return w.node("Reshape", [x, target], out, name)
    if isinstance(layer, Pad2d):
        (t, b), (l, r) = layer.padding
        pads = w.const(f"{name}/pads", [0, 0, t, l, 0, 0, b, r], dtype=np.int64)
        return w.node("Pad", [x, pads], out, name, mode="constant")
    if isinstance(layer, Permute):
        return w.node("Transpose", [x], out, name, perm=[0] + [a + 1 for a in layer.axes])
    raise _refuse(net, layer, f"ONNX has no operator for a {type(layer).__name__} layer")


def onnx_model(net, *, sparse=False):
    """``net`` as an ONNX ModelProto (see the module docstring)."""
    from onnx import TensorProto, helper

    w = _Writer(net, sparse)
    w.names.add(net.input_name)
    current = {net.input_name: net.input_name}  # engine blob → ONNX value of its latest version
    previous = net.input_name
    for layer in net.layers:
        xs = [current[b] for b in (layer.bottom or [previous])]
        tops = layer.top or [layer.name]
        out = w.unique(tops[0])
        _layer_nodes(w, layer, xs, out)
        current[tops[0]] = out
        previous = tops[0]

    def value_info(name, shape):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *shape])

    graph = helper.make_graph(w.nodes, net.name,
                              [value_info(net.input_name, net.input_shape)],
                              [value_info(current[o], net.blob_shape(o)) for o in net.outputs],
                              initializer=w.initializers,
                              sparse_initializer=w.sparse_initializers)
    model = helper.make_model(graph, producer_name="robustcnn",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    props = {}
    if net.preprocessing:
        props[PREPROCESSING_KEY] = json.dumps(net.preprocessing)
    if net.bounds is not None:
        props[BOUNDS_KEY] = json.dumps(net.spec()["bounds"])
    if props:
        helper.set_model_props(model, props)
    return model


def save_onnx(net, path, *, sparse=False):
    """Write ``net`` as an ONNX model file (atomically; see the module docstring)."""
    data = onnx_model(net, sparse=sparse).SerializeToString()
    with atomic_path(os.fspath(path)) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
