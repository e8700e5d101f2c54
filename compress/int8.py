"""8-bit linear quantization of a trained net (Vanhoucke, Senior & Mao, "Improving the speed of
neural networks on CPUs", NIPS Deep Learning Workshop 2011).

Every convolution and fully connected layer gets symmetric int8 weights with one scale per
output channel (``engine.formats.Int8Weight``), and an activation quantizer in front of it
(``engine.layers.QuantizeActivation``): uint8 codes where the calibration activations are never
negative (pixels, ReLU outputs), int8 codes (±127) where they are. The quantizer's step maps the
largest calibration activation (or a percentile of their magnitudes) to the top code; the
layer's scales absorb it, so the layer computes on codes with int32 sums:

    x_code = clip(round(x / step), lo, hi)
    y[o] = (step · s[o]) · Σ_k code[o, k] · x_code[k] + b[o],   s[o] = max_k |W[o, k]| / 127

No retraining (the paper's scheme is post-training). The quantizers are step functions: a
gradient attack on the result sees zero gradients unless it runs through ``attacks.bpda``
(the sanity checks say so).
"""

import numpy as np

from ..engine.formats import Int8Weight
from ..engine.formats.int8 import channel_scales
from ..engine.net import Net


def weighted_layers(net):
    """Names of the layers with a weight (Conv2d, Linear), in order."""
    return [layer.name for layer in net.layers if hasattr(layer, "weight_format")]


def _layer(net, name):
    try:
        return net.layer(name)
    except KeyError as e:
        raise ValueError(f"int8: {e.args[0]}") from None


def layer_inputs(net, x, names, *, batch_size=256):
    """The first input of each named layer for ``x`` (eval mode) → {name: (N, *in_shape)}:
    what calibration measures."""
    names = list(names)
    for name in names:
        _layer(net, name)
    parts = {name: [] for name in names}
    for lo in range(0, len(x), batch_size):
        for step in net.run_layers(np.asarray(x[lo:lo + batch_size]), train=False):
            if step.layer.name in parts:
                parts[step.layer.name].append(step.inputs[0])
    return {name: np.concatenate(p) for name, p in parts.items() if p}


def calibration_steps(inputs, *, percentile=100.0):
    """{layer: (step, signed)} from each layer's calibration inputs: unsigned 8-bit codes if none
    is negative, else signed ±127; the step maps the ``percentile`` of the magnitudes to the top
    code (1.0 for an all-zero input)."""
    if not 0 < percentile <= 100:
        raise ValueError(f"int8 calibration: percentile must be in (0, 100], got {percentile}")
    out = {}
    for name, x in inputs.items():
        a = np.abs(np.asarray(x, dtype=np.float64)).reshape(-1)
        signed = bool(x.size and x.min() < 0)
        top = float(np.percentile(a, percentile)) if a.size else 0.0
        step = top / (127 if signed else 255) if top > 0 else 1.0
        out[name] = (step, signed)
    return out


def with_quantizers(net, steps, *, bits=8, suffix="_quant"):
    """A new Net: ``net`` with a QuantizeActivation in front of each layer of ``steps``
    ({layer: (step, signed)}), reading that layer's input blob; the weights are copied."""
    spec = net.spec()
    layers, previous = [], spec["input_name"]
    taken = {c["name"] for c in spec["layers"]}
    for cfg in spec["layers"]:
        cfg = dict(cfg)
        if cfg["name"] in steps:
            step, signed = steps[cfg["name"]]
            name = cfg["name"] + suffix
            while name in taken:
                name += "_"
            taken.add(name)
            layers.append({"class": "QuantizeActivation", "type": "QuantizeActivation",
                           "name": name, "bottom": list(cfg.get("bottom") or [previous]),
                           "top": [name], "bits": bits, "step": float(step), "signed": signed})
            cfg["bottom"] = [name] + list(cfg.get("bottom") or [previous])[1:]
        layers.append(cfg)
        previous = (cfg.get("top") or [cfg["name"]])[0]
    out = Net.from_spec({**spec, "layers": layers}, dtype=net.dtype)
    out.load_state_dict(net.state_dict())
    return out


def quantize_int8(net, x_calibration, *, layers=None, percentile=100.0, batch_size=256):
    """The int8 version of a trained ``net`` (see the module docstring) → a new Net.

    x_calibration : inputs whose activations set the quantizers' steps (a few thousand
        training images).
    layers : the layers to quantize (default: every Conv2d and Linear).
    """
    names = weighted_layers(net) if layers is None else list(layers)
    for name in names:
        if not hasattr(_layer(net, name), "weight_format"):
            raise ValueError(f"int8: {net.layer(name).at} has no weight to quantize")
    if len(x_calibration) == 0:
        raise ValueError("int8: no calibration images")
    steps = calibration_steps(layer_inputs(net, x_calibration, names, batch_size=batch_size),
                              percentile=percentile)
    out = with_quantizers(net, steps)
    for name in names:
        layer = out.layer(name)
        weight = layer.dense_weight()
        scales = channel_scales(weight)
        fmt = Int8Weight.from_dense(weight, scales=scales, at=layer.at)
        # The layer takes codes x / step: its scales absorb the step.
        fmt.scales[...] = scales * steps[name][0]
        layer.set_weight_format(fmt)
    return out
