"""Optimal Brain Damage (LeCun, Denker & Solla, "Optimal Brain Damage", NIPS 1989): prune the
weights whose removal raises the training loss least by a second-order estimate.

With the loss expanded to second order around a minimum (gradient ≈ 0) and the Hessian taken
diagonal, deleting weight k costs its saliency

    s_k = ½ · h_kk · w_k²                                                  (paper, eq. 6)

The paper computes h_kk with the Levenberg–Marquardt approximation: the second derivative of
the loss through the net without the terms in f'' (eq. 8), i.e. the diagonal of the
Gauss–Newton matrix. For softmax + cross-entropy on the logits z, per example,

    H ≈ (1/N) Σ_n J_nᵀ A_n J_n,    A_n = diag(p_n) − p_n p_nᵀ,   J_n = ∂z_n/∂w

and A_n = S_n S_nᵀ with columns s_c = √p_c · (e_c − p_n), so

    h_kk = (1/N) Σ_n Σ_c ( ∂(s_c · z_n) / ∂w_k )²

— per-example squares of back-propagated quantities: one backward pass per (example, class)
column with the logit gradient s_c, and the square of each pass's own weight gradient
(``mode="exact"``, K passes per example). ``mode="sampled"`` draws one class c ~ p_n per
example and back-propagates v = e_c − p_n instead: E_c[v vᵀ] = A_n, so the estimate is unbiased
(the Fisher's Monte-Carlo form), one pass per example. Both are exact where the paper is: they
drop only the f'' terms; its recursion (eq. 7) also drops the couplings between units of a
layer, which these keep. For nets piecewise linear in each single weight (ReLU, max pooling,
no batch statistics) the f'' terms vanish on the diagonal and h_kk is the true Hessian
diagonal almost everywhere (the tests check it against finite differences of the gradient).

Per-example weight gradients: FC layers as (δ²)ᵀ(x²), convolutions through an im2col of each
example; the output gradients δ come from ``Net.backward``'s ``on_layer`` hook.
"""

import time
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..engine import Conv2d, Linear
from ..engine.formats import CSRWeight
from .prune import schedule

MODES = ("exact", "sampled")


def _softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _logit_rows(p, mode, rng):
    """(example index per row, logit gradient per row) whose outer products sum to A_n."""
    n, k = p.shape
    if mode == "exact":
        # s_c = √p_c (e_c − p): K rows per example.
        rows = np.repeat(np.arange(n), k)
        v = -p[rows] * np.sqrt(p.reshape(-1))[:, None]
        v[np.arange(n * k), np.tile(np.arange(k), n)] += np.sqrt(p.reshape(-1))
        return rows, v
    # One class c ~ p per example: v = e_c − p, E[v vᵀ] = diag(p) − p pᵀ.
    c = (rng.random((n, 1)) > np.cumsum(p, axis=1)).sum(axis=1).clip(0, k - 1)
    v = -p.copy()
    v[np.arange(n), c] += 1.0
    return np.arange(n), v


