"""Feature squeezing: detect adversarial examples by how much squeezing the input moves the
prediction.

Xu, Evans & Qi, "Feature Squeezing: Detecting Adversarial Examples in Deep Neural Networks",
NDSS 2018. A squeezer coalesces inputs: bit-depth reduction to b bits (1 bit for MNIST-like
images: x > 1/2), median smoothing over k×k windows. The joint detector's score is

    score(x) = max over squeezers s of ‖softmax(f(x)) − softmax(f(s(x)))‖₁

and x is flagged when score(x) > τ, τ chosen so that a share ``fpr`` (5% in the paper) of
clean training images is flagged. For MNIST Xu et al. use bit depth 1, median 2×2 and 3×3.

Each squeezer is an engine layer put in front of a copy of the net (``squeezed_net``): bit
depth is ``QuantizedReLU(bits, max_value=1)`` (y = round(x·(2^b − 1)) / (2^b − 1) on [0, 1]),
a step function whose gradient ``attacks.bpda`` replaces by the straight-through one; median
smoothing is ``MedianFilter(k)`` (SciPy's conventions, engine/median.py), whose gradient routes
to the median pixel. ``adaptive_attack`` attacks the net and the detector together through
them (He, Wei, Chen, Carlini & Song, "Adversarial Example Defenses: Ensembles of Weak Defenses
are not Strong", WOOT 2017; Xu et al. §V-D discuss such an adversary).

Not guaranteed: detection against an adversary who knows the detector (that is what
``adaptive_attack`` measures); the threshold's false-positive rate on data other than the data
it was chosen on.
"""

import contextlib

import numpy as np

from ..attacks._common import (check_clip, check_eps, check_float, check_inputs, check_int,
                               runner_up)
from ..attacks.bpda import bpda
from ..engine import MedianFilter, Net
from ..engine.layers import QuantizedReLU

DEFAULT_SQUEEZERS = ("bit-depth-1", "median-2x2", "median-3x3")


def squeezer_layer(name, blob):
    """The engine layer of a squeezer name: ``bit-depth-B`` (B = 1..8 bits, for data in
    [0, 1]) or ``median-KxK`` (K = 1..9), reading and writing the blob ``blob``."""
    kind, _, arg = str(name).rpartition("-")
    try:
        if kind == "bit-depth":
            return QuantizedReLU(f"squeeze_{arg}bit", bits=int(arg), max_value=1.0, bottom=blob,
                                 top=blob)
        if kind == "median":
            k, _, k2 = arg.partition("x")
            if k == k2:
                return MedianFilter(f"squeeze_median{k}", size=int(k), bottom=blob, top=blob)
    except ValueError as e:
        raise ValueError(f"squeezer {name!r}: {e}") from None
    raise ValueError(f"unknown squeezer {name!r}: use bit-depth-B (B bits) or median-KxK")


def squeezed_net(net, squeezer):
    """A copy of ``net`` whose input first goes through ``squeezer`` (a name of
    ``squeezer_layer``), in place on the input blob, so that every layer reading the input
    reads it squeezed."""
    spec = net.spec()
    spec["layers"] = [squeezer_layer(squeezer, net.input_name).config()] + spec["layers"]
    out = Net.from_spec(spec, dtype=net.dtype)
    out.load_state_dict(net.state_dict())
    return out


