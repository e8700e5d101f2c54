"""The engine's ``Net`` → Caffe files: a deploy ``.prototxt`` and a binary ``.caffemodel``.

    save_caffe(net, "deploy.prototxt", "weights.caffemodel")

Each engine layer becomes the Caffe layer ``load_caffe`` maps to it, with the same name, bottoms
and tops, so that a net read from Caffe and written back has the same layers; a BatchNorm with
an affine becomes Caffe's BatchNorm followed by an in-place Scale named ``<name>/scale``.
Weights in a compressed format (CSR, codebooks, Huffman) are written dense, in float32; the
BatchNorm statistics with a moving-average factor of 1. The net's input is an ``Input`` layer
with batch size 1.

A channel-shared PReLU slope is written as Caffe writes it, a blob with no axes, which
OpenCV 4.11 cannot load. Caffe spells floor-mode pooling ``round_mode: FLOOR``, a field OpenCV
does not read (its own schema has ``ceil_mode`` under that number): a net with floor-mode
pooling is written as Caffe reads it, and OpenCV would pool it in ceil mode.
"""

import os

import numpy as np

from ...atomic import atomic_path
from ...engine import (LRN, AvgPool2d, BatchNorm, Concat, Conv2d, Dropout, EltwiseMax,
                       EltwiseProd, EltwiseSum, Flatten, GlobalAvgPool2d, Linear, LRNWithin,
                       MaxPool2d, PReLU, ReLU, Reshape, Scale, Softmax)
from .schema import messages, require_protobuf


def _blob(array, shape=None):
    blob = messages()["BlobProto"]()
    a = np.asarray(array, dtype=np.float32)
    blob.shape.dim.extend(a.shape if shape is None else shape)
    blob.data.extend(a.ravel())
    return blob


def _spatial(param, stem, values, default):
    """Write an (h, w) pair as ``stem`` (equal values) or ``stem_h`` + ``stem_w``."""
    h, w = values
    if h == w:
        if h != default:
            field = getattr(param, "kernel_size" if stem == "kernel" else stem)
            if hasattr(field, "append"):
                field.append(h)
            else:
                setattr(param, "kernel_size" if stem == "kernel" else stem, h)
    else:
        setattr(param, f"{stem}_h", h)
        setattr(param, f"{stem}_w", w)


def _convolution(layer, out):
    p = out.convolution_param
    p.num_output = layer.out_channels
    if not layer.bias:
        p.bias_term = False
    _spatial(p, "kernel", layer.kernel, None)
    _spatial(p, "stride", layer.stride, 1)
    _spatial(p, "pad", layer.padding, 0)
    if layer.dilation != (1, 1):
        p.dilation.extend(layer.dilation if layer.dilation[0] != layer.dilation[1]
                          else layer.dilation[:1])
    if layer.groups != 1:
        p.group = layer.groups
    blobs = [layer.dense_weight()]
    if layer.bias:
        blobs.append(layer.params["bias"])
    return "Convolution", blobs


def _inner_product(layer, out):
    out.inner_product_param.num_output = layer.out_features
    if not layer.bias:
        out.inner_product_param.bias_term = False
    blobs = [layer.dense_weight()]
    if layer.bias:
        blobs.append(layer.params["bias"])
    return "InnerProduct", blobs


def _pooling(layer, out):
    p = out.pooling_param
    if isinstance(layer, GlobalAvgPool2d):
        p.pool = p.AVE
        p.global_pooling = True
        return "Pooling", []
    if isinstance(layer, AvgPool2d) and not layer.count_pad and layer.padding != (0, 0):
        raise ValueError(f"{layer.at}: an average pool that leaves the padding out of the mean "
                         f"has no Caffe equivalent (Caffe's counts it)")
    p.pool = p.MAX if isinstance(layer, MaxPool2d) else p.AVE
    _spatial(p, "kernel", layer.kernel, None)
    if layer.stride[0] == layer.stride[1]:
        p.stride = layer.stride[0]  # Caffe's default stride is 1, the engine's the kernel
    else:
        p.stride_h, p.stride_w = layer.stride
    _spatial(p, "pad", layer.padding, 0)
    if not layer.ceil_mode:
        p.round_mode = p.FLOOR
    return "Pooling", []


def _batch_norm(layer, out):
    out.batch_norm_param.use_global_stats = True
    out.batch_norm_param.eps = layer.eps
    return "BatchNorm", [layer.buffers["mean"], layer.buffers["var"], np.ones(1)]


def _scale(layer, out):
    if layer.bias:
        out.scale_param.bias_term = True
    blobs = [layer.params["weight"]]
    if layer.bias:
        blobs.append(layer.params["bias"])
    return "Scale", blobs


