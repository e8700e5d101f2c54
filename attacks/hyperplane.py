"""The smallest step onto a hyperplane that stays inside a box, in the L∞ or the L2 norm: the
projection FAB takes at every iteration.

Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive boundary attack",
ICML 2020, §3.1 (Proposition 3.1 and its L∞ analogue). For each row n, with t = points[n],
w = w[n], b = b[n] and the box [lo, hi]:

    d* = argmin ‖d‖_p  subject to  ⟨w, t + d⟩ = b,  lo ≤ t + d ≤ hi

Let c = ⟨w, t⟩ − b; every coordinate moves towards the hyperplane, σᵢ = −sign(c · wᵢ), by at
most its room to the box's face, ρᵢ (hi − tᵢ or tᵢ − lo). The optimum has the form
|dᵢ| = min(λ · vᵢ, ρᵢ) with vᵢ = 1 for L∞ and vᵢ = |wᵢ| for L2 (KKT), so
g(λ) = Σᵢ |wᵢ| · min(λ vᵢ, ρᵢ) must reach |c|: g is piecewise linear and increasing, its
breakpoints rᵢ = ρᵢ / vᵢ are sorted once and λ is read off the segment where g crosses |c|.
O(D log D) per row, vectorised over the rows.

Where the box does not reach the hyperplane (g(∞) < |c|), the result is the box's corner in
the direction of the hyperplane (dᵢ = σᵢ ρᵢ): the box point with ⟨w, ·⟩ nearest to b.
Coordinates with wᵢ = 0 never move; nor do those with |wᵢ| ≤ 1e-12 · maxⱼ |wⱼ|, which count as
zero (in L∞ any coordinate with wᵢ ≠ 0 moves by the whole λ, so rounding noise in a gradient
that is zero in exact arithmetic would move it). Computed in float64.
"""

NEGLIGIBLE = 1e-12  # |wᵢ| at most this share of the row's largest counts as zero

import numpy as np


def project_hyperplane_box(points, w, b, norm, bounds):
    """The step d (M, D) float64 of smallest ``norm`` from each point onto its hyperplane
    ⟨w, z⟩ = b inside the box (see the module docstring).

    points, w : (M, D); b : (M,); norm : "linf" or "l2"; bounds : (lo, hi), or None for no box
    (then d is the plain projection: −c · sign(w) / ‖w‖₁ for L∞, −c · w / ‖w‖₂² for L2).
    """
    t = np.asarray(points, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if t.ndim != 2 or w.shape != t.shape or b.shape != (t.shape[0],):
        raise ValueError(f"project_hyperplane_box: points and w must be (M, D) and b (M,), got "
                         f"{t.shape}, {w.shape}, {b.shape}")
    if norm not in ("linf", "l2"):
        raise ValueError(f"project_hyperplane_box: norm must be 'linf' or 'l2', got {norm!r}")
    w = np.where(np.abs(w) <= NEGLIGIBLE * np.abs(w).max(axis=1, initial=0.0)[:, None], 0.0, w)
    c = (w * t).sum(axis=1) - b
    need = np.abs(c)                                   # what ⟨w, d⟩ must contribute
    direction = -np.sign(c)[:, None] * np.sign(w)      # σᵢ (0 where wᵢ = 0 or c = 0)
    aw = np.abs(w)
    v = np.ones_like(w) if norm == "linf" else aw.copy()
    v[aw == 0] = 0.0
    if bounds is None:
        slope = (aw * v).sum(axis=1)                    # g(λ) = λ · Σ |wᵢ| vᵢ
        lam = np.where(slope > 0, need / np.where(slope > 0, slope, 1.0), 0.0)
        return direction * lam[:, None] * v
    lo, hi = bounds
    room = np.where(direction > 0, hi - t, t - lo)
    room = np.maximum(np.where(direction != 0, room, 0.0), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(v > 0, room / np.where(v > 0, v, 1.0), np.inf)   # breakpoints
    order = np.argsort(r, axis=1, kind="stable")
    rs = np.take_along_axis(r, order, axis=1)
    gain = np.take_along_axis(aw * room, order, axis=1)      # |wᵢ| ρᵢ, saturated
    slope = np.take_along_axis(aw * v, order, axis=1)        # |wᵢ| vᵢ, before saturation
    saturated = np.cumsum(gain, axis=1)                               # A_j = Σ_{i≤j}
    # B_j = Σ_{i>j} |wᵢ| vᵢ as a reversed cumulative sum: exactly 0 past the last wᵢ ≠ 0.
    rest = np.concatenate([np.cumsum(slope[:, ::-1], axis=1)[:, ::-1][:, 1:],
                           np.zeros((len(t), 1))], axis=1)
    g_at = saturated + np.where(rest > 0, np.where(np.isfinite(rs), rs, 0.0) * rest, 0.0)
    reach = g_at >= need[:, None]
    reachable = reach.any(axis=1)
    j = np.where(reachable, reach.argmax(axis=1), 0)
    rows = np.arange(len(t))
    before = np.where(j > 0, saturated[rows, np.maximum(j - 1, 0)], 0.0)
    slope_j = np.where(j > 0, rest[rows, np.maximum(j - 1, 0)], slope.sum(axis=1))
    lam = np.where(slope_j > 0, (need - before) / np.where(slope_j > 0, slope_j, 1.0), 0.0)
    lam = np.maximum(lam, 0.0)
    size = np.minimum(lam[:, None] * v, room)
    size = np.where(reachable[:, None], size, room)    # out of reach: the corner
    return direction * size
