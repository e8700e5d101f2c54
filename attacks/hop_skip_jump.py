"""HopSkipJump: a decision-based attack (it reads only the predicted label), L2 and L∞.

Chen, Jordan & Wainwright, "HopSkipJumpAttack: A Query-Efficient Decision-Based Attack",
IEEE S&P 2020, Algorithm 2. With φ(x') = 1 where the label is wrong (the target's, when
targeted), d the input size and θ = γ / d^{3/2} (L2) or γ / d² (L∞), γ = 1:

    x̃₀ = uniform noise in the box that φ accepts (targeted: an input of the batch labelled
         as the target, where there is one), blended towards x (bisection to 0.001), then
         projected onto the boundary (bisection to θ)
    for t = 1, 2, …:
        δ_t = √d · θ · ‖x̃_{t−1} − x‖₂ (L2), d · θ · ‖x̃_{t−1} − x‖∞ (L∞); 0.1 · range at t = 1
        B_t = min(B₀ · √t, B_max) directions uᵦ on the unit sphere (normal draws for L2,
             uniform in [−1, 1]ᴰ for L∞, normalised), probes clip(x̃ + δ_t · uᵦ)
        v = Σ (φ(probe) − mean φ) · uᵦ / B_t  (the baseline; ±mean uᵦ if every φ agrees)
        v ← v / ‖v‖₂, and sign(v) for L∞
        ξ = ‖x̃_{t−1} − x‖ / √t, halved until φ(clip(x̃ + ξ v)) = 1   (the geometric step search)
        x̃_t = bisection between x and clip(x̃ + ξ v) back to the boundary

The L2 bisection moves along the segment (1 − α) x + α x̃; the L∞ one clips x̃ to the ball of
radius α around x. Every iterate is on the adversarial side of the boundary, so the attack
returns an adversarial example for every input it found a start for, with a perturbation that
shrinks as the queries grow: it is minimal-norm by nature (``eps=None``).
"""

import math

import numpy as np

from ._common import (batch_slices, check_clip, check_clip_pair, check_eps, check_float,
                      check_inputs, check_int, check_progress, flat_bounds)
from .norms import check_norm

# Relative slack on ‖x' − x‖ ≤ eps: float32 rounding of the returned point.
_NORM_SLACK = 1e-6
# Halvings of the geometric step search before the step is given up (ξ / 2³⁰ ≈ 0).
_STEP_HALVINGS = 30