def _conv_columns(x, layer):
    """im2col of each example: x (R, C, H, W) → (R, groups, Cg·kh·kw, OH·OW)."""
    g = layer.geom
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = g.kernel, g.stride, g.padding, g.dilation
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    win = win[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :g.out_height, :g.out_width]
    R, G = x.shape[0], g.groups
    cols = win.transpose(0, 1, 4, 5, 2, 3)  # (R, C, kh, kw, OH, OW)
    return cols.reshape(R, G, (g.channels // G) * kh * kw, g.out_height * g.out_width)


def squared_example_grads(layer, x, dy):
    """Σ_r (dL_r/dW)² for one Conv2d/Linear layer: its inputs ``x`` (R, …) and output
    gradients ``dy`` (R, …) row by row → an array of the weight's shape (float64)."""
    x = np.asarray(x, dtype=np.float64)
    dy = np.asarray(dy, dtype=np.float64)
    R = len(x)
    if isinstance(layer, Linear):
        x2 = x.reshape(R, -1) ** 2
        return (dy.reshape(R, -1) ** 2).T @ x2
    g = layer.geom
    G = g.groups
    cols = _conv_columns(x, layer)
    d = dy.reshape(R, G, g.out_channels // G, -1)
    per_example = d @ cols.transpose(0, 1, 3, 2)  # (R, G, O/G, Cg·kh·kw)
    return (per_example ** 2).sum(axis=0).reshape(g.weight_shape)


def hessian_diagonal(net, x, *, layers=None, mode="exact", batch_size=32, seed=0):
    """Diagonal of the Gauss–Newton matrix of the mean cross-entropy over ``x`` w.r.t. each
    weight (see the module) → {layer name: h (weight shape, float64)}.

    ``layers``: names of Conv2d/Linear layers (default: all). ``mode``: "exact" (K backward
    rows per example) or "sampled" (one, unbiased). Eval mode; labels are not needed (the
    Gauss–Newton matrix of cross-entropy depends on the predicted distribution only).
    """
    if mode not in MODES:
        raise ValueError(f"hessian_diagonal: mode must be one of {MODES}, got {mode!r}")
    names = layers or [l.name for l in net.layers if isinstance(l, (Conv2d, Linear))]
    targets = {name: net.layer(name) for name in names}
    for name, layer in targets.items():
        if not isinstance(layer, (Conv2d, Linear)):
            raise ValueError(f"hessian_diagonal: {layer.at} is not a convolution or fully "
                             f"connected layer")
    h = {name: np.zeros(layer.weight_shape) for name, layer in targets.items()}
    rng = np.random.default_rng(seed)
    x = np.asarray(x)
    for lo in range(0, len(x), batch_size):
        xb = np.ascontiguousarray(x[lo:lo + batch_size], dtype=net.dtype)
        p = _softmax(net.logits(xb, batch_size=len(xb)))
        rows, v = _logit_rows(p, mode, rng)
        xr = xb[rows]
        inputs = {step.layer.name: step.inputs[0] for step in net.run_layers(xr, train=False)
                  if step.layer.name in targets}
        _, logits = net.forward_for_backward(xr, train=False)

        def collect(layer, dys):
            if layer.name in targets:
                h[layer.name] += squared_example_grads(layer, inputs[layer.name], dys[0])

        net.backward(v.astype(net.dtype).reshape(logits.shape), param_grads=False,
                     input_grad=False, of="logits", on_layer=collect)
    return {name: value / max(len(x), 1) for name, value in h.items()}


def saliency(net, x, **kwargs):
    """OBD's saliencies ½ h_kk w_k² on ``x`` → {layer name: array of the weight's shape}
    (``hessian_diagonal``'s keyword arguments)."""
    h = hessian_diagonal(net, x, **kwargs)
    return {name: 0.5 * hk * net.layer(name).dense_weight().astype(np.float64) ** 2
            for name, hk in h.items()}


def saliency_mask(saliencies, weight, kept):
    """Keep the ``round(kept · size)`` weights of highest saliency among the non-zero ones
    (a pruned weight stays pruned; ties by position) → boolean mask."""
    s = np.where(np.asarray(weight) != 0, saliencies, -np.inf).reshape(-1)
    keep = min(int(round(kept * s.size)), int(np.count_nonzero(np.asarray(weight))))
    mask = np.zeros(s.size, dtype=bool)
    if keep:
        mask[np.argsort(-s, kind="stable")[:keep]] = True
    return mask.reshape(np.shape(weight))


def obd_prune(net, x, kept, **kwargs):
    """Prune the layers of ``kept`` ({name: share kept}) by OBD saliency on ``x`` in place
    (to CSR, as ``prune.prune_layer``) → {name: share kept}."""
    sal = saliency(net, x, layers=list(kept), **kwargs)
    out = {}
    for name, share in kept.items():
        layer = net.layer(name)
        w = layer.dense_weight()
        mask = saliency_mask(sal[name], w, share)
        layer.set_weight_format(CSRWeight.from_dense(np.where(mask, w, 0).astype(w.dtype),
                                                     at=layer.at))
        out[name] = float(mask.mean())
    return out


@dataclass
class OBDOptions:
    """``--method obd``'s settings: ``examples`` training images (a seeded sample) on which
    the Hessian diagonal is computed each round, and its ``mode`` ("exact": K backward rows
    per example; "sampled": one, an unbiased estimate)."""

    examples: int = 1024
    mode: str = "exact"

    def __post_init__(self):
        if self.examples < 1:
            raise ValueError(f"examples must be >= 1, got {self.examples}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")


def obd_stage(stage, options):
    """OBD as the pipeline's pruning stage: ``settings.rounds`` rounds, each pruning every
    layer of ``settings.kept`` to its share of the round (the geometric schedule of magnitude
    pruning) by saliency on a sample of the training images, then retraining
    ``retrain_epochs`` — the paper's "delete some low-saliency parameters, iterate"."""
    settings, net = stage.settings, stage.net
    pruned = {k: v for k, v in settings.kept.items() if v < 1.0}
    if not pruned:
        return
    steps = {name: schedule(kept, settings.rounds) for name, kept in pruned.items()}
    rng = np.random.default_rng([settings.seed, 17])
    for r in range(settings.rounds):
        t0 = time.perf_counter()
        sample = stage.x[rng.choice(len(stage.x), min(options.examples, len(stage.x)),
                                    replace=False)]
        obd_prune(net, sample, {name: steps[name][r] for name in pruned}, mode=options.mode,
                  seed=settings.seed + r)
        stage.train(settings.retrain_epochs, settings.lr)
        stage.record(f"obd prune+retrain {r + 1}/{settings.rounds}", time.perf_counter() - t0)
