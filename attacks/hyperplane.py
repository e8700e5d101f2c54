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
breakpoints rᵢ = ρᵢ / vᵢ are searched (by quickselect, expected O(D) per row) for the segment
where g crosses |c|, and λ is read off it.

Where the box does not reach the hyperplane (g(∞) < |c|), the result is the box's corner in
the direction of the hyperplane (dᵢ = σᵢ ρᵢ): the box point with ⟨w, ·⟩ nearest to b.
Coordinates with wᵢ = 0 never move; nor do those with |wᵢ| ≤ 1e-12 · maxⱼ |wⱼ|, which count as
zero (in L∞ any coordinate with wᵢ ≠ 0 moves by the whole λ, so rounding noise in a gradient
that is zero in exact arithmetic would move it). Computed in float64; the per-row search is
one Numba kernel (``hyperplane_box_steps``), parallel over the rows.
"""

import numpy as np
from numba import njit, prange

from ..engine._jit import JIT_PARALLEL

NEGLIGIBLE = 1e-12  # |wᵢ| at most this share of the row's largest counts as zero


@njit(**JIT_PARALLEL)
def hyperplane_box_steps(t, w, b, lo, hi, l2, negligible, d):
    # t, w: (M, D) float64 points and normals; b: (M,); lo, hi: (D,) the box (±inf: none); l2: the
    # norm is L2 (else L∞); |wᵢ| ≤ negligible · maxⱼ |wⱼ| counts as zero; d: (M, D) out.
    # Per row: c = ⟨w, t⟩ − b; coordinate i moves by σᵢ |dᵢ|, σᵢ = −sign(c wᵢ),
    # |dᵢ| = min(λ vᵢ, ρᵢ) with vᵢ = |wᵢ| (L2) or 1 (L∞) and ρᵢ its room to the box, where
    # g(λ) = Σᵢ |wᵢ| min(λ vᵢ, ρᵢ) = |c|; the corner (|dᵢ| = ρᵢ) where g(∞) < |c|. λ by
    # quickselect over the breakpoints rᵢ = ρᵢ / vᵢ (expected O(D)): a pivot p splits them;
    # g(p) ≥ |c| puts λ ≤ p, so every rᵢ ≥ p is unsaturated (adds |wᵢ| vᵢ to the slope S),
    # else every rᵢ ≤ p is saturated (adds |wᵢ| ρᵢ to A); then λ = (|c| − A) / S.
    M, D = t.shape
    for m in prange(M):
        gain = np.zeros(D)
        room = np.zeros(D)
        v = np.zeros(D)
        r = np.empty(D)
        idx = np.empty(D, dtype=np.int64)
        largest = 0.0
        for i in range(D):
            largest = max(largest, abs(w[m, i]))
        c = -b[m]
        for i in range(D):
            if abs(w[m, i]) > negligible * largest:
                c += w[m, i] * t[m, i]
        need = abs(c)
        n = 0
        total = 0.0
        for i in range(D):
            a = abs(w[m, i])
            if a <= negligible * largest or c == 0.0:
                continue
            up = (c < 0.0) == (w[m, i] > 0.0)  # σᵢ = +1
            room[i] = max(hi[i] - t[m, i], 0.0) if up else max(t[m, i] - lo[i], 0.0)
            gain[i] = a
            v[i] = a if l2 else 1.0
            r[i] = room[i] / v[i]
            idx[n] = i
            n += 1
            total += a * room[i]
        lam = -1.0  # the corner
        if total >= need:
            saturated = 0.0
            slope = 0.0
            top = 0.0
            first = 0
            last = n
            while last > first:
                pivot = r[idx[(first + last) // 2]]
                lt = first
                i = first
                gt = last
                while i < gt:  # three-way partition of idx[first:last] around the pivot
                    j = idx[i]
                    if r[j] < pivot:
                        idx[i] = idx[lt]
                        idx[lt] = j
                        lt += 1
                        i += 1
                    elif r[j] > pivot:
                        gt -= 1
                        idx[i] = idx[gt]
                        idx[gt] = j
                    else:
                        i += 1
                below = 0.0  # Σ |w| ρ over r ≤ pivot
                for k in range(first, gt):
                    below += gain[idx[k]] * room[idx[k]]
                above = 0.0  # Σ |w| v over r > pivot
                for k in range(gt, last):
                    above += gain[idx[k]] * v[idx[k]]
                rising = slope + above  # (an infinite pivot times no slope adds nothing)
                if saturated + below + (pivot * rising if rising > 0.0 else 0.0) >= need:
                    for k in range(lt, gt):
                        above += gain[idx[k]] * v[idx[k]]
                    slope += above
                    last = lt
                else:
                    saturated += below
                    top = pivot
                    first = gt
            lam = max((need - saturated) / slope if slope > 0.0 else top, 0.0)
        for i in range(D):
            if v[i] == 0.0:
                d[m, i] = 0.0
            else:
                size = room[i] if lam < 0.0 else min(lam * v[i], room[i])
                d[m, i] = size if (c < 0.0) == (w[m, i] > 0.0) else -size


def project_hyperplane_box(points, w, b, norm, bounds):
    """The step d (M, D) float64 of smallest ``norm`` from each point onto its hyperplane
    ⟨w, z⟩ = b inside the box (see the module docstring).

    points, w : (M, D); b : (M,); norm : "linf" or "l2"; bounds : (lo, hi), each a number or a
    (D,) array (one value per coordinate), or None for no box
    (then d is the plain projection: −c · sign(w) / ‖w‖₁ for L∞, −c · w / ‖w‖₂² for L2).
    """
    t = np.ascontiguousarray(points, dtype=np.float64)
    w = np.ascontiguousarray(w, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    if t.ndim != 2 or w.shape != t.shape or b.shape != (t.shape[0],):
        raise ValueError(f"project_hyperplane_box: points and w must be (M, D) and b (M,), got "
                         f"{t.shape}, {w.shape}, {b.shape}")
    if norm not in ("linf", "l2"):
        raise ValueError(f"project_hyperplane_box: norm must be 'linf' or 'l2', got {norm!r}")
    ends = (-np.inf, np.inf) if bounds is None else bounds
    try:  # one value for every coordinate, or one per coordinate (a flattened per-channel box)
        lo, hi = (np.ascontiguousarray(np.broadcast_to(np.asarray(e, np.float64), t.shape[1:]))
                  for e in ends)
    except ValueError:
        raise ValueError(f"project_hyperplane_box: bounds must be numbers or ({t.shape[1]},) "
                         f"arrays, got shapes {np.shape(ends[0])}, {np.shape(ends[1])}") from None
    d = np.empty_like(t)
    hyperplane_box_steps(t, w, b, lo, hi, norm == "l2", NEGLIGIBLE, d)
    return d
