"""Binarized and quantized networks: binary weights with a scale per output channel
(BinaryConnect: Courbariaux, Bengio & David, NeurIPS 2015; the scales of XNOR-Net: Rastegari
et al., ECCV 2016) and, optionally, binary or k-bit activations (Hubara, Courbariaux, Soudry,
El-Yaniv & Bengio, "Quantized Neural Networks", JMLR 2018), trained with the straight-through
estimator from a trained float net.

Weights: every Conv2d and Linear gets latent full-precision weights whose forward weight is
gain · alpha[o] · sign(w̃), alpha[o] = mean|w̃[o]| (``engine.formats.BinaryLatentWeight``,
XNOR-Net's gradient); after training each layer keeps only its sign bits and scales
(``engine.formats.BinaryWeight``, 1 bit per weight: 32× smaller than float32).

Activations (``activation_bits``; 0 keeps them float): the input of every weighted layer but the
first (pixels, as Hubara et al.'s first layer) is quantized by a ``QuantizeActivation``:

- 1 bit: sign(x) ∈ {±1}. It takes the place of the ReLU in front of the layer where there is
  one (Hubara et al.'s nets have no ReLU: the sign is the non-linearity), else it is inserted.
  Its straight-through window is |x| ≤ s with s the standard deviation of the calibration
  inputs (Hubara's |x| ≤ 1 after batch normalization, which the LeNets lack), and the layer's
  gain is their mean magnitude (the scale beta that brings sign(x) closest to x). On ±1
  inputs the binary layer computes by XNOR and popcount (``engine/binary.py``).
- k bits (2..8): uniform codes in front of the layer, unsigned where the calibration inputs are
  never negative (after a ReLU), else signed; the step is the one of least squared error on
  them (``mse_step``), and the layer's gain is the step (the layer receives codes).

Training uses the quantizers' straight-through gradient; the finished net's quantizers
back-propagate their true (zero) gradient, so the sanity checks flag them and attacks must run
through ``attacks.bpda``. Adam with a cosine schedule, as the papers' implementations. Not
done: BinaryConnect's clipping of the latent weights to [−1, 1] after each step (the
straight-through gradient already stops at |w̃| > 1) and Hubara's shift-based batch norm.
"""

import numpy as np

from ..engine.formats import BinaryLatentWeight
from ..engine.net import Net
from ..engine.train import Adam, Schedule, fit
from .int8 import layer_inputs, weighted_layers

SUFFIX = "_binary"


def check_activation_bits(bits):
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 0 <= bits <= 8:
        raise ValueError(f"binary: activation bits must be 0 (float activations) or 1..8, "
                         f"got {bits!r}")
    return int(bits)


def activation_settings(inputs, bits):
    """{layer: (step, signed, gain)} of each layer's activation quantizer, from its calibration
    inputs (see the module docstring)."""
    out = {}
    for name, x in inputs.items():
        a = np.asarray(x, dtype=np.float64).reshape(-1)
        if bits == 1:
            spread = float(a.std()) if a.size else 0.0
            gain = float(np.abs(a).mean()) if a.size else 0.0
            out[name] = (spread if spread > 0 else 1.0, True, gain if gain > 0 else 1.0)
            continue
        signed = bool(a.size and a.min() < 0)
        step = mse_step(a, bits, signed)
        out[name] = (step, signed, step)
    return out


def mse_step(a, bits, signed, *, candidates=64, sample=65536, seed=0):
    """The step of a uniform ``bits``-bit quantizer (codes as ``QuantizeActivation``'s) that
    minimizes the squared error on the values ``a``, searched over top codes at 1/64 .. 64/64 of
    max|a| (a sample of them): at few bits, mapping the largest value to the top code leaves
    most values at zero."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    if a.size > sample:
        a = np.random.default_rng(seed).choice(a, sample, replace=False)
    top = float(np.abs(a).max()) if a.size else 0.0
    if top == 0:
        return 1.0
    levels = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    lo = -levels if signed else 0
    best, best_err = top / levels, np.inf
    for i in range(1, candidates + 1):
        step = top * i / candidates / levels
        err = ((np.clip(np.floor(a / step + 0.5), lo, levels) * step - a) ** 2).sum()
        if err < best_err:
            best, best_err = step, err
    return best


def _consumers(layers, input_name):
    """{blob: number of layers reading it} of a spec's layers (no bottom: the previous top)."""
    count, previous = {}, input_name
    for cfg in layers:
        for blob in cfg.get("bottom") or [previous]:
            count[blob] = count.get(blob, 0) + 1
        previous = (cfg.get("top") or [cfg["name"]])[0]
    return count


def replaced_relus(net, names):
    """{layer: the ReLU a one-bit quantizer replaces} for the layers of ``names`` whose input is
    the output of a ReLU just before them that feeds nothing else."""
    spec = net.spec()
    cfgs = spec["layers"]
    readers = _consumers(cfgs, spec["input_name"])
    out, previous = {}, spec["input_name"]
    for i, cfg in enumerate(cfgs):
        bottoms = list(cfg.get("bottom") or [previous])
        if cfg["name"] in names and i and cfgs[i - 1]["class"] == "ReLU":
            relu = cfgs[i - 1]
            if (relu.get("top") or [relu["name"]])[0] == bottoms[0] and readers[bottoms[0]] == 1:
                out[cfg["name"]] = relu["name"]
        previous = (cfg.get("top") or [cfg["name"]])[0]
    return out


