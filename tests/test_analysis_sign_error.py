"""Robust sign-error over coupled environments (analysis.sign_error), by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis.schema import Design
from analysis.sign_error import hoeffding_weight, robust_sign_error, sign_error

#  lr bs seed gap   measure
ROWS = [(0, 0, 0, 0.10, 1.0), (0, 0, 1, 0.12, 2.0), (1, 0, 0, 0.20, 3.0), (1, 0, 1, 0.22, 0.0),
        (0, 1, 0, 0.30, 5.0), (0, 1, 1, 0.32, 6.0), (1, 1, 0, 0.40, 7.0), (1, 1, 1, 0.42, 8.0)]
DF = pd.DataFrame(ROWS, columns=["hp.lr", "hp.bs", "hp.seed", "gen.gap_acc", "measure.m"])


def score(df=DF, measure="measure.m", **kw):
    kw.setdefault("hoeffding", False)
    return robust_sign_error(df[measure], df["gen.gap_acc"], Design.from_table(df), **kw)


def test_sign_error_values():
    assert sign_error(1, 2, 0.1, 0.2) == 0.0   # same order
    assert sign_error(2, 1, 0.1, 0.2) == 1.0   # opposite order
    assert sign_error(1, 1, 0.1, 0.2) == 0.5   # tied measure: a coin flip


def test_hoeffding_weight_by_hand():
    # n = 10,000, Δg = 0.05: φ = 2 exp(−2·10⁴·0.025²) = 2e^{−12.5}; w = (1 − φ)² − 0.5
    assert hoeffding_weight(0.05, 10_000) == pytest.approx((1 - 2 * math.exp(-12.5)) ** 2 - 0.5)
    # Δg = 0.01: φ = 2e^{−0.5} > 1 -> w = 0: the two gaps could be equal by sampling noise
    assert hoeffding_weight(0.01, 10_000) == 0.0
    # a smaller test set needs a larger gap difference for the same weight
    assert hoeffding_weight(0.05, 360) < hoeffding_weight(0.05, 10_000)


def test_hand_example_unweighted():
    # environments (cells differing in one axis; all 2×2 seed pairs):
    #   lr, bs=0: (0.10,1)(0.12,2) vs (0.20,3)(0.22,0): errors 0,1,0,1 -> 0.5
    #   lr, bs=1: (0.30,5)(0.32,6) vs (0.40,7)(0.42,8): all agree       -> 0
    #   bs, lr=0 and bs, lr=1: all agree                                 -> 0, 0
    r = score()
    assert r.per_axis["hp.lr"]["mean"] == pytest.approx(0.25)
    assert r.per_axis["hp.lr"]["p90"] == pytest.approx(0.45)   # np.percentile([0, 0.5], 90)
    assert r.per_axis["hp.lr"]["max"] == pytest.approx(0.5)
    assert r.per_axis["hp.bs"] == {"mean": 0.0, "p90": 0.0, "max": 0.0, "n_envs": 2}
    assert (r.mean, r.max, r.n_envs) == (pytest.approx(0.125), 0.5, 4)
    assert r.p90 == pytest.approx(0.35)                        # np.percentile([0, 0, 0, 0.5], 90)


def test_measure_equal_gap_negated_constant():
    df = DF.assign(**{"measure.gap": DF["gen.gap_acc"], "measure.neg": -DF["gen.gap_acc"], "measure.c": 1.0})
    assert score(df, "measure.gap").max == 0.0
    assert score(df, "measure.neg").mean == 1.0
    assert score(df, "measure.c").mean == 0.5


def test_hoeffding_filter_drops_noisy_environments():
    df = DF.copy()
    df["gen.n_test"] = 2_000
    # bs=1 runs get the gaps of the bs=0 runs: in the bs environments |Δg| ≤ 0.02, and with
    # n = 2000, w(0.02) = 0 (φ = 2e^{−0.4} > 1) -> both bs environments are dropped.
    df.loc[df["hp.bs"] == 1, "gen.gap_acc"] = df["gen.gap_acc"] - 0.2
    r = score(df, hoeffding=True, n_test=df["gen.n_test"])
    assert r.per_axis["hp.bs"]["n_envs"] == 0 and math.isnan(r.per_axis["hp.bs"]["mean"])
    # lr envs: bs=0 keeps pairs with Δg ∈ {0.08, 0.10, 0.12}; weights are unequal but the
    # errors are 0,1,0,1 on pairs (Δg 0.10, 0.12, 0.08, 0.10): loss = (w.12 + w.10)/(w.10+w.12+w.08+w.10)
    w = {d: hoeffding_weight(d, 2_000) for d in (0.08, 0.10, 0.12)}
    expected = (w[0.12] + w[0.10]) / (2 * w[0.10] + w[0.12] + w[0.08])
    assert r.per_axis["hp.lr"]["max"] == pytest.approx(expected)


def test_min_ess_drops_small_environments():
    r = score(min_ess=5)  # each environment has 4 equally weighted pairs: ESS = 4
    assert r.n_envs == 0 and math.isnan(r.mean)
    assert score(min_ess=4).n_envs == 4


def test_nan_measure_pairs_are_ignored():
    df = DF.copy()
    df.loc[3, "measure.m"] = np.nan  # the model that made the lr/bs=0 environment wrong
    assert score(df).max == 0.0