def _softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class SqueezeDetector:
    """Xu et al.'s joint detector (see the module docstring).

    ``net``: the classifier; ``squeezers``: names of ``squeezer_layer``; ``threshold``: τ
    (None until ``fit`` chooses it)."""

    def __init__(self, net, squeezers=DEFAULT_SQUEEZERS, threshold=None):
        if not squeezers:
            raise ValueError("SqueezeDetector: needs at least one squeezer")
        self.net = net
        self.names = list(squeezers)
        self.squeezed = [squeezed_net(net, s) for s in self.names]
        self.threshold = threshold

    def distances(self, x, *, batch_size=256):
        """‖softmax(f(x)) − softmax(f(s(x)))‖₁ for each squeezer → (N, S)."""
        p = _softmax(self.net.logits(x, batch_size=batch_size))
        return np.stack([np.abs(p - _softmax(s.logits(x, batch_size=batch_size))).sum(axis=1)
                         for s in self.squeezed], axis=1)

    def scores(self, x, *, batch_size=256):
        """The joint score, the largest distance over the squeezers → (N,)."""
        return self.distances(x, batch_size=batch_size).max(axis=1)

    def fit(self, x_clean, *, fpr=0.05, batch_size=256):
        """Set τ to the (1 − fpr) quantile of the scores of clean examples (Xu et al.: 5% of
        the training images flagged) → τ."""
        fpr = check_float(fpr, "fpr", "SqueezeDetector.fit", low=0, high=1, low_open=True,
                          high_open=True)
        self.threshold = float(np.quantile(self.scores(x_clean, batch_size=batch_size), 1 - fpr))
        return self.threshold

    def detect(self, x, *, batch_size=256):
        """Flagged as adversarial: score > τ → (N,) bool."""
        if self.threshold is None:
            raise ValueError("SqueezeDetector: choose the threshold first (fit)")
        return self.scores(x, batch_size=batch_size) > self.threshold


def detection_row(detector, x_adv, clean_ok, adv_ok, *, batch_size=256):
    """How the detector does on one attack's examples → {examples, successful (correct clean,
    wrong after the attack), detection_rate (flagged among the successful ones, Xu et al.'s
    measure), detection_rate_all (flagged among all the attacked examples)}."""
    flagged = detector.detect(x_adv, batch_size=batch_size)
    success = np.asarray(clean_ok) & ~np.asarray(adv_ok)
    return {"examples": int(len(x_adv)), "successful": int(success.sum()),
            "detection_rate": float(flagged[success].mean()) if success.any() else float("nan"),
            "detection_rate_all": float(flagged.mean()) if len(flagged) else float("nan")}


class DetectionRecorder:
    """Collects ``detection_row`` for every attack and eps of an evaluation: pass it as
    ``attacks.evaluate``'s ``on_examples``. ``rows`` holds them with ``attack`` and ``eps``;
    ``false_positive_rate`` is the share of the clean inputs flagged."""

    def __init__(self, detector, x_clean, *, batch_size=256):
        self.detector, self.rows, self.batch_size = detector, [], batch_size
        self.clean_ok = None
        self.false_positive_rate = float(detector.detect(x_clean, batch_size=batch_size).mean())

    def __call__(self, attack, eps, x_adv, clean_ok, adv_ok):
        row = {"attack": attack, "eps": eps}
        row.update(detection_row(self.detector, x_adv, clean_ok, adv_ok,
                                 batch_size=self.batch_size))
        self.rows.append(row)

    def result(self):
        """JSON-ready: squeezers, threshold, false-positive rate, rows."""
        return {"squeezers": self.detector.names, "threshold": self.detector.threshold,
                "false_positive_rate": self.false_positive_rate, "rows": self.rows}

    def format(self):
        return format_detection(self.result())


def format_detection(result):
    """The detection table as text."""
    lines = [f"feature squeezing ({', '.join(result['squeezers'])}; threshold "
             f"{result['threshold']:.4g}): {100 * result['false_positive_rate']:.2f}% of the "
             f"clean test images flagged",
             f"{'attack':<11} {'eps':>6}  {'successful':>10}  {'detected':>8}  {'all flagged':>11}"]
    for r in result["rows"]:
        eps = "  none" if r["eps"] is None else f"{r['eps']:6.3f}"
        rate = "     n/a" if np.isnan(r["detection_rate"]) else f"{100 * r['detection_rate']:7.2f}%"
        lines.append(f"{r['attack']:<11} {eps}  {r['successful']:>10}  {rate}  "
                     f"{100 * r['detection_rate_all']:10.2f}%")
    return "\n".join(lines)


