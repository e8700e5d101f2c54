"""Dynamic Network Surgery (Guo, Yao & Chen, "Dynamic Network Surgery for Efficient DNNs",
NIPS 2016): masks that prune and splice connections while the net trains.

Each pruned layer k keeps its dense weights W_k and a binary mask T_k. Training runs on the
masked weights but updates every weight, pruned ones included (eq. 3-4):

    forward/backward on  W_k ⊙ T_k,      W_k ← W_k − β · ∂L/∂(W_k ⊙ T_k)

so a pruned weight whose gradient keeps pushing it grows back above the splicing threshold.
The mask is updated by the two thresholds a_k < b_k (eq. 5):

    T = 0  where T = 1 and |W| ≤ a_k    (prune)
    T = 1  where T = 0 and |W| > b_k    (splice)          otherwise T is unchanged

As in the authors' Caffe layers, a_k = 0.9 · r_k and b_k = 1.1 · r_k with
r_k = max(μ_k + c_k · σ_k, 0), μ_k and σ_k the mean and standard deviation of the layer's |W|
(its non-zero weights) when the surgery starts, and c_k (``c_rate``) the hyper-parameter that
sets how much is pruned. The mask is updated at iteration t with probability
σ(t) = (1 + γ·t)^(−power) (the paper's schedule, γ = 10⁻⁴ and power = 1 in its Caffe files),
and not after ``iter_stop`` iterations. Biases are not pruned here.

After the surgery each layer is stored as CSR (W ⊙ T), and the pipeline retrains it
(``retrain_epochs``; pruned weights stay zero), quantizes and Huffman-codes it.
"""

import time
from dataclasses import dataclass, field

import numpy as np

from ..engine.formats import CSRWeight


def dns_thresholds(weight, c_rate):
    """(a, b) of one layer: 0.9 r and 1.1 r with r = max(μ + c·σ, 0) over the |w| ≠ 0."""
    w = np.abs(np.asarray(weight, dtype=np.float64)).reshape(-1)
    w = w[w != 0]
    if w.size == 0:
        return 0.0, 0.0
    r = max(w.mean() + c_rate * w.std(), 0.0)
    return 0.9 * r, 1.1 * r


def dns_mask_update(weight, mask, a, b):
    """Eq. 5 in place on ``mask`` (bool, the weight's shape): prune |w| ≤ a, splice |w| > b."""
    w = np.abs(weight)
    mask &= ~(w <= a)
    mask |= w > b
    return mask


def update_probability(iteration, gamma, power):
    """σ(t) = (1 + γ·t)^(−power): the chance that the masks are updated at iteration t."""
    return (1.0 + gamma * iteration) ** (-power)


class DNSObjective:
    """A ``fit`` objective doing one DNS iteration per batch around ``objective`` (None:
    cross-entropy): maybe update the masks (probability σ(t)), run the objective on W ⊙ T,
    put W back, and leave ∂L/∂(W ⊙ T) in ``net.grads`` for the optimizer to apply to W.

    ``layers``: {name: (a, b)} thresholds of the dense Conv2d/Linear layers under surgery;
    ``masks``: {name: bool array} (updated in place); ``seed`` seeds the update draws.
    """

    def __init__(self, layers, masks, *, objective=None, gamma=1e-4, power=1.0,
                 iter_stop=None, seed=0):
        self.layers, self.masks, self.objective = layers, masks, objective
        self.gamma, self.power, self.iter_stop = gamma, power, iter_stop
        self.iteration = 0
        self.updates = 0
        self._rng = np.random.default_rng([seed, 23])

    def __call__(self, net, xb, yb):
        t = self.iteration
        for name, (a, b) in self.layers.items():
            draw = self._rng.random()  # one draw per layer and iteration, as each Caffe layer
            if (self.iter_stop is None or t < self.iter_stop) and \
                    draw < update_probability(t, self.gamma, self.power):
                dns_mask_update(net.layer(name).params["weight"], self.masks[name], a, b)
                self.updates += 1
        saved = {}
        for name in self.layers:
            w = net.layer(name).params["weight"]
            saved[name] = w.copy()
            w *= self.masks[name]
        try:
            if self.objective is None:
                result = net.loss_and_grad(xb, yb)
            else:
                result = self.objective(net, xb, yb)
        finally:
            for name, w in saved.items():
                net.layer(name).params["weight"][...] = w
        self.iteration += 1
        return result

    def config(self):
        inner = getattr(self.objective, "config", None)
        return {"objective": "dns", "gamma": self.gamma, "power": self.power,
                "iter_stop": self.iter_stop, "thresholds": {k: list(v) for k, v in
                                                            self.layers.items()},
                "inner": inner() if inner else None}