def with_activation_quantizers(net, settings, bits):
    """A new Net: ``net`` with an activation quantizer of ``bits`` in front of each layer of
    ``settings`` ({layer: (step, signed, gain)}); a one-bit quantizer replaces a ReLU that feeds
    only that layer. Weights are copied; the quantizers train straight-through."""
    spec = net.spec()
    cfgs = [dict(c) for c in spec["layers"]]
    relus = replaced_relus(net, settings) if bits == 1 else {}
    taken = {c["name"] for c in cfgs}

    def fresh(name):
        while name in taken:
            name += "_"
        taken.add(name)
        return name

    out, previous = [], spec["input_name"]
    for cfg in cfgs:
        name = cfg["name"]
        bottoms = list(cfg.get("bottom") or [previous])
        if name in settings:
            step, signed, _ = settings[name]
            quantizer = {"class": "QuantizeActivation", "type": "QuantizeActivation",
                         "bits": bits, "step": float(step), "signed": bool(signed),
                         "straight_through": True}
            if name in relus:  # the sign takes the ReLU's place: same input and output blobs
                last = out[-1]
                out[-1] = {**quantizer, "name": fresh(last["name"] + SUFFIX),
                           "bottom": list(last.get("bottom") or [_top_before(out, spec)]),
                           "top": [bottoms[0]]}
            else:
                qname = fresh(name + ("_sign" if bits == 1 else "_quant"))
                out.append({**quantizer, "name": qname, "bottom": bottoms[:1], "top": [qname]})
                cfg["bottom"] = [qname] + bottoms[1:]
        out.append(cfg)
        previous = (cfg.get("top") or [cfg["name"]])[0]
    new = Net.from_spec({**spec, "layers": out}, dtype=net.dtype)
    new.load_state_dict(net.state_dict())
    return new


def _top_before(out, spec):
    """The output blob of the layer before the last one of ``out`` (the net's input if none)."""
    if len(out) < 2:
        return spec["input_name"]
    return (out[-2].get("top") or [out[-2]["name"]])[0]


def quantizers(net):
    return [layer for layer in net.layers if layer.type == "QuantizeActivation"]


def to_latent(net, layers, gains):
    for name in layers:
        layer = net.layer(name)
        layer.set_weight_format(BinaryLatentWeight.from_dense(
            layer.dense_weight(), gain=gains.get(name, 1.0), dtype=layer.dtype, at=layer.at))


def to_binary(net, layers):
    """Keep only each trained layer's binary weight."""
    for name in layers:
        layer = net.layer(name)
        layer.set_weight_format(layer.weight_format.binary())


def binarize(net, x, y, *, activation_bits=0, layers=None, epochs=2, lr=1e-3, batch_size=64,
             calibration=2048, seed=0, progress=True, stages=None):
    """The binarized version of a trained ``net``, trained on (x, y) → a new Net (see the module
    docstring).

    activation_bits : 0 (float activations), 1 (binary) or 2..8 (k-bit codes).
    layers : the layers whose weights become binary (default every Conv2d and Linear).
    calibration : training images whose activations set the quantizers and gains.
    stages : a ``methods.Stages`` to record each stage in, or None.
    """
    bits = check_activation_bits(activation_bits)
    names = weighted_layers(net) if layers is None else list(layers)
    for name in names:
        try:
            layer = net.layer(name)
        except KeyError as e:
            raise ValueError(f"binary: {e.args[0]}") from None
        if not hasattr(layer, "weight_format"):
            raise ValueError(f"binary: {layer.at} has no weight to binarize")
    out, gains = net.copy(), {}
    if bits:
        behind = [n for n in weighted_layers(net)[1:] if n in names]
        if len(x) == 0:
            raise ValueError("binary: no calibration images")
        # a sign replacing a ReLU sees the ReLU's input: measure that
        relus = replaced_relus(net, behind) if bits == 1 else {}
        measured = layer_inputs(net, x[:calibration], [relus.get(n, n) for n in behind])
        settings = activation_settings({n: measured[relus.get(n, n)] for n in behind}, bits)
        out = with_activation_quantizers(net, settings, bits)
        gains = {name: s[2] for name, s in settings.items()}
    to_latent(out, names, gains)
    if stages:
        stages.record("binarized (no training)", out)
    if epochs > 0:
        steps = max(len(x) // batch_size, 1)
        fit(out, x, y, epochs=epochs, batch_size=batch_size, optimizer=Adam(),
            schedule=Schedule("cosine", lr, total=epochs * steps), seed=seed, progress=progress,
            log=None)
    to_binary(out, names)
    for layer in quantizers(out):  # the finished net shows its true (zero) gradient
        layer.straight_through = False
    if stages:
        stages.record(f"binary {epochs} epoch(s)", out)
    return out