def hop_skip_jump(net, x, y=None, eps=None, *, norm="l2", n_queries=5000, steps=64,
                  init_samples=100, max_samples=10000, gamma=1.0, init_tries=100,
                  clip=(0.0, 1.0), targeted=False, batch_size=256, seed=0, progress=None,
                  return_info=False, max_rows=4096):
    """Adversarial examples of small L2 or L∞ norm from the predicted labels alone.

    Chen, Jordan & Wainwright 2020, "HopSkipJumpAttack: A Query-Efficient Decision-Based
    Attack" (IEEE S&P). See the module docstring for the algorithm.

    Parameters
    ----------
    net : robustcnn ``Net`` or anything with ``predict``, ``dtype``, ``input_shape`` and
        ``num_classes``: only ``net.predict`` (labels) is called.
    x : (N, …) inputs inside ``clip``.
    y : (N,) labels to move away from; None (default) uses the net's predictions. With
        ``targeted=True``, the target classes (required).
    eps : None (default): unbounded, the result is the attack's final perturbation. A number:
        an example stops as soon as its perturbation is ≤ eps (in ``norm``), and an example
        whose final perturbation is larger is returned unchanged (it does not fool the net
        within eps). ``eps == 0`` returns a copy of x.
    norm : "l2" (default) or "linf": the norm the attack minimises.
    n_queries : the query budget per example, the start's search included (default 5000).
        An example stops when its next gradient estimate would not fit in what is left.
    steps : iterations at most (default 64, Foolbox's).
    init_samples, max_samples : B₀ and B_max of the schedule B_t = min(B₀ √t, B_max) (the
        paper's 100 and 10⁴).
    gamma : γ of the bisection threshold θ (1, the paper's).
    init_tries : uniform noise draws per example to find an adversarial start; an example
        without one is returned unchanged. A targeted example starts from the nearest input of
        its batch that the net labels as its target, where there is one (no query).
    clip : (low, high) valid range (required: the start is noise in it).
    targeted : reach the class ``y`` instead of leaving it.
    batch_size : examples attacked together; probes go through the net ``max_rows`` at a time.
    seed : the draws of batch b come from ``np.random.default_rng([seed, b])``: the result is
        a deterministic function of the seed and the batch size.
    progress : None or a callable ``progress(k)``, called as k examples finish; the calls add
        up to N.
    return_info : also return {``queries`` (N,) int64 (the clean pass is not counted; an
        example already misclassified costs 0), ``success`` (N,) bool (adversarial, and within
        eps when eps is given), ``distance`` (N,) float64, the final perturbation's norm
        (inf where no adversarial start was found)}.
    max_rows : rows per forward pass.

    Returns x' (the net's dtype), or (x', info). x' is inside ``clip``.

    Not guaranteed: a minimal perturbation (a local search on the boundary; more queries
    shrink it), or a start for every example.
    """
    name = "hop_skip_jump"
    eps = check_eps(eps, name, allow_none=True)
    norm = check_norm(norm, name)
    n_queries = check_int(n_queries, "n_queries", name)
    steps = check_int(steps, "steps", name)
    init_samples = check_int(init_samples, "init_samples", name)
    max_samples = check_int(max_samples, "max_samples", name)
    gamma = check_float(gamma, "gamma", name, low=0, low_open=True)
    init_tries = check_int(init_tries, "init_tries", name)
    batch_size = check_int(batch_size, "batch_size", name)
    max_rows = check_int(max_rows, "max_rows", name)
    check_progress(progress, name)
    if clip is None:
        raise ValueError(f"{name}: needs a valid range (clip=None given): the start is uniform "
                         f"noise in it")
    check_clip_pair(clip, name)
    if targeted and y is None:
        raise ValueError(f"{name}: targeted=True needs the target classes y")
    x, y = check_inputs(net, x, y, name)
    bounds = check_clip(clip, x, name)
    n = len(x)
    queries = np.zeros(n, dtype=np.int64)
    distance = np.zeros(n)
    out = x.copy()
    if eps == 0:
        if progress is not None and n:
            progress(n)
        if not return_info:
            return out
        pred = net.predict(x, batch_size=batch_size)
        success = pred == y if targeted else pred != y
        return out, {"queries": queries, "success": success, "distance": distance}
    success = np.zeros(n, dtype=bool)
    search = _Search(net, norm, n_queries, steps, init_samples, max_samples, gamma, init_tries,
                     flat_bounds(bounds, x.shape[1:]), targeted, max_rows, x.shape[1:])
    for b, s in enumerate(batch_slices(n, batch_size)):
        rng = np.random.default_rng([seed, b])
        adv, queries[s], found = search.run(x[s].reshape(s.stop - s.start, -1), y[s], rng, eps,
                                            progress)
        out[s] = adv.astype(x.dtype).reshape(out[s].shape)
        dist = _norms(out[s].reshape(len(adv), -1).astype(np.float64)
                      - x[s].reshape(len(adv), -1), norm)
        distance[s] = np.where(found, dist, np.inf)
        success[s] = found if eps is None else found & (dist <= eps * (1 + _NORM_SLACK))
    if eps is not None:
        out[~success] = x[~success]  # beyond eps: not an adversarial example of this threat model
    info = {"queries": queries, "success": success, "distance": distance}
    return (out, info) if return_info else out


def _norms(delta, norm):
    """Per-row L2 or L∞ norms of (A, D) float64 rows."""
    if norm == "l2":
        return np.sqrt((delta ** 2).sum(axis=1))
    return np.abs(delta).max(axis=1, initial=0.0)


