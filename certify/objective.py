"""Verified training: IBP (Gowal et al. 2018) and CROWN-IBP (Zhang et al. 2020) as a training
objective for ``engine.train.fit`` and for compression (``compress.pipeline.compress``).

Per batch, with the margin lower bounds m_k ≤ z_y − z_k (k ≠ y) over the ε-ball and the
worst-case logits they give, ẑ_y = 0 and ẑ_k = −m_k:

    L = κ · CE(z(x), y) + (1 − κ) · CE(ẑ, y),      m = β · m_IBP + (1 − β) · m_CROWN-IBP

Gowal et al. train with κ going from 1 to 0.5 while ε ramps linearly from 0 to its final value
after a warm-up at ε = 0 (MNIST: 2,000 warm-up steps, a 10,000-step ramp, 60,000 in all); Zhang
et al. add the CROWN-IBP bound and let β go from 1 to 0 over the same ramp. Here the warm-up
and the ramp are fractions of the run's iterations, which ``fit`` passes in
(``at_iteration``), so a resumed run continues its schedule.
"""

import numpy as np

from .crown_ibp import linear_bounds, margin_spec
from .ibp import input_box, interval_forward


def worst_case_cross_entropy(bounds):
    """CE of the worst-case logits ẑ (ẑ_y = 0, ẑ_k = −m_k) → (loss (N,), dloss/dm (N, S))."""
    m = np.asarray(bounds, dtype=np.float64)
    z = np.concatenate([np.zeros((len(m), 1)), -m], axis=1)  # the true class first
    top = z.max(axis=1, keepdims=True)
    e = np.exp(z - top)
    total = e.sum(axis=1, keepdims=True)
    loss = (np.log(total) + top)[:, 0]  # − log softmax(ẑ)_y with ẑ_y = 0
    return loss, -(e[:, 1:] / total)


def _ramp(t, start, end):
    return start + (end - start) * t


