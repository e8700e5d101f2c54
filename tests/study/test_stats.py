"""study/stats.py against each statistic's defining equation and an independent
implementation: scipy.stats' own functions where the module takes a shortcut, plain enumeration
of the null distribution on small cases where the module calls scipy."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sp

from robustcnn.study import stats


# -- the t-interval over seeds ------------------------------------------------------------

def test_t_interval_is_the_mean_plus_minus_t_s_over_root_n():
    values = [0.61, 0.64, 0.58, 0.66]
    iv = stats.t_interval(values)
    n, mean, s = 4, np.mean(values), np.std(values, ddof=1)
    half = sp.t.ppf(0.975, n - 1) * s / math.sqrt(n)
    assert iv.n == 4 and iv.mean == pytest.approx(mean)
    assert (iv.low, iv.high) == pytest.approx((mean - half, mean + half))
    # scipy's own interval of a t-distributed mean as the oracle.
    low, high = sp.t.interval(0.95, n - 1, loc=mean, scale=sp.sem(values))
    assert (iv.low, iv.high) == pytest.approx((low, high))
    # t_{3, 0.975} = 3.182 (tables): wider than the normal's 1.96.
    assert half / (s / 2) == pytest.approx(3.182, abs=1e-3)


def test_t_interval_with_one_seed_has_no_interval_and_none_without_values():
    iv = stats.t_interval([0.7])
    assert iv.mean == pytest.approx(0.7) and iv.low is None and iv.high is None and iv.n == 1
    assert stats.t_interval([]) is None
    assert stats.t_interval([None, float("nan"), 0.5]).n == 1


def test_t_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(2000):
        iv = stats.t_interval(rng.normal(0.6, 0.05, size=3))
        hits += iv.low <= 0.6 <= iv.high
    # Binomial(2000, 0.95): sd 0.49 pp; 4 sd either way.
    assert 0.93 < hits / 2000 < 0.97


# -- the bootstrap over test images ---------------------------------------------------------

def test_bootstrap_agrees_with_scipys_resampling_bootstrap():
    """The multinomial shortcut against scipy.stats.bootstrap, which resamples images one by
    one: the same distribution, so the same percentile interval up to Monte-Carlo error."""
    rng = np.random.default_rng(0)
    for p, n in ((0.3, 400), (0.9, 150)):
        correct = (rng.random(n) < p).astype(float)
        low, high = stats.bootstrap_interval(correct)
        ref = sp.bootstrap((correct,), np.mean, n_resamples=10_000, method="percentile",
                           rng=np.random.default_rng(5)).confidence_interval
        # Each end's Monte-Carlo error is well under 1/n at 10,000 resamples.
        assert low == pytest.approx(ref.low, abs=1.5 / n)
        assert high == pytest.approx(ref.high, abs=1.5 / n)


def test_bootstrap_matches_the_normal_approximation_on_many_images():
    correct = np.r_[np.ones(3000), np.zeros(2000)]  # p = 0.6 on n = 5000
    low, high = stats.bootstrap_interval(correct)
    half = 1.959964 * math.sqrt(0.6 * 0.4 / 5000)
    assert low == pytest.approx(0.6 - half, abs=0.002)
    assert high == pytest.approx(0.6 + half, abs=0.002)


def test_bootstrap_is_seeded_and_degenerate_cases_are_exact():
    correct = np.r_[np.ones(30), np.zeros(20)]
    assert stats.bootstrap_interval(correct) == stats.bootstrap_interval(correct)
    # Scores with many distinct values (shares of seeds): the seed shows in the interval.
    shares = np.random.default_rng(0).random(50)
    assert stats.bootstrap_interval(shares) != stats.bootstrap_interval(shares, seed=1)
    assert stats.bootstrap_interval(np.ones(10)) == (1.0, 1.0)
    assert stats.bootstrap_interval([]) is None
    with pytest.raises(ValueError, match="resamples must be >= 1"):
        stats.bootstrap_interval(correct, resamples=0)


def test_image_scores_align_seeds_on_the_images_they_share():
    seed0 = (np.array([0, 1, 2, 3]), np.array([1, 0, 1, 1], bool))
    seed1 = (np.array([3, 2, 1, 9]), np.array([0, 1, 1, 1], bool))  # another order, image 9
    images, scores = stats.image_scores([seed0, seed1])
    assert images.tolist() == [1, 2, 3]
    assert scores == pytest.approx([0.5, 1.0, 0.5])
    assert stats.image_scores([]) is None


# -- the sampling error ---------------------------------------------------------------------

@pytest.mark.parametrize("p, n", [(0.5, 500), (0.1, 2000), (0.97, 1000)])
def test_sampling_error_is_the_binomial_standard_deviation_over_n(p, n):
    assert stats.sampling_error(p, n) == pytest.approx(math.sqrt(p * (1 - p) / n))
    assert stats.sampling_error(p, n) == pytest.approx(sp.binom(n, p).std() / n)
    assert stats.max_sampling_error(n) >= stats.sampling_error(p, n)
    assert stats.max_sampling_error(n) == pytest.approx(1 / (2 * math.sqrt(n)))


def test_sampling_error_of_a_simulated_accuracy():
    rng = np.random.default_rng(2)
    accuracies = rng.binomial(500, 0.3, size=20_000) / 500
    assert accuracies.std() == pytest.approx(stats.sampling_error(0.3, 500), rel=0.03)
    with pytest.raises(ValueError, match="n must be >= 1"):
        stats.sampling_error(0.5, 0)


# -- McNemar's exact test ---------------------------------------------------------------------

def _binomial_two_sided(k, n):
    """The exact two-sided p of k successes in n at ½ by enumeration: the total probability of
    the outcomes no more likely than k (the binomial null is symmetric)."""
    probs = [math.comb(n, i) / 2 ** n for i in range(n + 1)]
    return min(1.0, sum(q for q in probs if q <= probs[k] * (1 + 1e-12)))


@pytest.mark.parametrize("only_a, only_b, both", [(9, 2, 30), (2, 9, 5), (5, 5, 0), (0, 6, 3),
                                                   (1, 0, 10), (17, 8, 100)])
def test_mcnemar_is_the_binomial_test_on_the_discordant_pairs(only_a, only_b, both):
    a = np.r_[np.ones(only_a), np.zeros(only_b), np.ones(both), np.zeros(4)].astype(bool)
    b = np.r_[np.zeros(only_a), np.ones(only_b), np.ones(both), np.zeros(4)].astype(bool)
    perm = np.random.default_rng(0).permutation(len(a))  # the images' order must not matter
    t = stats.mcnemar_exact(a[perm], b[perm])
    assert (t.first, t.second, t.ties) == (only_a, only_b, both + 4)
    k, n = min(only_a, only_b), only_a + only_b
    # The defining sum: p = min(1, 2 Σ_{i ≤ min(b, c)} C(n, i) / 2ⁿ).
    assert t.p == pytest.approx(min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n))
    assert t.p == pytest.approx(_binomial_two_sided(only_a, n))
    assert t.significant == (t.p < 0.05)


def test_mcnemar_without_discordant_pairs_and_with_mismatched_images():
    same = np.array([1, 0, 1], bool)
    assert stats.mcnemar_exact(same, same).p == 1.0
    with pytest.raises(ValueError, match="not the same images"):
        stats.mcnemar_exact(same, same[:2])


# -- tests across seeds and cells ---------------------------------------------------------------

def _signed_rank_p(diffs):
    """The exact two-sided Wilcoxon p by enumerating all 2ⁿ sign assignments of the ranks."""
    d = [x for x in diffs if x != 0]
    ranks = sp.rankdata(np.abs(d))
    observed = sum(r for r, x in zip(ranks, d) if x > 0)
    mean = ranks.sum() / 2
    sums = [sum(r for r, s in zip(ranks, signs) if s)
            for signs in itertools.product((0, 1), repeat=len(d))]
    return sum(abs(s - mean) >= abs(observed - mean) - 1e-9 for s in sums) / len(sums)


@pytest.mark.parametrize("diffs", [[0.02, 0.05, -0.01, 0.03, 0.04, 0.06, 0.07],
                                   [-0.1, -0.2, 0.3, -0.4, -0.5, 0.6],
                                   [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08]])
def test_wilcoxon_matches_the_enumerated_signed_rank_distribution(diffs):
    t = stats.wilcoxon_test(diffs)
    assert t.p == pytest.approx(_signed_rank_p(diffs))
    assert (t.first, t.second) == (sum(d > 0 for d in diffs), sum(d < 0 for d in diffs))


def test_wilcoxon_drops_zeros_and_has_no_evidence_without_differences():
    t = stats.wilcoxon_test([0.0, 0.01, 0.02, 0.03, 0.0, 0.05, 0.04, 0.06])
    assert t.ties == 2 and t.p == pytest.approx(_signed_rank_p([0.01, 0.02, 0.03, 0.05, 0.04,
                                                                 0.06]))
    assert stats.wilcoxon_test([0.0, 0.0]).p == 1.0
    # Equal differences computed in floating point tie exactly (ranks shared).
    assert stats.wilcoxon_test([0.1 + 0.2, 0.3, -0.3, 0.3 + 1e-15]).p == \
        pytest.approx(_signed_rank_p([0.3, 0.3, -0.3, 0.3]))


@pytest.mark.parametrize("diffs", [[1, 1, 1, 1, 1, 1, -1], [0.2, -0.1, 0.0, 0.3], [-1] * 6])
def test_sign_test_is_the_binomial_test_on_the_signs(diffs):
    t = stats.sign_test(diffs)
    pos, neg = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    assert (t.first, t.second, t.ties) == (pos, neg, len(diffs) - pos - neg)
    assert t.p == pytest.approx(_binomial_two_sided(pos, pos + neg))
    assert stats.sign_test([0, 0]).p == 1.0


# -- Holm–Bonferroni -----------------------------------------------------------------------

def _holm_step_down(p, alpha):
    """Holm's procedure as he defines it: sorted ascending, reject H_(1), H_(2), … while
    p_(k) ≤ α / (m − k + 1); stop at the first that is not."""
    order = np.argsort(p, kind="stable")
    rejected = np.zeros(len(p), bool)
    for k, i in enumerate(order):
        if p[i] > alpha / (len(p) - k):
            break
        rejected[i] = True
    return rejected


def _closed_bonferroni(p):
    """An independent oracle: Holm is the closed testing of Bonferroni-tested intersections,
    so H_i's adjusted p is the largest, over every subset S holding i, of min(1, |S|·min_S p)
    (enumerated)."""
    import itertools

    m = len(p)
    out = []
    for i in range(m):
        others = [j for j in range(m) if j != i]
        worst = 0.0
        for r in range(m):
            for rest in itertools.combinations(others, r):
                subset = (i,) + rest
                worst = max(worst, min(1.0, len(subset) * min(p[j] for j in subset)))
        out.append(worst)
    return out


@pytest.mark.parametrize("seed", range(20))
def test_holm_is_the_step_down_procedure_and_closed_testing(seed):
    from robustcnn.study.stats import holm

    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 8))
    p = rng.choice([0.001, 0.004, 0.01, 0.02, 0.03, 0.2, 0.5, 1.0], m) if seed % 2 else \
        rng.random(m) ** 3
    adjusted = holm(p)
    assert adjusted == pytest.approx(_closed_bonferroni(list(p)), abs=1e-12)
    assert all(a >= q - 1e-15 for a, q in zip(adjusted, p))
    for alpha in (0.01, 0.05, 0.1):
        assert (np.asarray(adjusted) <= alpha).tolist() == _holm_step_down(p, alpha).tolist()


def test_holm_against_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    from robustcnn.study.stats import holm

    p = np.random.default_rng(1).random(12) ** 2
    assert holm(p) == pytest.approx(multitest.multipletests(p, method="holm")[1])


def test_holm_edge_cases():
    from robustcnn.study.stats import holm

    assert holm([]) == [] and holm([0.03]) == [0.03]
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        holm([0.5, 1.5])


def test_radius_diffs_keep_the_ranks_and_signs():
    from scipy import stats as sp

    from robustcnn.study.stats import radius_diffs, wilcoxon_test

    inf = np.inf
    a = np.array([0.5, inf, inf, 0.2, 0.0, 1.0])
    b = np.array([0.3, 0.4, inf, inf, 0.0, 0.1])
    d = radius_diffs(a, b)
    assert np.isfinite(d).all()
    assert d[[0, 4, 5]] == pytest.approx([0.2, 0.0, 0.9]) and d[2] == 0.0
    assert d[1] > 0.9 and d[3] < -0.9 and abs(d[1]) == abs(d[3])
    # The Wilcoxon test of these is that of the differences with any larger stand-in for inf.
    stand_in = np.array([0.2, 50.0, 0.0, -50.0, 0.0, 0.9])
    assert wilcoxon_test(d).p == pytest.approx(sp.wilcoxon(stand_in[stand_in != 0]).pvalue)
    with pytest.raises(ValueError, match="not the same images"):
        radius_diffs([1.0], [1.0, 2.0])
