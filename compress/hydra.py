"""HYDRA (Sehwag, Wang, Mittal & Jana, "HYDRA: Pruning Adversarially Robust Neural Networks",
NeurIPS 2020): choose which weights to keep by optimising an importance score per weight under
the training objective — adversarial (PGD, TRADES) for robust pruning — with the weights
frozen; then fine-tune the kept weights.

Per pruned layer, scores s (the weight's shape) select the top-k weights by |s|, k = the share
kept (``settings.kept``), and the net runs on W ⊙ M(s), M(s) = 1 on the top-k of |s|. The mask
is a step function of s; HYDRA back-propagates through it straight (the straight-through
estimator of its "GetSubnet"), so

    ∂L/∂s := ∂L/∂M ⊙ 1 = ∂L/∂(W ⊙ M) ⊙ W

— exactly the gradient of L with respect to a continuous mask at the binary one (the tests
check it so, by finite differences). Scores start from the weights (the paper's scaled
initialisation, section 3.3, which makes the first mask magnitude pruning's):

    s⁰ = √(6 / fan_in) · W / max |W|

and are trained by SGD with momentum and weight decay, cosine-annealed (the paper: 20 epochs,
learning rate 0.1, momentum 0.9, weight decay 10⁻⁴; biases frozen too). Then W ⊙ M is stored as
CSR and fine-tuned on the same objective (``retrain_epochs`` at ``lr``: the paper's 20 epochs at
0.01), and the pipeline quantizes and Huffman-codes it.
"""

import math
import time
from dataclasses import dataclass

import numpy as np

from ..engine import Conv2d, Linear
from ..engine.formats import CSRWeight
from ..engine.train import Schedule
from ..progress import progress_bar


def scaled_scores(weight):
    """HYDRA's scaled initialisation √(6 / fan_in) · W / max |W| (float64)."""
    w = np.asarray(weight, dtype=np.float64)
    fan_in = int(np.prod(w.shape[1:]))
    top = np.abs(w).max()
    return math.sqrt(6.0 / fan_in) * w / (top if top > 0 else 1.0)


def topk_mask(scores, kept):
    """1 on the ``round(kept · size)`` largest |scores| (ties broken by position), else 0."""
    flat = np.abs(np.asarray(scores)).reshape(-1)
    keep = int(round(kept * flat.size))
    mask = np.zeros(flat.size, dtype=bool)
    if keep:
        mask[np.argsort(-flat, kind="stable")[:keep]] = True
    return mask.reshape(np.shape(scores))


def score_gradients(net, weights, masks, xb, yb, objective=None):
    """One pass of the objective on W ⊙ M → (loss, logits, {layer: ∂L/∂s}), the
    straight-through score gradient ∂L/∂(W ⊙ M) ⊙ W of each layer of ``weights`` ({name:
    frozen dense weight}); ``masks`` {name: 0/1 array} (a float mask is allowed: the gradient
    is then that of L w.r.t. the mask's values). The layers' weights are left as W ⊙ M."""
    for name, w in weights.items():
        net.layer(name).params["weight"][...] = w * masks[name]
    if objective is None:
        loss, logits = net.loss_and_grad(xb, yb)
    else:
        loss, logits = objective(net, xb, yb)
    grads = {name: np.asarray(net.grads[name]["weight"], dtype=np.float64) * weights[name]
             for name in weights}
    return loss, logits, grads


@dataclass
class HydraOptions:
    """``--method hydra``'s settings: the score optimisation (``score_epochs``, ``score_lr``,
    ``score_momentum``, ``score_weight_decay``: the paper's 20, 0.1, 0.9, 10⁻⁴ — fewer epochs
    by default here, for a CPU); the fine-tuning is ``settings.retrain_epochs`` at
    ``settings.lr`` on the same objective."""

    score_epochs: int = 2
    score_lr: float = 0.1
    score_momentum: float = 0.9
    score_weight_decay: float = 1e-4

    def __post_init__(self):
        if self.score_epochs < 1:
            raise ValueError(f"score_epochs must be >= 1, got {self.score_epochs}")
        if not self.score_lr > 0 or not 0 <= self.score_momentum < 1 or \
                self.score_weight_decay < 0:
            raise ValueError("score_lr must be > 0, score_momentum in [0, 1), "
                             "score_weight_decay >= 0")