class IBPObjective:
    """Verified training (see the module docstring).

    Parameters
    ----------
    eps : the final L∞ radius (data units) the bounds are trained for; Gowal et al. train at
        1.1 to 1.33 times the eps they certify.
    method : "ibp" (β = 1 throughout) or "crown-ibp" (β from ``beta`` to 0 over the ramp).
    warmup, ramp : fractions of the run's iterations at ε = 0 (κ = 1), then with ε, κ and β
        moving linearly to their final values; after that they stay there.
    kappa : (start, end) of κ, the clean loss's weight (Gowal et al.: 1 → 0.5).
    beta : (start, end) of β for "crown-ibp" (Zhang et al.: 1 → 0).
    clip : the data range the ε-ball is clipped to.

    Called on (net, xb, yb) → (mean loss, clean logits), gradients in ``net.grads``. The clean
    term runs in the mode ``fit`` sets (train); the bounds in eval semantics (dropout off, batch
    norm on its running statistics). ``at_iteration`` is called by ``fit``; without it (a
    direct call) the objective is at the end of its schedule.
    """

    def __init__(self, eps, *, method="ibp", warmup=0.0, ramp=0.0, kappa=(1.0, 0.5),
                 beta=(1.0, 0.0), clip=(0.0, 1.0)):
        name = "IBPObjective"
        try:
            eps = float(eps)
            warmup, ramp = float(warmup), float(ramp)
            kappa = tuple(float(k) for k in kappa)
            beta = tuple(float(b) for b in beta)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: eps, warmup and ramp must be numbers, kappa and beta "
                             f"(start, end) pairs") from None
        if not (np.isfinite(eps) and eps >= 0):
            raise ValueError(f"{name}: eps must be finite and >= 0, got {eps}")
        if method not in ("ibp", "crown-ibp"):
            raise ValueError(f"{name}: method must be 'ibp' or 'crown-ibp', got {method!r}")
        if not (0 <= warmup <= 1 and 0 <= ramp <= 1 and warmup + ramp <= 1):
            raise ValueError(f"{name}: warmup and ramp are fractions of the run, each in [0, 1] "
                             f"and together at most 1; got {warmup}, {ramp}")
        for what, pair in (("kappa", kappa), ("beta", beta)):
            if len(pair) != 2 or not all(0 <= v <= 1 for v in pair):
                raise ValueError(f"{name}: {what} must be a (start, end) pair in [0, 1], got "
                                 f"{pair}")
        self.eps, self.method, self.warmup, self.ramp = eps, method, warmup, ramp
        self.kappa, self.beta = kappa, beta if method == "crown-ibp" else (1.0, 1.0)
        self.clip = None if clip is None else (float(clip[0]), float(clip[1]))
        self.progress = 1.0  # where in the schedule (0 → 1 over the ramp); 1 until fit says

    def at_iteration(self, it, total):
        """Set the schedule for iteration ``it`` of ``total`` (called by ``fit``)."""
        t = it / max(total, 1)
        if t < self.warmup:
            self.progress = -1.0  # warm-up: ε = 0, κ = 1
        elif self.ramp == 0:
            self.progress = 1.0
        else:
            self.progress = min((t - self.warmup) / self.ramp, 1.0)

    def current(self):
        """(ε, κ, β) now."""
        if self.progress < 0:
            return 0.0, 1.0, self.beta[0]
        p = self.progress
        return (self.eps * p, _ramp(p, *self.kappa), _ramp(p, *self.beta))

    def bound_loss(self, net, xb, yb, eps, beta):
        """Mean worst-case CE of the batch's margin bounds and its parameter gradients →
        (loss, {layer: {param: gradient}}, margin bounds (N, K − 1))."""
        lo, hi = input_box(np.asarray(xb, dtype=net.dtype), eps, self.clip)
        tape = interval_forward(net, lo, hi)
        spec, _ = margin_spec(yb, net.num_classes, net.dtype)
        parts = [(w, linear_bounds(tape, spec, mode)) for w, mode in
                 ((beta, "ibp"), (1.0 - beta, "crown")) if w > 0]
        bounds = sum(w * part.bounds for w, part in parts)
        loss, dbounds = worst_case_cross_entropy(bounds)
        dbounds /= len(loss)
        grads, seeds = {}, {}
        for w, part in parts:
            g, s = part.backward(w * dbounds)
            _merge(grads, g)
            for blob, (dl, du) in s.items():
                if blob in seeds:
                    dl, du = seeds[blob][0] + dl, seeds[blob][1] + du
                seeds[blob] = (dl, du)
        _merge(grads, tape.backward(seeds))
        return float(loss.mean()), grads, bounds

    def __call__(self, net, xb, yb):
        loss, logits = net.loss_and_grad(xb, yb)
        eps, kappa, beta = self.current()
        if eps == 0 or kappa == 1:
            return loss, logits
        clean = {layer.name: dict(layer.grads) for layer in net.layers if layer.params}
        bound_loss, grads, _ = self.bound_loss(net, xb, np.asarray(yb, dtype=np.int64), eps,
                                               beta)
        for layer in net.layers:
            if not layer.params:
                continue
            total = {}
            for k in layer.params:
                g = kappa * clean.get(layer.name, {}).get(k, 0) \
                    + (1 - kappa) * grads.get(layer.name, {}).get(k, 0)
                if not np.isscalar(g):
                    total[k] = np.asarray(g, dtype=layer.params[k].dtype)
            layer.grads = total
        return kappa * loss + (1 - kappa) * bound_loss, logits

    def config(self):
        """JSON-ready settings (what a training checkpoint records)."""
        return {"objective": self.method, "eps": self.eps, "warmup": self.warmup,
                "ramp": self.ramp, "kappa": list(self.kappa), "beta": list(self.beta),
                "clip": None if self.clip is None else list(self.clip)}

    def __repr__(self):
        return f"IBPObjective({self.config()})"


def _merge(grads, new):
    for layer, gs in new.items():
        mine = grads.setdefault(layer, {})
        for k, g in gs.items():
            mine[k] = g if k not in mine else mine[k] + g


__all__ = ["IBPObjective", "worst_case_cross_entropy"]
