"""Magnitude pruning (Han, Pool, Tran & Dally, "Learning both Weights and Connections for
Efficient Neural Networks", NIPS 2015).

A layer keeps its largest-magnitude weights, chosen either by a target sparsity (an exact count:
``round(kept · size)`` weights survive) or, as in the paper, by a threshold of ``quality`` times
the standard deviation of the layer's weights. The pruned layer is stored as CSR, whose training
updates only the stored values: pruned weights stay exactly zero through retraining.
"""

import time

import numpy as np

from ..engine.formats import CSRWeight


def magnitude_mask(weight, *, sparsity=None, quality=None):
    """Boolean mask of the weights to keep: by ``sparsity`` (fraction removed, exact count, ties
    broken by position) or by |w| > ``quality`` · std(w). Exactly one of the two is given."""
    if (sparsity is None) == (quality is None):
        raise ValueError("give exactly one of sparsity and quality")
    flat = np.abs(np.asarray(weight)).reshape(-1)
    if quality is not None:
        quality = float(quality)
        if not (np.isfinite(quality) and quality >= 0):
            raise ValueError(f"quality must be finite and >= 0, got {quality}")
        return (flat > quality * np.asarray(weight).std()).reshape(np.shape(weight))
    sparsity = float(sparsity)
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    keep = int(round((1.0 - sparsity) * flat.size))
    mask = np.zeros(flat.size, dtype=bool)
    if keep:
        # Largest magnitudes first; a stable sort keeps ties in position order (deterministic).
        order = np.argsort(-flat, kind="stable")
        mask[order[:keep]] = True
    return mask.reshape(np.shape(weight))


def prune_layer(layer, *, sparsity=None, quality=None):
    """Prune one Conv2d/Linear layer in place to CSR → the fraction of weights kept.

    An already pruned layer is pruned further among its stored weights (its zeros stay zero).
    """
    weight = layer.dense_weight()
    mask = magnitude_mask(weight, sparsity=sparsity, quality=quality)
    pruned = np.where(mask, weight, 0).astype(weight.dtype)  # zeros stay zero: never "kept"
    layer.set_weight_format(CSRWeight.from_dense(pruned, at=layer.at))
    return float(np.count_nonzero(pruned) / max(pruned.size, 1))


def prune(net, targets):
    """Prune several layers: ``targets`` maps a layer name to its sparsity (float) or to a
    dict ``{"sparsity": s}`` / ``{"quality": q}`` → {layer: fraction kept}."""
    kept = {}
    for name, target in targets.items():
        layer = net.layer(name)
        if not hasattr(layer, "weight_format"):
            raise ValueError(f"{layer.at}: has no weight to prune")
        spec = target if isinstance(target, dict) else {"sparsity": target}
        kept[name] = prune_layer(layer, **spec)
    return kept


def schedule(final_kept, rounds):
    """Kept fractions for iterative pruning: ``rounds`` steps from 1 down to ``final_kept``,
    geometrically (each round removes the same share of what remains, as Han et al. iterate)."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if not 0.0 < final_kept <= 1.0:
        raise ValueError(f"the kept fraction must be in (0, 1], got {final_kept}")
    return [final_kept ** ((r + 1) / rounds) for r in range(rounds)]


def magnitude_stage(stage, options):
    """Deep Compression's pruning: ``rounds`` rounds of magnitude pruning (each removing the
    same share of what remains) with ``retrain_epochs`` of retraining after each."""
    settings, net = stage.settings, stage.net
    pruned = {k: v for k, v in settings.kept.items() if v < 1.0}
    if not pruned:
        return
    steps = {name: schedule(kept, settings.rounds) for name, kept in pruned.items()}
    for r in range(settings.rounds):
        t0 = time.perf_counter()
        prune(net, {name: 1.0 - steps[name][r] for name in pruned})
        stage.train(settings.retrain_epochs, settings.lr)
        stage.record(f"prune+retrain {r + 1}/{settings.rounds}", time.perf_counter() - t0)
