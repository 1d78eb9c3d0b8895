"""Jiang's sign τ and τ_b (analysis.kendall) against hand values, O(n²) and scipy."""


import numpy as np
import pytest
import scipy.stats

from analysis.kendall import concordance, kendall, kendall_tau, kendall_tau_b


def naive_tau(x, y):
    """Jiang et al. (2020): 1/(n(n-1)) Σ_{i≠j} sign(x_i−x_j) sign(y_i−y_j), written out."""
    n = len(x)
    s = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i in range(n) for j in range(n) if i != j)
    return s / (n * (n - 1))


def test_hand_example():
    # pairs of [1,3,2,4] against [1,2,3,4]: one discordant pair (3,2), five concordant
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # a tie in x counts 0 and stays in the denominator (no tie correction)
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / 3)


def test_measure_equal_gap_and_negated_and_constant():
    g = np.random.default_rng(0).normal(size=50)
    assert kendall_tau(g, g) == 1.0
    assert kendall_tau(-g, g) == -1.0
    assert kendall_tau(np.ones(50), g) == 0.0  # not NaN, unlike τ_b
    assert np.isnan(kendall_tau_b(np.ones(50), g))


@pytest.mark.parametrize("seed", range(20))
def test_tau_matches_naive_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 45))
    x = rng.integers(0, rng.integers(1, 6), n).astype(float)  # heavy ties, sometimes constant
    y = rng.integers(0, 4, n) * 0.5 if seed % 2 else rng.normal(size=n)
    assert kendall_tau(x, y) == pytest.approx(naive_tau(x, y), abs=1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_tau_b_and_pvalue_match_scipy(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(3, 200))
    x = rng.integers(0, 7, n).astype(float)
    y = x + rng.integers(-3, 4, n) if seed % 2 else rng.normal(size=n)
    ref = scipy.stats.kendalltau(x, y, method="asymptotic")
    res = kendall(x, y)
    if np.isnan(ref.statistic):
        assert np.isnan(res.tau_b)
    else:
        assert res.tau_b == pytest.approx(ref.statistic, abs=1e-12)
        assert res.pvalue == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)


def test_grouped_concordance_matches_per_group():
    rng = np.random.default_rng(3)
    n, G = 300, 7
    g = rng.integers(0, G, n)
    x, y = rng.integers(0, 5, n).astype(float), rng.integers(0, 5, n).astype(float)
    tau = concordance(x, y, g, G).tau
    for k in range(G):
        assert tau[k] == pytest.approx(naive_tau(x[g == k], y[g == k]), abs=1e-12)
    # a group with one model has no pair: NaN
    assert np.isnan(concordance([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0, 0, 1], 2).tau[1])


def test_copies_are_not_pairs():
    # rows 0 and 1 are copies of model 0; their pair is dropped from the denominator
    c = concordance([1.0, 1.0, 2.0], [1.0, 1.0, 2.0], origin=[0, 0, 1])
    assert c.pairs[0] == 2 and c.cmd[0] == 2 and c.tau[0] == 1.0


def test_nan_is_rejected():
    with pytest.raises(ValueError):
        kendall_tau([1.0, np.nan], [1.0, 2.0])


def test_ten_thousand_models_match_scipy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=10_000), rng.normal(size=10_000)
    tau = kendall_tau(x, y)
    assert tau == pytest.approx(scipy.stats.kendalltau(x, y).statistic, abs=1e-12)
