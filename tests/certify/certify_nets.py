"""Small random nets for the bound tests: one of every layer type with an interval rule (a
DAG), a LeNet-like chain, and tiny fully connected nets with 2-D inputs.

Weighted layers hold their weight in any format (``in_format``): half of each weight is pruned
first, so the sparse formats store something sparse; codebooks quantize it (the net then is the
quantized one). Biases, batch-norm statistics and Scale factors are drawn at random, some
negative, so the bounds meet every sign.
"""

import numpy as np

from robustcnn.engine import (AvgPool2d, BatchNorm, Concat, Conv2d, Dropout, EltwiseMax,
                              EltwiseSum, Flatten, GlobalAvgPool2d, Linear, MaxPool2d, Net, Pad2d,
                              Permute, PReLU, ReLU, ReLU6, Reshape, Scale)
from robustcnn.engine.layers import Preprocess, QuantizedReLU

# The formats whose |W| is not the stored values' absolute values (ternary: a negative level;
# int8: signed codes; binary: sign bits) are here because a wrong |W| makes bounds unsound.
KINDS = ("dense", "csr", "codebook", "sparse_codebook", "huffman", "ternary", "int8", "binary")
OPTIONS = {"dense": {}, "csr": {}, "codebook": dict(bits=4),
           "sparse_codebook": dict(code_bits=4, gap_bits=3), "huffman": dict(code_bits=4, gap_bits=3),
           "ternary": {}, "int8": {}, "binary": {}}


def randomize(net, seed, prune=True):
    """Random biases, batch-norm statistics and per-channel factors of both signs; half of
    each weight set to zero with ``prune``."""
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        if prune and hasattr(layer, "weight_format"):
            w = layer.dense_weight()
            w[rng.random(w.shape) < 0.5] = 0.0
            layer.set_weight_format(type(layer.weight_format).from_dense(w))
        for k, v in layer.params.items():
            if k in ("bias", "beta"):
                v[...] = rng.normal(0, 0.2, v.shape)
            elif k in ("gamma", "weight") and v.ndim == 1:  # batch norm and Scale factors
                v[...] = rng.uniform(-1.5, 1.5, v.shape)
            elif k == "slope":
                v[...] = rng.uniform(0.0, 0.5, v.shape)
        if "mean" in layer.buffers:
            layer.buffers["mean"][...] = rng.normal(0, 0.2, layer.buffers["mean"].shape)
            layer.buffers["var"][...] = rng.uniform(0.5, 2.0, layer.buffers["var"].shape)
    return net


def in_format(net, kind):
    for layer in net.layers:
        if hasattr(layer, "weight_format"):
            layer.convert(kind, **OPTIONS[kind])
    return net


def every_layer_net(kind="dense", seed=0):
    """A DAG with a layer of every type that has an interval rule; input (2, 6, 6), 5 classes."""
    layers = [
        Preprocess("pre", order=[1, 0], scale=[2.0, -3.0], shift=[0.5, 1.0]),
        Conv2d("c1", 4, kernel=3, padding=1), BatchNorm("bn"), ReLU("r1", negative_slope=0.1),
        MaxPool2d("p1", kernel=2, stride=2),                                  # (4, 3, 3)
        Conv2d("c2", 3, kernel=3, padding=1, bottom="p1"), ReLU6("r6"),
        Conv2d("c3", 3, kernel=1, bottom="p1"), Scale("sc", bias=True),
        QuantizedReLU("q", bits=2, max_value=2.0),
        Concat("cat", bottom=["r6", "q"]),                                    # (6, 3, 3)
        Pad2d("pad", ((1, 0), (0, 1))), AvgPool2d("ap", kernel=2, stride=1),   # (6, 3, 3)
        EltwiseSum("sum", coeffs=[1.0, -0.5], bottom=["cat", "ap"]),
        EltwiseMax("mx", bottom=["sum", "cat"]), PReLU("pr"),
        MaxPool2d("p2", kernel=2, stride=1),                                  # (6, 2, 2)
        Dropout("drop", 0.5), Permute("perm", (1, 2, 0)), Reshape("resh", (6, 2, 2)),
        GlobalAvgPool2d("gap"), Flatten("gflat"),
        Flatten("flat", bottom="resh"), Concat("feat", bottom=["flat", "gflat"]),  # (30,)
        Linear("ip1", 8), ReLU("r2"), Linear("ip2", 5),
    ]
    net = Net(layers, (2, 6, 6), dtype=np.float64, seed=seed, name="every-layer")
    return in_format(randomize(net, seed + 1), kind)


def lenet_like(kind="dense", seed=0):
    """LeNet-5's chain, small: conv-pool-conv-pool-ip-relu-ip on (1, 12, 12)."""
    net = Net([Conv2d("conv1", 4, kernel=3), MaxPool2d("pool1", 2, 2), Conv2d("conv2", 6, kernel=3),
               MaxPool2d("pool2", 2, 2), Linear("ip1", 12), ReLU("relu1"), Linear("ip2", 4)],
              (1, 12, 12), dtype=np.float64, seed=seed, name="lenet-like")
    return in_format(randomize(net, seed + 1), kind)


def gradient_net(kind="dense", seed=0):
    """Every layer type with parameters, for the finite-difference checks: no staircase, and
    no pruned weights (a zero column of a weight makes a coefficient of the bound exactly 0,
    where the bound has a kink)."""
    net = Net([Conv2d("c1", 3, kernel=3, padding=1), BatchNorm("bn"), ReLU("r1"),
               MaxPool2d("p1", 2, 2), Conv2d("c2", 4, kernel=2), Scale("sc", bias=True),
               PReLU("pr"), AvgPool2d("ap", 2, 1), Linear("ip1", 6), ReLU("r2"), Linear("ip2", 4)],
              (1, 8, 8), dtype=np.float64, seed=seed, name="gradient-net")
    return in_format(randomize(net, seed + 1, prune=False), kind)


def mlp_2d(widths=(8,), seed=0, relu=True):
    """A fully connected net on 2-D inputs: 2 → widths… → 3, ReLU between (or none)."""
    layers = []
    for i, w in enumerate(widths):
        layers.append(Linear(f"ip{i}", w))
        if relu:
            layers.append(ReLU(f"r{i}"))
    layers.append(Linear("out", 3))
    net = Net(layers, (2,), dtype=np.float64, seed=seed, name="mlp")
    rng = np.random.default_rng(seed + 1)
    for layer in net.layers:
        if "bias" in layer.params:
            layer.params["bias"][...] = rng.normal(0, 0.5, layer.params["bias"].shape)
    return net