def _relu(layer, out):
    if layer.negative_slope:
        out.relu_param.negative_slope = layer.negative_slope
    return "ReLU", []


def _prelu(layer, out):
    if layer.channel_shared:
        out.prelu_param.channel_shared = True
        return "PReLU", [(layer.params["slope"], ())]  # Caffe's shared slope: a 0-axis blob
    return "PReLU", [layer.params["slope"]]


def _lrn(layer, out):
    p = out.lrn_param
    p.local_size, p.alpha, p.beta = layer.local_size, layer.alpha, layer.beta
    if isinstance(layer, LRNWithin):
        p.norm_region = p.WITHIN_CHANNEL
    else:
        p.k = layer.k
    return "LRN", []


def _dropout(layer, out):
    out.dropout_param.dropout_ratio = layer.p
    return "Dropout", []


def _concat(layer, out):
    if layer.axis != 1:
        out.concat_param.axis = layer.axis
    return "Concat", []


def _eltwise(layer, out):
    p = out.eltwise_param
    if isinstance(layer, EltwiseSum):
        if layer.coeffs is not None:
            p.coeff.extend(layer.coeffs)
    else:
        p.operation = p.PROD if isinstance(layer, EltwiseProd) else p.MAX
    return "Eltwise", []


def _reshape(layer, out):
    out.reshape_param.shape.dim.extend((0,) + layer.out_shapes[0])  # 0: keep the batch size
    return "Reshape", []


WRITERS = [
    (Conv2d, _convolution), (Linear, _inner_product),
    ((MaxPool2d, AvgPool2d, GlobalAvgPool2d), _pooling), (BatchNorm, _batch_norm),
    (Scale, _scale), (ReLU, _relu), (PReLU, _prelu), ((LRN, LRNWithin), _lrn),
    (Dropout, _dropout),
    (Concat, _concat), ((EltwiseSum, EltwiseProd, EltwiseMax), _eltwise),
    (Flatten, lambda layer, out: ("Flatten", [])), (Softmax, lambda layer, out: ("Softmax", [])),
    (Reshape, _reshape),
]


def net_parameter(net, *, weights=True):
    """``net`` as a Caffe NetParameter (with the weights as blobs if ``weights``); needs
    protobuf."""
    require_protobuf(f"{net.name}: writing a net as a Caffe NetParameter")
    msg = messages()["NetParameter"](name=net.name)
    data = msg.layer.add(name=net.input_name, type="Input")
    data.top.append(net.input_name)
    data.input_param.shape.add().dim.extend((1,) + tuple(net.input_shape))
    names = {layer.name for layer in net.layers}
    previous = net.input_name
    for layer in net.layers:
        writer = next((w for cls, w in WRITERS if type(layer) in
                       (cls if isinstance(cls, tuple) else (cls,))), None)
        if writer is None:
            raise ValueError(f"{net.name}: {layer.at} has no Caffe equivalent; it cannot be "
                             f"written as a Caffe file")
        bottoms = layer.bottom or [previous]
        tops = layer.top or [layer.name]
        out = msg.layer.add(name=layer.name)
        out.bottom.extend(bottoms)
        out.top.extend(tops)
        out.type, blobs = writer(layer, out)
        if weights:
            for b in blobs:
                out.blobs.append(_blob(*b) if isinstance(b, tuple) else _blob(b))
        if isinstance(layer, BatchNorm) and layer.affine:
            scale_name = f"{layer.name}/scale"
            if scale_name in names:
                raise ValueError(f"{net.name}: {layer.at} needs a Scale layer named "
                                 f"{scale_name!r}, which the net already has")
            sc = msg.layer.add(name=scale_name, type="Scale")
            sc.bottom.append(tops[0])
            sc.top.append(tops[0])
            sc.scale_param.bias_term = True
            if weights:
                sc.blobs.append(_blob(layer.params["gamma"]))
                sc.blobs.append(_blob(layer.params["beta"]))
        previous = tops[0]
    return msg


def save_caffe(net, prototxt, caffemodel=None):
    """Write ``net`` as a Caffe deploy ``prototxt`` (text) and, if given, a binary
    ``caffemodel`` holding its weights. ``load_caffe(prototxt, caffemodel)`` reads them back.

    Raises ValueError for a layer Caffe has no equivalent of (ReLU6, QuantizedReLU), and
    ImportError without protobuf."""
    require_protobuf(f"{net.name}: writing Caffe files")
    from google.protobuf import text_format

    text = text_format.MessageToString(net_parameter(net, weights=False))
    binary = None if caffemodel is None else net_parameter(net).SerializeToString()
    with atomic_path(os.fspath(prototxt)) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    if binary is not None:
        with atomic_path(os.fspath(caffemodel)) as tmp, open(tmp, "wb") as f:
            f.write(binary)
