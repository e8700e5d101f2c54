"""The compression methods of ``robustcnn compress --method``, one record each.

    deep-compression  prune, k-means quantize, Huffman-code (``pipeline.py``, the default)
    int8              8-bit linear quantization, integer kernels (``int8.py``)
    ttq               Trained Ternary Quantization (``ttq.py``)
    inq               Incremental Network Quantization (``inq.py``)
    binary            binary weights, binary or k-bit activations (``binary.py``)
    soft-sharing      retraining under a Gaussian-mixture prior, weights set to its means,
                      sparse codebooks Huffman-coded (``soft_sharing.py``)

Each method's ``run(net, x, y, options, *, val, progress, log)`` compresses a trained net on
training data (x, y) and returns (the compressed net, a report: {"settings", "stages"}, each
stage {"stage", "accuracy" on ``val``, "seconds"}), as ``pipeline.compress`` does; ``options``
are the method's own (``defaults`` lists them), checked by ``method_options``.
"""

import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Method:
    name: str
    paper: str
    run: Callable
    defaults: dict = field(default_factory=dict)
    help: dict = field(default_factory=dict)  # option → what it means


class Stages:
    """The report's stages: each one's accuracy on ``val`` and wall time, logged as it ends."""

    def __init__(self, settings, val, log):
        self.report = {"settings": dict(settings), "stages": []}
        self.val, self.log = val, log or (lambda *a: None)
        self.t0 = time.perf_counter()

    def record(self, stage, net):
        seconds = time.perf_counter() - self.t0
        acc = net.accuracy(*self.val) if self.val is not None else None
        self.report["stages"].append({"stage": stage, "accuracy": acc, "seconds": seconds})
        self.log(f"{stage:<24} " + (f"accuracy {100 * acc:.2f}%  " if acc is not None else "")
                 + f"{seconds:.1f} s")
        self.t0 = time.perf_counter()


def _int8(net, x, y, options, *, val=None, progress=True, log=print):
    from .int8 import quantize_int8

    stages = Stages(options, val, log)
    stages.record("dense", net)
    n = options["calibration"]
    out = quantize_int8(net, x[:n], percentile=options["percentile"])
    stages.record("int8", out)
    return out, stages.report


def _ttq(net, x, y, options, *, val=None, progress=True, log=print):
    from .ttq import ttq

    stages = Stages(options, val, log)
    stages.record("dense", net)
    ttq(net, x, y, threshold=options["threshold"], epochs=options["epochs"], lr=options["lr"],
        batch_size=options["batch_size"], huffman=options["huffman"], seed=options["seed"],
        progress=progress, stages=stages)
    return net, stages.report


def _inq(net, x, y, options, *, val=None, progress=True, log=print):
    from .inq import inq

    stages = Stages(options, val, log)
    stages.record("dense", net)
    portions = [p for p in str(options["portions"]).split("/") if p]
    try:
        portions = [float(p) for p in portions]
    except ValueError:
        raise ValueError(f"method inq: portions must be numbers separated by '/', got "
                         f"{options['portions']!r}") from None
    inq(net, x, y, bits=options["bits"], portions=portions, epochs=options["epochs"],
        lr=options["lr"], batch_size=options["batch_size"], seed=options["seed"],
        progress=progress, stages=stages)
    return net, stages.report


def _binary(net, x, y, options, *, val=None, progress=True, log=print):
    from .binary import binarize

    stages = Stages(options, val, log)
    stages.record("dense", net)
    out = binarize(net, x, y, activation_bits=options["activation_bits"],
                   epochs=options["epochs"], lr=options["lr"], batch_size=options["batch_size"],
                   calibration=options["calibration"], seed=options["seed"], progress=progress,
                   stages=stages)
    return out, stages.report


def _pair(text, name):
    """An option "alpha/beta" → (alpha, beta) floats."""
    parts = str(text).split("/")
    try:
        if len(parts) != 2:
            raise ValueError(text)
        return float(parts[0]), float(parts[1])
    except ValueError:
        raise ValueError(f"method soft-sharing: {name} must be 'alpha/beta' (two numbers), got "
                         f"{text!r}") from None


def _soft_sharing(net, x, y, options, *, val=None, progress=True, log=print):
    from .soft_sharing import soft_share

    stages = Stages(options, val, log)
    stages.record("dense", net)
    found = soft_share(
        net, x, y, components=options["components"], pi_zero=options["pi_zero"],
        tau=options["tau"], epochs=options["epochs"], lr=options["lr"],
        lr_means=options["lr_means"], lr_log_vars=options["lr_log_vars"],
        lr_mixing=options["lr_mixing"], batch_size=options["batch_size"],
        init_std=options["init_std"], gamma_zero=_pair(options["gamma_zero"], "gamma_zero"),
        gamma_other=_pair(options["gamma_other"], "gamma_other"),
        kl_threshold=options["kl_threshold"], huffman=options["huffman"], seed=options["seed"],
        progress=progress, stages=stages)
    stages.report["mixture"] = found
    return net, stages.report


