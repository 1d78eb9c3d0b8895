"""correlate(): the per-measure table, and the seed bootstrap behind its intervals."""

import numpy as np
import pandas as pd
import pytest

from analysis.bootstrap import resample_within_cells, seed_bootstrap
from analysis.correlate import correlate
from analysis.schema import AnalysisError, Design
from analysis.synthetic import synthetic_table


@pytest.fixture(scope="module")
def table():
    df = synthetic_table({"lr": 3, "batch_size": 2, "dropout": 2}, n_seeds=3, n_measures=5, seed=1, n_test=10_000)
    g = df["gen.gap_acc"]
    return df.assign(**{"measure.gap": g, "measure.neg": -g, "measure.const": 7.0})


def row(corr, name):
    return corr.set_index("measure").loc[name]


def test_columns_and_anchors(table):
    corr = correlate(table, n_boot=50)
    axes = ["lr", "batch_size", "dropout"]
    for c in ["measure", "n", "tau", "tau_b", "Psi", "cmi", "cmi_set", "sign_error_mean", "sign_error_p90",
              "sign_error_max", "tau_lo", "tau_hi", "Psi_lo", "Psi_hi"]:
        assert c in corr.columns
    for a in axes:
        assert f"psi.{a}" in corr.columns and f"n_groups.{a}" in corr.columns
    assert "psi.seed" not in corr.columns
    assert corr.attrs["axes"] == axes
    gap, neg, const = row(corr, "gap"), row(corr, "neg"), row(corr, "const")
    assert (gap["tau"], gap["Psi"], gap["tau_b"]) == (1.0, 1.0, 1.0)
    assert gap["cmi"] == pytest.approx(1.0)
    assert gap["sign_error_max"] == 0.0
    assert (neg["tau"], neg["Psi"]) == (-1.0, -1.0)
    assert neg["sign_error_mean"] == 1.0
    assert const["tau"] == 0.0 and const["Psi"] == 0.0 and const["cmi"] == 0.0
    assert all(const[f"psi.{a}"] == 0.0 for a in axes)
    assert np.isnan(const["tau_b"])  # τ_b keeps scipy's convention
    # groups per axis: lr has 2·2 settings of the other axes, batch_size 3·2, dropout 3·2
    assert (gap["n_groups.lr"], gap["n_groups.batch_size"], gap["n_groups.dropout"]) == (4, 6, 6)
    # bootstrap: a perfect measure stays perfect in every replicate
    assert (gap["tau_lo"], gap["tau_hi"], gap["Psi_lo"], gap["Psi_hi"]) == (1.0, 1.0, 1.0, 1.0)
    assert (const["tau_lo"], const["tau_hi"]) == (0.0, 0.0)


def test_confounded_measure_high_tau_low_cmi(table):
    corr = correlate(table)
    conf = row(corr, "confounded_01")  # a function of lr only; lr drives most of the gap
    assert conf["tau"] > 0.4
    assert conf["cmi"] < 0.05
    assert "lr" in conf["cmi_set"].split("+")


def test_nan_measure_counts_rows(table):
    corr = correlate(table)
    r = row(corr, "nan_04")
    assert r["n"] == table["measure.nan_04"].notna().sum() < len(table)
    assert not np.isnan(r["Psi"])


def test_no_bootstrap_without_seeds(table):
    one_seed = table[table["hp.seed"] == 0]
    corr = correlate(one_seed, n_boot=20)
    assert "tau_lo" not in corr.columns


def test_bad_input():
    df = pd.DataFrame({"hp.a": [0, 1], "gen.gap_acc": [0.1, 0.2]})
    with pytest.raises(AnalysisError, match="measure"):
        correlate(df)
    with pytest.raises(AnalysisError, match="gen.gap_loss"):
        correlate(df.assign(**{"measure.m": [1.0, 2.0]}), gap="gen.gap_loss")


def test_resampling_stays_within_cells():
    cell = np.array([0, 0, 0, 1, 1, 2])
    rows = resample_within_cells(cell, 200, np.random.default_rng(0))
    assert rows.shape == (200, 6)
    assert (cell[rows] == np.sort(cell)).all()  # each cell keeps its size
    assert set(np.unique(rows[:, :3])) == {0, 1, 2}


def test_bootstrap_is_seeded_and_brackets(table):
    d = Design.from_table(table)
    m = {"s": table["measure.signal_00"].to_numpy()}
    y = table["gen.gap_acc"].to_numpy()
    a = seed_bootstrap(m, y, d, n_boot=100, seed=3)["s"]
    b = seed_bootstrap(m, y, d, n_boot=100, seed=3)["s"]
    c = seed_bootstrap(m, y, d, n_boot=100, seed=4)["s"]
    assert a == b and a != c
    assert a.tau_lo < a.tau_hi and a.Psi_lo <= a.Psi_hi
