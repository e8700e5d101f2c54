"""Keras HDF5 models → the engine's ``Net``.

    net = load_keras("model.h5")        # Keras 2 .h5, or Keras 3's legacy .h5
    probs = net.forward(x_nhwc.transpose(0, 3, 1, 2))      # the engine is NCHW

The file's ``model_config`` attribute is read as JSON (never evaluated, nothing unpickled) and
its weights from ``model_weights`` (a whole-model file) or the root (a ``save_weights`` file,
with ``config=`` giving the architecture). Sequential and functional models; see
``robustcnn.models.keras`` for the layers and the NHWC → NCHW mapping.

Reading is bounded by ``max_bytes`` (``robustcnn.limits``): each layer's weights are checked
against the shapes its config implies, and their running total and every blob of one example
against ``max_bytes``, before they are read (each dataset as ``limits.read_dataset`` reads:
storage checked, in slabs); the net is built with no initial weights drawn. Whatever a damaged
file makes h5py raise is one ValueError naming the file.
"""

import json
import math
import os

import numpy as np

from ... import limits
from ...engine import (AvgPool2d, BatchNorm, Concat, Conv2d, Dropout, EltwiseMax, EltwiseProd,
                       EltwiseSum, Flatten, GlobalAvgPool2d, Linear, MaxPool2d, Net, Pad2d,
                       Permute, PReLU, ReLU, ReLU6, Reshape, Softmax)
from ...engine.pool import pool2d_geometry



class _Blob:
    """What the importer knows of a Keras tensor: the engine blob holding it and its Keras
    shape (without the batch axis). 3-D Keras tensors (H, W, C) are held as (C, H, W)."""

    def __init__(self, name, keras_shape):
        self.name, self.keras_shape = name, tuple(keras_shape)

    @property
    def spatial(self):
        return len(self.keras_shape) == 3


def _engine_shape(keras_shape):
    return (keras_shape[2], keras_shape[0], keras_shape[1]) if len(keras_shape) == 3 \
        else tuple(keras_shape)


# ---------------------------------------------------------------------------------------------
# The file


def _attr_text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _read_config(f, source, config):
    if config is not None:
        raw = config
    elif "model_config" in f.attrs:
        raw = f.attrs["model_config"]
    else:
        raise ValueError(f"{source}: no model_config attribute (a weights-only file?): pass "
                         f"config=, the model's JSON")
    try:
        cfg = json.loads(_attr_text(raw)) if not isinstance(raw, dict) else raw
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"{source}: model_config is not JSON ({e})") from None
    if not isinstance(cfg, dict) or "class_name" not in cfg or "config" not in cfg:
        raise ValueError(f"{source}: model_config is not a Keras model description")
    return cfg


def _weights_group(f, source):
    import h5py

    group = f["model_weights"] if "model_weights" in f else f
    if not isinstance(group, h5py.Group) or "layer_names" not in group.attrs:
        raise ValueError(f"{source}: no layer_names attribute: not Keras HDF5 weights")
    return group


def _layer_datasets(group, name, source):
    """[(weight name, dataset)] of layer ``name`` in the file's order (its weight_names)."""
    import h5py

    if name not in group:
        return []
    g = group[name]
    if not isinstance(g, h5py.Group):
        raise ValueError(f"{source}: {name} is not a group of weights")
    names = [_attr_text(n) for n in g.attrs.get("weight_names", [])]
    out = []
    for n in names:
        ds = g.get(n)
        if not isinstance(ds, h5py.Dataset) or ds.dtype.kind != "f":
            raise ValueError(f"{source}: {name}/{n} is not a float dataset")
        out.append((n, ds))
    return out


def _read_file(f, source, config, max_bytes):
    """(the model config, {layer name: [(weight name, array)] in its weight_names order}) of an
    open Keras file: the weights of every layer the config names, each dataset checked and
    their total bounded by ``max_bytes`` before any is read (h5py only: ``limits.read_hdf5``
    runs it in a child first)."""
    cfg = _read_config(f, source, config)
    group = _weights_group(f, source)
    layers, _ = _layers_of(cfg, source)
    found = {}
    for _, lname, _, _ in layers:
        if isinstance(lname, str) and lname and lname not in found:
            found[lname] = _layer_datasets(group, lname, source)
    total = sum(limits.dataset_nbytes(ds, source, f"{lname}/{n}")
                for lname, datasets in found.items() for n, ds in datasets)
    limits.check_bytes(source, "the weights", total, max_bytes)
    return cfg, {lname: [(n, limits.read_dataset(ds, source, f"{lname}/{n}"))
                         for n, ds in datasets] for lname, datasets in found.items()}


