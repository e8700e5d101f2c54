"""Layer sensitivity to pruning (Han, Pool, Tran & Dally 2015, §4 and Figure 5): the accuracy of
the net with one layer pruned to a sparsity, every other layer as it is, without retraining.

Layers whose accuracy holds up at high sparsity can be pruned harder; the curves are how Deep
Compression chose its per-layer rates. Choose them on held-out training images, not on the test
set the compressed model is later judged on (the command line holds out the last training
images by default).

    result = sensitivity(net, x_val, y_val)
    print(format_sensitivity(result))
    suggest_kept(result, max_drop=0.01)   # {layer: share kept at the highest safe sparsity}
"""

import csv
import io

import numpy as np

from ..progress import progress_bar
from .prune import prune_layer

SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)


def prunable_layers(net):
    """Names of the layers with a weight (Conv2d, Linear), in order."""
    return [layer.name for layer in net.layers if hasattr(layer, "weight_format")]


def sensitivity(net, x, y, *, layers=None, sparsities=SPARSITIES, batch_size=256,
                progress=False):
    """Accuracy on (x, y) with each layer in ``layers`` (default: every layer with a weight)
    pruned on its own to each sparsity (fraction of its weights removed, by magnitude).

    → {"baseline": accuracy of ``net`` as given, "sparsities": [...], "layers": [...],
       "rows": [{"layer", "sparsity", "kept", "accuracy", "drop"}, ...]}

    ``net`` is left as it was: each layer gets its own weight format back after its trials.
    """
    layers = prunable_layers(net) if layers is None else list(layers)
    if not layers:
        raise ValueError("sensitivity: the net has no layer with a weight to prune")
    sparsities = [float(s) for s in sparsities]
    if not sparsities or not all(0.0 <= s <= 1.0 for s in sparsities):
        raise ValueError(f"sensitivity: sparsities must be a non-empty list in [0, 1], "
                         f"got {sparsities}")
    known = prunable_layers(net)
    for name in layers:
        if name not in known:
            raise ValueError(f"sensitivity: {net.name} has no layer {name!r} with a weight to "
                             f"prune; those with one: {known}")
    baseline = net.accuracy(x, y, batch_size=batch_size)
    trials = progress_bar([(name, s) for name in layers for s in sparsities], enabled=progress,
                          desc="sensitivity", unit="trial")
    rows = []
    for name, s in trials:
        layer = net.layer(name)
        original = layer.weight_format
        try:
            kept = prune_layer(layer, sparsity=s)
            accuracy = net.accuracy(x, y, batch_size=batch_size)
        finally:
            layer.set_weight_format(original)
        rows.append({"layer": name, "sparsity": s, "kept": kept, "accuracy": accuracy,
                     "drop": baseline - accuracy})
    return {"baseline": baseline, "sparsities": sparsities, "layers": layers, "rows": rows}


def suggest_kept(result, max_drop):
    """{layer: share of weights kept at the highest tried sparsity whose accuracy drop is at
    most ``max_drop``} (1.0 where even the lowest sparsity costs more)."""
    out = {}
    for name in result["layers"]:
        ok = [r for r in result["rows"] if r["layer"] == name and r["drop"] <= max_drop]
        out[name] = min((r["kept"] for r in ok), default=1.0)
    return out


def format_sensitivity(result):
    """A text table: one row per layer, one column per sparsity, test accuracy in %."""
    sparsities = result["sparsities"]
    by = {(r["layer"], r["sparsity"]): r["accuracy"] for r in result["rows"]}
    width = max(len("layer"), *(len(n) for n in result["layers"]))
    head = f"{'layer':<{width}}" + "".join(f"  {100 * s:>6.1f}%" for s in sparsities)
    lines = [f"accuracy with one layer pruned (baseline {100 * result['baseline']:.2f}%), "
             "by sparsity:", head]
    for name in result["layers"]:
        lines.append(f"{name:<{width}}" + "".join(f"  {100 * by[name, s]:>6.2f}%"
                                                  for s in sparsities))
    return "\n".join(lines)


def sensitivity_csv(result):
    """The rows as CSV text (layer, sparsity, kept, accuracy, drop)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, ["layer", "sparsity", "kept", "accuracy", "drop"],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(result["rows"])
    return out.getvalue()


def plot_sensitivity(result, path):
    """Accuracy against sparsity, one line per layer, written to ``path`` (PNG, atomically).
    Needs matplotlib (the ``plot`` extra)."""
    from .. import plotting

    fig = plotting.figure("plot_sensitivity", (6, 4))
    ax = fig.add_subplot(1, 1, 1)
    for name in result["layers"]:
        rows = sorted((r for r in result["rows"] if r["layer"] == name),
                      key=lambda r: r["sparsity"])
        ax.plot([100 * r["sparsity"] for r in rows], [100 * r["accuracy"] for r in rows],
                marker="o", label=name)
    ax.axhline(100 * result["baseline"], color="grey", linestyle=":", label="unpruned")
    plotting.finish_percent_axes(ax, "weights pruned in the layer (%)", "accuracy (%)",
                                 "Sensitivity to pruning, one layer at a time, no retraining")
    return plotting.save_png(fig, path, dpi=120)


def accuracy_curve(result, layer):
    """(sparsities, accuracies) of one layer, as arrays."""
    rows = sorted((r for r in result["rows"] if r["layer"] == layer), key=lambda r: r["sparsity"])
    return (np.array([r["sparsity"] for r in rows]), np.array([r["accuracy"] for r in rows]))
