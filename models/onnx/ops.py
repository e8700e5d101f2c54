"""One builder per ONNX operator: (graph, node, at, inputs, attributes) → output values.

An input is a ``Tensor`` (an engine blob and its per-example shape) or a constant (an array);
a builder adds engine layers through ``g.add`` and returns one value per node output (None for
an output it does not make). Axis 0 of every tensor is the batch: an op that would mix it with
the others (a Reshape across it, a Softmax or Concat over it) is refused, as is any option the
engine has no layer for. See ``robustcnn.models.onnx`` for the list.
"""

import math

import numpy as np

from ...engine import (LRN, AvgPool2d, BatchNorm, Concat, Conv2d, Dropout, EltwiseMax,
                       EltwiseProd, EltwiseSum, Flatten, GlobalAvgPool2d, Linear, MaxPool2d,
                       Pad2d, Permute, PReLU, ReLU, ReLU6, Reshape, Scale, Softmax)
from ...engine.layers import HardSigmoid, HardSwish, Sigmoid
from ...engine.pool import pool2d_geometry
from .fold import axes_list, ints, reshape_shape, squeeze_axes, squeezed_shape, unsqueezed_shape
from .files import text
from .graph import Tensor, f32


def _scalar(g, v, at, what):
    """A one-value constant input (a ratio, a bound) as the float its writer meant."""
    c = g.const(v, at, what)
    if c.size != 1:
        raise ValueError(f"{at}: {what} must hold one value, it holds {c.size}")
    value = c.reshape(-1)[0]
    return f32(value) if c.dtype == np.float32 else float(value)


# The size that shape arithmetic sees for a symbolic batch axis: a number no real axis has, so
# that a Reshape keeps the batch only where the file carried it through (0, -1, Shape).
SYMBOLIC_BATCH = 2**31 - 3


def not_supported(at, what):
    return ValueError(f"{at}: {what} is not supported")


def _spatial(g, x, at, what="input"):
    x = g.tensor(x, at, what)
    if len(x.shape) != 3:
        raise not_supported(at, f"a {x.rank}-D {what} of shape (N,) + {x.shape} (only 2-D "
                                f"images, (N, C, H, W))")
    return x


def _pairs(attrs, key, default, at, minimum=0):
    values = attrs.get(key)
    if values is None:
        return default
    if len(values) != len(default) or any(v < minimum for v in values):
        raise ValueError(f"{at}: {key} {values} must be {len(default)} integers >= {minimum}")
    return tuple(values)


def _pads(attrs, hw, kernel, stride, dilation, at):
    """((top, bottom), (left, right)) from ``pads`` or ``auto_pad`` (2-D)."""
    auto = attrs.get("auto_pad", "NOTSET") or "NOTSET"
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        if attrs.get("pads"):
            raise ValueError(f"{at}: auto_pad {auto} and pads together")
        out = []
        for size, k, s, d in zip(hw, kernel, stride, dilation):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small = total // 2
            out.append((small, total - small) if auto == "SAME_UPPER" else (total - small, small))
        return tuple(out)
    if auto == "VALID":
        return ((0, 0), (0, 0))
    if auto != "NOTSET":
        raise ValueError(f"{at}: unknown auto_pad {auto!r}")
    p = _pairs(attrs, "pads", (0, 0, 0, 0), at)
    return ((p[0], p[2]), (p[1], p[3]))


def _kernel_attrs(attrs, at):
    kernel = _pairs(attrs, "kernel_shape", (1, 1), at, 1) if attrs.get("kernel_shape") else None
    stride = _pairs(attrs, "strides", (1, 1), at, 1)
    dilation = _pairs(attrs, "dilations", (1, 1), at, 1)
    return kernel, stride, dilation


def _pad_first(g, x, pads, name, at):
    """An explicit zero Pad2d when the padding is uneven → (input, symmetric (ph, pw))."""
    (t, b), (l, r) = pads
    if t == b and l == r:
        return x, (t, l)
    return g.add(Pad2d(f"{name}/pad", pads), [x], at), (0, 0)


# ---------------------------------------------------------------------------------------------
# Layers with weights