def _layers_of(cfg, source):
    try:
        return _keras_layers(cfg, source)
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        raise ValueError(f"{source}: malformed model_config ({e!r})") from None


# ---------------------------------------------------------------------------------------------
# The graph


def _keras_layers(cfg, source):
    """(class_name, name, config, inbound names) for each layer, and the output names."""
    kind, body = cfg["class_name"], cfg["config"]
    layers = body if isinstance(body, list) else body.get("layers")
    if not isinstance(layers, list):
        raise ValueError(f"{source}: model_config of {kind} has no layer list")
    out = []
    if kind == "Sequential":
        previous = None
        for i, layer in enumerate(layers):
            lcfg = layer.get("config", {})
            name = lcfg.get("name") or layer.get("name") or f"layer{i}"
            out.append((layer.get("class_name"), name, lcfg, [previous] if previous else []))
            previous = name
        return out, [previous]
    if kind not in ("Model", "Functional"):
        raise ValueError(f"{source}: model class {kind!r} is not supported (Sequential, Model, "
                         f"Functional)")
    for layer in layers:
        lcfg = layer.get("config", {})
        name = layer.get("name") or lcfg.get("name")
        nodes = layer.get("inbound_nodes", [])
        if len(nodes) > 1:
            raise ValueError(f"{source}: {name} ({layer.get('class_name')}): a layer called "
                             f"{len(nodes)} times (shared layers) is not supported yet")
        out.append((layer.get("class_name"), name, lcfg, _inbound(nodes[0], source, name)
                    if nodes else []))
    outputs = body.get("output_layers", [])
    if outputs and not isinstance(outputs[0], list):  # one output: [name, 0, 0]
        outputs = [outputs]
    return out, [o[0] for o in outputs]


def _inbound(node, source, name):
    """The input layer names of one inbound node, Keras 2 ([[name, 0, 0, {}], …]) or Keras 3
    ({"args": [{"class_name": "__keras_tensor__", "config": {"keras_history": […]}}]})."""
    if isinstance(node, dict):
        names = []

        def walk(value):
            if isinstance(value, dict):
                if value.get("class_name") == "__keras_tensor__":
                    names.append(value["config"]["keras_history"][0])
                else:
                    for v in value.values():
                        walk(v)
            elif isinstance(value, list):
                for v in value:
                    walk(v)
        walk(node.get("args", []))
        return names
    if isinstance(node, list):
        return [entry[0] for entry in node]
    raise ValueError(f"{source}: {name}: unreadable inbound node {node!r}")


# ---------------------------------------------------------------------------------------------
# Layers


def _pair(value, what, at, minimum=1):
    """An int or two ints (Keras' kernel_size, strides, …) → (h, w), each >= ``minimum``."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and \
            all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value):
        return tuple(value)
    raise ValueError(f"{at}: {what} must be an int or two ints >= {minimum}, got {value!r}")


def _same_pads(size, kernel, stride, dilation=1):
    """TensorFlow's 'same' padding along one axis → (before, after)."""
    span = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + span - size, 0)
    return total // 2, total - total // 2


def _not_supported(at, what):
    return ValueError(f"{at}: {what} is not supported yet")


