"""CROWN-IBP: linear bounds of a specification, propagated backward from the logits.

Zhang, Chen, Xiao, Gowal, Stanforth, Li, Boning & Hsieh, "Towards Stable and Efficient Training
of Verifiably Robust Neural Networks", ICLR 2020; the backward pass is CROWN's (Zhang, Weng,
Chen, Hsieh & Daniel, "Efficient Neural Network Robustness Certification with General
Activation Functions", NeurIPS 2018). The specification is the margin of the true class against
each other class, C z with rows e_y − e_k (k ≠ y); the net is robust at x if every row's lower
bound over the input box is > 0.

IBP (``ibp.interval_forward``) gives every blob a box. Then a coefficient matrix Λ (one row per
example and specification row, M = N·S rows) starts at the logits, Λ = C, and walks the layers
backward, collecting a constant c:

    affine layer h' = A h + b       c += Λ·b,  Λ ← Λ A   (the layer's input-gradient kernel)
    ReLU, input box [l, u]          relaxed between two lines: a_lo·h ≤ relu(h) ≤ a_up·h + b_up,
                                    a_up = u / (u − l), b_up = −u·l / (u − l) where l < 0 < u;
                                    a_lo = 1 if u > −l else 0 (CROWN-IBP's adaptive choice);
                                    c += Λ⁻·b_up,  Λ ← Λ⁺ a_lo + Λ⁻ a_up
    MaxPool2d, input box [l, u]     y ≥ x_j* (j* the input of largest lower bound); y ≤ x_j* if
                                    it dominates (l_j* ≥ u_i for every other input i), else
                                    y ≤ max_i u_i (a constant); as ERAN's DeepPoly
    any other layer of ``ibp``      cut: c += Λ⁺·l' + Λ⁻·u' with the layer's output box [l', u']
    the input box [x_l, x_u]        bound = c + Λ⁺·x_l + Λ⁻·x_u

Λ⁺ = max(Λ, 0), Λ⁻ = min(Λ, 0). With ``mode="ibp"`` every nonlinear layer is cut: the bound is
IBP's with the affine layers above the last nonlinearity folded into the specification (Gowal et
al.'s elision of the last layer), which is at least as tight as the logit boxes' l_y − u_k.

``LinearBoundTape.backward`` is the reverse-mode derivative of the bound: gradients with respect
to every parameter (the Λ·A steps' weight gradients are the layers' own weight-gradient kernels
with dy = Λ and x = the adjoint of Λ A) and to the IBP boxes the relaxations used, which
``IntervalTape.backward`` then takes back to the parameters. CROWN-IBP training mixes the two
bounds, β·IBP + (1 − β)·CROWN-IBP (``objective.IBPObjective``).

Not guaranteed: that CROWN-IBP is tighter than IBP (it usually is on naturally trained nets; on
IBP-trained ones IBP's boxes can be tighter, as Zhang et al. report) — ``margin_bounds``
returns each as computed; soundness under floating-point rounding (see ``ibp``).
"""

import numpy as np
from numba import njit, prange

from ..engine import conv, linear
from ..engine._jit import JIT_PARALLEL
from ..engine.layers import (AvgPool2d, BatchNorm, Concat, Context, Conv2d, Dropout,
                             EltwiseSum, Flatten, GlobalAvgPool2d, Linear, MaxPool2d, Pad2d,
                             Permute, Preprocess, ReLU, Reshape, Scale)
from ..engine.pool import max_pool2d_backward_nchw, max_pool2d_nchw
from .ibp import channel_coefficients, channel_param_grads, input_box, interval_forward

MODES = ("ibp", "crown")


def margin_spec(y, num_classes, dtype=np.float64):
    """The specification rows e_y − e_k for every k ≠ y → C (N, K − 1, K), and the classes k
    of its rows (N, K − 1)."""
    y = np.asarray(y, dtype=np.int64)
    n, k = len(y), num_classes
    others = np.array([[c for c in range(k) if c != label] for label in y],
                      dtype=np.int64).reshape(n, k - 1)
    spec = np.zeros((n, k - 1, k), dtype=dtype)
    rows = np.arange(n)[:, None]
    spec[rows, np.arange(k - 1)[None, :], y[:, None]] = 1.0
    spec[rows, np.arange(k - 1)[None, :], others] = -1.0
    return spec, others


