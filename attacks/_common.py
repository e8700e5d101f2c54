"""Argument checks and engine helpers shared by the attacks.

Every check raises ``ValueError`` (``TypeError`` for a non-array input) with a message that
starts with the attack's name: ``pgd: steps must be >= 1, got 0``.

**The valid range (``clip``)** is handled here and nowhere else, so that every attack honours
the same bounds — one number per end, or one per channel (a Caffe net's BGR-minus-mean input:
``clip=(-mean, 255 - mean)``), or one per input value. What an attack calls:

    check_clip_pair(clip, name)     → Bounds or None, before x is known (argument checks;
                                      ``bounds.span``, the largest high − low, for defaults
                                      that scale with the range, e.g. BIM's one pixel level)
    check_clip(clip, x, name)       → Bounds shaped to broadcast against x (N, C, …): x must lie
                                      inside; use this one for everything that touches values
    clip_to(a, bounds)              the values of ``a`` put inside, in place
    bounds.full(x.shape[1:])        (low, high) as arrays of one example's shape (an attack
                                      that works per input value: JSMA's "raise to the top",
                                      L-BFGS-B's box)

``Bounds`` is a (low, high) tuple, so code that unpacks ``lo, hi = bounds`` or calls
``np.clip(a, *bounds)`` keeps working; ``model_clip(net)`` is the range an evaluation of
``net`` uses (its declared ``bounds`` in image units, else [0, 1]).
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


class Bounds(tuple):
    """The valid range of an attack's inputs: (low, high), each a float or a float64 array
    (one value per channel, or per input value) — see the module docstring."""

    __slots__ = ()

    def __new__(cls, low, high):
        return tuple.__new__(cls, (low, high))

    @property
    def low(self):
        return self[0]

    @property
    def high(self):
        return self[1]

    @property
    def span(self):
        """The largest high − low: the size of the range, for defaults that scale with it."""
        return float(np.max(np.asarray(self[1]) - np.asarray(self[0])))

    @property
    def mid(self):
        return (np.asarray(self[0]) + np.asarray(self[1])) / 2 if self.varies else \
            (self[0] + self[1]) / 2

    @property
    def half(self):
        return (np.asarray(self[1]) - np.asarray(self[0])) / 2 if self.varies else \
            (self[1] - self[0]) / 2

    @property
    def varies(self):
        """True when an end differs from value to value (per channel)."""
        return np.ndim(self[0]) > 0 or np.ndim(self[1]) > 0

    def full(self, shape):
        """(low, high) as float64 arrays of one example's ``shape``."""
        return (np.broadcast_to(np.asarray(self[0], np.float64), shape),
                np.broadcast_to(np.asarray(self[1], np.float64), shape))

    def __repr__(self):
        def show(v):
            if np.ndim(v) == 0:
                return f"{v:g}"
            flat = np.ravel(v)
            more = ", …" if flat.size > 8 else ""
            return "[" + ", ".join(f"{e:.4g}" for e in flat[:8]) + more + "]"
        return f"({show(self[0])}, {show(self[1])})"


def _end(value, which, name, clip):
    """One end of a clip pair: a finite float, or a float64 array of finite values."""
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        a = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: clip must be a (low, high) pair of numbers or arrays, or None, "
                         f"got {clip!r}") from None
    if a.size == 0 or not np.isfinite(a).all():
        raise ValueError(f"{name}: clip bounds must be finite, got {clip!r}")
    if a.ndim == 0 or a.size == 1:
        return float(a.reshape(()))
    return a


def check_clip_pair(clip, name):
    """``clip`` = (low, high) with low < high everywhere, or None → ``Bounds`` or None; checks
    the pair only (each end a number or an array: one value per channel, or per input value)."""
    if clip is None:
        return None
    if isinstance(clip, (str, bytes)) or not hasattr(clip, "__len__") or len(clip) != 2:
        raise ValueError(f"{name}: clip must be a (low, high) pair or None, got {clip!r}")
    lo, hi = (_end(c, w, name, clip) for c, w in zip(clip, ("low", "high")))
    try:
        below = np.asarray(lo) < np.asarray(hi)
    except ValueError:
        raise ValueError(f"{name}: clip low of shape {np.shape(lo)} and high of shape "
                         f"{np.shape(hi)} do not match") from None
    if not below.all():
        if np.ndim(lo) == 0 and np.ndim(hi) == 0:
            raise ValueError(f"{name}: clip low {lo} must be below high {hi}")
        raise ValueError(f"{name}: clip low must be below high for every value, got "
                         f"{Bounds(lo, hi)!r}")
    return Bounds(lo, hi)


def _shaped(end, per_example, name):
    """An end of the bounds shaped to broadcast against (N,) + per_example: a (C,) array
    (C = per_example[0]) becomes (C, 1, …); the example's own shape stays."""
    if np.ndim(end) == 0:
        return end
    a = np.asarray(end)
    if a.shape == tuple(per_example):
        return a
    if a.ndim == 1 and len(per_example) and a.shape[0] == per_example[0]:
        return a.reshape((-1,) + (1,) * (len(per_example) - 1))
    try:
        return np.broadcast_to(a, per_example)
    except ValueError:
        raise ValueError(f"{name}: clip bounds of shape {a.shape} fit neither the input's "
                         f"{per_example[0] if per_example else 1} channels nor its per-example "
                         f"shape {tuple(per_example)}") from None


def check_clip(clip, x, name):
    """``clip`` = (low, high) or None → ``Bounds`` shaped to broadcast against ``x`` (N, C, …),
    or None; ``x`` must already lie inside it (per channel where the ends are per channel)."""
    bounds = check_clip_pair(clip, name)
    if bounds is None:
        return None
    bounds = Bounds(*(_shaped(end, x.shape[1:], name) for end in bounds))
    lo, hi = bounds
    if x.size and (np.any(x < lo) or np.any(x > hi)):
        where = ""
        if bounds.varies:
            out = np.logical_or(x < lo, x > hi).reshape(len(x), x.shape[1], -1) \
                if x.ndim > 1 else np.logical_or(x < lo, x > hi)
            channels = np.flatnonzero(out.any(axis=(0, 2))) if x.ndim > 1 else []
            where = f" (channel(s) {', '.join(map(str, channels[:8]))})" if len(channels) else ""
        raise ValueError(f"{name}: the input spans [{x.min():.4g}, {x.max():.4g}], outside clip "
                         f"{bounds!r}{where}; eps is in the units of the data range, so scale "
                         f"the input first or pass the right clip")
    return bounds


def model_clip(net):
    """The valid range of ``net``'s images for an evaluation: ``net.bounds`` (image units,
    per channel where declared so), or [0, 1] when the model does not say."""
    bounds = getattr(net, "bounds", None)
    return (0.0, 1.0) if bounds is None else tuple(bounds)


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


def flat_bounds(bounds, per_example):
    """``bounds`` (from ``check_clip``, shaped to broadcast against (N,) + per_example) for
    inputs flattened to (N, D): each end a number, or a (D,) array. None stays None."""
    if bounds is None:
        return None
    return Bounds(*(np.broadcast_to(np.asarray(e, np.float64), tuple(per_example)).ravel()
                    if np.ndim(e) else e for e in bounds))


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
