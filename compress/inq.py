"""Incremental Network Quantization (Zhou, Yao, Guo, Xu & Chen, "Incremental Network Quantization:
Towards Lossless CNNs with Low-Precision Weights", ICLR 2017).

From a trained net, each weighted layer quantizes its weights to zero and powers of two
(``engine.formats.pow2``: b bits, n1 from the trained weight by eq. 3, n2 by eq. 4) in steps:
at each accumulated portion (50 %, 75 %, 87.5 %, 100 %, the paper's) the largest-magnitude
weights not yet quantized are quantized by eq. 2 and frozen (their gradient masked), and the
rest are retrained (SGD with momentum, cosine-annealed per step) to make up for them. After the
last step every weight is a power of two or zero and the layer keeps only its b-bit codes.
"""

from ..engine.formats import INQLatentWeight
from ..engine.train import SGD, Schedule, fit

PORTIONS = (0.5, 0.75, 0.875, 1.0)


def weighted_layers(net):
    return [layer.name for layer in net.layers if hasattr(layer, "weight_format")]


def check_portions(portions):
    """Increasing accumulated portions in (0, 1], the last 1."""
    portions = tuple(float(p) for p in portions)
    if not portions or portions[-1] != 1.0 or any(not 0 < p <= 1 for p in portions) \
            or any(b <= a for a, b in zip(portions, portions[1:])):
        raise ValueError(f"INQ portions must increase within (0, 1] and end at 1, got {portions}")
    return portions


def to_latent(net, layers, bits):
    for name in layers:
        layer = net.layer(name)
        layer.set_weight_format(INQLatentWeight.from_dense(layer.dense_weight(), bits,
                                                           dtype=layer.dtype, at=layer.at))


def freeze(net, layers, portion):
    for name in layers:
        layer = net.layer(name)
        layer.set_weight_format(layer.weight_format.freeze(portion))


def to_pow2(net, layers):
    for name in layers:
        layer = net.layer(name)
        layer.set_weight_format(layer.weight_format.pow2())


def inq(net, x, y, *, bits=5, portions=PORTIONS, layers=None, epochs=1, lr=1e-3, momentum=0.9,
        batch_size=64, seed=0, progress=True, stages=None):
    """Quantize ``net`` in place by INQ on (x, y) (see the module docstring).

    epochs : retraining epochs after each portion but the last (the budget is
        ``epochs · (len(portions) − 1)`` epochs).
    layers : default every Conv2d and Linear (the paper quantizes all layers).
    stages : a ``methods.Stages`` to record each step in, or None.
    """
    portions = check_portions(portions)
    layers = weighted_layers(net) if layers is None else list(layers)
    to_latent(net, layers, bits)
    steps = len(x) // batch_size
    for i, portion in enumerate(portions):
        freeze(net, layers, portion)
        if portion < 1 and epochs > 0:
            fit(net, x, y, epochs=epochs, batch_size=batch_size,
                optimizer=SGD(momentum, 0.0), schedule=Schedule("cosine", lr, total=epochs * steps),
                seed=seed + i, progress=progress, log=None)
        if stages:
            stages.record(f"{100 * portion:g}% quantized" + (f", {epochs} ep" if portion < 1 else ""),
                          net)
    to_pow2(net, layers)
    if stages:
        stages.record(f"pow2 {bits}-bit", net)
    return net