@dataclass
class DNSOptions:
    """``--method dns``'s settings.

    c_rate     c_k of the thresholds: one number for every layer, or {layer: c}; larger
               prunes more (the authors' LeNet-5 files use 4 for ip1)
    layers     the layers under surgery (default: those of a c_rate table, else every
               Conv2d/Linear layer)
    epochs     epochs of surgery (training with the masks updating)
    lr         their learning rate (None: the settings' lr)
    gamma, power   the update probability σ(t) = (1 + γ·t)^(−power)
    iter_stop  iterations after which the masks stop changing (None: never)
    """

    c_rate: float | dict = 1.0
    layers: list = None
    epochs: int = 4
    lr: float = None
    gamma: float = 1e-4
    power: float = 1.0
    iter_stop: int = None

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.gamma < 0 or self.power < 0:
            raise ValueError("gamma and power must be >= 0")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        rates = self.c_rate.values() if isinstance(self.c_rate, dict) else [self.c_rate]
        if not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in rates):
            raise ValueError(f"c_rate must be a number or a table of numbers, got "
                             f"{self.c_rate!r}")


def dns_layers(net, options):
    """The names under surgery and their c_k."""
    from ..engine import Conv2d, Linear

    if options.layers:
        names = list(options.layers)
    elif isinstance(options.c_rate, dict):
        names = list(options.c_rate)
    else:
        names = [l.name for l in net.layers if isinstance(l, (Conv2d, Linear))]
    out = {}
    for name in names:
        layer = net.layer(name)
        if not isinstance(layer, (Conv2d, Linear)):
            raise ValueError(f"dns: {layer.at} has no weight to prune")
        c = options.c_rate.get(name) if isinstance(options.c_rate, dict) else options.c_rate
        if c is None:
            raise ValueError(f"dns: c_rate has no entry for layer {name}")
        out[name] = float(c)
    return out


def dns_stage(stage, options):
    """DNS as the pipeline's pruning stage (see the module): surgery for ``options.epochs``,
    the masked weights stored as CSR, then ``retrain_epochs`` of retraining. The report gets
    ``dns``: per layer the thresholds, the share kept and the mask updates."""
    net, settings = stage.net, stage.settings
    rates = dns_layers(net, options)
    t0 = time.perf_counter()
    thresholds, masks = {}, {}
    for name, c in rates.items():
        layer = net.layer(name)
        if layer.weight_format.kind != "dense":
            layer.convert("dense")  # surgery trains every weight, pruned ones included
        w = layer.params["weight"]
        thresholds[name] = dns_thresholds(w, c)
        masks[name] = w != 0
    surgery = DNSObjective(thresholds, masks, objective=stage.objective, gamma=options.gamma,
                           power=options.power, iter_stop=options.iter_stop, seed=settings.seed)
    stage.train(options.epochs, options.lr or settings.lr, objective=surgery)
    kept = {}
    for name in rates:
        layer = net.layer(name)
        w = layer.dense_weight()
        pruned = np.where(masks[name], w, 0).astype(w.dtype)
        layer.set_weight_format(CSRWeight.from_dense(pruned, at=layer.at))
        kept[name] = float(np.count_nonzero(pruned) / pruned.size)
    stage.report["dns"] = {"c_rate": rates, "thresholds": {k: list(v) for k, v in
                                                           thresholds.items()},
                           "kept": kept, "mask_updates": surgery.updates,
                           "iterations": surgery.iteration}
    stage.record(f"dns surgery ({options.epochs} epochs)", time.perf_counter() - t0)
    if settings.retrain_epochs:
        t0 = time.perf_counter()
        stage.train(settings.retrain_epochs, settings.lr)
        stage.record("retrain", time.perf_counter() - t0)