def conv(g, node, at, ins, attrs):
    x = _spatial(g, ins[0], at)
    w = g.const(ins[1], at, "the weight")
    if w.ndim != 4:
        raise not_supported(at, f"a weight of shape {w.shape} (2-D convolutions, (O, C/group, "
                                f"kh, kw), are)")
    b = g.const(ins[2], at, "the bias") if len(ins) > 2 and ins[2] is not None else None
    kernel, stride, dilation = _kernel_attrs(attrs, at)
    if kernel is not None and kernel != w.shape[2:]:
        raise ValueError(f"{at}: kernel_shape {kernel} does not match the weight {w.shape}")
    groups = attrs.get("group", 1)
    C = x.shape[0]
    if groups < 1 or C % groups or w.shape[1] * groups != C or w.shape[0] % groups:
        raise ValueError(f"{at}: weight {w.shape} with group {groups} does not match {C} input "
                         f"channels")
    if b is not None and b.shape != (w.shape[0],):
        raise ValueError(f"{at}: bias of shape {b.shape}, expected ({w.shape[0]},)")
    g.check_params(w.size, at)
    name = g.layer_name(node)
    pads = _pads(attrs, x.shape[1:], w.shape[2:], stride, dilation, at)
    src, pad = _pad_first(g, x, pads, name, at)
    layer = Conv2d(name, w.shape[0], kernel=w.shape[2:], stride=stride, padding=pad,
                   dilation=dilation, groups=groups, bias=b is not None)
    y = g.add(layer, [src], at, top=g.output(node))
    g.weights[f"{name}/weight"] = w
    if b is not None:
        g.weights[f"{name}/bias"] = b
    g.fusable[y.blob] = layer
    return [y]


def _linear(g, node, at, x, weight, bias):
    if len(x.shape) != 1:
        raise not_supported(at, f"an input of shape (N,) + {x.shape} (a flat (N, K) input is)")
    if weight.shape[1] != x.shape[0]:
        raise ValueError(f"{at}: weight {weight.shape} does not match {x.shape[0]} input "
                         f"features")
    g.check_params(weight.size, at)
    name = g.layer_name(node)
    layer = Linear(name, weight.shape[0], bias=bias is not None)
    y = g.add(layer, [x], at, top=g.output(node))
    g.weights[f"{name}/weight"] = weight
    if bias is not None:
        g.weights[f"{name}/bias"] = bias
    g.fusable[y.blob] = layer
    return [y]


def gemm(g, node, at, ins, attrs):
    x = g.tensor(ins[0], at, "A")
    w = g.const(ins[1], at, "B")
    if attrs.get("transA", 0):
        raise not_supported(at, "transA=1 (A is the batch of inputs)")
    if w.ndim != 2:
        raise ValueError(f"{at}: B must be 2-D, got shape {w.shape}")
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    weight = w if attrs.get("transB", 0) else w.T
    if alpha != 1.0:
        weight = weight * alpha
    bias = None
    if len(ins) > 2 and ins[2] is not None:
        c = g.const(ins[2], at, "C")
        O = weight.shape[0]
        if c.size not in (1, O) or (c.ndim == 2 and c.shape[0] != 1) or c.ndim > 2:
            raise not_supported(at, f"C of shape {c.shape} (one bias per output, ({O},) or "
                                    f"(1, {O}), or a scalar)")
        bias = np.broadcast_to(c.reshape(-1), (O,)) * beta
    return _linear(g, node, at, x, weight, bias)


def matmul(g, node, at, ins, attrs):
    x = g.tensor(ins[0], at, "A")
    w = g.const(ins[1], at, "B")
    if w.ndim != 2:
        raise not_supported(at, f"B of shape {w.shape} (a 2-D constant is)")
    return _linear(g, node, at, x, w.T, None)


def batch_norm(g, node, at, ins, attrs):
    x = g.tensor(ins[0], at, "X")
    if attrs.get("training_mode", 0):
        raise not_supported(at, "training_mode=1 (an inference graph is)")
    if g.opset < 9 and not attrs.get("spatial", 1):
        raise not_supported(at, "spatial=0")
    if len(x.shape) not in (1, 3):
        raise not_supported(at, f"an input of shape (N,) + {x.shape}")
    C = x.shape[0]
    arrays = [g.const(v, at, what) for v, what in zip(ins[1:5], ("scale", "B", "mean", "var"))]
    if len(arrays) != 4:
        raise ValueError(f"{at}: needs 5 inputs (X, scale, B, mean, var), got {len(ins)}")
    for a, what in zip(arrays, ("scale", "B", "mean", "var")):
        if a.size != C or a.ndim != 1:
            raise ValueError(f"{at}: {what} of shape {a.shape}, expected ({C},)")
    scale, bias, mean, var = arrays
    if not (np.isfinite(var).all() and (var >= 0).all()):
        raise ValueError(f"{at}: var must be finite and >= 0")
    name = g.layer_name(node)
    layer = BatchNorm(name, eps=attrs.get("epsilon", 1e-5), affine=True,
                      momentum=attrs.get("momentum", 0.9))
    y = g.add(layer, [x], at, top=g.output(node))
    g.weights.update({f"{name}/gamma": scale, f"{name}/beta": bias, f"{name}/mean": mean,
                      f"{name}/var": var})
    return [y]