def _rows(a, s):
    """(N, …) per-example array → (N, 1, …) to broadcast over S specification rows."""
    return a[:, None]


def _split(lam, s):
    """(M, …) rows → (N, S, …)."""
    return lam.reshape((-1, s) + lam.shape[1:])


def _g(g, ndim):
    """(M,) → (M, 1, …) of rank ndim."""
    return g.reshape((-1,) + (1,) * (ndim - 1))


def _add(d, key, value):
    d[key] = value if key not in d else d[key] + value


class _Preprocess:
    """A model's preprocessing, y[:, c] = a_c · x[:, order[c]] + b_c: Λ_in[:, order[c]] ←
    a_c · Λ[:, c], c += Σ b·Λ; nothing trains."""

    def back(self, layer, lams, bt):
        lam = lams[0]
        shape = (1, -1) + (1,) * (lam.ndim - 2)
        a = np.asarray(layer.scale, lam.dtype).reshape(shape)
        lam_in = np.empty_like(lam)
        lam_in[:, layer.order] = lam * a
        axes = tuple(range(2, lam.ndim))
        const = (lam.sum(axis=axes) if axes else lam) @ np.asarray(layer.shift, lam.dtype)
        return [lam_in], const, lam

    def reverse(self, layer, bars, saved, g, bt, grads):
        lam, bar = saved, bars[0]
        shape = (1, -1) + (1,) * (lam.ndim - 2)
        a = np.asarray(layer.scale, lam.dtype).reshape(shape)
        b = np.asarray(layer.shift, lam.dtype).reshape(shape)
        out = bar[:, layer.order] * a + _g(g, lam.ndim) * b
        return [np.ascontiguousarray(out, dtype=lam.dtype)]


def _add_grads(grads, new):
    for k, g in new.items():
        _add(grads, k, g)


# ---------------------------------------------------------------------------------------------
# Rules: back(layer, lams, bt) → (input lams, constant (M,) or None, saved);
# reverse(layer, adjoints of the input lams, saved, g, bt, grads) → adjoints of the output lams


class _Weighted:
    """Conv2d and Linear: Λ ← Λ W by the input-gradient kernel of the weight format."""

    def back(self, layer, lams, bt):
        lam = lams[0]
        fmt = layer.weight_format
        bias = layer.params.get("bias")
        if isinstance(layer, Conv2d):
            lam_in = conv.conv2d_backward_format(lam, None, fmt, layer.geom,
                                                 need_input=True, need_weight=False)[0]
            const = lam.sum(axis=(2, 3)) @ bias if bias is not None else None
        else:
            lam_in = linear.linear_backward_format(lam, None, fmt, need_input=True,
                                                   need_weight=False)[0]
            lam_in = lam_in.reshape((len(lam),) + layer.in_shapes[0])
            const = lam @ bias if bias is not None else None
        return [lam_in], const, lam

    def reverse(self, layer, bars, saved, g, bt, grads):
        lam, bar = saved, bars[0]
        fmt = layer.weight_format
        bias = layer.params.get("bias")
        if isinstance(layer, Conv2d):
            out = conv.conv2d_forward_format(bar, fmt, None, layer.geom)
            _, wgrads, _ = conv.conv2d_backward_format(lam, bar, fmt, layer.geom,
                                                       need_input=False, need_weight=True)
            if bias is not None:
                out += _g(g, 4) * bias[None, :, None, None]
                wgrads["bias"] = (g[:, None] * lam.sum(axis=(2, 3))).sum(axis=0)
        else:
            flat = bar.reshape(len(bar), -1)
            out = linear.linear_forward_format(flat, fmt, None)
            _, wgrads, _ = linear.linear_backward_format(lam, flat, fmt, need_input=False,
                                                         need_weight=True)
            if bias is not None:
                out += g[:, None] * bias[None, :]
                wgrads["bias"] = (g[:, None] * lam).sum(axis=0)
        _add_grads(grads, wgrads)
        return [out]


