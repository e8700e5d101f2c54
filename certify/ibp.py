"""Interval bound propagation (IBP) through a Net, forward and backward.

Gowal, Dvijotham, Stanforth, Bunel, Qin, Uesato, Arandjelovic, Mann & Kohli, "On the
Effectiveness of Interval Bound Propagation for Training Verifiably Robust Models",
arXiv:1810.12715 (2018). An input box [l, u] (every pixel of x within eps, clipped to the data
range) goes through the net layer by layer; each blob gets a box that holds every value the
blob takes for an input in the box. The rules, by layer:

    Conv2d, Linear            centre and radius: μ = (l + u)/2, r = (u − l)/2,
                              μ' = W μ + b,  r' = |W| r,  [l', u'] = [μ' − r', μ' + r']
    BatchNorm (eval), Scale   the same per channel: μ' = a μ + b,  r' = |a| r
    Preprocess                the channels reordered, then the same with its fixed a and b
    EltwiseSum                Σ_i c_i⁺ l_i + c_i⁻ u_i  (and the same with l and u swapped)
    ReLU, ReLU6, QuantizedReLU, PReLU with slopes ≥ 0, MaxPool2d, AvgPool2d, GlobalAvgPool2d,
    MedianFilter, Dropout (eval: identity), Flatten, Reshape, Permute, Pad2d, Concat, EltwiseMax
                              non-decreasing in every input: [f(l), f(u)]

|W| r runs the layer's own kernel on ``WeightFormat.magnitude()``, the weight with its stored
values replaced by their absolute values, for every format as stored (dense, CSR, codebook,
sparse codebook, Huffman): |decode(v)| = decode(|v|), so no weight is ever densified. The
non-decreasing layers run their own forward on l and u stacked into one batch of 2N.

``IntervalTape.backward`` is the reverse-mode derivative of the bounds (for IBP training):
gradients with respect to every layer's parameters, given gradients with respect to the
bounds of any blobs. The gradient of |W| r with respect to the stored values v is sign(v) times
the format's own weight gradient of r' with respect to |v|.

Not guaranteed: soundness under floating-point rounding. The boxes are sound in exact
arithmetic; computed in float32 a bound can be off by rounding (about 1e-7 of its scale per
layer), in float64 by about 1e-16. ``certify`` runs in the net's dtype; the command line uses a
float64 copy.
"""

from dataclasses import dataclass, field

import numpy as np

from ..engine import conv, linear, norm
from ..engine.layers import (AvgPool2d, BatchNorm, Concat, Context, Conv2d, Dropout,
                             EltwiseMax, EltwiseSum, Flatten, GlobalAvgPool2d, Linear,
                             MaxPool2d, MedianFilter, Pad2d, Permute, Preprocess, PReLU,
                             QuantizedReLU, ReLU, ReLU6, Reshape, Scale)


def input_box(x, eps, clip=(0.0, 1.0)):
    """The L∞ ball of radius ``eps`` around ``x``, intersected with the data range ``clip``
    → (lower, upper), arrays of x's shape and dtype."""
    x = np.asarray(x)
    lower = x - x.dtype.type(eps)
    upper = x + x.dtype.type(eps)
    if clip is not None:
        np.clip(lower, clip[0], clip[1], out=lower)
        np.clip(upper, clip[0], clip[1], out=upper)
    return lower, upper


# ---------------------------------------------------------------------------------------------
# Rules: forward(layer, boxes) → (out boxes, saved); backward(layer, dboxes, saved, grads) →
# input dboxes. A box is an (l, u) pair of arrays; ``grads`` collects {param: gradient}.


def _add_grads(grads, new):
    for k, g in new.items():
        grads[k] = g if k not in grads else grads[k] + g