class _Builder:
    """Turns Keras layers into engine layers, blob by blob."""

    def __init__(self, source, dtype, max_bytes=None):
        self.source, self.dtype = source, np.dtype(dtype)
        self.max_bytes = limits.resolve(max_bytes)
        self.max_values = self.max_bytes // self.dtype.itemsize  # in one layer, or one blob
        self.layers, self.blobs, self.shapes = [], {}, {}
        self.weights = {}  # engine state {"layer/key": array}
        self.used = set()

    def add(self, layer, bottoms, keras_shape, at):
        """Append an engine layer reading the blobs ``bottoms``; its top is its name."""
        layer.bottom, layer.top = list(bottoms), [layer.name]
        if layer.name in self.used:
            raise ValueError(f"{at}: the engine name {layer.name!r} is taken")
        self.used.add(layer.name)
        try:
            out = layer.setup([self.shapes[b] for b in bottoms], self.dtype)[0]
        except ValueError as e:
            raise ValueError(f"{self.source}: {e}") from None
        if math.prod(out) > self.max_values:
            raise ValueError(f"{at}: output of {math.prod(out):,} values per example, more "
                             f"than the limit of {self.max_bytes:,} bytes holds "
                             f"({limits.RAISE_HINT})")
        expected = _engine_shape(keras_shape) if keras_shape is not None else out
        if tuple(out) != tuple(expected):
            raise ValueError(f"{at}: the engine computes shape {out}, Keras {expected}")
        self.shapes[layer.name] = out
        self.layers.append(layer)
        return layer.name

    def pads(self, blob, kernel, stride, dilation, padding, name, at):
        """Symmetric (h, w) padding for the engine, after an explicit Pad2d if uneven →
        (bottom blob, (ph, pw))."""
        if padding == "valid":
            return blob, (0, 0)
        if padding != "same":
            raise _not_supported(at, f"padding {padding!r}")
        H, W = blob.keras_shape[:2]
        ph = _same_pads(H, kernel[0], stride[0], dilation[0])
        pw = _same_pads(W, kernel[1], stride[1], dilation[1])
        if ph[0] == ph[1] and pw[0] == pw[1]:
            return blob, (ph[0], pw[0])
        shape = (H + sum(ph), W + sum(pw), blob.keras_shape[2])
        return _Blob(self.add(Pad2d(f"{name}/pad", (ph, pw)), [blob.name], shape, at), shape), \
            (0, 0)


def _check_channels_last(cfg, at):
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise _not_supported(at, f"data_format {cfg.get('data_format')!r}")


def _conv_out(size, kernel, stride, dilation, padding):
    span = (kernel - 1) * dilation + 1
    return math.ceil(size / stride) if padding == "same" else (size - span) // stride + 1


def _activation(b, name, act, blob, at):
    """The engine layer for a Keras activation name, or the blob itself for linear."""
    act = act if isinstance(act, str) else (act or {}).get("config", {}).get("name", act)
    if act in (None, "linear"):
        return blob
    if act == "relu":
        layer = ReLU(name)
    elif act == "relu6":
        layer = ReLU6(name)
    elif act == "softmax":
        if blob.spatial and blob.keras_shape[:2] != (1, 1):
            raise _not_supported(at, "softmax over the channels of each position")
        layer = Softmax(name)
    else:
        raise _not_supported(at, f"activation {act!r}")
    return _Blob(b.add(layer, [blob.name], blob.keras_shape, at), blob.keras_shape)


def _weight_names(kind, cfg):
    """The names, in file order, of a layer's weights."""
    if kind == "Conv2D":
        return ["kernel"] + (["bias"] if cfg.get("use_bias", True) else [])
    if kind == "DepthwiseConv2D":
        return ["depthwise_kernel"] + (["bias"] if cfg.get("use_bias", True) else [])
    if kind == "SeparableConv2D":
        return ["depthwise_kernel", "pointwise_kernel"] + (["bias"] if cfg.get("use_bias", True)
                                                           else [])
    if kind == "Dense":
        return ["kernel"] + (["bias"] if cfg.get("use_bias", True) else [])
    if kind == "PReLU":
        return ["alpha"]
    if kind == "BatchNormalization":
        return (["gamma"] if cfg.get("scale", True) else []) + \
               (["beta"] if cfg.get("center", True) else []) + ["moving_mean", "moving_variance"]
    return []


def _expect(b, arrays, shapes, at):
    """Check the file's arrays ([(name, array)]) against the shapes the config implies →
    {name: array in the net's dtype}."""
    if len(arrays) != len(shapes):
        raise ValueError(f"{at}: holds {len(arrays)} weight array(s), the config implies "
                         f"{len(shapes)} ({', '.join(shapes)})")
    for (_, a), (key, shape) in zip(arrays, shapes.items()):
        if tuple(a.shape) != tuple(shape):
            raise ValueError(f"{at}: {key} has shape {tuple(a.shape)}, the config implies "
                             f"{tuple(shape)}")
    return {key: a.astype(b.dtype, copy=False) for (_, a), key in zip(arrays, shapes)}


