"""Concurrent adversarial training and weight pruning by ADMM (Ye, Xu, Liu, Cheng, Lambrechts,
Zhang, Zhou, Ma, Wang & Lin, "Adversarial Robustness vs. Model Compression, or Both?",
ICCV 2019).

Pruning is the constraint W_k ∈ S_k (at most a share of the layer's weights, columns or
filters non-zero) on the training objective f — the adversarial loss (the min-max of Madry et
al.) for robust pruning. ADMM splits it with Z_k = W_k and scaled duals U_k:

    W ← argmin f(W) + Σ_k ρ_k/2 ‖W_k − Z_k + U_k‖²       (SGD on the augmented loss)
    Z_k ← Π_{S_k}(W_k + U_k)                               (Euclidean projection)
    U_k ← U_k + W_k − Z_k                                  (dual update)

with Z⁰ = Π(W⁰), U⁰ = 0; the Z- and U-updates run every ``interval`` epochs and each
multiplies ρ_k by ``rho_growth`` (the authors' "multi-rho" schedule: ρ = 10⁻³, ×1.3). The
projections (``project``):

    irregular  keep the round(kept·n) weights of largest |w|
    column     keep the round(kept·K) columns (of the (O, K) matrix: an input position of a
               filter across all filters; an input feature of an FC layer) of largest L2 norm
    filter     keep the round(kept·O) rows (filters, output units) of largest L2 norm

Then W is pruned to the support of Π(W), stored as CSR, and retrained with the mask fixed
(``retrain_epochs``; the authors' "masked retrain"), quantized and Huffman-coded by the
pipeline. The authors' MNIST LeNet setting prunes conv1, conv2, fc1, fc2 by 80%, 94.7%, 99%
and 93% (``LENET_KEPT``), against PGD-40 at eps 0.3; their learning rate restarts every ADMM
interval, where here one cosine schedule runs over all ADMM epochs.
"""

import time
from dataclasses import dataclass

import numpy as np

from ..engine import Conv2d, Linear
from ..engine.formats import CSRWeight

SPARSITY_TYPES = ("irregular", "column", "filter")

# Ye et al.'s MNIST LeNet per-layer pruning ratios (their configs: conv1 0.8, conv2 0.947,
# fc1 0.99, fc2 0.93) as shares kept, named after our LeNet-5's layers.
LENET_KEPT = {"conv1": 0.2, "conv2": 0.053, "ip1": 0.01, "ip2": 0.07}


def project(weight, kept, sparsity_type="irregular"):
    """Euclidean projection of ``weight`` onto the set of weights with at most a ``kept``
    share of non-zero entries, columns or filters (see the module) → (projected, mask)."""
    w = np.asarray(weight)
    rows = w.reshape(w.shape[0], -1)
    if sparsity_type == "irregular":
        score = np.abs(rows).reshape(-1)
    elif sparsity_type == "column":
        score = np.sqrt((rows.astype(np.float64) ** 2).sum(axis=0))
    elif sparsity_type == "filter":
        score = np.sqrt((rows.astype(np.float64) ** 2).sum(axis=1))
    else:
        raise ValueError(f"admm: sparsity_type must be one of {SPARSITY_TYPES}, got "
                         f"{sparsity_type!r}")
    keep = int(round(kept * score.size))
    chosen = np.zeros(score.size, dtype=bool)
    if keep:
        chosen[np.argsort(-score, kind="stable")[:keep]] = True
    if sparsity_type == "irregular":
        mask = chosen.reshape(rows.shape)
    elif sparsity_type == "column":
        mask = np.broadcast_to(chosen[None, :], rows.shape)
    else:
        mask = np.broadcast_to(chosen[:, None], rows.shape)
    mask = mask.reshape(w.shape)
    return np.where(mask, w, 0).astype(w.dtype), mask


