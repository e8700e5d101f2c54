"""Argument checks and engine helpers shared by the attacks.

Every check raises ``ValueError`` (``TypeError`` for a non-array input) with a message that
starts with the attack's name: ``pgd: steps must be >= 1, got 0``.
"""

import math
import numbers

import numpy as np

from ..engine import softmax_cross_entropy


def check_eps(eps, name, *, allow_none=False):
    """A finite eps >= 0 as a float (or None where the attack is unbounded without it)."""
    if eps is None and allow_none:
        return None
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: eps must be a number >= 0, got {eps!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}: eps must be finite and >= 0, got {value!r}")
    return value


def check_int(value, what, name, *, minimum=1):
    """An integer >= ``minimum`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name}: {what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_float(value, what, name, *, low=None, high=None, low_open=False, high_open=False):
    """A finite float inside [low, high] (an end is open where asked)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    ok = math.isfinite(v) and not isinstance(value, bool)
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v < high if high_open else v <= high
    if not ok:
        where = ""
        if low is not None or high is not None:
            lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low}"
            hi = "inf)" if high is None else f"{high}" + (")" if high_open else "]")
            where = f" in {lo}, {hi}"
        raise ValueError(f"{name}: {what} must be a finite number{where}, got {value!r}")
    return v


def check_clip_pair(clip, name):
    """``clip`` = (low, high) with low < high, or None; checks the pair only."""
    if clip is None:
        return None
    try:
        if isinstance(clip, (str, bytes)):
            raise TypeError
        lo, hi = (float(c) for c in clip)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: clip must be a (low, high) pair or None, got {clip!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name}: clip bounds must be finite, got {clip!r}")
    if not lo < hi:
        raise ValueError(f"{name}: clip low {lo} must be below high {hi}")
    return lo, hi


def check_clip(clip, x, name):
    """``clip`` = (lo, hi) or None; ``x`` must already lie inside it."""
    bounds = check_clip_pair(clip, name)
    if bounds is None:
        return None
    lo, hi = bounds
    if x.size and (x.min() < lo or x.max() > hi):
        raise ValueError(f"{name}: the input spans [{x.min():.4g}, {x.max():.4g}], outside clip "
                         f"({lo}, {hi}); eps is in the units of the data range, so scale the "
                         f"input first or pass the right clip")
    return lo, hi


def check_untargeted(targeted, name, why):
    if targeted:
        raise ValueError(f"{name}: targeted=True is not supported ({why})")


def check_progress(progress, name):
    """``progress``: None or a callable (called with the number of examples just finished)."""
    if progress is not None and not callable(progress):
        raise ValueError(f"{name}: progress must be a callable or None, got {progress!r}")
    return progress