def _conv(b, kind, name, cfg, blob, arrays, at):
    _check_channels_last(cfg, at)
    if not blob.spatial:
        raise ValueError(f"{at}: needs an (H, W, C) input, got {blob.keras_shape}")
    H, W, C = blob.keras_shape
    kernel = _pair(cfg.get("kernel_size"), "kernel_size", at)
    stride = _pair(cfg.get("strides", 1), "strides", at)
    dilation = _pair(cfg.get("dilation_rate", 1), "dilation_rate", at)
    if max(stride) > 1 and max(dilation) > 1:
        raise ValueError(f"{at}: strides and dilation_rate > 1 together (Keras refuses them)")
    padding = cfg.get("padding", "valid")
    use_bias = cfg.get("use_bias", True)
    groups = int(cfg.get("groups", 1))
    if kind == "Conv2D":
        F = int(cfg["filters"])
        if groups < 1 or C % groups or F % groups:
            raise ValueError(f"{at}: groups={groups} does not divide {C} channels and {F} filters")
        shapes = {"kernel": kernel + (C // groups, F)}
    else:
        M = int(cfg.get("depth_multiplier", 1))
        shapes = {"depthwise_kernel": kernel + (C, M)}
        if kind == "SeparableConv2D":
            F = int(cfg["filters"])
            shapes["pointwise_kernel"] = (1, 1, C * M, F)
        else:
            F = C * M
    if use_bias:
        shapes["bias"] = (F,)
    if math.prod(kernel) * C * max(F, C) > b.max_values:
        raise ValueError(f"{at}: declares more than {b.max_values:,} weights, the limit of "
                         f"{b.max_bytes:,} bytes ({limits.RAISE_HINT})")
    w = _expect(b, arrays, shapes, at) if arrays is not None else None
    src, pad = b.pads(blob, kernel, stride, dilation, padding, name, at)
    out_hw = (_conv_out(H, kernel[0], stride[0], dilation[0], padding),
              _conv_out(W, kernel[1], stride[1], dilation[1], padding))
    if kind == "Conv2D":
        conv = Conv2d(name, F, kernel=kernel, stride=stride, padding=pad, dilation=dilation,
                      groups=groups, bias=use_bias)
        top = b.add(conv, [src.name], out_hw + (F,), at)
        if w is not None:
            b.weights[f"{name}/weight"] = w["kernel"].transpose(3, 2, 0, 1)
            if use_bias:
                b.weights[f"{name}/bias"] = w["bias"]
        return _Blob(top, out_hw + (F,))
    # depthwise: output channel c·M + m is input channel c times kernel[:, :, c, m]
    dw_name = name if kind == "DepthwiseConv2D" else f"{name}/depthwise"
    dw_bias = use_bias and kind == "DepthwiseConv2D"
    dw = Conv2d(dw_name, C * M, kernel=kernel, stride=stride, padding=pad, dilation=dilation,
                groups=C, bias=dw_bias)
    top = b.add(dw, [src.name], out_hw + (C * M,), at)
    if w is not None:
        k = w["depthwise_kernel"]  # (kh, kw, C, M)
        b.weights[f"{dw_name}/weight"] = k.transpose(2, 3, 0, 1).reshape(C * M, 1, *kernel)
        if dw_bias:
            b.weights[f"{dw_name}/bias"] = w["bias"]
    if kind == "DepthwiseConv2D":
        return _Blob(top, out_hw + (C * M,))
    pw_name = f"{name}/pointwise"
    top = b.add(Conv2d(pw_name, F, kernel=1, bias=use_bias), [top], out_hw + (F,), at)
    if w is not None:
        b.weights[f"{pw_name}/weight"] = w["pointwise_kernel"].transpose(3, 2, 0, 1)
        if use_bias:
            b.weights[f"{pw_name}/bias"] = w["bias"]
    return _Blob(top, out_hw + (F,))


def _dense(b, name, cfg, blob, arrays, at):
    if len(blob.keras_shape) != 1:
        raise _not_supported(at, f"a Dense layer on a {blob.keras_shape} input (one on the last "
                                 f"axis of a flat input is supported)")
    I, O = blob.keras_shape[0], int(cfg["units"])
    if I * O > b.max_values:
        raise ValueError(f"{at}: declares {I * O:,} weights, more than the limit of "
                         f"{b.max_bytes:,} bytes holds ({limits.RAISE_HINT})")
    shapes = {"kernel": (I, O)}
    if cfg.get("use_bias", True):
        shapes["bias"] = (O,)
    w = _expect(b, arrays, shapes, at) if arrays is not None else None
    top = b.add(Linear(name, O, bias=cfg.get("use_bias", True)), [blob.name], (O,), at)
    if w is not None:
        b.weights[f"{name}/weight"] = w["kernel"].T
        if "bias" in w:
            b.weights[f"{name}/bias"] = w["bias"]
    return _Blob(top, (O,))


def _batch_norm(b, name, cfg, blob, arrays, at):
    axis = cfg.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    rank = len(blob.keras_shape) + 1
    if not isinstance(axis, int) or axis % rank != rank - 1:
        raise _not_supported(at, f"batch normalisation over axis {axis} (the last axis is)")
    C = blob.keras_shape[-1]
    names = _weight_names("BatchNormalization", cfg)
    w = _expect(b, arrays, {k: (C,) for k in names}, at) if arrays is not None else None
    # Keras' momentum is the weight of the running value, as ours; a layer with trainable=False
    # runs in inference mode in training too (Keras 2.1.3+): frozen statistics.
    layer = BatchNorm(name, eps=float(cfg.get("epsilon", 1e-3)), affine=True,
                      momentum=float(cfg.get("momentum", 0.99)),
                      use_global_stats=cfg.get("trainable", True) is False)
    top = b.add(layer, [blob.name], blob.keras_shape, at)
    if w is not None:
        b.weights[f"{name}/mean"] = w["moving_mean"]
        b.weights[f"{name}/var"] = w["moving_variance"]
        b.weights[f"{name}/gamma"] = w.get("gamma", np.ones(C))
        b.weights[f"{name}/beta"] = w.get("beta", np.zeros(C))
    return _Blob(top, blob.keras_shape)


def _pool(b, kind, name, cfg, blob, at):
    _check_channels_last(cfg, at)
    if not blob.spatial:
        raise ValueError(f"{at}: needs an (H, W, C) input, got {blob.keras_shape}")
    H, W, C = blob.keras_shape
    kernel = _pair(cfg.get("pool_size", 2), "pool_size", at)
    stride = _pair(cfg.get("strides") or kernel, "strides", at)
    padding = cfg.get("padding", "valid")
    if padding == "valid":
        out = ((H - kernel[0]) // stride[0] + 1, (W - kernel[1]) // stride[1] + 1)
        pad, modes = (0, 0), (False,)
    elif padding == "same":
        out = (math.ceil(H / stride[0]), math.ceil(W / stride[1]))
        before = (_same_pads(H, kernel[0], stride[0])[0], _same_pads(W, kernel[1], stride[1])[0])
        pad, modes = before, (True, False)
    else:
        raise _not_supported(at, f"padding {padding!r}")
    # The engine's windows start at o·s − pad and are clipped to the input, as Keras' are;
    # choose the rounding that gives Keras' output size.
    for ceil in modes:
        try:
            _, _, _, shape = pool2d_geometry((C, H, W), kernel, stride, pad, ceil, at=at)
        except ValueError:
            continue
        if shape[1:] == out:
            if kind == "MaxPooling2D":
                layer = MaxPool2d(name, kernel=kernel, stride=stride, padding=pad, ceil_mode=ceil)
            else:  # Keras' mean leaves the padding out
                layer = AvgPool2d(name, kernel=kernel, stride=stride, padding=pad,
                                  ceil_mode=ceil, count_pad=False)
            top = b.add(layer, [blob.name], out + (C,), at)
            return _Blob(top, out + (C,))
    raise _not_supported(at, f"pooling {H}x{W} with pool {kernel}, strides {stride} and "
                             f"padding {padding!r}")


def _flatten_to_keras_order(b, name, blob, at):
    """A (C, H, W) blob laid out as Keras' (H, W, C), then flattened: Keras' order."""
    if not blob.spatial:
        return blob.name
    return b.add(Permute(f"{name}/nhwc", (1, 2, 0)), [blob.name], None, at)


def _build_layer(b, kind, name, cfg, inputs, arrays, at):
    """Engine layers for one Keras layer → the _Blob of its output."""
    blob = inputs[0] if inputs else None
    if kind in ("Conv2D", "DepthwiseConv2D", "SeparableConv2D"):
        out = _conv(b, kind, name, cfg, blob, arrays, at)
        return _activation(b, f"{name}/{cfg.get('activation')}", cfg.get("activation"), out, at)
    if kind == "Dense":
        out = _dense(b, name, cfg, blob, arrays, at)
        return _activation(b, f"{name}/{cfg.get('activation')}", cfg.get("activation"), out, at)
    if kind == "BatchNormalization":
        return _batch_norm(b, name, cfg, blob, arrays, at)
    if kind == "Activation":
        return _activation(b, name, cfg.get("activation"), blob, at)  # linear: the input
    if kind == "ReLU":
        if cfg.get("threshold", 0) not in (0, 0.0, None):
            raise _not_supported(at, f"ReLU threshold {cfg['threshold']}")
        slope = float(cfg.get("negative_slope", 0) or 0)
        top_value = cfg.get("max_value")
        if top_value is None:
            layer = ReLU(name, negative_slope=slope)
        elif float(top_value) == 6.0 and slope == 0:
            layer = ReLU6(name)
        else:
            raise _not_supported(at, f"ReLU with max_value {top_value} and negative_slope {slope}")
        return _Blob(b.add(layer, [blob.name], blob.keras_shape, at), blob.keras_shape)
    if kind == "Softmax":
        axis = cfg.get("axis", -1)
        if axis not in (-1, len(blob.keras_shape)):
            raise _not_supported(at, f"softmax over axis {axis}")
        return _activation(b, name, "softmax", blob, at)
    if kind in ("MaxPooling2D", "AveragePooling2D"):
        return _pool(b, kind, name, cfg, blob, at)
    if kind in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
        _check_channels_last(cfg, at)
        if not blob.spatial:
            raise ValueError(f"{at}: needs an (H, W, C) input, got {blob.keras_shape}")
        H, W, C = blob.keras_shape
        keep = bool(cfg.get("keepdims", False))
        layer = GlobalAvgPool2d(name if keep else f"{name}/pool") \
            if kind == "GlobalAveragePooling2D" else \
            MaxPool2d(name if keep else f"{name}/pool", kernel=(H, W), stride=1)
        top = b.add(layer, [blob.name], (1, 1, C), at)
        if keep:
            return _Blob(top, (1, 1, C))
        return _Blob(b.add(Flatten(name), [top], (C,), at), (C,))
    if kind == "Flatten":
        _check_channels_last(cfg, at)
        src = _flatten_to_keras_order(b, name, blob, at)
        size = math.prod(blob.keras_shape)
        return _Blob(b.add(Flatten(name), [src], (size,), at), (size,))
    if kind == "Reshape":
        target = tuple(cfg.get("target_shape", ()))
        size = math.prod(blob.keras_shape)
        if target.count(-1) == 1:
            known = math.prod(t for t in target if t != -1)
            target = tuple(size // known if t == -1 else t for t in target)
        if math.prod(target) != size or min(target, default=1) < 1:
            raise ValueError(f"{at}: cannot reshape {blob.keras_shape} to {target}")
        src = _flatten_to_keras_order(b, name, blob, at)
        if len(target) != 3:
            return _Blob(b.add(Reshape(name, target), [src], target, at), target)
        mid = b.add(Reshape(f"{name}/hwc", target), [src], None, at)
        return _Blob(b.add(Permute(name, (2, 0, 1)), [mid], target, at), target)
    if kind == "Dropout":
        return _Blob(b.add(Dropout(name, p=float(cfg.get("rate", 0.5))), [blob.name],
                           blob.keras_shape, at), blob.keras_shape)
    if kind == "ZeroPadding2D":
        _check_channels_last(cfg, at)
        pad = cfg.get("padding", 1)
        if isinstance(pad, int):
            pads = ((pad, pad), (pad, pad))
        else:
            pads = tuple((p, p) if isinstance(p, int) else tuple(p) for p in pad)
        H, W, C = blob.keras_shape
        shape = (H + sum(pads[0]), W + sum(pads[1]), C)
        return _Blob(b.add(Pad2d(name, pads), [blob.name], shape, at), shape)
    if kind in ("Add", "Multiply", "Maximum"):
        shapes = {i.keras_shape for i in inputs}
        if len(shapes) != 1:
            raise ValueError(f"{at}: inputs of shapes {sorted(shapes)} cannot be combined "
                             f"elementwise (broadcasting is not supported)")
        cls = {"Add": EltwiseSum, "Multiply": EltwiseProd, "Maximum": EltwiseMax}[kind]
        return _Blob(b.add(cls(name), [i.name for i in inputs], blob.keras_shape, at),
                     blob.keras_shape)
    if kind == "PReLU":
        shared = sorted(cfg.get("shared_axes") or [])
        rank = len(blob.keras_shape)
        spatial_axes = list(range(1, rank))  # every axis but the channels (the last)
        if shared not in (spatial_axes, list(range(1, rank + 1))):
            raise _not_supported(at, f"PReLU with shared_axes {shared} (one slope per channel, "
                                     f"shared_axes {spatial_axes}, or one in all)")
        channel_shared = shared == list(range(1, rank + 1))
        C = blob.keras_shape[-1]
        alpha_shape = (1,) * rank if channel_shared else (1,) * (rank - 1) + (C,)
        w = _expect(b, arrays, {"alpha": alpha_shape}, at) if arrays is not None else None
        top = b.add(PReLU(name, channel_shared=channel_shared), [blob.name], blob.keras_shape, at)
        if w is not None:
            b.weights[f"{name}/slope"] = w["alpha"].reshape(-1)
        return _Blob(top, blob.keras_shape)
    if kind == "Permute":
        dims = tuple(cfg.get("dims", ()))
        rank = len(blob.keras_shape)
        if sorted(dims) != list(range(1, rank + 1)):
            raise ValueError(f"{at}: dims {dims} are not a permutation of 1 … {rank}")
        shape = tuple(blob.keras_shape[d - 1] for d in dims)
        if rank == 3:  # Keras axis H, W, C is engine axis 1, 2, 0; (a, b, c) is held (c, a, b)
            kmap = {0: 1, 1: 2, 2: 0}
            axes = (kmap[dims[2] - 1], kmap[dims[0] - 1], kmap[dims[1] - 1])
        else:
            axes = tuple(d - 1 for d in dims)
        return _Blob(b.add(Permute(name, axes), [blob.name], shape, at), shape)
    if kind == "Concatenate":
        rank = len(blob.keras_shape) + 1
        axis = cfg.get("axis", -1) % rank
        engine_axis = {1: 2, 2: 3, 3: 1}[axis] if rank == 4 else axis
        shape = list(blob.keras_shape)
        shape[axis - 1] = sum(i.keras_shape[axis - 1] for i in inputs)
        return _Blob(b.add(Concat(name, axis=engine_axis), [i.name for i in inputs],
                           tuple(shape), at), tuple(shape))
    if kind == "Lambda":
        raise ValueError(f"{at}: a Lambda layer holds Python code, which robustcnn never runs; "
                         f"replace it by built-in layers")
    raise ValueError(f"{at}: layer class {kind!r} is not supported (supported: "
                     f"{', '.join(sorted(SUPPORTED))})")


SUPPORTED = ("InputLayer", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense",
             "BatchNormalization", "Activation", "ReLU", "Softmax", "MaxPooling2D",
             "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Flatten",
             "Reshape", "Dropout", "ZeroPadding2D", "Add", "Multiply", "Maximum",
             "Concatenate", "PReLU", "Permute")


def _input_shape(cfg, at, max_values):
    shape = cfg.get("batch_input_shape") or cfg.get("batch_shape")
    if shape is None and cfg.get("input_shape") is not None:
        shape = [None] + list(cfg["input_shape"])
    if not isinstance(shape, list) or len(shape) < 2 or \
            not all(isinstance(s, int) and s >= 1 for s in shape[1:]):
        raise ValueError(f"{at}: the input shape {shape!r} must be known (no None but the "
                         f"batch)")
    per = tuple(shape[1:])
    if len(per) not in (1, 3) or math.prod(per) > max_values:
        raise _not_supported(at, f"an input of shape {per} (flat or (H, W, C) is)")
    return per


def _add_layer(b, weights, tensors, input_name, index, kind, lname, lcfg, inbound, at):
    """Build one Keras layer into ``b`` (``tensors``: Keras layer → _Blob) → the input name."""
    if not isinstance(lcfg, dict) or not isinstance(inbound, list) or \
            not all(isinstance(i, str) for i in inbound):
        raise ValueError(f"{at}: malformed layer entry")
    if kind == "InputLayer" or (index == 0 and not inbound and input_name is None):
        if input_name is not None:
            raise _not_supported(at, "a model with several inputs")
        shape = _input_shape(lcfg, at, b.max_values)
        input_name = lname if kind == "InputLayer" else "input"
        b.shapes[input_name] = _engine_shape(shape)
        tensors[input_name] = _Blob(input_name, shape)
        if kind == "InputLayer":
            return input_name
        inbound = [input_name]
    missing = [i for i in inbound if i not in tensors]
    if missing or not inbound:
        raise ValueError(f"{at}: its inputs {missing or inbound} are not made by an earlier "
                         f"layer")
    arrays = weights.get(lname, []) if _weight_names(kind, lcfg) else None
    if arrays is not None and not arrays:
        raise ValueError(f"{at}: the file holds no weights for it")
    tensors[lname] = _build_layer(b, kind, lname, lcfg, [tensors[i] for i in inbound], arrays,
                                  at)
    return input_name


def load_keras(path, *, config=None, dtype=np.float32, name=None, seed=0, max_bytes=None):
    """A Keras model saved as HDF5 (Keras 2, or Keras 3's legacy ``.h5``) → an engine ``Net``.

    The net is NCHW: feed it ``x.transpose(0, 3, 1, 2)`` for Keras' (N, H, W, C) images; its
    output has Keras' shape and order. ``net.keras_outputs`` maps each Keras layer to the
    engine blob holding its output (an (H, W, C) output as (C, H, W)). ``config``: the
    architecture (JSON text or dict) for a weights-only file. ``max_bytes`` bounds what the
    file may make it allocate (``robustcnn.limits``). Every problem raises ValueError naming
    the file and the layer.
    """
    source = os.fspath(path)
    max_bytes = limits.resolve(max_bytes)
    cfg, weights = limits.read_hdf5(source, lambda f: _read_file(f, source, config, max_bytes),
                                    "Keras HDF5 file", max_bytes)
    layers, outputs = _layers_of(cfg, source)
    b = _Builder(source, dtype, max_bytes)
    tensors, input_name = {}, None
    for index, (kind, lname, lcfg, inbound) in enumerate(layers):
        if not isinstance(lname, str) or not lname:
            raise ValueError(f"{source}: layer {index} has no name")
        at = f"{source}: {lname} ({kind})"
        try:
            input_name = _add_layer(b, weights, tensors, input_name, index, kind, lname, lcfg,
                                    inbound, at)
        except ValueError as e:  # the engine's own checks name the layer, not the file
            if str(e).startswith(source):
                raise
            raise ValueError(f"{source}: {e}") from None
        except (KeyError, TypeError, AttributeError, IndexError, OverflowError,
                ZeroDivisionError) as e:  # a config field missing or of the wrong type
            raise ValueError(f"{at}: malformed layer config ({e!r})") from None
    if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
        raise ValueError(f"{source}: malformed output_layers {outputs!r}")
    if input_name is None:
        raise ValueError(f"{source}: no input layer")
    if len(outputs) != 1 or outputs[0] not in tensors:
        raise _not_supported(source, f"outputs {outputs} (one output is)")
    try:
        net = Net(b.layers, b.shapes[input_name], input_name=input_name,
                  output=tensors[outputs[0]].name, dtype=dtype, seed=seed,
                  name=name or cfg["config"].get("name", "keras")
                  if isinstance(cfg["config"], dict) else name or "keras",
                  init=False, max_bytes=max_bytes)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    net.load_state_dict({k: v.astype(net.dtype, copy=False) for k, v in b.weights.items()},
                        source=source)
    net.keras_outputs = {n: t.name for n, t in tensors.items()}
    return net