METHODS = {m.name: m for m in (
    Method("int8", "Vanhoucke, Senior & Mao 2011, Improving the speed of neural networks on CPUs",
           _int8, dict(calibration=2048, percentile=100.0),
           dict(calibration="training images that set the activation quantizers' steps",
                percentile="percentile of the activation magnitudes mapped to the top code")),
    Method("ttq", "Zhu, Han, Mao & Dally 2017, Trained Ternary Quantization (ICLR)", _ttq,
           dict(threshold=0.05, epochs=2, lr=2e-4, batch_size=64, huffman=False, seed=0),
           dict(threshold="t of the threshold t * max|w| (the paper's 0.05)",
                epochs="training epochs (Adam)", lr="Adam's learning rate (cosine-annealed)",
                huffman="store the ternary layers as Huffman-coded sparse codebooks")),
    Method("inq", "Zhou, Yao, Guo, Xu & Chen 2017, Incremental Network Quantization (ICLR)", _inq,
           dict(bits=5, portions="0.5/0.75/0.875/1", epochs=1, lr=1e-3, batch_size=64, seed=0),
           dict(bits="bits per weight, one of them for zero (2..8): 2^(bits-2) exponents a sign",
                portions="accumulated portions quantized, '/'-separated (the paper's)",
                epochs="retraining epochs after each portion but the last (SGD, momentum 0.9)",
                lr="SGD's learning rate (cosine-annealed in each retraining)")),
    Method("binary", "Courbariaux, Bengio & David 2015, BinaryConnect (NeurIPS); Hubara et al. "
           "2018, Quantized Neural Networks (JMLR)", _binary,
           dict(activation_bits=0, epochs=2, lr=1e-3, batch_size=64, calibration=2048, seed=0),
           dict(activation_bits="0: float activations; 1: binary (sign, XNOR-popcount "
                                "kernels); 2..8: k-bit codes",
                epochs="straight-through training epochs (Adam)",
                lr="Adam's learning rate (cosine-annealed)",
                calibration="training images that set the activation quantizers and scales")),
    Method("soft-sharing", "Ullrich, Meeds & Welling 2017, Soft Weight-Sharing for Neural "
           "Network Compression (ICLR)", _soft_sharing,
           dict(components=17, pi_zero=0.999, tau=5e-3, epochs=10, lr=5e-4, lr_means=1e-4,
                lr_log_vars=3e-3, lr_mixing=3e-3, batch_size=256, init_std=0.25,
                gamma_zero="5000/2", gamma_other="250/0.1", kl_threshold=1.0, huffman=True,
                seed=0),
           dict(components="mixture components J, the fixed zero one included (the paper's 17)",
                pi_zero="the zero component's fixed mixing proportion",
                tau="weight of the negative log prior, per training example (the paper's 5e-3)",
                epochs="retraining epochs (Adam)",
                batch_size="examples per step (the authors' 256: the prior's pass over every "
                           "weight runs once a step)",
                lr="Adam's learning rate of the weights "
                                                      "(cosine-annealed)",
                lr_means="Adam's learning rate of the means",
                lr_log_vars="Adam's learning rate of the log-variances",
                lr_mixing="Adam's learning rate of the mixing logits",
                init_std="the components' starting standard deviation",
                gamma_zero="alpha/beta of the Gamma hyper-prior on the zero component's precision",
                gamma_other="alpha/beta of the Gamma hyper-prior on the other precisions",
                kl_threshold="components closer than this symmetric KL divergence merge",
                huffman="Huffman-code each layer's sparse codebook where that is smaller")),
)}


def method_options(name, given):
    """The method's options: its defaults overridden by ``given`` (unknown keys and values of
    the wrong type refused)."""
    if name not in METHODS:
        raise ValueError(f"unknown compression method {name!r}; methods: "
                         f"{', '.join(['deep-compression'] + sorted(METHODS))}")
    method = METHODS[name]
    out = dict(method.defaults)
    for key, value in (given or {}).items():
        if key not in out:
            raise ValueError(f"method {name}: unknown option {key!r}; options: "
                             f"{', '.join(sorted(out)) or 'none'}")
        default = out[key]
        try:
            out[key] = _typed(value, default)
        except (TypeError, ValueError):
            raise ValueError(f"method {name}: option {key} must be a {type(default).__name__}, "
                             f"got {value!r}") from None
    return out


def _typed(value, default):
    """``value`` (often command-line text) as the type of ``default``."""
    if isinstance(default, bool):
        if isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        return bool(value)
    return type(default)(value) if default is not None else value


def run_method(name, net, x, y, options=None, *, val=None, progress=True, log=print):
    """Compress ``net`` by method ``name`` → (net, report); see the module docstring."""
    options = method_options(name, options)
    return METHODS[name].run(net, x, y, options, val=val, progress=progress, log=log)