class _ChannelAffine:
    """BatchNorm (eval) and Scale: Λ ← a·Λ per channel, c += Σ b·Λ."""

    def back(self, layer, lams, bt):
        lam = lams[0]
        a, b = channel_coefficients(layer)
        axes = tuple(range(2, lam.ndim))
        shape = (1, -1) + (1,) * (lam.ndim - 2)
        lam_in = lam * a.reshape(shape).astype(lam.dtype)
        const = (lam.sum(axis=axes) if axes else lam) @ b.astype(lam.dtype)
        return [lam_in], const, lam

    def reverse(self, layer, bars, saved, g, bt, grads):
        lam, bar = saved, bars[0]
        a, b = channel_coefficients(layer)
        shape = (1, -1) + (1,) * (lam.ndim - 2)
        axes = (0,) + tuple(range(2, lam.ndim))
        out = bar * a.reshape(shape).astype(lam.dtype) + _g(g, lam.ndim) * b.reshape(shape)
        da = (lam * bar).sum(axis=axes)
        db = (_g(g, lam.ndim) * lam).sum(axis=axes)
        _add_grads(grads, channel_param_grads(layer, da.astype(lam.dtype), db.astype(lam.dtype)))
        return [out.astype(lam.dtype, copy=False)]


class _LinearFree:
    """Linear layers without parameters: Λ ← the layer's backward of Λ; adjoints go forward
    through the layer (no constant: these map 0 to 0)."""

    def back(self, layer, lams, bt):
        if isinstance(layer, Dropout):  # eval: the identity
            return [lams[0]], None, None
        lams_in = layer.backward([np.ascontiguousarray(lam) for lam in lams],
                                 Context(input_grad=True))
        return [np.ascontiguousarray(lam) for lam in lams_in], None, None

    def reverse(self, layer, bars, saved, g, bt, grads):
        if isinstance(layer, Dropout):
            return [bars[0]]
        return layer.forward([np.ascontiguousarray(b) for b in bars], Context(train=False))


class _ReLU:
    """CROWN's relaxation of (leaky) ReLU between two lines, from the IBP box of its input."""

    @staticmethod
    def relaxation(lo, hi, slope):
        """(a_lo, a_up, b_up, unstable) per element (see the module docstring; with a negative
        slope s the lines are a_up = (u − s·l)/(u − l), b_up = l·(s − a_up), a_lo ∈ {s, 1})."""
        t = lo.dtype.type
        active, inactive = lo >= 0, hi <= 0
        unstable = ~active & ~inactive
        width = np.where(unstable, hi - lo, t(1))
        a_up = np.where(active, t(1), np.where(inactive, t(slope), (hi - slope * lo) / width))
        b_up = np.where(unstable, lo * (slope - a_up), t(0))
        a_lo = np.where(active | (unstable & (hi > -lo)), t(1), t(slope))
        return a_lo.astype(lo.dtype), a_up.astype(lo.dtype), b_up.astype(lo.dtype), unstable

    def back(self, layer, lams, bt):
        lo, hi = bt.tape.boxes[bt.in_ids[0]]
        a_lo, a_up, b_up, unstable = self.relaxation(lo, hi, layer.negative_slope)
        lam = _split(lams[0], bt.s)
        pos = lam >= 0
        lam_in = np.where(pos, _rows(a_lo, bt.s), _rows(a_up, bt.s)) * lam
        const = np.where(pos, 0, lam * _rows(b_up, bt.s)).reshape(len(lams[0]), -1).sum(axis=1)
        return [lam_in.reshape(lams[0].shape)], const, (lam, a_lo, a_up, b_up, unstable)

    def reverse(self, layer, bars, saved, g, bt, grads):
        lam, a_lo, a_up, b_up, unstable = saved
        s = bt.s
        bar = _split(bars[0], s)
        gs = g.reshape((-1, s) + (1,) * (lam.ndim - 2))
        neg = lam < 0
        out = np.where(neg, _rows(a_up, s), _rows(a_lo, s)) * bar \
            + np.where(neg, gs * _rows(b_up, s), 0)
        da = np.where(neg, lam * bar, 0).sum(axis=1)
        db = np.where(neg, gs * lam, 0).sum(axis=1)
        lo, hi = bt.tape.boxes[bt.in_ids[0]]
        sl = lo.dtype.type(layer.negative_slope)
        width2 = np.where(unstable, (hi - lo) ** 2, 1)
        da_dl = hi * (1 - sl) / width2
        da_du = lo * (sl - 1) / width2
        dl = np.where(unstable, da * da_dl + db * ((sl - a_up) - lo * da_dl), 0)
        du = np.where(unstable, da * da_du + db * (-lo * da_du), 0)
        bt.seed(bt.in_ids[0], dl.astype(lo.dtype), du.astype(lo.dtype))
        return [out.reshape(bars[0].shape).astype(lam.dtype, copy=False)]


