"""Deep Compression at a target compression ratio: the model file's size estimated from first
principles, and the pruning shares that give a wanted ratio.

    settings = settings_for_ratio(net, 90)          # the preset's shares scaled to reach 90×
    estimate_file_bytes(net, settings)              # what save_model should write, about

The estimate counts, per layer, what ``compress`` (compress/pipeline.py) leaves and ``save_model``
(compress/modelfile.py) writes: a pruned and quantized layer is a sparse codebook (Han et al.
2016, "Deep Compression", Section 3: b-bit codes, relative indices of ``gap_bits`` bits, a
filler entry for every gap of 2^gap_bits zeros or more, the 2^b float32 centroids); a layer
quantized but not pruned a dense codebook; a pruned unquantized layer CSR; everything else,
biases, batch norms, dense float32. Fillers are counted for a mask drawn uniformly at random:
the zeros between kept weights are then geometric, P(gap ≥ g) = (1 − k)^g for a kept share k,
so a kept weight is preceded by Σ_j≥1 (1 − k)^(j·2^gap_bits) fillers on average. Magnitude
pruning of a trained net keeps clumpier masks (e.g. whole dead inputs of a fully connected
layer), with up to ~50% more fillers than that (LeNet-5's ip1: 4,761 fillers where the random
mask has 3,040). The file's header (the zlib-compressed architecture and array table) and
fixed fields are sized by the model file itself (``modelfile.encoded_size``), without the
caller's ``meta``.

``settings_for_bytes`` hits a file size instead, to within a tolerance: what decides the size
(how many weights each layer keeps, where they sit, the codes' histogram, hence the Huffman
tables and the header) is fixed before any fine-tuning, so ``trial_file_bytes`` compresses a
copy without training (one round of magnitude pruning, k-means, the entropy coder) and counts
the bytes ``encode_model`` writes; a few such trials correct the estimate's ratio.

Huffman coding (``settings.huffman``) is ignored: it is what the trained weights' statistics
allow (on a trained LeNet-5 it saves ~10%; on an untrained one, whose surviving weights crowd
the codebook's ends, ~27%). A Huffman-coded file is therefore usually smaller than estimated, its
ratio higher than asked for; without Huffman coding the estimate is within a few percent.
"""

import math
from dataclasses import replace

import numpy as np

from ..engine import Conv2d, Linear
from .modelfile import encode_model, encoded_size, integer_dtype
from .pipeline import PRESETS, CompressionSettings, compress, preset
from .report import dense_parameter_bytes

GENERIC_BITS = 5  # code bits of the generic setting (5-bit codes, Han et al.'s FC choice)
KEPT_FLOOR = 1e-3  # the least share of a layer's weights settings_for_ratio keeps


def _int_bytes(largest):
    """Bytes per value of the integers 0..largest as the model file stores them."""
    return np.dtype(integer_dtype(0, largest)).itemsize


def expected_fillers(kept, size, gap_bits):
    """Expected filler entries of a sparse codebook keeping round(kept·size) of ``size`` weights
    in a uniformly random mask: each kept weight follows a geometric run of zeros, and a run of
    g zeros takes ⌊g / 2^gap_bits⌋ fillers (see the module docstring)."""
    nnz = round(kept * size)
    if nnz == 0 or kept >= 1:
        return 0.0
    q_span = (1.0 - kept) ** (1 << gap_bits)
    return nnz * q_span / (1.0 - q_span)