class ADMMObjective:
    """A ``fit`` objective running ADMM around ``objective`` (None: cross-entropy): each batch
    adds ρ_k/2 ‖W_k − Z_k + U_k‖² to the loss and ρ_k (W_k − Z_k + U_k) to the weight
    gradients; every ``interval`` batches (before the batch) it updates Z, U and ρ.

    ``kept``: {layer name: share}; the layers must hold dense weights.
    """

    def __init__(self, net, kept, *, objective=None, sparsity_type="irregular", rho=1e-3,
                 rho_growth=1.3, interval=1):
        self.kept, self.objective, self.sparsity_type = dict(kept), objective, sparsity_type
        self.rho = {name: float(rho) for name in kept}
        self.rho_growth, self.interval = float(rho_growth), int(interval)
        self.Z, self.U = {}, {}
        for name in kept:
            w = net.layer(name).params["weight"].astype(np.float64)
            self.Z[name] = project(w, kept[name], sparsity_type)[0]
            self.U[name] = np.zeros_like(w)
        self.iteration = 0
        self.updates = 0

    def admm_update(self, net):
        """Z ← Π(W + U), U ← U + W − Z, ρ ← ρ · rho_growth, for every layer."""
        for name in self.kept:
            w = net.layer(name).params["weight"].astype(np.float64)
            self.rho[name] *= self.rho_growth
            self.Z[name] = project(w + self.U[name], self.kept[name], self.sparsity_type)[0]
            self.U[name] = self.U[name] + w - self.Z[name]
        self.updates += 1

    def residuals(self, net):
        """{layer: ‖W − Z‖ / ‖W‖}: how far W is from its constraint set's point."""
        out = {}
        for name in self.kept:
            w = net.layer(name).params["weight"].astype(np.float64)
            out[name] = float(np.linalg.norm(w - self.Z[name]) / max(np.linalg.norm(w), 1e-30))
        return out

    def __call__(self, net, xb, yb):
        if self.iteration and self.iteration % self.interval == 0:
            self.admm_update(net)
        self.iteration += 1
        if self.objective is None:
            loss, logits = net.loss_and_grad(xb, yb)
        else:
            loss, logits = self.objective(net, xb, yb)
        for name in self.kept:
            layer = net.layer(name)
            w = layer.params["weight"]
            d = w.astype(np.float64) - self.Z[name] + self.U[name]
            loss += 0.5 * self.rho[name] * float((d * d).sum())
            layer.grads["weight"] = layer.grads["weight"] + (self.rho[name] * d).astype(w.dtype)
        return loss, logits

    def config(self):
        inner = getattr(self.objective, "config", None)
        return {"objective": "admm", "kept": self.kept, "sparsity_type": self.sparsity_type,
                "rho_growth": self.rho_growth, "interval": self.interval,
                "inner": inner() if inner else None}


@dataclass
class ADMMOptions:
    """``--method admm``'s settings: ``sparsity_type`` (irregular, column or filter), the
    ADMM phase's ``epochs`` and learning rate ``lr`` (None: the settings' lr), the penalty
    ``rho`` and its growth per update ``rho_growth``, and the epochs between Z/U updates
    ``interval_epochs`` (the authors: ρ 10⁻³ × 1.3, every 4 of 40 epochs). The masked
    retraining is ``settings.retrain_epochs`` at ``settings.lr``."""

    sparsity_type: str = "irregular"
    epochs: int = 3
    lr: float = None
    rho: float = 1e-3
    rho_growth: float = 1.3
    interval_epochs: float = 1.0

    def __post_init__(self):
        if self.sparsity_type not in SPARSITY_TYPES:
            raise ValueError(f"sparsity_type must be one of {SPARSITY_TYPES}, got "
                             f"{self.sparsity_type!r}")
        if self.epochs < 1 or not self.interval_epochs > 0:
            raise ValueError("epochs must be >= 1 and interval_epochs > 0")
        if not self.rho > 0 or not self.rho_growth >= 1:
            raise ValueError("rho must be > 0 and rho_growth >= 1")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def admm_stage(stage, options):
    """ADMM as the pipeline's pruning stage (see the module); the report gets ``admm``: the
    relative distance of each layer's W to its projection before the hard pruning, and ρ."""
    net, settings = stage.net, stage.settings
    kept = {k: v for k, v in settings.kept.items() if v < 1.0}
    if not kept:
        return
    t0 = time.perf_counter()
    for name in kept:
        layer = net.layer(name)
        if not isinstance(layer, (Conv2d, Linear)):
            raise ValueError(f"admm: {layer.at} has no weight to prune")
        if layer.weight_format.kind != "dense":
            layer.convert("dense")
    steps = max(len(stage.x) // settings.batch_size, 1)
    admm = ADMMObjective(net, kept, objective=stage.objective,
                         sparsity_type=options.sparsity_type, rho=options.rho,
                         rho_growth=options.rho_growth,
                         interval=max(1, int(round(options.interval_epochs * steps))))
    stage.train(options.epochs, options.lr or settings.lr, objective=admm)
    residuals = admm.residuals(net)
    for name in kept:
        layer = net.layer(name)
        pruned, _ = project(layer.dense_weight(), kept[name], options.sparsity_type)
        layer.set_weight_format(CSRWeight.from_dense(pruned, at=layer.at))
    stage.report["admm"] = {"residuals": residuals, "rho": admm.rho, "updates": admm.updates}
    stage.record(f"admm ({options.epochs} epochs)", time.perf_counter() - t0)
    if settings.retrain_epochs:
        t0 = time.perf_counter()
        stage.train(settings.retrain_epochs, settings.lr)
        stage.record("masked retrain", time.perf_counter() - t0)