def prelu(g, node, at, ins, attrs):
    x = g.tensor(ins[0], at, "X")
    slope = g.const(ins[1], at, "slope")
    C = x.shape[0] if x.shape else 1
    per_channel = (C,) + (1,) * (len(x.shape) - 1)
    squeezed = tuple(slope.shape[slope.ndim - len(x.shape):]) if slope.ndim >= len(x.shape) \
        else None
    if slope.size == 1:
        shared = True
    elif slope.size == C and squeezed == per_channel and \
            all(s == 1 for s in slope.shape[:slope.ndim - len(x.shape)]):
        shared = False
    else:
        raise not_supported(at, f"a slope of shape {slope.shape} on (N,) + {x.shape} (one per "
                                f"channel, {per_channel}, or one for all)")
    if len(x.shape) not in (1, 3):
        raise not_supported(at, f"an input of shape (N,) + {x.shape}")
    name = g.layer_name(node)
    y = g.add(PReLU(name, channel_shared=shared), [x], at, top=g.output(node))
    g.weights[f"{name}/slope"] = slope.reshape(-1)
    return [y]


# ---------------------------------------------------------------------------------------------
# Pooling


def _onnx_pool_size(size, k, s, begin, end, ceil):
    span = size + begin + end - k
    out = (math.ceil(span / s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + begin:  # the last window starts inside (torch, ORT)
        out -= 1
    return out


def pool(g, node, at, ins, attrs):
    x = _spatial(g, ins[0], at)
    op = node.op_type
    kernel, stride, dilation = _kernel_attrs(attrs, at)
    if kernel is None:
        raise ValueError(f"{at}: kernel_shape is required")
    if dilation != (1, 1):
        raise not_supported(at, f"dilations {list(dilation)}")
    if len(node.output) > 1 and g.used(node.output[1]):
        raise not_supported(at, "the Indices output")
    ceil = bool(attrs.get("ceil_mode", 0))
    C, H, W = x.shape
    pads = _pads(attrs, (H, W), kernel, stride, dilation, at)
    want = tuple(_onnx_pool_size(n, k, s, b, e, ceil)
                 for n, k, s, (b, e) in zip((H, W), kernel, stride, pads))
    name = g.layer_name(node)
    count_pad = op == "AveragePool" and bool(attrs.get("count_include_pad", 0))
    if want == (1, 1) and pads[0][0] == pads[1][0] == 0 and kernel[0] >= H and \
            kernel[1] >= W and not count_pad:  # one window over the whole plane
        layer = GlobalAvgPool2d(name) if op == "AveragePool" else \
            MaxPool2d(name, kernel=(H, W), stride=1, ceil_mode=False)
        return [g.add(layer, [x], at, top=g.output(node))]
    src, begin = x, (pads[0][0], pads[1][0])
    if count_pad and (pads[0][0] != pads[0][1] or pads[1][0] != pads[1][1]):
        # the divisor counts the padding: explicit zeros, then a valid pool
        if ceil:
            raise not_supported(at, "count_include_pad with uneven pads in ceil mode")
        src, begin = g.add(Pad2d(f"{name}/pad", pads), [x], at), (0, 0)
    # The engine's windows start at o·s − pad and are clipped to the input, as ONNX's max and
    # (without count_include_pad) average are: choose the rounding that gives ONNX's size.
    for engine_ceil in (ceil, not ceil):
        try:
            _, _, _, shape = pool2d_geometry(src.shape, kernel, stride, begin, engine_ceil, at=at)
        except ValueError:
            continue
        if shape[1:] == want and (not count_pad or engine_ceil == ceil):
            break
    else:
        raise not_supported(at, f"pooling a {H}x{W} input with kernel {kernel}, strides "
                                f"{stride}, pads {pads} and ceil_mode {int(ceil)} (the engine "
                                f"pads both sides alike, by less than the kernel, and clips "
                                f"windows to the input)")
    if op == "MaxPool":
        layer = MaxPool2d(name, kernel=kernel, stride=stride, padding=begin,
                          ceil_mode=engine_ceil)
    else:
        layer = AvgPool2d(name, kernel=kernel, stride=stride, padding=begin,
                          ceil_mode=engine_ceil, count_pad=count_pad)
    return [g.add(layer, [src], at, top=g.output(node))]


def global_pool(g, node, at, ins, attrs):
    x = _spatial(g, ins[0], at)
    name = g.layer_name(node)
    if node.op_type == "GlobalAveragePool":
        layer = GlobalAvgPool2d(name)
    else:
        layer = MaxPool2d(name, kernel=x.shape[1:], stride=1, ceil_mode=False)
    return [g.add(layer, [x], at, top=g.output(node))]


def reduce_mean(g, node, at, ins, attrs):
    x = _spatial(g, ins[0], at)
    axes = attrs.get("axes")
    if g.opset >= 18 and len(ins) > 1 and ins[1] is not None:
        axes = ints(g.const(ins[1], at, "axes"), at, "axes")
    if axes is None or axes_list(axes, 4, at) != [2, 3]:
        raise not_supported(at, f"a mean over axes {axes} (over the spatial axes [2, 3] is)")
    name = g.layer_name(node)
    keep = attrs.get("keepdims", 1)
    if keep:
        return [g.add(GlobalAvgPool2d(name), [x], at, top=g.output(node))]
    y = g.add(GlobalAvgPool2d(f"{name}/pool"), [x], at)
    return [g.add(Flatten(name), [y], at, top=g.output(node))]


# ---------------------------------------------------------------------------------------------
# Activations and normalisation


def _unary(g, node, at, x, layer):
    return [g.add(layer, [g.tensor(x, at)], at, top=g.output(node))]


def relu(g, node, at, ins, attrs):
    return _unary(g, node, at, ins[0], ReLU(g.layer_name(node)))


def leaky_relu(g, node, at, ins, attrs):
    alpha = attrs.get("alpha", 0.01)
    if not (np.isfinite(alpha) and alpha >= 0):
        raise not_supported(at, f"alpha {alpha} (a finite slope >= 0 is)")
    return _unary(g, node, at, ins[0], ReLU(g.layer_name(node), negative_slope=alpha))


def clip(g, node, at, ins, attrs):
    if g.opset < 11:
        low, high = attrs.get("min", -np.inf), attrs.get("max", np.inf)
    else:
        low = _scalar(g, ins[1], at, "min") if len(ins) > 1 and ins[1] is not None else -np.inf
        high = _scalar(g, ins[2], at, "max") if len(ins) > 2 and ins[2] is not None else np.inf
    name = g.layer_name(node)
    if low == 0 and high == 6:
        return _unary(g, node, at, ins[0], ReLU6(name))
    if low == 0 and high == np.inf:
        return _unary(g, node, at, ins[0], ReLU(name))
    raise not_supported(at, f"clipping to [{low}, {high}] (ReLU6's [0, 6] and ReLU's [0, inf] "
                            f"are)")


def sigmoid(g, node, at, ins, attrs):
    return _unary(g, node, at, ins[0], Sigmoid(g.layer_name(node)))


def hard_sigmoid(g, node, at, ins, attrs):
    layer = HardSigmoid(g.layer_name(node), alpha=attrs.get("alpha", 0.2),
                        beta=attrs.get("beta", 0.5))
    return _unary(g, node, at, ins[0], layer)


def hard_swish(g, node, at, ins, attrs):
    return _unary(g, node, at, ins[0], HardSwish(g.layer_name(node)))


def softmax(g, node, at, ins, attrs):
    x = g.tensor(ins[0], at)
    axis = attrs.get("axis", 1 if g.opset < 13 else -1)
    a = axes_list([axis], x.rank, at, "axis")[0]
    axes = set(range(a, x.rank)) if g.opset < 13 else {a}
    if 0 in axes:
        raise not_supported(at, "a softmax over the batch axis")
    if axes == {1} and len(x.shape) == 3:  # over the channels at every position
        return _unary(g, node, at, x, Softmax(g.layer_name(node)))
    if any(size != 1 for i, size in enumerate(x.shape) if i + 1 not in axes):
        raise not_supported(at, f"a softmax over axes {sorted(axes)} of (N,) + {x.shape} (one "
                                f"per position; a softmax over every value of an example is)")
    name = g.layer_name(node)
    if len(x.shape) == 1 or (len(x.shape) == 3 and x.shape[1:] == (1, 1)):
        return _unary(g, node, at, x, Softmax(name))
    flat = g.add(Flatten(f"{name}/flat"), [x], at)
    p = g.add(Softmax(f"{name}/softmax"), [flat], at)
    return [g.add(Reshape(name, x.shape), [p], at, top=g.output(node))]


def lrn(g, node, at, ins, attrs):
    x = _spatial(g, ins[0], at)
    size = attrs.get("size")
    if not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise not_supported(at, f"size {size!r} (an odd size is)")
    layer = LRN(g.layer_name(node), local_size=size, alpha=attrs.get("alpha", 1e-4),
                beta=attrs.get("beta", 0.75), k=attrs.get("bias", 1.0))
    return _unary(g, node, at, x, layer)


def dropout(g, node, at, ins, attrs):
    x = g.tensor(ins[0], at)
    if len(node.output) > 1 and g.used(node.output[1]):
        raise not_supported(at, "the mask output")
    if g.opset >= 12 and len(ins) > 2 and ins[2] is not None and \
            g.const(ins[2], at, "training_mode").any():
        raise not_supported(at, "training_mode true (dropout at inference)")
    ratio = attrs.get("ratio", 0.5)
    if g.opset >= 12 and len(ins) > 1 and ins[1] is not None:
        ratio = _scalar(g, ins[1], at, "ratio")
    return _unary(g, node, at, x, Dropout(g.layer_name(node), p=ratio))


# ---------------------------------------------------------------------------------------------
# Elementwise arithmetic


def _channel_vector(g, c, x, at):
    """A constant that broadcasts one value per channel (or one for all) onto ``x`` → (C,)."""
    c = np.asarray(c)
    C = x.shape[0] if x.shape else 1
    if c.ndim > x.rank:
        raise not_supported(at, f"a constant of shape {c.shape} on (N,) + {x.shape}")
    full = (1,) * (x.rank - c.ndim) + c.shape  # aligned on the right, as ONNX broadcasts
    if full[0] != 1 or any(s != 1 for s in full[2:]) or full[1] not in (1, C):
        raise not_supported(at, f"a constant of shape {c.shape} on (N,) + {x.shape} (one value "
                                f"per channel, or one for all)")
    return np.broadcast_to(c.reshape(-1), (C,)).astype(np.float64)


def _fuse_bias(g, x, onnx_name, c, node, at):
    """Add the per-channel constant ``c`` to the bias of the Conv, Gemm/MatMul or Mul that made
    ``x``, when nothing else reads it → the fused output, or None."""
    layer = g.fusable.get(x.blob)
    if layer is None or g.consumers.get(onnx_name, 0) != 1:
        return None
    top = g.output(node)
    key = f"{layer.name}/bias"
    old = g.weights.get(key, np.zeros(len(c)))
    layer.bias = True
    g.weights[key] = old + c
    if isinstance(layer, Scale) and f"{layer.name}/weight" not in g.weights:
        g.weights[f"{layer.name}/weight"] = np.ones(len(c))
    return g.rename(x, layer, top)


def _tensor_and_constant(g, ins, at):
    a, b = ins[0], ins[1]
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return None
    if isinstance(b, Tensor):
        return b, a, True
    return g.tensor(a, at), b, False


def add_sub(g, node, at, ins, attrs):
    op = node.op_type
    pair = _tensor_and_constant(g, ins, at)
    if pair is None:
        a, b = ins[0], ins[1]
        if a.shape != b.shape:
            raise not_supported(at, f"broadcasting {a.shape} against {b.shape}")
        coeffs = None if op == "Add" else [1.0, -1.0]
        return [g.add(EltwiseSum(g.layer_name(node), coeffs=coeffs), [a, b], at,
                      top=g.output(node))]
    x, c, swapped = pair
    if op == "Sub" and swapped:
        raise not_supported(at, "a constant minus a tensor")
    c = _channel_vector(g, c, x, at) * (-1 if op == "Sub" else 1)
    fused = _fuse_bias(g, x, text(node.input[1 if swapped else 0]), c, node, at)
    if fused is not None:
        return [fused]
    name = g.layer_name(node)
    y = g.add(Scale(name, bias=True), [x], at, top=g.output(node))
    g.weights[f"{name}/weight"] = np.ones(len(c))
    g.weights[f"{name}/bias"] = c
    return [y]


def mul_div(g, node, at, ins, attrs):
    op = node.op_type
    pair = _tensor_and_constant(g, ins, at)
    if pair is None:
        if op == "Div":
            raise not_supported(at, "dividing a tensor by a tensor")
        a, b = ins[0], ins[1]
        if a.shape != b.shape:
            raise not_supported(at, f"broadcasting {a.shape} against {b.shape}")
        return [g.add(EltwiseProd(g.layer_name(node)), [a, b], at, top=g.output(node))]
    x, c, swapped = pair
    if op == "Div" and swapped:
        raise not_supported(at, "a constant divided by a tensor")
    c = _channel_vector(g, c, x, at)
    if op == "Div":
        with np.errstate(all="ignore"):
            c = 1.0 / c
    name = g.layer_name(node)
    layer = Scale(name, bias=False)
    y = g.add(layer, [x], at, top=g.output(node))
    g.weights[f"{name}/weight"] = c
    g.fusable[y.blob] = layer
    return [y]


def sum_max(g, node, at, ins, attrs):
    xs = [g.tensor(v, at) for v in ins if v is not None]
    if any(x.shape != xs[0].shape for x in xs):
        raise not_supported(at, f"broadcasting {[x.shape for x in xs]}")
    if len(xs) == 1:
        return [xs[0]]
    cls = EltwiseSum if node.op_type == "Sum" else EltwiseMax
    return [g.add(cls(g.layer_name(node)), xs, at, top=g.output(node))]


# ---------------------------------------------------------------------------------------------
# Shapes


def _reshaped(g, node, at, x, shape):
    """``x`` with the per-example shape ``shape``: itself if unchanged, else a Reshape."""
    shape = tuple(shape)
    if shape == x.shape:
        return [x]
    if shape == (math.prod(x.shape),):
        return [g.add(Flatten(g.layer_name(node)), [x], at, top=g.output(node))]
    return [g.add(Reshape(g.layer_name(node), shape), [x], at, top=g.output(node))]


def _keeps_batch(g, out, at, target):
    if not out or out[0] != g.batch:
        declared = "symbolic" if g.batch == SYMBOLIC_BATCH else f"declared as {g.batch}"
        shown = ["N" if s == SYMBOLIC_BATCH else s for s in target]
        raise not_supported(at, f"a reshape to {shown} that moves values across the batch axis "
                                f"({declared})")
    return out[1:]


def reshape(g, node, at, ins, attrs):
    x = g.tensor(ins[0], at, "data")
    target = ints(g.const(ins[1], at, "the shape"), at, "shape")
    if target and target[0] not in (0, -1, g.batch):
        _keeps_batch(g, target, at, target)
    try:
        out = reshape_shape((g.batch,) + x.shape, target, attrs.get("allowzero", 0), at)
    except ValueError:
        shown = ["N" if t == SYMBOLIC_BATCH else t for t in target]
        raise ValueError(f"{at}: cannot reshape (N,) + {x.shape} to {shown}") from None
    return _reshaped(g, node, at, x, _keeps_batch(g, out, at, target))


def flatten(g, node, at, ins, attrs):
    x = g.tensor(ins[0], at)
    axis = axes_list([attrs.get("axis", 1)], x.rank + 1, at, "axis")[0]
    if axis == 0 or math.prod(x.shape[:axis - 1]) != 1:
        raise not_supported(at, f"axis {axis} of (N,) + {x.shape}, which flattens the batch "
                                f"axis into the features")
    return _reshaped(g, node, at, x, (math.prod(x.shape),))


def squeeze_unsqueeze(g, node, at, ins, attrs):
    x = g.tensor(ins[0], at)
    axes = squeeze_axes(attrs, ins, g.opset, at)
    full = (g.batch,) + x.shape
    if node.op_type == "Unsqueeze":
        if axes is None:
            raise ValueError(f"{at}: needs axes")
        out = unsqueezed_shape(full, axes, at)
        if 0 in axes_list(axes, len(out), at):
            raise not_supported(at, "a new axis before the batch")
    else:
        if axes is None:
            axes = [i for i, s in enumerate(x.shape, start=1) if s == 1]
        if 0 in axes_list(axes, len(full), at):
            raise not_supported(at, "squeezing the batch axis")
        out = squeezed_shape(full, axes, at)
    return _reshaped(g, node, at, x, out[1:])


def transpose(g, node, at, ins, attrs):
    x = g.tensor(ins[0], at)
    perm = attrs.get("perm") or list(reversed(range(x.rank)))
    if sorted(perm) != list(range(x.rank)):
        raise ValueError(f"{at}: perm {perm} is not a permutation of the {x.rank} axes")
    if perm[0] != 0:
        raise not_supported(at, f"perm {perm}, which moves the batch axis")
    axes = tuple(p - 1 for p in perm[1:])
    if axes == tuple(range(len(axes))):
        return [x]
    return [g.add(Permute(g.layer_name(node), axes), [x], at, top=g.output(node))]


def concat(g, node, at, ins, attrs):
    xs = [g.tensor(v, at, "every input") for v in ins if v is not None]
    axis = axes_list([attrs.get("axis", 1)], xs[0].rank, at, "axis")[0]
    if axis == 0:
        raise not_supported(at, "concatenation along the batch axis")
    if len(xs) == 1:
        return [xs[0]]
    return [g.add(Concat(g.layer_name(node), axis=axis), xs, at, top=g.output(node))]


def pad(g, node, at, ins, attrs):
    x = _spatial(g, ins[0], at, "data")
    if g.opset < 11:
        mode, pads, value = attrs.get("mode", "constant"), attrs.get("pads"), \
            attrs.get("value", 0.0)
    else:
        mode = attrs.get("mode", "constant")
        pads = ints(g.const(ins[1], at, "pads"), at, "pads") if len(ins) > 1 else None
        value = _scalar(g, ins[2], at, "constant_value") \
            if len(ins) > 2 and ins[2] is not None else 0.0
        if len(ins) > 3 and ins[3] is not None:
            axes = axes_list(ints(g.const(ins[3], at, "axes"), at, "axes"), 4, at)
            if pads is None or len(pads) != 2 * len(axes):
                raise ValueError(f"{at}: pads {pads} do not match axes {axes}")
            full = [0] * 8
            for i, a in enumerate(axes):
                full[a], full[a + 4] = pads[i], pads[i + len(axes)]
            pads = full
    if mode != "constant" or value != 0.0:
        raise not_supported(at, f"mode {mode!r} with value {value} (zero padding is)")
    if pads is None or len(pads) != 8:
        raise ValueError(f"{at}: pads {pads} must hold 8 values for an (N, C, H, W) input")
    if any(p < 0 for p in pads):
        raise not_supported(at, f"negative pads {pads} (cropping)")
    if pads[0] or pads[1] or pads[4] or pads[5]:
        raise not_supported(at, f"pads {pads} on the batch or channel axis")
    if not any(pads):
        return [x]
    layer = Pad2d(g.layer_name(node), ((pads[2], pads[6]), (pads[3], pads[7])))
    return [g.add(layer, [x], at, top=g.output(node))]


def identity(g, node, at, ins, attrs):
    return [ins[0]]


def shape(g, node, at, ins, attrs):
    """The static shape of a tensor, a constant (the batch axis at its declared size, or
    SYMBOLIC_BATCH)."""
    x = g.tensor(ins[0], at)
    full = np.asarray((g.batch,) + x.shape, dtype=np.int64)
    start, end = attrs.get("start", 0), attrs.get("end", len(full))
    return [full[slice(*slice(start, end).indices(len(full)))]]


BUILDERS = {
    "Conv": conv, "Gemm": gemm, "MatMul": matmul, "BatchNormalization": batch_norm,
    "PRelu": prelu, "MaxPool": pool, "AveragePool": pool, "GlobalAveragePool": global_pool,
    "GlobalMaxPool": global_pool, "ReduceMean": reduce_mean, "Relu": relu,
    "LeakyRelu": leaky_relu, "Clip": clip, "Sigmoid": sigmoid, "HardSigmoid": hard_sigmoid,
    "HardSwish": hard_swish, "Softmax": softmax, "LRN": lrn, "Dropout": dropout,
    "Add": add_sub, "Sub": add_sub, "Mul": mul_div, "Div": mul_div, "Sum": sum_max,
    "Max": sum_max, "Reshape": reshape, "Flatten": flatten, "Squeeze": squeeze_unsqueeze,
    "Unsqueeze": squeeze_unsqueeze, "Transpose": transpose, "Concat": concat, "Pad": pad,
    "Identity": identity, "Shape": shape,
}