def check_inputs(net, x, y, name, *, predict=True):
    """x as the net's dtype; y as int64 labels (default: the net's predictions, or None
    without ``predict``)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: x must be a numpy array, got {type(x).__name__}")
    if x.dtype.kind not in "fiu":
        raise TypeError(f"{name}: x must be numeric, got {x.dtype}")
    if x.shape[1:] != tuple(net.input_shape):
        raise ValueError(f"{name}: x has shape {x.shape}, the net takes (N,) + {net.input_shape}")
    x = np.ascontiguousarray(x, dtype=net.dtype)
    if x.size and not np.isfinite(x).all():
        raise ValueError(f"{name}: x has non-finite values")
    if y is None and not predict:
        return x, None
    if y is None:
        # Labels default to the model's own predictions, not the truth: using true labels
        # "leaks" them into the attack (Kurakin et al. 2017), which users must choose knowingly.
        y = net.predict(x)
    y = np.asarray(y)
    if y.shape != (x.shape[0],) or y.dtype.kind not in "iu":
        raise ValueError(f"{name}: y must be {x.shape[0]} integer labels, got shape {y.shape} "
                         f"dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= net.num_classes):
        raise ValueError(f"{name}: labels must lie in [0, {net.num_classes}), got "
                         f"[{y.min()}, {y.max()}]")
    return x, y.astype(np.int64)


def clip_to(a, bounds):
    """``a`` clipped to ``bounds`` in place (no-op for None); returns ``a``."""
    if bounds is not None:
        np.clip(a, bounds[0], bounds[1], out=a)
    return a


def batch_slices(n, batch_size, progress=None):
    """slice objects covering range(n) in blocks of ``batch_size``. With ``progress`` (an
    attack's outer loop), ``progress(examples)`` is called after each block is done: how a
    progress bar follows an attack. The results do not depend on it."""
    slices = [slice(lo, min(lo + batch_size, n)) for lo in range(0, n, batch_size)]
    if progress is None:
        return slices
    return _reporting(slices, progress)


def _reporting(slices, progress):
    for s in slices:
        yield s
        progress(s.stop - s.start)


class WorkMeter:
    """Progress of an attack whose work comes in shares (restarts, targets, stages), reported
    to ``callback`` as whole examples: the counts sum to ``total`` once every share is done,
    and arrive as each batch of each share finishes, so a bar over ``total`` examples shows
    a steady ETA. ``callback`` None: nothing is reported."""

    def __init__(self, callback, total):
        self.callback = callback
        self.total = int(total)
        self.done = 0.0  # fraction of the whole work
        self.reported = 0

    def add(self, fraction):
        """``fraction`` of the whole work just finished."""
        self.done = min(1.0, self.done + float(fraction))
        self._report(int(self.done * self.total + 1e-9))

    def finish(self):
        self._report(self.total)

    def _report(self, upto):
        if self.callback is not None and upto > self.reported:
            self.callback(upto - self.reported)
        self.reported = max(self.reported, upto)


# ---------------------------------------------------------------------------------------------
# Engine passes the attacks build on (through Net's public methods only)


def loss_grad_logits(net, x, y):
    """Per-example cross-entropy, its input gradient and the logits, in one forward + backward.

    → (loss (N,), dloss/dx (N, …), logits (N, K)); the same numbers as
    ``Net.loss_and_input_grad`` plus the logits it computes anyway (eval mode).
    """
    _, logits = net.forward_for_backward(x, train=False)
    flat = logits.reshape(len(x), net.num_classes)
    loss, dlogits = softmax_cross_entropy(flat, y)
    dx = net.backward(dlogits.reshape(logits.shape), param_grads=False, input_grad=True,
                      of="logits")
    return loss, dx, flat


def logit_grads(net, x, coeffs, *, max_rows=256):
    """Input gradients of linear combinations of the logits → (grads (N, M, …), logits (N, K)).

    grads[n, m] = ∇ₓ Σ_k coeffs[n, m, k] · z_k(x[n]), for coeffs (N, M, K). Each example is
    repeated M times in the batch and one backward with ``of="logits"`` takes all M
    combinations at once; rows go through the net ``max_rows`` at a time. Eval mode, so the
    repeated rows compute the same logits. Cost: M forward + backward passes per example.
    """
    n, m, k = coeffs.shape
    grads = np.empty((n, m) + x.shape[1:], dtype=net.dtype)
    logits = np.empty((n, k), dtype=net.dtype)
    per_chunk = max(1, max_rows // max(m, 1))
    for s in batch_slices(n, per_chunk):
        rows = np.repeat(x[s], m, axis=0)
        _, z = net.forward_for_backward(rows, train=False)
        dz = coeffs[s].reshape(-1, k).astype(net.dtype).reshape(z.shape)
        dx = net.backward(dz, param_grads=False, input_grad=True, of="logits")
        grads[s] = dx.reshape((-1, m) + x.shape[1:])
        logits[s] = z.reshape(-1, m, k)[:, 0]
    return grads, logits


def cross_entropy(logits, y):
    """Per-example softmax cross-entropy of (N, K) logits against labels y."""
    loss, _ = softmax_cross_entropy(np.ascontiguousarray(logits), y)
    return loss


def fooled(logits, y, targeted):
    """Per-example success: the prediction is the target (targeted) or not the label."""
    pred = logits.argmax(axis=1)
    return pred == y if targeted else pred != y


def runner_up(logits, y):
    """The most likely class other than y[n], for each example (the target of attacks that are
    targeted by nature when they run untargeted)."""
    z = np.array(logits, dtype=np.float64)
    z[np.arange(len(y)), y] = -np.inf
    return z.argmax(axis=1).astype(np.int64)


def logits_and_grad(net, x, dlogits_of, *, max_rows=256):
    """Logits and the input gradient of a loss given by its logit gradient, in chunks.

    ``dlogits_of(logits, rows)`` returns dL/dlogits (R, K) for the logits (R, K) of the rows
    ``rows`` (a slice of x); → (logits (N, K), dL/dx (N, …)), one forward + backward per chunk.
    """
    n, k = len(x), net.num_classes
    logits = np.empty((n, k), dtype=net.dtype)
    grads = np.empty_like(x)
    for s in batch_slices(n, max_rows):
        _, z = net.forward_for_backward(x[s], train=False)
        flat = z.reshape(-1, k)
        dz = np.ascontiguousarray(dlogits_of(flat, s), dtype=net.dtype).reshape(z.shape)
        grads[s] = net.backward(dz, param_grads=False, input_grad=True, of="logits")
        logits[s] = flat
    return logits, grads


def margin(logits, y, targeted):
    """C&W's margin (N,) and the strongest other class (N,): for untargeted attacks
    z_y − max_{k≠y} z_k (negative once the label changed), for targeted ones
    max_{k≠t} z_k − z_t (negative once the target wins)."""
    z = np.array(logits, dtype=np.float64)
    rows = np.arange(len(y))
    real = z[rows, y]
    z[rows, y] = -np.inf
    other = z.argmax(axis=1)
    best_other = z[rows, other]
    return (best_other - real if targeted else real - best_other), other