def _layer_arrays(layer, kept, bits, gap_bits):
    """{array name: (dtype string, shape, estimated stored bytes)} of one weighted layer as
    the pipeline leaves it and save_model stores it."""
    n = int(np.prod(layer.weight_shape))
    out = layer.weight_shape[0]
    arrays = {}
    if bits is not None and kept < 1:
        nnz = round(kept * n)
        entries = int(round(nnz + expected_fillers(kept, n, gap_bits)))
        for name, width in (("codes", bits), ("gaps", gap_bits)):
            nbytes = math.ceil(entries * width / 8)
            arrays[name] = ("|u1", [nbytes], nbytes)
        count = integer_dtype(0, entries)
        arrays["count"] = (count, [1], np.dtype(count).itemsize)
        arrays["centroids"] = ("<f4", [1 << bits], 4 << bits)
    elif bits is not None:
        nbytes = math.ceil(n * bits / 8)
        arrays["codes"] = ("|u1", [nbytes], nbytes)
        arrays["centroids"] = ("<f4", [1 << bits], 4 << bits)
    elif kept < 1:
        nnz = round(kept * n)
        arrays["data"] = ("<f4", [nnz], 4 * nnz)
        arrays["indices"] = ("<u2", [nnz], nnz * _int_bytes(n // out - 1))
        arrays["indptr"] = ("<u2", [out + 1], (out + 1) * _int_bytes(nnz))
    else:
        arrays["weight"] = ("<f4", list(layer.weight_shape), 4 * n)
    if layer.bias:
        arrays["bias"] = ("<f4", [out], 4 * out)
    return arrays


def _default_gap_bits(layer):
    return 4 if isinstance(layer, Conv2d) else 5


def _check_settings(net, settings):
    for table in ("kept", "bits", "gap_bits"):
        for name, value in getattr(settings, table).items():
            try:
                layer = net.layer(name)
            except KeyError:
                raise ValueError(f"{net.name}: compression settings name layer {name!r} in "
                                 f"{table}, which the net does not have") from None
            if not isinstance(layer, (Conv2d, Linear)):
                raise ValueError(f"{net.name}: {layer.at} in settings.{table} has no weight to "
                                 f"compress")
            if table == "kept" and not 0 < value <= 1:
                raise ValueError(f"{net.name}: settings.kept[{name!r}] must be in (0, 1], got "
                                 f"{value!r}")


def estimate_file_bytes(net, settings, *, meta=None):
    """Estimated size in bytes of the file ``save_model`` writes for ``net`` after
    ``compress(net, …, settings)`` (``net`` is the dense net; nothing is run). Huffman coding
    is not modelled (see the module docstring): a Huffman-coded file comes out smaller."""
    _check_settings(net, settings)
    entries, quantized = [], {}
    for layer in net.layers:
        if isinstance(layer, (Conv2d, Linear)):
            kept = settings.kept.get(layer.name, 1.0)
            bits = settings.bits.get(layer.name)
            gap = settings.gap_bits.get(layer.name, _default_gap_bits(layer))
            arrays = _layer_arrays(layer, kept, bits, gap)
            if bits is not None:
                quantized[layer.name] = ({"kind": "sparse_codebook", "code_bits": bits,
                                          "gap_bits": gap} if kept < 1 else
                                         {"kind": "codebook", "bits": bits})
            elif kept < 1:
                quantized[layer.name] = {"kind": "csr"}
        else:
            arrays = {k: ("<f4", list(v.shape), 4 * v.size)
                      for k, v in list(layer.params.items()) + list(layer.buffers.items())}
        for key, (dtype, shape, nbytes) in arrays.items():
            entries.append({"name": f"{layer.name}/{key}", "dtype": dtype, "shape": shape,
                            "nbytes": nbytes})
    spec = net.spec()
    for cfg in spec["layers"]:
        if cfg["name"] in quantized:
            cfg["weight_format"] = quantized[cfg["name"]]
    return encoded_size(spec, meta, entries)


def _base_settings(net, base):
    if isinstance(base, CompressionSettings):
        return base
    if isinstance(base, str):
        return preset(base)
    if base is not None:
        raise ValueError(f"{net.name}: base must be a preset name, CompressionSettings or None, "
                         f"got {type(base).__name__}")
    if net.name in PRESETS:
        return preset(net.name)
    return generic_settings(net)


def generic_settings(net):
    """The settings for a net without a preset: every Conv2d and Linear layer whole (kept 1),
    ``GENERIC_BITS``-bit codes, 4-bit (conv) or 5-bit (fully connected) relative indices."""
    layers = [l for l in net.layers if isinstance(l, (Conv2d, Linear))]
    if not layers:
        raise ValueError(f"{net.name}: has no Conv2d or Linear layer to compress")
    return CompressionSettings(kept={l.name: 1.0 for l in layers},
                               bits={l.name: GENERIC_BITS for l in layers},
                               gap_bits={l.name: _default_gap_bits(l) for l in layers})


def best_gap_bits(kept, size, bits):
    """The relative-index width (1..8 bits) that stores a random mask keeping ``kept`` of
    ``size`` weights with ``bits``-bit codes in the fewest bytes: (nnz + fillers)·(bits + gap)."""
    nnz = round(kept * size)
    return min(range(1, 9), key=lambda g: (nnz + expected_fillers(kept, size, g)) * (bits + g))


def _scaled(net, base, factor, adapt_gap_bits=False):
    floors = {name: max(KEPT_FLOOR, 1.0 / np.prod(net.layer(name).weight_shape))
              for name in base.kept}
    kept = {name: float(min(1.0, max(floors[name], factor * k))) for name, k in base.kept.items()}
    kept = {name: 1.0 if k > 1 - 1e-9 else k for name, k in kept.items()}  # rounding of 1/k·k
    if not adapt_gap_bits:
        return replace(base, kept=kept)
    gap_bits = dict(base.gap_bits)
    for name, k in kept.items():
        if k < 1 and name in base.bits:
            size = int(np.prod(net.layer(name).weight_shape))
            gap_bits[name] = best_gap_bits(k, size, base.bits[name])
    return replace(base, kept=kept, gap_bits=gap_bits)


def settings_for_ratio(net, ratio, *, base=None, adapt_gap_bits=False):
    """CompressionSettings whose estimated file ratio, dense float32 parameter bytes /
    ``estimate_file_bytes``, is ``ratio`` (to ~0.1%), with the largest kept shares that give it.

    ``base`` — a preset name, a CompressionSettings, or None: the preset named as the net
    (``net.name``: "lenet5", "lenet-300-100") if there is one, else every Conv2d and Linear
    layer with 5-bit codes and 4-bit (conv) or 5-bit (fully connected) relative indices. Every
    kept share of the base is multiplied by one common factor, found by bisection, and clipped
    to [max(0.001, 1/weights), 1]; code bits, index bits and the other settings are the base's.
    Index bits bound the ratio: below a share of about 2^−gap_bits, the fillers that bridge the
    runs of zeros cost more than the pruned codes save (LeNet-5 with its preset's 5-bit indices
    tops out near 87×). With ``adapt_gap_bits``, each quantized layer's index bits are instead
    the ``best_gap_bits`` for its share (Han et al. use 8 bits for conv and 5 for fully connected
    layers at their shares), which lifts that bound.

    The estimate ignores Huffman coding: with ``huffman`` on, the real file is usually smaller
    (its ratio higher) by what the codes' statistics allow. Raises ValueError if ``ratio`` is
    not reachable (the message gives the largest reachable one, or the smallest: the base's code
    bits without pruning) or is < 1.
    """
    if not (isinstance(ratio, (int, float)) and math.isfinite(ratio) and ratio >= 1):
        raise ValueError(f"{net.name}: ratio must be a finite number >= 1, got {ratio!r}")
    base = _base_settings(net, base)
    _check_settings(net, base)
    if not base.kept:
        raise ValueError(f"{net.name}: the base settings prune no layer (kept is empty); "
                         f"nothing to scale")
    dense = dense_parameter_bytes(net)

    def achieved(factor):
        return dense / estimate_file_bytes(net, _scaled(net, base, factor, adapt_gap_bits))

    # Smaller kept shares shrink the codes until the fillers bridging the longer runs of zeros
    # outgrow them: the ratio peaks at some factor. Scan for the peak, then bisect on the
    # decreasing side above it, where the shares are largest for the ratio.
    hi = 1.0 / min(base.kept.values())  # every layer whole
    grid = np.geomspace(KEPT_FLOOR * hi, hi, 121)
    ratios = [achieved(f) for f in grid]
    peak = int(np.argmax(ratios))
    if ratios[peak] < ratio:
        shares = {k: round(v, 4) for k, v in _scaled(net, base, grid[peak]).kept.items()}
        raise ValueError(f"{net.name}: a {ratio:g}× file is out of reach with these code and "
                         f"index bits (the fillers of long runs of zeros outgrow what pruning "
                         f"saves): at most {ratios[peak]:.4g}×, keeping "
                         f"{shares}"
                         + ("" if adapt_gap_bits else "; adapt_gap_bits=True widens the indices"))
    if ratios[-1] == ratio:
        return _scaled(net, base, hi, adapt_gap_bits)
    if ratios[-1] > ratio:
        raise ValueError(f"{net.name}: a {ratio:g}× file is below what quantization alone gives "
                         f"with these code bits: at least {ratios[-1]:.4g}× with no weight "
                         f"pruned (use more code bits, or fewer quantized layers)")
    lo, hi = grid[peak], grid[peak + 1]
    while ratios[peak + 1] >= ratio:  # the first grid step below the ratio brackets it
        peak += 1
        lo, hi = grid[peak], grid[peak + 1]
    for _ in range(50):  # achieved(lo) ≥ ratio > achieved(hi)
        mid = 0.5 * (lo + hi)
        if achieved(mid) >= ratio:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-6 * hi:
            break
    return _scaled(net, base, lo, adapt_gap_bits)


def trial_file_bytes(net, settings, *, meta=None):
    """The size in bytes of the model file (``encode_model(…, meta)``) of ``net`` compressed
    by ``settings`` without training: ``compress`` with one round of magnitude pruning to the
    kept shares, no retraining, k-means quantization, no centroid fine-tuning, then the
    entropy coder as the settings say. ``net`` is not modified.

    The real pipeline's file differs only by what training moves: retraining between pruning
    rounds changes which weights survive (not how many), so the fillers between them and the
    Huffman tables of their gaps; and the weights k-means sees, so the codes' histogram.
    Centroid fine-tuning moves centroids, not codes: it changes no byte count. A file without
    entropy coding (CSR, or codebooks too small for Huffman coding to pay) therefore comes out
    at the trial's size, within bytes; a Huffman-coded one larger: measured +6.9% on a LeNet-5
    trained 2 epochs on 600 digits (ip1's Huffman-coded codes +8%), with one round of pruning
    and one epoch of retraining as with four — the retrained survivors spread over the
    codebook, so their codes are less skewed than the untrained trial's. The trial's size is
    also a jumpy function of the shares (k-means' clusters move with the weights kept: a 0.15%
    change of ratio moved ip1's coded bytes by 2.7% there)."""
    trial = net.copy()
    quick = replace(settings, rounds=1, retrain_epochs=0, finetune_epochs=0,
                    pruning="magnitude", pruning_options={}, adversarial=None)
    compress(trial, None, None, quick, progress=False, log=None)
    return len(encode_model(trial, meta))


def settings_for_bytes(net, target_bytes, *, base=None, meta=None, tolerance=0.01, trials=8):
    """CompressionSettings whose trial file (``trial_file_bytes`` with ``meta``) is within
    ``tolerance`` (a share) of ``target_bytes`` → (settings, [(estimated ratio, trial bytes)
    of every trial]).

    Each trial takes ``settings_for_ratio(net, r, base=base)`` (the base's shares scaled by one
    factor) and measures its file; the next r is the last one times trial bytes / target (the
    estimate's error, mostly Huffman coding, is nearly a constant factor), kept inside the
    bracket of ratios seen too large and too small (else their geometric mean). After
    ``trials`` trials the closest is returned. Raises settings_for_ratio's ValueError when the
    first ratio, dense bytes / target, is out of the estimate's reach."""
    if not (isinstance(target_bytes, (int, float)) and math.isfinite(target_bytes)
            and target_bytes > 0):
        raise ValueError(f"{net.name}: target bytes must be a positive number, got "
                         f"{target_bytes!r}")
    ratio = dense_parameter_bytes(net) / target_bytes
    low, high = None, None  # estimated ratios whose files came out too large / too small
    best, tried = None, []
    for trial in range(trials):
        try:
            settings = settings_for_ratio(net, ratio, base=base)
        except ValueError:
            if not tried:
                raise
            # Out of the estimate's reach: the bound lies between here and the last ratio.
            high = ratio if ratio > tried[-1][0] else high
            low = ratio if ratio < tried[-1][0] else low
            ratio = math.sqrt(ratio * tried[-1][0])
            continue
        size = trial_file_bytes(net, settings, meta=meta)
        tried.append((ratio, size))
        if best is None or abs(size - target_bytes) < abs(best[1] - target_bytes):
            best = (settings, size)
        if abs(size - target_bytes) <= tolerance * target_bytes:
            break
        if size > target_bytes:
            low = ratio
        else:
            high = ratio
        step = ratio * size / target_bytes
        if (low is not None and step <= low) or (high is not None and step >= high):
            step = math.sqrt(low * high) if low is not None and high is not None else \
                (2 * ratio if high is None else ratio / 2)
        ratio = step
    return best[0], tried