def adaptive_attack(detector, x, y=None, eps=0.3, *, steps=100, alpha=None, confidence=10.0,
                    clip=(0.0, 1.0), batch_size=256, seed=0):
    """An L∞ attack on the net and the squeezing detector together (white box, BPDA).

    He et al.'s attack on an ensemble of weak defences: every model the detector compares — the
    net and the net behind each squeezer — is pushed to one target class t (the runner-up of the
    clean input) with a logit margin κ (Carlini & Wagner's loss), by signed gradient steps within
    the eps-ball (PGD without random start):

        Σ over the models m of  max(max_{k≠t} z_k^m − z_t^m, −κ)

    When all of them predict t confidently their softmaxes agree and every L1 distance, hence
    the detector's score, is near 0. The bit-depth squeezers' gradient is the straight-through
    one (BPDA, Athalye et al. 2018), the median's its own. Each example keeps the first iterate
    that the net misclassifies and the detector does not flag; the others end at their last
    iterate.

    ``y``: labels to move away from (None: the net's predictions); ``alpha``: the step
    (default 2.5 · eps / steps); ``confidence``: κ; ``seed``: unused (deterministic), accepted
    as attacks take it. → x_adv in the net's dtype. Not guaranteed: success; the detector must
    be fitted.
    """
    name = "adaptive_attack"
    net = detector.net
    if detector.threshold is None:
        raise ValueError(f"{name}: the detector has no threshold (fit it first)")
    eps = check_eps(eps, name)
    steps = check_int(steps, "steps", name)
    confidence = check_float(confidence, "confidence", name, low=0)
    alpha = 2.5 * eps / steps if alpha is None else check_float(alpha, "alpha", name, low=0,
                                                                low_open=True)
    x, y = check_inputs(net, x, y, name)
    bounds = check_clip(clip, x, name)
    out = x.copy()
    if eps == 0:
        return out
    target = runner_up(net.logits(x, batch_size=batch_size), y)
    with contextlib.ExitStack() as stack:
        for squeezed in detector.squeezed:  # straight-through gradients of the step layers
            stack.enter_context(bpda(squeezed))
        for lo in range(0, len(x), batch_size):
            s = slice(lo, lo + batch_size)
            out[s] = _adaptive_batch(detector, x[s], y[s], target[s], eps, steps, alpha,
                                     confidence, bounds, batch_size)
    return out


def _adaptive_batch(detector, x, y, target, eps, steps, alpha, confidence, bounds, batch_size):
    net = detector.net
    rows = np.arange(len(x))
    models = [net] + detector.squeezed
    xa = x.copy()
    best = x.copy()
    done = np.zeros(len(x), dtype=bool)
    for step in range(steps + 1):
        ok = (net.predict(xa, batch_size=batch_size) != y) & \
            ~detector.detect(xa, batch_size=batch_size) & ~done
        best[ok] = xa[ok]
        done |= ok
        if done.all() or step == steps:
            break
        g = np.zeros_like(xa)
        for model in models:
            _, z = model.forward_for_backward(xa, train=False)
            flat = z.reshape(len(xa), -1).astype(np.float64)
            others = flat.copy()
            others[rows, target] = -np.inf
            k = others.argmax(axis=1)
            active = (flat[rows, k] - flat[rows, target]) > -confidence
            dz = np.zeros_like(flat)
            dz[rows, k] += active
            dz[rows, target] -= active
            g += model.backward(dz.astype(net.dtype).reshape(z.shape), param_grads=False,
                                input_grad=True, of="logits")
        xa = xa - (alpha * np.sign(g)).astype(xa.dtype)
        xa = np.clip(xa, x - eps, x + eps)
        if bounds is not None:
            np.clip(xa, bounds[0], bounds[1], out=xa)
    best[~done] = xa[~done]
    return best


__all__ = ["SqueezeDetector", "squeezed_net", "squeezer_layer", "detection_row",
           "DetectionRecorder", "format_detection", "adaptive_attack", "DEFAULT_SQUEEZERS"]