class _Weighted:
    """Conv2d and Linear: centre and radius through the layer's weight format."""

    @staticmethod
    def _ops(layer):
        if isinstance(layer, Conv2d):
            geom = layer.geom
            return (lambda x, fmt, b: conv.conv2d_forward_format(x, fmt, b, geom),
                    lambda dy, x, fmt: conv.conv2d_backward_format(dy, x, fmt, geom))
        return (lambda x, fmt, b: linear.linear_forward_format(x, fmt, b),
                lambda dy, x, fmt: linear.linear_backward_format(dy, x, fmt))

    def forward(self, layer, boxes):
        lo, hi = boxes[0]
        if isinstance(layer, Linear):
            lo, hi = lo.reshape(len(lo), -1), hi.reshape(len(hi), -1)
        fwd, _ = self._ops(layer)
        mu = (lo + hi) * lo.dtype.type(0.5)
        r = (hi - lo) * lo.dtype.type(0.5)
        fmt = layer.weight_format
        magnitude = fmt.magnitude()
        mu_out = fwd(mu, fmt, layer.params.get("bias"))
        r_out = fwd(r, magnitude, None)
        return [(mu_out - r_out, mu_out + r_out)], (mu, r, magnitude)

    def backward(self, layer, dboxes, saved, grads):
        dlo, dhi = dboxes[0]
        mu, r, magnitude = saved
        _, bwd = self._ops(layer)
        fmt = layer.weight_format
        dmu, gmu, dbias = bwd(dlo + dhi, mu, fmt)
        dr, gr, _ = bwd(dhi - dlo, r, magnitude)
        through_r = fmt.magnitude_grads(gr)
        new = {k: gmu[k] + through_r[k].astype(gmu[k].dtype, copy=False) for k in gmu}
        if layer.bias:
            new["bias"] = dbias
        _add_grads(grads, new)
        half = dmu.dtype.type(0.5)
        shape = (len(dmu),) + layer.in_shapes[0]
        return [((dmu - dr).reshape(shape) * half, (dmu + dr).reshape(shape) * half)]


def channel_coefficients(layer):
    """(a, b) of a per-channel affine layer in eval mode, y = a·x + b per channel:
    BatchNorm's running statistics folded with its affine, or Scale's factor and bias."""
    if isinstance(layer, BatchNorm):
        return norm.batch_norm_coefficients(layer.buffers["mean"], layer.buffers["var"],
                                            layer.params.get("gamma"), layer.params.get("beta"),
                                            layer.eps)
    a = layer.params["weight"]
    return a, layer.params.get("bias", np.zeros_like(a))


def _per_channel(v, x):
    """(C,) → broadcastable against x (N, C, …)."""
    return v.reshape((1, -1) + (1,) * (x.ndim - 2)).astype(x.dtype, copy=False)


def channel_param_grads(layer, da, db):
    """{param: gradient} of a BatchNorm (eval) or Scale from the gradients of its (a, b)."""
    if isinstance(layer, BatchNorm):
        if not layer.affine:
            return {}
        inv_std = 1.0 / np.sqrt(layer.buffers["var"].astype(np.float64) + layer.eps)
        # a = γ · inv_std,  b = β − a · mean
        dgamma = (da - db * layer.buffers["mean"]) * inv_std
        return {"gamma": dgamma.astype(da.dtype), "beta": db}
    out = {"weight": da}
    if layer.bias:
        out["bias"] = db
    return out


class _ChannelAffine:
    """BatchNorm (eval: running statistics) and Scale: y = a·x + b per channel."""

    def forward(self, layer, boxes):
        lo, hi = boxes[0]
        a, b = channel_coefficients(layer)
        a, b = _per_channel(a, lo), _per_channel(b, lo)
        mu = (lo + hi) * lo.dtype.type(0.5)
        r = (hi - lo) * lo.dtype.type(0.5)
        mu_out = a * mu + b
        r_out = np.abs(a) * r
        return [(mu_out - r_out, mu_out + r_out)], (mu, r)

    def backward(self, layer, dboxes, saved, grads):
        dlo, dhi = dboxes[0]
        mu, r = saved
        a, _ = channel_coefficients(layer)
        dmu_out, dr_out = dlo + dhi, dhi - dlo
        axes = (0,) + tuple(range(2, mu.ndim))
        da = (dmu_out * mu).sum(axis=axes) + np.sign(a) * (dr_out * r).sum(axis=axes)
        db = dmu_out.sum(axis=axes)
        _add_grads(grads, channel_param_grads(layer, da.astype(mu.dtype), db.astype(mu.dtype)))
        ab = _per_channel(a, mu)
        dmu, dr = ab * dmu_out, np.abs(ab) * dr_out
        half = mu.dtype.type(0.5)
        return [((dmu - dr) * half, (dmu + dr) * half)]