def optimise_scores(net, x, y, kept, options, *, batch_size=64, seed=0, objective=None,
                    progress=False):
    """HYDRA's pruning phase on the layers of ``kept`` ({name: share}) → (masks, scores,
    losses per epoch). The weights are frozen; the net is left with W ⊙ M as dense weights."""
    weights, scores, velocity = {}, {}, {}
    for name in kept:
        layer = net.layer(name)
        if not isinstance(layer, (Conv2d, Linear)):
            raise ValueError(f"hydra: {layer.at} has no weight to prune")
        if layer.weight_format.kind != "dense":
            layer.convert("dense")
        weights[name] = layer.params["weight"].astype(np.float64)
        scores[name] = scaled_scores(weights[name])
        velocity[name] = np.zeros_like(scores[name])
    steps = len(x) // batch_size
    if steps < 1:
        raise ValueError(f"hydra: {len(x)} examples make no batch of {batch_size}")
    schedule = Schedule("cosine", options.score_lr, total=options.score_epochs * steps)
    losses = []
    for epoch in range(options.score_epochs):
        order = np.random.default_rng([seed, epoch, 31]).permutation(len(x))
        net.train()
        total = 0.0
        for b in progress_bar(range(steps), enabled=progress, unit="batch", leave=False,
                              desc=f"hydra scores {epoch + 1}/{options.score_epochs}"):
            idx = order[b * batch_size:(b + 1) * batch_size]
            masks = {n: topk_mask(scores[n], kept[n]) for n in kept}
            loss, _, grads = score_gradients(net, weights, masks, x[idx], y[idx], objective)
            lr = schedule(epoch * steps + b)
            for n in kept:  # SGD with momentum and weight decay, as the paper's optimizer
                velocity[n] = options.score_momentum * velocity[n] + grads[n] \
                    + options.score_weight_decay * scores[n]
                scores[n] -= lr * velocity[n]
            total += loss
        net.eval()
        losses.append(total / steps)
    masks = {n: topk_mask(scores[n], kept[n]) for n in kept}
    for n, w in weights.items():
        net.layer(n).params["weight"][...] = w * masks[n]
    return masks, scores, losses


def hydra_stage(stage, options):
    """HYDRA as the pipeline's pruning stage (see the module); the report gets ``hydra``:
    the score losses per epoch and, per layer, the share of the kept weights that magnitude
    pruning would have kept too."""
    net, settings = stage.net, stage.settings
    kept = {k: v for k, v in settings.kept.items() if v < 1.0}
    if not kept:
        return
    t0 = time.perf_counter()
    magnitude = {n: topk_mask(net.layer(n).dense_weight(), kept[n]) for n in kept}
    masks, _, losses = optimise_scores(net, stage.x, stage.y, kept, options,
                                       batch_size=settings.batch_size, seed=settings.seed,
                                       objective=stage.objective, progress=stage.progress)
    for name in kept:
        layer = net.layer(name)
        w = layer.dense_weight()
        layer.set_weight_format(CSRWeight.from_dense(np.where(masks[name], w, 0).astype(w.dtype),
                                                     at=layer.at))
    stage.report["hydra"] = {
        "score_losses": losses,
        "overlap_with_magnitude": {n: float((masks[n] & magnitude[n]).sum()
                                            / max(masks[n].sum(), 1)) for n in kept}}
    stage.record(f"hydra scores ({options.score_epochs} epochs)", time.perf_counter() - t0)
    if settings.retrain_epochs:
        t0 = time.perf_counter()
        stage.train(settings.retrain_epochs, settings.lr)
        stage.record("fine-tune", time.perf_counter() - t0)
