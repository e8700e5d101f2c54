"""The study's statistics: intervals for an accuracy and paired tests between two models.

Every function takes plain numbers or arrays (the report gathers them from the database) and
returns numbers; scipy.stats does the tests it has.

- ``t_interval``: the mean over seeds with a Student-t interval, mean ± t_{n−1, 1−α/2} · s/√n,
  and the sample standard deviation s (the tables' "± spread"). With one seed there is no
  spread to estimate: the interval is None and the report gives the bootstrap over test images
  instead.
- ``bootstrap_interval``: the percentile bootstrap of a mean over test images, ``RESAMPLES``
  resamples from a fixed ``SEED``. An image's score is the share of seeds on which the model was
  right on it, so with several seeds the images are resampled jointly (the seeds attack the same
  images). Resampling n images with replacement from scores that take k distinct values draws
  the k counts from a multinomial (n, observed shares): the same distribution as resampling
  the images one by one, at the cost of k numbers per resample instead of n.
- ``sampling_error``: the standard error √(p(1−p)/n) of an accuracy p measured on n images
  (``max_sampling_error``: its worst case, p = ½).
- ``mcnemar_exact``: McNemar's exact test of two models on the same images — the binomial
  test, p = ½, on the discordant pairs (one model right, the other wrong).
- ``sign_test`` and ``wilcoxon_test``: paired differences (compressed − compact) across seeds
  and cells — the binomial test on the signs, and the Wilcoxon signed-rank test (zeros dropped).
- ``radius_diffs``: paired differences of an unbounded attack's per-image radii (DeepFool,
  C&W), where an image the attack did not fool is infinitely robust, for ``wilcoxon_test``.
- ``holm``: Holm–Bonferroni adjusted p-values of a family of tests, so that "significant"
  (adjusted p < ``ALPHA``) holds the family-wise error rate at ``ALPHA``.

These tests take the pairs as independent. Cells of one model at several eps are not (they
share the model and the images), so a p-value across cells is a guide, not an exact level.
"""