@njit(**JIT_PARALLEL)
def max_excluding(x, skip, kh, kw, sh, sw, ph, pw, y):
    # x: (N, C, H, W); skip: (N, C, oh, ow) flat index iy·W + ix of one cell of each window
    # y: (N, C, oh, ow) ← the largest x over the window without that cell (−inf if none)
    N, C, H, W = x.shape
    oh, ow = y.shape[2], y.shape[3]
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        plane = x[n, c]
        for oy in range(oh):
            y0 = max(oy * sh - ph, 0)
            y1 = min(oy * sh - ph + kh, H)
            for ox in range(ow):
                x0 = max(ox * sw - pw, 0)
                x1 = min(ox * sw - pw + kw, W)
                k = skip[n, c, oy, ox]
                best = -np.inf
                for iy in range(y0, y1):
                    for ix in range(x0, x1):
                        if iy * W + ix != k and plane[iy, ix] > best:
                            best = plane[iy, ix]
                y[n, c, oy, ox] = best


class _MaxPool:
    """Max pooling: below by its input of largest lower bound; above by that input where it
    dominates its window, else by the window's largest upper bound."""

    @staticmethod
    def relaxation(layer, lo, hi):
        """(j*, dominated, U, argmax of the upper bounds), each (N, C, oh, ow)."""
        args = layer.kernel + layer.stride + layer.padding
        shape = (len(lo),) + layer.out_shapes[0]
        lmax = np.empty(shape, lo.dtype)
        jstar = np.empty(shape, np.int64)
        max_pool2d_nchw(lo, *args, lmax, jstar)
        umax = np.empty(shape, lo.dtype)
        uarg = np.empty(shape, np.int64)
        max_pool2d_nchw(hi, *args, umax, uarg)
        others = np.empty(shape, lo.dtype)
        max_excluding(hi, jstar, *args, others)
        return jstar, lmax >= others, umax, uarg

    def back(self, layer, lams, bt):
        lo, hi = bt.tape.boxes[bt.in_ids[0]]
        jstar, dom, umax, uarg = self.relaxation(layer, lo, hi)
        s = bt.s
        lam = _split(lams[0], s)
        routed = (lam >= 0) | _rows(dom, s)
        lam_in = np.zeros((len(lams[0]),) + layer.in_shapes[0], lam.dtype)
        max_pool2d_backward_nchw(np.ascontiguousarray(np.where(routed, lam, 0).reshape(
            lams[0].shape)), np.repeat(jstar, s, axis=0), lam_in)
        const = np.where(routed, 0, lam * _rows(umax, s)).reshape(len(lams[0]), -1).sum(axis=1)
        return [lam_in], const, (lam, routed, jstar, umax, uarg)

    def reverse(self, layer, bars, saved, g, bt, grads):
        lam, routed, jstar, umax, uarg = saved
        s = bt.s
        bar = bars[0]
        m, c = bar.shape[:2]
        idx = np.repeat(jstar, s, axis=0).reshape(m, c, -1)
        gathered = np.take_along_axis(bar.reshape(m, c, -1), idx, axis=2).reshape(
            (-1, s) + jstar.shape[1:])
        gs = g.reshape((-1, s) + (1,) * (lam.ndim - 2))
        out = np.where(routed, gathered, gs * _rows(umax, s))
        dumax = np.where(routed, 0, gs * lam).sum(axis=1)
        lo, _ = bt.tape.boxes[bt.in_ids[0]]
        du = np.zeros_like(lo)
        max_pool2d_backward_nchw(np.ascontiguousarray(dumax, dtype=lo.dtype), uarg, du)
        bt.seed(bt.in_ids[0], None, du)
        return [out.reshape(bar.shape[:1] + jstar.shape[1:]).astype(lam.dtype, copy=False)]


