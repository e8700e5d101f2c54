"""Trained quantization (weight sharing): k-means per layer over the remaining weights (Han, Mao &
Dally, "Deep Compression", ICLR 2016, §3).

Centroids start from one of three initialisations the paper compares — ``linear`` (evenly spaced
over [min, max], its recommendation: it keeps the large, rare weights), ``density`` (evenly spaced
in the CDF of the weights) and ``random`` (Forgy: k distinct weights drawn at random) — and Lloyd's
algorithm refines them. A pruned layer becomes a sparse codebook (code 0 stays the zero of the
pruned positions), a dense one a codebook. Fine-tuning then trains the centroids only: their
gradient is the sum of their weights' gradients (eq. 3), which the formats compute.
"""

import numpy as np

from ..engine.formats import CodebookWeight, SparseCodebookWeight

INITS = ("linear", "density", "random")


def init_centroids(values, k, init="linear", rng=None):
    """k starting centroids for 1-D ``values`` by ``init`` (see the module docstring)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        return np.zeros(k)
    if init == "linear":
        return np.linspace(values.min(), values.max(), k)
    if init == "density":
        # Evenly spaced in the empirical CDF: the (i + 0.5)/k quantiles.
        return np.quantile(values, (np.arange(k) + 0.5) / k)
    if init == "random":
        rng = rng if rng is not None else np.random.default_rng(0)
        pool = np.unique(values)
        return np.sort(rng.choice(pool, size=min(k, pool.size), replace=False))
    raise ValueError(f"unknown centroid initialisation {init!r}; use one of {INITS}")


def kmeans_1d(values, centroids, *, iterations=100, tol=1e-12):
    """Lloyd's algorithm in one dimension from the given centroids → (centroids, labels).

    Each step assigns every value to its nearest centroid and moves each centroid to the mean of
    its values; a centroid left without values stays where it is (as scipy's kmeans2 with
    missing="warn"). Stops when no centroid moves more than ``tol`` (relative to the value range).
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    c = np.array(centroids, dtype=np.float64)
    labels = np.zeros(values.size, dtype=np.int64)
    scale = max(float(np.ptp(values)) if values.size else 0.0, 1e-300)
    for _ in range(iterations):
        labels = nearest(values, c)
        sums = np.bincount(labels, weights=values, minlength=c.size)
        counts = np.bincount(labels, minlength=c.size)
        moved = np.where(counts > 0, sums / np.maximum(counts, 1), c)
        shift = np.abs(moved - c).max(initial=0.0)
        c = moved
        if shift <= tol * scale:
            break
    return c, nearest(values, c)


def nearest(values, centroids):
    """Index of the nearest centroid of each value (the first of equally near ones)."""
    d = np.abs(values[:, None] - centroids[None, :]) if values.size * centroids.size <= 1 << 24 \
        else None
    if d is not None:
        return d.argmin(axis=1)
    order = np.argsort(centroids, kind="stable")
    c = centroids[order]
    mid = (c[1:] + c[:-1]) / 2
    return order[np.searchsorted(mid, values, side="left")]


def quantize_layer(layer, bits, *, init="linear", gap_bits=None, iterations=100, rng=None):
    """Share the weights of one Conv2d/Linear layer among 2**bits values → the new format.

    A pruned layer (CSR or sparse) becomes a sparse codebook with ``gap_bits``-wide relative
    indices (default: 4 for conv, 5 for FC, as Deep Compression); its 2**bits − 1 non-zero
    centroids come from k-means over the stored weights, centroid 0 is the zero. A dense layer
    becomes a codebook with 2**bits centroids.
    """
    weight = layer.dense_weight()
    pruned = layer.weight_format.kind != "dense"
    if pruned:
        mask = weight != 0
        values = weight[mask]
        k = (1 << bits) - 1
        start = init_centroids(values, k, init, rng)
        centroids, labels = kmeans_1d(values, start, iterations=iterations)
        shared = np.zeros_like(weight)
        shared[mask] = centroids[labels]
        if gap_bits is None:
            gap_bits = 4 if weight.ndim == 4 else 5
        fmt = SparseCodebookWeight.from_dense(
            shared, bits, gap_bits, centroids=np.concatenate([[0.0], centroids]),
            dtype=weight.dtype, at=layer.at)
    else:
        k = 1 << bits
        start = init_centroids(weight, k, init, rng)
        centroids, labels = kmeans_1d(weight, start, iterations=iterations)
        fmt = CodebookWeight.from_dense(centroids[labels].reshape(weight.shape), bits,
                                        centroids=centroids, dtype=weight.dtype, at=layer.at)
    return layer.set_weight_format(fmt)


def quantize(net, bits, **kwargs):
    """Quantize several layers: ``bits`` maps a layer name to its code bits → {layer: format}."""
    return {name: quantize_layer(net.layer(name), b, **kwargs) for name, b in bits.items()}