class _Preprocess:
    """A model's preprocessing: the channels reordered, then y = a·x + b per channel with fixed
    a, b; each end of the box maps to the end its coefficient's sign says."""

    def forward(self, layer, boxes):
        lo, hi = (v[:, layer.order] for v in boxes[0])
        a = _per_channel(np.asarray(layer.scale), lo)
        b = _per_channel(np.asarray(layer.shift), lo)
        at_lo, at_hi = a * lo + b, a * hi + b
        return [(np.ascontiguousarray(np.minimum(at_lo, at_hi)),
                 np.ascontiguousarray(np.maximum(at_lo, at_hi)))], a

    def backward(self, layer, dboxes, saved, grads):
        dlo, dhi = dboxes[0]
        a = saved
        rising = a >= 0  # the output's low end is the input's low end times a, else its high end
        lo, hi = np.empty_like(dlo), np.empty_like(dhi)
        lo[:, layer.order] = np.where(rising, a * dlo, a * dhi)
        hi[:, layer.order] = np.where(rising, a * dhi, a * dlo)
        return [(lo, hi)]


class _EltwiseSum:
    """y = Σ_i c_i x_i: each input's lower or upper bound by the sign of its coefficient."""

    def forward(self, layer, boxes):
        coeffs = layer.coeffs or [1.0] * len(boxes)
        lo = sum(max(c, 0) * l + min(c, 0) * u for c, (l, u) in zip(coeffs, boxes))
        hi = sum(max(c, 0) * u + min(c, 0) * l for c, (l, u) in zip(coeffs, boxes))
        dtype = boxes[0][0].dtype
        return [(np.asarray(lo, dtype), np.asarray(hi, dtype))], None

    def backward(self, layer, dboxes, saved, grads):
        dlo, dhi = dboxes[0]
        coeffs = layer.coeffs or [1.0] * len(layer.in_shapes)
        t = dlo.dtype.type
        return [(t(max(c, 0)) * dlo + t(min(c, 0)) * dhi, t(max(c, 0)) * dhi + t(min(c, 0)) * dlo)
                for c in coeffs]


class _Monotone:
    """Layers non-decreasing in every input: the layer itself on l and u as one batch."""

    def forward(self, layer, boxes):
        if isinstance(layer, PReLU) and (layer.params["slope"] < 0).any():
            raise ValueError(f"{layer.at}: a negative slope makes PReLU decreasing; interval "
                             f"bounds here need slopes >= 0")
        n = len(boxes[0][0])
        ys = layer.forward([np.concatenate([l, u]) for l, u in boxes],
                           Context(train=False, keep=True))
        return [(y[:n], y[n:]) for y in ys], n

    def backward(self, layer, dboxes, saved, grads):
        n = saved
        ctx = Context(param_grads=bool(layer.params), input_grad=True)
        dxs = layer.backward([np.ascontiguousarray(np.concatenate([dl, du]))
                              for dl, du in dboxes], ctx)
        layer.release()
        if layer.params:
            _add_grads(grads, layer.grads)
        return [(dx[:n], dx[n:]) for dx in dxs]


_MONOTONE = (ReLU, ReLU6, QuantizedReLU, PReLU, MaxPool2d, AvgPool2d, GlobalAvgPool2d, Dropout,
             Flatten, Reshape, Permute, Pad2d, Concat, EltwiseMax, MedianFilter)
# The rule of each layer class (exact classes first, then by inheritance).
INTERVAL_RULES = {Conv2d: _Weighted(), Linear: _Weighted(), BatchNorm: _ChannelAffine(),
                  Scale: _ChannelAffine(), EltwiseSum: _EltwiseSum(), Preprocess: _Preprocess(),
                  **{cls: _Monotone() for cls in _MONOTONE}}


def interval_rule(layer):
    """The interval rule of ``layer`` (see the module docstring); ValueError if it has none."""
    rule = INTERVAL_RULES.get(type(layer))
    if rule is None:
        rule = next((r for cls, r in INTERVAL_RULES.items() if isinstance(layer, cls)), None)
    if rule is None:
        known = ", ".join(sorted({cls.__name__ for cls in INTERVAL_RULES}))
        raise ValueError(f"{layer.at}: no interval bound rule for {type(layer).__name__} "
                         f"layers; bounds propagate through {known}")
    return rule


# ---------------------------------------------------------------------------------------------
# The tape: every blob's box on the way to the logits, and the backward pass