import math
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95   # every interval of the report
ALPHA = 0.05        # "significant" below this p-value
RESAMPLES = 10_000  # bootstrap resamples
SEED = 0            # the bootstrap's generator seed: the same database gives the same report


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values with its interval (``low``, ``high``) and their sample standard
    deviation ``std`` (None when ``n`` < 2)."""

    mean: float
    low: float = None
    high: float = None
    n: int = 0
    std: float = None


@dataclass(frozen=True)
class PairedTest:
    """A paired test: ``first`` pairs favour the first model (it is right / its value is
    larger), ``second`` the second, ``ties`` neither; ``p`` the two-sided p-value."""

    first: int
    second: int
    ties: int
    p: float
    name: str

    @property
    def significant(self):
        return self.p < ALPHA


def t_interval(values, confidence=CONFIDENCE):
    """The mean of ``values`` (e.g. one per seed) with its Student-t interval → ``Interval``;
    None when there are no values."""
    from scipy import stats

    values = np.asarray([v for v in values if v is not None and not math.isnan(v)], float)
    n = len(values)
    if n == 0:
        return None
    mean = float(values.mean())
    if n < 2:
        return Interval(mean, n=1)
    std = float(values.std(ddof=1))
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, std)


def bootstrap_interval(scores, *, resamples=RESAMPLES, seed=SEED, confidence=CONFIDENCE):
    """The percentile bootstrap interval (low, high) of the mean of ``scores`` (one number per
    test image: 0/1, or a share of seeds), ``resamples`` resamples of all n images drawn with
    replacement by a generator seeded with ``seed``; None for no images."""
    scores = np.asarray(scores, float).ravel()
    n = len(scores)
    if n == 0:
        return None
    if resamples < 1:
        raise ValueError(f"bootstrap: resamples must be >= 1, got {resamples}")
    values, counts = np.unique(scores, return_counts=True)
    rng = np.random.default_rng(seed)
    drawn = rng.multinomial(n, counts / n, size=resamples)  # (resamples, k) image counts
    means = drawn @ values / n
    low, high = np.quantile(means, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return float(low), float(high)


def image_scores(outcomes):
    """Per-image scores of one cell over its seeds: ``outcomes`` is a list of (image indices,
    correct flags) per seed → (the images every seed attacked, the share of seeds right on
    each), or None without outcomes."""
    if not outcomes:
        return None
    common = None
    for images, _ in outcomes:
        common = np.asarray(images) if common is None else np.intersect1d(common, images)
    common = np.unique(common)
    total = np.zeros(len(common))
    for images, correct in outcomes:
        order = np.argsort(images)
        found = order[np.searchsorted(np.asarray(images)[order], common)]
        total += np.asarray(correct, bool)[found]
    return common, total / len(outcomes)


def sampling_error(p, n):
    """The standard error √(p(1−p)/n) of an accuracy ``p`` measured on ``n`` images."""
    if n < 1:
        raise ValueError(f"sampling_error: n must be >= 1, got {n}")
    return math.sqrt(p * (1 - p) / n)


def max_sampling_error(n):
    """The largest standard error an accuracy on ``n`` images can have (p = ½): 1/(2√n)."""
    return sampling_error(0.5, n)


def mcnemar_exact(a_ok, b_ok):
    """McNemar's exact test of models a and b on the same images (``a_ok``, ``b_ok``: per
    image, right or not) → ``PairedTest``: ``first`` images only a got right, ``second`` only
    b, ``ties`` both or neither; p from the two-sided binomial test of ``first`` in ``first +
    second`` at ½ (1 when no image is discordant)."""
    from scipy import stats

    a_ok, b_ok = np.asarray(a_ok, bool), np.asarray(b_ok, bool)
    if a_ok.shape != b_ok.shape:
        raise ValueError(f"mcnemar: {a_ok.shape} and {b_ok.shape} outcomes: not the same "
                         f"images")
    only_a, only_b = int((a_ok & ~b_ok).sum()), int((~a_ok & b_ok).sum())
    discordant = only_a + only_b
    p = stats.binomtest(only_a, discordant, 0.5).pvalue if discordant else 1.0
    return PairedTest(only_a, only_b, len(a_ok) - discordant, float(p), "McNemar exact")


def sign_test(diffs):
    """The sign test of paired differences ``diffs`` (first − second) → ``PairedTest``: the
    two-sided binomial test at ½ of the positive ones among the non-zero ones."""
    from scipy import stats

    diffs = np.round(np.asarray(diffs, float), 12)
    pos, neg = int((diffs > 0).sum()), int((diffs < 0).sum())
    p = stats.binomtest(pos, pos + neg, 0.5).pvalue if pos + neg else 1.0
    return PairedTest(pos, neg, len(diffs) - pos - neg, float(p), "sign test")


def wilcoxon_test(diffs):
    """The Wilcoxon signed-rank test of paired differences ``diffs`` (first − second; zeros
    dropped, scipy's exact distribution when it applies) → ``PairedTest``; p = 1 with no
    non-zero difference."""
    from scipy import stats

    # Differences of accuracies are multiples of 1/n: rounding makes equal ones tie exactly.
    diffs = np.round(np.asarray(diffs, float), 12)
    pos, neg = int((diffs > 0).sum()), int((diffs < 0).sum())
    p = stats.wilcoxon(diffs[diffs != 0]).pvalue if pos + neg else 1.0
    return PairedTest(pos, neg, len(diffs) - pos - neg, float(p), "Wilcoxon signed-rank")


def radius_diffs(a, b):
    """Paired differences a − b of per-image radii (``inf``: the attack did not fool the model
    on that image) as finite numbers with the same ranks of |difference| and the same signs,
    for ``wilcoxon_test``: inf − inf is a tie (0), ±inf becomes ± (2·max finite |d| + 1)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        raise ValueError(f"radius_diffs: {a.shape} and {b.shape} radii: not the same images")
    with np.errstate(invalid="ignore"):
        d = np.where(np.isinf(a) & np.isinf(b) & (a == b), 0.0, a - b)
    finite = np.abs(d[np.isfinite(d)])
    cap = 2 * (finite.max() if finite.size else 0.0) + 1
    return np.where(np.isposinf(d), cap, np.where(np.isneginf(d), -cap, d))


def holm(pvalues):
    """Holm–Bonferroni adjusted p-values (Holm 1979, "A simple sequentially rejective multiple
    test procedure"), in the order given: with p_(1) ≤ … ≤ p_(m) sorted, the adjusted
    p_(i) = min(1, max_{j ≤ i} (m − j + 1)·p_(j)). Rejecting where the adjusted p < α is Holm's
    step-down procedure at level α: the chance of any false rejection in the family is ≤ α."""
    p = np.asarray(pvalues, float).ravel()
    if p.size and not ((p >= 0) & (p <= 1)).all():
        raise ValueError(f"holm: p-values must be in [0, 1], got {p.tolist()}")
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out.tolist()