class _Cut:
    """Concretise Λ on the layer's output box (IBP there); nothing propagates further."""

    def back(self, layer, lams, bt):
        const = 0
        for o, lam in zip(bt.out_ids, lams):
            if lam is None:
                continue
            lo, hi = bt.tape.boxes[o]
            lam_s = _split(lam, bt.s)
            const = const + (np.maximum(lam_s, 0) * _rows(lo, bt.s) + np.minimum(lam_s, 0)
                             * _rows(hi, bt.s)).reshape(len(lam), -1).sum(axis=1)
        return [None] * len(layer.in_shapes), const, lams

    def reverse(self, layer, bars, saved, g, bt, grads):
        outs = []
        for o, lam in zip(bt.out_ids, saved):
            if lam is None:
                outs.append(None)
                continue
            lo, hi = bt.tape.boxes[o]
            lam_s = _split(lam, bt.s)
            gs = g.reshape((-1, bt.s) + (1,) * (lam_s.ndim - 2))
            outs.append(np.where(lam_s >= 0, _rows(lo, bt.s), _rows(hi, bt.s)) * gs)
            bt.seed(o, (gs * np.maximum(lam_s, 0)).sum(axis=1),
                    (gs * np.minimum(lam_s, 0)).sum(axis=1))
            outs[-1] = outs[-1].reshape(lam.shape).astype(lam.dtype, copy=False)
        return outs


_CUT = _Cut()
CROWN_RULES = {Conv2d: _Weighted(), Linear: _Weighted(), BatchNorm: _ChannelAffine(),
               Scale: _ChannelAffine(), Preprocess: _Preprocess(), ReLU: _ReLU(),
               MaxPool2d: _MaxPool(),
               **{cls: _LinearFree() for cls in (AvgPool2d, GlobalAvgPool2d, Flatten, Reshape,
                                                  Permute, Pad2d, Concat, EltwiseSum,
                                                  Dropout)}}
_NONLINEAR = (_ReLU, _MaxPool)


def crown_rule(layer, mode):
    """The backward rule of ``layer``: its CROWN rule, or the cut (its IBP box) for layers
    without one and, in ``mode="ibp"``, for every nonlinear layer."""
    rule = CROWN_RULES.get(type(layer))
    if rule is None or (mode == "ibp" and isinstance(rule, _NONLINEAR)):
        return _CUT
    return rule


# ---------------------------------------------------------------------------------------------


class _Step:
    """What a rule sees of its step: the tape, S, the step's blob ids, and the seed sink."""

    def __init__(self, tape, s, in_ids, out_ids, seeds):
        self.tape, self.s, self.in_ids, self.out_ids, self._seeds = tape, s, in_ids, out_ids, seeds

    def seed(self, blob, dl, du):
        """Add gradients with respect to a blob's IBP box (either may be None)."""
        lo, hi = self.tape.boxes[blob]
        old = self._seeds.get(blob, (np.zeros_like(lo), np.zeros_like(hi)))
        self._seeds[blob] = (old[0] + (0 if dl is None else dl), old[1] + (0 if du is None else du))


class LinearBoundTape:
    """One backward pass of ``linear_bounds``: ``bounds`` (N, S) and what ``backward`` needs."""

    def __init__(self, tape, spec, mode):
        self.tape, self.mode = tape, mode
        self.n, self.s = spec.shape[:2]
        self.records = []
        self.input_lam = None
        self.bounds = None
        self._run(np.asarray(spec, dtype=tape.net.dtype))

    def _run(self, spec):
        net, tape = self.tape.net, self.tape
        m = self.n * self.s
        lams = {net.logits_id: spec.reshape((m,) + net.blob_shape(net.logits_id))}
        const = np.zeros(m, dtype=net.dtype)
        for layer, in_ids, out_ids, _, _ in reversed(tape.steps):
            outs = [lams.pop(o, None) for o in out_ids]
            if all(lam is None for lam in outs):
                continue
            rule = crown_rule(layer, self.mode)
            if not isinstance(rule, _Cut):
                outs = [np.zeros((m,) + net.blob_shape(o), net.dtype) if lam is None else lam
                        for o, lam in zip(out_ids, outs)]
            bt = _Step(tape, self.s, in_ids, out_ids, None)
            lams_in, c, saved = rule.back(layer, outs, bt)
            if c is not None:
                const += np.asarray(c, dtype=net.dtype)
            for i, lam in zip(in_ids, lams_in):
                if lam is not None:
                    _add(lams, i, lam)
            self.records.append((layer, rule, in_ids, out_ids, saved))
        lam = lams.pop(net.input_name, None)
        if lam is not None:
            lo, hi = tape.boxes[net.input_name]
            lam_s = _split(lam, self.s)
            const += (np.maximum(lam_s, 0) * _rows(lo, self.s) + np.minimum(lam_s, 0)
                      * _rows(hi, self.s)).reshape(m, -1).sum(axis=1)
            self.input_lam = lam
        self.bounds = const.reshape(self.n, self.s)

    def backward(self, dbounds):
        """Reverse-mode derivative of a loss with gradient ``dbounds`` (N, S) with respect to
        ``bounds`` → (param grads {layer name: {param: gradient}}, seeds {blob id: (dl, du)}:
        the gradients with respect to the IBP boxes, for ``IntervalTape.backward``)."""
        net, tape = self.tape.net, self.tape
        g = np.ascontiguousarray(dbounds, dtype=net.dtype).reshape(-1)
        bars, seeds, grads = {}, {}, {}
        if self.input_lam is not None:
            lo, hi = tape.boxes[net.input_name]
            lam_s = _split(self.input_lam, self.s)
            gs = g.reshape((-1, self.s) + (1,) * (lam_s.ndim - 2))
            bars[net.input_name] = (np.where(lam_s >= 0, _rows(lo, self.s), _rows(hi, self.s))
                                    * gs).reshape(self.input_lam.shape)
        for layer, rule, in_ids, out_ids, saved in reversed(self.records):
            bt = _Step(tape, self.s, in_ids, out_ids, seeds)
            ins = [bars.get(i) for i in in_ids]  # (a blob may feed several layers)
            ins = [np.zeros((len(g),) + net.blob_shape(i), net.dtype) if b is None else b
                   for i, b in zip(in_ids, ins)]
            outs = rule.reverse(layer, ins, saved, g, bt, grads.setdefault(layer.name, {}))
            for o, b in zip(out_ids, outs):
                if b is not None:
                    _add(bars, o, b)
        return {k: v for k, v in grads.items() if v}, seeds