@dataclass
class IntervalTape:
    """The boxes of one ``interval_forward`` pass: ``boxes`` {blob id: (l, u)} for every blob
    up to the logits (ids of ``Net.plan``), and what ``backward`` needs."""

    net: object
    boxes: dict
    steps: list = field(default_factory=list)  # (layer, in_ids, out_ids, rule, saved)

    @property
    def logits(self):
        """(lower, upper) of the logits, each (N, K)."""
        lo, hi = self.boxes[self.net.logits_id]
        return lo.reshape(len(lo), -1), hi.reshape(len(hi), -1)

    def backward(self, seeds):
        """Gradients of a loss with respect to the parameters, given its gradients with
        respect to blob bounds: ``seeds`` {blob id: (dl, du)} (either may be None) →
        {layer name: {param name: gradient}} (layers without parameters or without gradient
        are left out), in the formats' own trainable arrays (as ``Net.grads``)."""
        pending = {}
        for blob, (dl, du) in seeds.items():
            lo, hi = self.boxes[blob]
            pending[blob] = (np.zeros_like(lo) if dl is None else dl,
                             np.zeros_like(hi) if du is None else du)
        grads = {}
        for layer, in_ids, out_ids, rule, saved in reversed(self.steps):
            if not any(o in pending for o in out_ids):
                continue
            dboxes = []
            for o in out_ids:
                d = pending.pop(o, None)
                if d is None:
                    lo, hi = self.boxes[o]
                    d = (np.zeros_like(lo), np.zeros_like(hi))
                dboxes.append(d)
            layer_grads = grads.setdefault(layer.name, {})
            dins = rule.backward(layer, dboxes, saved, layer_grads)
            for i, (dl, du) in zip(in_ids, dins):
                if i == self.net.input_name:
                    continue
                if i in pending:
                    pl, pu = pending[i]
                    dl, du = pl + dl, pu + du
                pending[i] = (dl, du)
        return {k: v for k, v in grads.items() if v}


def interval_forward(net, lower, upper):
    """Boxes of every blob up to the logits for the input box [lower, upper] → IntervalTape.

    ``lower`` <= ``upper``, both (N, *net.input_shape). Eval semantics whatever the net's
    mode: dropout is the identity, batch norm uses its running statistics. A layer without an
    interval rule is a ValueError naming it. Layers after the logits (a final Softmax) are not
    run.
    """
    lower = np.ascontiguousarray(lower, dtype=net.dtype)
    upper = np.ascontiguousarray(upper, dtype=net.dtype)
    shape = (len(lower),) + tuple(net.input_shape)
    if lower.shape != shape or upper.shape != shape:
        raise ValueError(f"{net.name}: bounds of shapes {lower.shape} and {upper.shape} do not "
                         f"match the net's input (N,) + {tuple(net.input_shape)}")
    if not (np.isfinite(lower).all() and np.isfinite(upper).all()):
        raise ValueError(f"{net.name}: input bounds must be finite")
    if (lower > upper).any():
        raise ValueError(f"{net.name}: a lower bound exceeds its upper bound")
    tape = IntervalTape(net, {net.input_name: (lower, upper)})
    for layer, in_ids, out_ids in net.plan():
        if net.logits_id in tape.boxes:
            break
        rule = interval_rule(layer)
        outs, saved = rule.forward(layer, [tape.boxes[i] for i in in_ids])
        for o, box in zip(out_ids, outs):
            tape.boxes[o] = box
        tape.steps.append((layer, in_ids, out_ids, rule, saved))
    return tape


def logit_bounds(net, lower, upper, *, batch_size=256):
    """Interval bounds of the logits for the input box [lower, upper] → (lower, upper), each
    (N, K), computed ``batch_size`` examples at a time."""
    out_lo = np.empty((len(lower), net.num_classes), dtype=net.dtype)
    out_hi = np.empty_like(out_lo)
    for s in range(0, len(lower), batch_size):
        lo, hi = interval_forward(net, lower[s:s + batch_size], upper[s:s + batch_size]).logits
        out_lo[s:s + batch_size], out_hi[s:s + batch_size] = lo, hi
    return out_lo, out_hi


__all__ = ["input_box", "interval_forward", "logit_bounds", "IntervalTape", "interval_rule",
           "INTERVAL_RULES", "channel_coefficients", "channel_param_grads"]
