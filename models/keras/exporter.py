"""The engine's ``Net`` → a Keras HDF5 file (the legacy ``.h5`` layout Keras 3 writes).

    save_keras(net, "model.h5")
    model = keras.models.load_model("model.h5", compile=False)   # in Keras
    model.predict(x.transpose(0, 2, 3, 1))                      # NHWC there

The file holds ``model_config`` (a functional model, JSON) and ``model_weights``; ``load_keras``
reads it back. Keras is channels-last: kernels are transposed on the way out, and before a
Flatten (or an InnerProduct on an image blob) a ``Permute((3, 1, 2))`` lays the blob out as
(C, H, W), so the Dense weights keep the engine's order. Engine padding becomes a
``ZeroPadding2D`` before a valid convolution unless Keras' 'same' pads the same way.

Layers Keras has no equivalent for are refused with a ValueError naming the layer: LRN,
QuantizedReLU, a weighted EltwiseSum, a Scale on a flat blob, a strided dilated convolution,
and Caffe-style pooling whose windows Keras cannot reproduce (ceil-mode partial windows, max
pooling over padding).
Compressed weights are written dense.
"""

import json
import math
import os

import numpy as np

from ...atomic import atomic_path
from ...engine import (AvgPool2d, BatchNorm, Concat, Conv2d, Dropout, EltwiseMax, EltwiseProd,
                       EltwiseSum, Flatten, GlobalAvgPool2d, Linear, MaxPool2d, Pad2d, PReLU,
                       ReLU, ReLU6, Reshape, Scale, Softmax)

KERAS_VERSION = "3.0.0"  # the layout written: Keras 3's legacy HDF5 (functional config)


def _keras_shape(shape):
    """Engine per-example shape → Keras': (C, H, W) → (H, W, C)."""
    return (shape[1], shape[2], shape[0]) if len(shape) == 3 else tuple(shape)


class _Writer:
    def __init__(self, net):
        self.net = net
        self.layers, self.weights = [], []  # Keras layer dicts; (layer name, [(wname, array)])
        self.names = set()
        self.own = {}  # engine layer name → its Keras name
        for name in [net.input_name] + [l.name for l in net.layers]:
            self.own[name] = self.unique(name)

    def unique(self, name):
        """A Keras name for ``name``: no '/' (Keras refuses it; HDF5 would nest groups) and
        unused so far."""
        base = name.replace("/", "_")
        out, i = base, 1
        while out in self.names:
            out, i = f"{base}_{i}", i + 1
        self.names.add(out)
        return out

    def add(self, kind, name, config, inputs, shapes, weights=()):
        """A Keras layer reading the Keras tensors ``inputs`` (name → Keras shape)."""
        args = [{"class_name": "__keras_tensor__",
                 "config": {"shape": [None, *shapes[i]], "dtype": "float32",
                            "keras_history": [i, 0, 0]}} for i in inputs]
        node = {"args": args if len(args) == 1 else [args], "kwargs": {}}
        self.layers.append({"class_name": kind, "config": {"name": name, **config},
                            "name": name, "inbound_nodes": [node]})
        if weights:
            self.weights.append((name, list(weights)))
        return name


def _refuse(net, layer, why):
    return ValueError(f"{net.name}: {layer.at} cannot be written as Keras: {why}")