def linear_bounds(tape, spec, mode="crown"):
    """Lower bounds of spec·logits over the input box of ``tape`` (an ``IntervalTape``) →
    ``LinearBoundTape`` (``.bounds`` (N, S)). ``spec`` (N, S, K): rows of coefficients on the
    logits (``margin_spec``). ``mode``: "crown" (CROWN-IBP) or "ibp" (IBP with the top affine
    layers folded into the specification)."""
    if mode not in MODES:
        raise ValueError(f"linear_bounds: mode must be one of {MODES}, got {mode!r}")
    spec = np.asarray(spec)
    n = len(tape.boxes[tape.net.input_name][0])
    if spec.ndim != 3 or spec.shape[0] != n or spec.shape[2] != tape.net.num_classes:
        raise ValueError(f"linear_bounds: spec must be (N={n}, S, K={tape.net.num_classes}), "
                         f"got {spec.shape}")
    return LinearBoundTape(tape, spec, mode)


METHODS = ("ibp", "crown-ibp")


def margin_bounds(net, x, y, eps, *, method="crown-ibp", clip=(0.0, 1.0), batch_size=64):
    """Lower bounds of z_y − z_k (k ≠ y) over the L∞ ball of radius ``eps`` around each x,
    inside ``clip`` → (bounds (N, K − 1), classes k of the columns (N, K − 1)).

    ``method``: "ibp" (interval bounds, the top affine layers folded into the margins) or
    "crown-ibp". The net is verified robust at x when every bound is > 0. Computed in the
    net's dtype, ``batch_size`` examples at a time (CROWN-IBP holds K − 1 coefficient rows
    per example at every layer)."""
    if method not in METHODS:
        raise ValueError(f"margin_bounds: method must be one of {METHODS}, got {method!r}")
    mode = "ibp" if method == "ibp" else "crown"
    x = np.asarray(x, dtype=net.dtype)
    y = np.asarray(y, dtype=np.int64)
    k = net.num_classes
    bounds = np.empty((len(x), k - 1), dtype=net.dtype)
    classes = np.empty((len(x), k - 1), dtype=np.int64)
    for s in range(0, len(x), batch_size):
        lo, hi = input_box(x[s:s + batch_size], eps, clip)
        spec, others = margin_spec(y[s:s + batch_size], k, net.dtype)
        tape = interval_forward(net, lo, hi)
        bounds[s:s + batch_size] = linear_bounds(tape, spec, mode).bounds
        classes[s:s + batch_size] = others
    return bounds, classes


__all__ = ["margin_spec", "linear_bounds", "margin_bounds", "LinearBoundTape", "crown_rule",
           "CROWN_RULES", "MODES", "METHODS", "max_excluding"]
