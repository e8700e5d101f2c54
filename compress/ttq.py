"""Trained Ternary Quantization (Zhu, Han, Mao & Dally, "Trained Ternary Quantization", ICLR 2017).

From a trained net, each layer's weight becomes latent full-precision weights (normalized to
[−1, 1]) and two learned scales (``engine.formats.TTQLatentWeight``); the forward pass uses
their ternarization with the threshold Δ = t · max|w̃| (t = 0.05), the backward pass trains the
scales (eq. 7) and the latent weights (eq. 8, a scaled straight-through estimate) together, with
Adam as the paper's implementation. After training each layer keeps only its ternary weight:
2-bit codes and the two scales (``engine.formats.TernaryWeight``), 16× smaller than float32.

With ``huffman``, each ternary layer is then stored as Deep Compression stores a pruned layer:
the non-zero codes and the relative positions, Huffman-coded (a sparse codebook with the
centroids 0, wp, −wn), where that is smaller; the threshold's zeros make the pruning.
"""

from ..engine.formats import HuffmanCodebookWeight, SparseCodebookWeight, TTQLatentWeight
from ..engine.train import Adam, Schedule, fit


def weighted_layers(net):
    return [layer.name for layer in net.layers if hasattr(layer, "weight_format")]


def to_latent(net, layers, threshold):
    """Put each layer's weight in the ``ttq_latent`` format (TTQ's starting point)."""
    for name in layers:
        layer = net.layer(name)
        layer.set_weight_format(TTQLatentWeight.from_dense(layer.dense_weight(),
                                                           threshold=threshold, at=layer.at))


def to_ternary(net, layers):
    """Keep only each trained layer's ternary weight."""
    for name in layers:
        layer = net.layer(name)
        layer.set_weight_format(layer.weight_format.ternary())


def huffman_code(net, layers, gap_bits=None):
    """Store each ternary layer as a Huffman-coded sparse codebook (centroids 0, wp, −wn) where
    that is smaller than its 2-bit codes → {layer: the format kept}."""
    kept = {}
    for name in layers:
        layer = net.layer(name)
        fmt = layer.weight_format
        wp, wn = (float(v) for v in fmt.scales)
        bits = gap_bits or (4 if len(fmt.shape) == 4 else 5)
        sc = SparseCodebookWeight.from_dense(fmt.to_dense(), 2, bits, centroids=[0.0, wp, -wn],
                                             dtype=fmt.dtype, at=layer.at)
        coded = HuffmanCodebookWeight.from_sparse_codebook(sc, at=layer.at)
        if coded.stored_bytes() < fmt.stored_bytes():
            layer.set_weight_format(coded)
        kept[name] = layer.weight_format.kind
    return kept


def ttq(net, x, y, *, layers=None, threshold=0.05, epochs=2, lr=2e-4, batch_size=64,
        weight_decay=0.0, huffman=False, seed=0, progress=True, stages=None):
    """Ternarize ``net`` in place by TTQ on (x, y) (see the module docstring).

    layers : default every Conv2d and Linear (the paper keeps the first and last layers in
        full precision on ImageNet; every layer here, for 2 bits per weight throughout).
    stages : a ``methods.Stages`` to record each stage in, or None.
    """
    layers = weighted_layers(net) if layers is None else list(layers)
    to_latent(net, layers, threshold)
    if stages:
        stages.record("ternarized (no training)", net)
    steps = len(x) // batch_size
    if epochs > 0:
        fit(net, x, y, epochs=epochs, batch_size=batch_size, optimizer=Adam(weight_decay=weight_decay),
            schedule=Schedule("cosine", lr, total=epochs * steps), seed=seed, progress=progress,
            log=None)
    to_ternary(net, layers)
    if stages:
        stages.record(f"TTQ {epochs} epoch(s)", net)
    if huffman:
        huffman_code(net, layers)
        if stages:
            stages.record("huffman", net)
    return net