def _pool_config(net, layer, in_shape):
    """Keras padding for an engine pooling layer whose windows Keras reproduces → (padding,
    explicit zero padding or None)."""
    C, H, W = in_shape
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.padding
    out = layer.out_shapes[0][1:]
    floor = ((H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1)
    counts_pad = isinstance(layer, AvgPool2d) and layer.count_pad
    if floor == out and (ph, pw) == (0, 0):
        return "valid", None
    if floor == out and counts_pad:
        return "valid", (ph, pw)  # Caffe's average counts the padding: zeros, then a mean
    same = (math.ceil(H / sh), math.ceil(W / sw))
    before = (max((same[0] - 1) * sh + kh - H, 0) // 2, max((same[1] - 1) * sw + kw - W, 0) // 2)
    if same == out and before == (ph, pw) and (not counts_pad or (ph, pw) == (0, 0)):
        return "same", None
    raise _refuse(net, layer, f"its windows (kernel {layer.kernel}, stride {layer.stride}, "
                              f"padding {layer.padding}, ceil mode {layer.ceil_mode}) on a "
                              f"{H}x{W} input have no Keras pooling")


def _inputs_of(layer):
    args = layer["inbound_nodes"][0]["args"] if layer["inbound_nodes"] else []
    flat = args[0] if args and isinstance(args[0], list) else args
    return [a["config"]["keras_history"][0] for a in flat]


def _keras_order(layers, output):
    """The layers in the order Keras rebuilds a functional model (``map_graph``): by depth —
    the longest path to the output — deepest first, ties in the pre-order of a depth-first walk
    from the output. Keras' legacy HDF5 loader matches weights to layers by this order."""
    by_name = {layer["name"]: layer for layer in layers}
    index = {}

    def walk(name):  # pre-order: a layer is numbered before its inputs
        if name in index:
            return
        index[name] = len(index)
        for i in _inputs_of(by_name[name]):
            walk(i)

    walk(output)
    consumers = {name: [] for name in by_name}
    for layer in layers:
        if layer["name"] in index:
            for i in _inputs_of(layer):
                consumers[i].append(layer["name"])
    depth = {}

    def depth_of(name):
        if name not in depth:
            depth[name] = max((depth_of(c) + 1 for c in consumers[name] if c in index), default=0)
        return depth[name]

    kept = [layer for layer in layers if layer["name"] in index]
    return sorted(kept, key=lambda l: (-depth_of(l["name"]), index[l["name"]]))


def keras_model_config(net):
    """(model_config dict, [(layer name, [(weight name, array)])]) for ``net``."""
    w = _Writer(net)
    inp = w.own[net.input_name]
    shapes = {inp: _keras_shape(net.input_shape)}  # Keras shape of each tensor
    w.layers.append({"class_name": "InputLayer", "name": inp, "inbound_nodes": [],
                     "config": {"name": inp, "dtype": "float32", "sparse": False,
                                "batch_shape": [None, *shapes[inp]]}})
    current = {net.input_name: inp}  # engine blob name → Keras tensor name
    previous = net.input_name
    for layer in net.layers:
        bottoms = [current[b] for b in (layer.bottom or [previous])]
        tops = layer.top or [layer.name]
        src = bottoms[0]
        out_shape = _keras_shape(layer.out_shapes[0])

        def emit(kind, config, weights=(), inputs=None, name=None, shape=out_shape):
            n = w.add(kind, w.unique(layer.name) if name is None else name, config,
                      inputs or bottoms, shapes, weights)
            shapes[n] = shape
            return n

        spatial_in = len(shapes[src]) == 3
        if isinstance(layer, Conv2d):
            if len(layer.in_shapes[0]) != 3:
                raise _refuse(net, layer, "a convolution of a flat blob")
            C = layer.in_shapes[0][0]
            (kh, kw), (ph, pw), (dh, dw) = layer.kernel, layer.padding, layer.dilation
            if max(layer.stride) > 1 and max(layer.dilation) > 1:
                raise _refuse(net, layer, "Keras refuses strides > 1 with dilation_rate > 1")
            same = layer.stride == (1, 1) and kh % 2 and kw % 2 and \
                (ph, pw) == ((kh - 1) // 2 * dh, (kw - 1) // 2 * dw)
            if (ph, pw) != (0, 0) and not same:
                H, W_, _ = shapes[src]
                src = emit("ZeroPadding2D", {"padding": [[ph, ph], [pw, pw]],
                                             "data_format": "channels_last"},
                           name=w.unique(f"{layer.name}_pad"), shape=(H + 2 * ph, W_ + 2 * pw, C))
                bottoms = [src]
            kernel = layer.dense_weight().transpose(2, 3, 1, 0)  # (O, C/g, kh, kw) → Keras
            weights = [("kernel", kernel)] + ([("bias", layer.params["bias"])] if layer.bias
                                              else [])
            top = emit("Conv2D", {"filters": layer.out_channels, "kernel_size": [kh, kw],
                                  "strides": list(layer.stride),
                                  "padding": "same" if same else "valid",
                                  "data_format": "channels_last", "dilation_rate": [dh, dw],
                                  "groups": layer.groups, "activation": "linear",
                                  "use_bias": layer.bias}, weights, name=w.own[layer.name])
        elif isinstance(layer, (Linear, Flatten)) or (isinstance(layer, Reshape) and
                                                       len(layer.out_shapes[0]) == 1):
            if spatial_in:  # lay the image out as (C, H, W) first: the engine's order
                H, W_, C = shapes[src]
                src = emit("Permute", {"dims": [3, 1, 2]}, name=w.unique(f"{layer.name}_chw"),
                           shape=(C, H, W_))
                src = emit("Flatten", {"data_format": "channels_last"},
                           inputs=[src], name=w.unique(f"{layer.name}_flat"),
                           shape=(C * H * W_,))
                bottoms = [src]
            elif len(shapes[src]) != 1:
                raise _refuse(net, layer, f"a flatten of a {shapes[src]} tensor")
            if isinstance(layer, Linear):
                weights = [("kernel", layer.dense_weight().T)] + \
                    ([("bias", layer.params["bias"])] if layer.bias else [])
                top = emit("Dense", {"units": layer.out_features, "activation": "linear",
                                     "use_bias": layer.bias}, weights, name=w.own[layer.name])
            else:  # a flat blob: Flatten is the identity
                top = emit("Flatten", {"data_format": "channels_last"}, name=w.own[layer.name])
        elif isinstance(layer, BatchNorm):
            C = layer.in_shapes[0][0]
            gamma = layer.params.get("gamma", np.ones(C))
            beta = layer.params.get("beta", np.zeros(C))
            top = emit("BatchNormalization", {"axis": -1, "epsilon": layer.eps, "center": True,
                                              "scale": True, "momentum": 0.99},
                       [("gamma", gamma), ("beta", beta), ("moving_mean", layer.buffers["mean"]),
                        ("moving_variance", layer.buffers["var"])], name=w.own[layer.name])
        elif isinstance(layer, Scale):
            if not spatial_in:
                raise _refuse(net, layer, "a Scale of a flat blob")
            C = layer.in_shapes[0][0]
            weights = [("depthwise_kernel", layer.params["weight"].reshape(1, 1, C, 1))]
            if layer.bias:
                weights.append(("bias", layer.params["bias"]))
            top = emit("DepthwiseConv2D", {"kernel_size": [1, 1], "strides": [1, 1],
                                           "padding": "valid", "depth_multiplier": 1,
                                           "data_format": "channels_last",
                                           "activation": "linear", "use_bias": layer.bias},
                       weights, name=w.own[layer.name])
        elif isinstance(layer, (ReLU, ReLU6)):
            config = {"max_value": 6.0} if isinstance(layer, ReLU6) else \
                {"negative_slope": layer.negative_slope}
            top = emit("ReLU", config, name=w.own[layer.name])
        elif isinstance(layer, PReLU):
            rank = len(shapes[src])
            C = shapes[src][-1]
            shared = list(range(1, rank + 1)) if layer.channel_shared else list(range(1, rank))
            alpha = layer.params["slope"].reshape((1,) * rank if layer.channel_shared
                                                  else (1,) * (rank - 1) + (C,))
            top = emit("PReLU", {"shared_axes": shared}, [("alpha", alpha)],
                       name=w.own[layer.name])
        elif isinstance(layer, (MaxPool2d, AvgPool2d)):
            padding, zeros = _pool_config(net, layer, layer.in_shapes[0])
            if zeros:
                H, W_, C = shapes[src]
                src = emit("ZeroPadding2D", {"padding": [[zeros[0]] * 2, [zeros[1]] * 2],
                                             "data_format": "channels_last"},
                           name=w.unique(f"{layer.name}_pad"),
                           shape=(H + 2 * zeros[0], W_ + 2 * zeros[1], C))
                bottoms = [src]
            kind = "MaxPooling2D" if isinstance(layer, MaxPool2d) else "AveragePooling2D"
            top = emit(kind, {"pool_size": list(layer.kernel), "strides": list(layer.stride),
                              "padding": padding, "data_format": "channels_last"},
                       name=w.own[layer.name])
        elif isinstance(layer, GlobalAvgPool2d):
            top = emit("GlobalAveragePooling2D", {"data_format": "channels_last",
                                                  "keepdims": True}, name=w.own[layer.name])
        elif isinstance(layer, Dropout):
            top = emit("Dropout", {"rate": layer.p}, name=w.own[layer.name])
        elif isinstance(layer, Softmax):
            top = emit("Softmax", {"axis": -1}, name=w.own[layer.name])
        elif isinstance(layer, Concat):
            rank = len(layer.in_shapes[0])
            axis = {1: -1, 2: 1, 3: 2}[layer.axis] if rank == 3 else layer.axis
            top = emit("Concatenate", {"axis": axis}, name=w.own[layer.name])
        elif isinstance(layer, (EltwiseSum, EltwiseProd, EltwiseMax)):
            if isinstance(layer, EltwiseSum) and layer.coeffs and \
                    any(c != 1.0 for c in layer.coeffs):
                raise _refuse(net, layer, f"a weighted sum (coefficients {layer.coeffs})")
            kind = {EltwiseSum: "Add", EltwiseProd: "Multiply", EltwiseMax: "Maximum"}[type(layer)]
            top = emit(kind, {}, name=w.own[layer.name])
        elif isinstance(layer, Pad2d):
            top = emit("ZeroPadding2D", {"padding": [list(p) for p in layer.padding],
                                         "data_format": "channels_last"}, name=w.own[layer.name])
        else:
            raise _refuse(net, layer, "Keras has no equivalent layer")
        current[tops[0]] = top
        previous = tops[0]
    output = current[net.output]
    w.layers = _keras_order(w.layers, output)
    config = {"class_name": "Functional",
              "config": {"name": net.name, "trainable": True, "layers": w.layers,
                         "input_layers": [[inp, 0, 0]],
                         "output_layers": [[output, 0, 0]]}}
    return config, w.weights


def save_keras(net, path):
    """Write ``net`` as a Keras HDF5 model file (see the module docstring)."""
    import h5py

    config, weights = keras_model_config(net)
    by_layer = dict(weights)
    with atomic_path(os.fspath(path)) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["keras_version"] = KERAS_VERSION
            f.attrs["backend"] = "numpy"
            f.attrs["model_config"] = json.dumps(config)
            g = f.create_group("model_weights")
            names = [layer["name"] for layer in config["config"]["layers"]]
            g.attrs["layer_names"] = np.array(names, dtype=h5py.string_dtype())
            g.attrs["backend"] = "numpy"
            g.attrs["keras_version"] = KERAS_VERSION
            for name in names:
                lg = g.create_group(name)
                arrays = by_layer.get(name, [])
                lg.attrs["weight_names"] = np.array([f"{name}/{w}" for w, _ in arrays],
                                                    dtype=h5py.string_dtype())
                for wname, value in arrays:
                    lg.create_dataset(f"{name}/{wname}",
                                      data=np.asarray(value, dtype=np.float32))
