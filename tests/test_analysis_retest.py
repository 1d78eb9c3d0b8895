"""Test–retest report (analysis.retest): hand-checked spreads, matching by run id, counts."""

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main
from analysis.retest import retest
from analysis.schema import AnalysisError


def table(n_cells=4, n_seeds=3, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_cells):
        for s in range(n_seeds):
            rows.append({"run_id": f"r{c}{s}", "hp.lr": [0.1, 0.01, 0.001, 0.0001][c], "hp.seed": s,
                         "status": "done", "gen.gap_acc": 0.1 * c + 0.01 * s, "gen.epochs": 10 + c})
    df = pd.DataFrame(rows)
    df["measure.exact"] = 2.0 ** np.arange(len(df))             # positive: log10 scale
    df["measure.signed"] = rng.normal(size=len(df))               # raw scale
    df["measure.params"] = 1000.0                                 # constant
    return df


def test_identical_tables():
    a = table()
    t = retest(a, a.copy()).set_index("measure")
    assert (t["identical"] == 1.0).all()
    assert (t["retest_sd"] == 0.0).all()
    assert t.loc["exact", "retest_tau_b"] == 1.0
    assert t.loc["exact", "scale"] == "log10" and t.loc["signed", "scale"] == "raw"
    assert np.isnan(t.loc["params", "retest_tau_b"])  # constant: τ_b undefined, as scipy


def test_spreads_by_hand():
    a = table()
    b = a.copy()
    b["measure.signed"] = a["measure.signed"] + np.where(np.arange(len(a)) % 2 == 0, 0.1, -0.1)
    t = retest(a, b).set_index("measure")
    # every run moves by 0.1: sqrt(mean(0.1²)/2)
    assert t.loc["signed", "retest_sd"] == pytest.approx(0.1 / np.sqrt(2))
    x = a["measure.signed"].to_numpy().reshape(4, 3)
    pooled = np.sqrt(((x - x.mean(axis=1, keepdims=True)) ** 2).sum() / (4 * 2))
    assert t.loc["signed", "seed_sd"] == pytest.approx(pooled)
    assert t.loc["signed", "noise_ratio"] == pytest.approx(0.1 / np.sqrt(2) / pooled)
    assert t.loc["signed", "identical"] == 0.0
    # the log10 scale: doubling every value moves each log by log10(2)
    b["measure.exact"] = a["measure.exact"] * 2
    t = retest(a, b).set_index("measure")
    assert t.loc["exact", "retest_sd"] == pytest.approx(np.log10(2) / np.sqrt(2))
    assert t.loc["exact", "median_rel_change"] == pytest.approx(1.0)
    assert t.loc["exact", "retest_tau_b"] == 1.0  # the same order


def test_matching_and_counts():
    a = table()
    b = a.iloc[2:].copy()                                   # two runs retrained nowhere
    b.loc[b.index[0], "status"] = "diverged"                 # one diverged on retest
    b = pd.concat([b, a.iloc[:1].assign(run_id="new")])      # one run only in the retest
    t = retest(a, b.sample(frac=1, random_state=0))          # order does not matter
    assert t.attrs["n_runs"] == len(a) - 3
    assert t.attrs["left_out"] == {"in the first table only": 2, "in the second table only": 1,
                                   "diverged in the second table": 1}
    assert "gen.gap_acc" in set(t["measure"]) and "gen.epochs" in set(t["measure"])


def test_bad_tables():
    a = table()
    with pytest.raises(AnalysisError, match="run_id"):
        retest(a.drop(columns="run_id"), a)
    with pytest.raises(AnalysisError, match="twice"):
        retest(pd.concat([a, a.iloc[:1]]), a)
    with pytest.raises(AnalysisError, match="fewer than 2"):
        retest(a, a.assign(run_id=[f"x{i}" for i in range(len(a))]))


def test_cli(tmp_path, capsys):
    a = table()
    b = a.assign(**{"measure.signed": a["measure.signed"] * 1.01})
    a.to_csv(tmp_path / "a.csv", index=False)
    b.to_csv(tmp_path / "b.csv", index=False)
    assert main(["retest", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "| measure |" in out and "signed" in out
    csv = pd.read_csv(tmp_path / "out" / "retest.csv")
    assert set(csv["measure"]) >= {"exact", "signed", "params", "gen.gap_acc"}
    assert (tmp_path / "out" / "retest.png").stat().st_size > 0
    assert main(["retest", str(tmp_path / "a.csv"), str(tmp_path / "nope.csv"), "--out", str(tmp_path)]) == 2