class _Search:
    """HopSkipJump over one batch of flat (A, D) float64 inputs, with the checked arguments."""

    def __init__(self, net, norm, n_queries, steps, init_samples, max_samples, gamma,
                 init_tries, bounds, targeted, max_rows, input_shape):
        self.net, self.norm, self.n_queries, self.steps = net, norm, n_queries, steps
        self.init_samples, self.max_samples, self.init_tries = init_samples, max_samples, \
            init_tries
        self.bounds, self.targeted, self.max_rows = bounds, targeted, max_rows
        self.input_shape = tuple(input_shape)
        d = int(np.prod(self.input_shape))
        self.d = d
        self.theta = gamma / (d * math.sqrt(d)) if norm == "l2" else gamma / (d * d)

    # -- the oracle --------------------------------------------------------------------------

    def labels(self, points):
        """The net's labels of points (R, D) (one query each, not counted here)."""
        net = self.net
        batch = points.astype(net.dtype).reshape((len(points),) + self.input_shape)
        return net.predict(batch, batch_size=self.max_rows)

    def decide(self, points, rows):
        """φ for points (R, D) of the examples ``rows`` (R,) → (R,) bool; counts the queries."""
        pred = self.labels(points)
        self.queries += np.bincount(rows, minlength=len(self.queries))
        return pred == self.y[rows] if self.targeted else pred != self.y[rows]

    def left(self, rows):
        return self.n_queries - self.queries[rows]

    # -- the search --------------------------------------------------------------------------

    def run(self, x, y, rng, eps, progress):
        """→ (x' (A, D) float64, queries (A,), found (A,) bool) for one batch."""
        n = len(x)
        self.y, self.queries = y, np.zeros(n, dtype=np.int64)
        adv = x.copy()
        clean = self.labels(x)  # the clean pass, not counted
        found = clean == y if self.targeted else clean != y
        todo = np.flatnonzero(~found)
        start, ok = self.start(x[todo], todo, clean, x, rng)
        found[todo] = ok
        todo = todo[ok]
        # Blend towards x (the reference code's coarse bisection), then onto the boundary.
        start = self.bisect(x[todo], start[ok], todo, "l2", 0.001)
        adv[todo] = self.bisect(x[todo], start, todo, self.norm, self.theta)
        finished = 0
        for t in range(1, self.steps + 1):
            dist = _norms(adv[todo] - x[todo], self.norm)
            samples = min(int(self.init_samples * math.sqrt(t)), self.max_samples)
            go = self.left(todo) >= samples
            if eps is not None:
                go &= dist > eps
            todo, dist = todo[go], dist[go]
            if progress is not None and n - len(todo) > finished:
                progress(n - len(todo) - finished)
                finished = n - len(todo)
            if not len(todo):
                break
            if t == 1:
                delta = np.full(len(todo), 0.1 * self.bounds.span)
            else:
                delta = (math.sqrt(self.d) if self.norm == "l2" else self.d) * self.theta * dist
            direction = self.gradient_direction(adv[todo], delta, samples, todo, rng)
            if self.norm == "linf":
                direction = np.sign(direction)
            stepped = self.step(adv[todo], direction, dist / math.sqrt(t), todo)
            adv[todo] = self.bisect(x[todo], stepped, todo, self.norm, self.theta)
        if progress is not None and finished < n:
            progress(n - finished)
        return adv, self.queries, found

    def start(self, x, rows, clean, batch, rng):
        """Adversarial starts → (points (A, D), found (A,)). Targeted: the nearest input of the
        batch the net labels as the target (``clean``: the batch's labels; the paper starts
        from an image of the target class), if any. Then uniform noise in the box that φ
        accepts, up to ``init_tries`` draws per example."""
        lo, hi = self.bounds
        points = np.empty_like(x)
        found = np.zeros(len(x), dtype=bool)
        if self.targeted:
            for i, row in enumerate(rows):
                same = np.flatnonzero(clean == self.y[row])
                if len(same):
                    near = same[np.argmin(_norms(batch[same] - x[i], self.norm))]
                    points[i], found[i] = batch[near], True
        for _ in range(self.init_tries):
            need = np.flatnonzero(~found & (self.left(rows) > 0))
            if not len(need):
                break
            noise = rng.uniform(lo, hi, size=(len(need), x.shape[1]))
            hit = self.decide(noise, rows[need])
            points[need[hit]] = noise[hit]
            found[need[hit]] = True
        return points, found

    def project(self, x, adv, alpha, norm):
        """The point at α between x and adv: the blend (1 − α) x + α adv (L2), or adv clipped
        to the L∞ ball of radius α around x."""
        if norm == "l2":
            return (1 - alpha[:, None]) * x + alpha[:, None] * adv
        return np.clip(adv, x - alpha[:, None], x + alpha[:, None])

    def bisect(self, x, adv, rows, norm, threshold):
        """Bisection between x (φ = 0) and adv (φ = 1) to within ``threshold`` (relative to the
        L∞ distance for L∞, as in the reference code) → the points on the adversarial side."""
        if norm == "l2":
            high, limit = np.ones(len(x)), np.full(len(x), threshold)
        else:
            high = _norms(adv - x, "linf")
            limit = np.minimum(high * threshold, threshold)
        low = np.zeros(len(x))
        while True:
            go = np.flatnonzero((high - low > limit) & (self.left(rows) > 0))
            if not len(go):
                break
            mid = (high[go] + low[go]) / 2
            hit = self.decide(self.project(x[go], adv[go], mid, norm), rows[go])
            high[go] = np.where(hit, mid, high[go])
            low[go] = np.where(hit, low[go], mid)
        return self.project(x, adv, high, norm)

    def gradient_direction(self, adv, delta, samples, rows, rng):
        """The unit-L2 estimate of ∇S at the boundary points adv (A, D) from ``samples`` probes
        each, with the baseline (the paper's eq. 16)."""
        lo, hi = self.bounds
        out = np.empty_like(adv)
        per_chunk = max(1, self.max_rows // samples)
        for s in batch_slices(len(adv), per_chunk):
            k = s.stop - s.start
            shape = (k, samples, adv.shape[1])
            u = rng.standard_normal(shape) if self.norm == "l2" else rng.uniform(-1, 1, shape)
            u /= np.sqrt((u ** 2).sum(axis=2, keepdims=True))
            probes = np.clip(adv[s, None] + delta[s, None, None] * u, lo, hi)
            u = (probes - adv[s, None]) / delta[s, None, None]
            phi = self.decide(probes.reshape(k * samples, -1), np.repeat(rows[s], samples))
            phi = 2.0 * phi.reshape(k, samples) - 1.0
            mean = phi.mean(axis=1, keepdims=True)
            # Every probe on one side: the mean direction, signed (the reference code's rule).
            weight = np.where(np.abs(mean) == 1.0, mean, phi - mean)
            g = np.einsum("ks,ksd->kd", weight, u) / samples
            length = np.sqrt((g ** 2).sum(axis=1, keepdims=True))
            out[s] = g / np.where(length > 0, length, 1.0)
        return out

    def step(self, adv, direction, size, rows):
        """The geometric step search: ξ = ``size``, halved until clip(adv + ξ v) is adversarial
        (or the budget or ``_STEP_HALVINGS`` runs out: then no step) → the stepped points."""
        lo, hi = self.bounds
        out = adv.copy()
        size = size.copy()
        todo = np.arange(len(adv))
        for _ in range(_STEP_HALVINGS):
            todo = todo[self.left(rows[todo]) > 0]
            if not len(todo):
                break
            moved = np.clip(adv[todo] + size[todo, None] * direction[todo], lo, hi)
            hit = self.decide(moved, rows[todo])
            out[todo[hit]] = moved[hit]
            size[todo] /= 2
            todo = todo[~hit]
            if not len(todo):
                break
        return out
