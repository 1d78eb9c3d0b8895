"""Conditional mutual information K(μ) (analysis.cmi) against a pair-by-pair transcription."""

import itertools

import numpy as np
import pandas as pd
import pytest

from analysis import kernels
from analysis.cmi import conditional_mutual_information
from analysis.kendall import kendall_tau
from analysis.schema import Design


def naive_per_set(df, measure, gap, axes):
    """Jiang et al. (2020): loop over ordered pairs i ≠ j, bins keyed by tuples of values."""
    rows = df[~(df[measure].isna() | df[gap].isna())].reset_index(drop=True)
    mu, g = rows[measure].to_numpy(), rows[gap].to_numpy()
    values = [tuple(v) for v in rows[list(axes)].itertuples(index=False)]
    n = len(rows)
    out = {}
    for r in range(min(len(axes), 2) + 1):
        for S in itertools.combinations(axes, r):
            counts = {}
            for i in range(n):
                for j in range(n):
                    if i == j:
                        continue
                    u = tuple(values[i][axes.index(a)] for a in S) + tuple(values[j][axes.index(a)] for a in S)
                    key = (u, np.sign(mu[i] - mu[j]), np.sign(g[i] - g[j]))
                    counts[key] = counts.get(key, 0) + 1
            total = sum(counts.values())
            bins = {}
            for (u, a, b), c in counts.items():
                bins.setdefault(u, {})[(a, b)] = c
            mi = h = 0.0
            for cells in bins.values():
                nu = sum(cells.values())
                pa, pb = {}, {}
                for (a, b), c in cells.items():
                    pa[a] = pa.get(a, 0) + c / nu
                    pb[b] = pb.get(b, 0) + c / nu
                mi += nu / total * sum(c / nu * np.log(c / nu / (pa[a] * pb[b])) for (a, b), c in cells.items())
                h -= nu / total * sum(p * np.log(p) for p in pb.values())
            out[S] = 0.0 if h <= 1e-12 else mi / h
    return out


def small_table(seed, n=36):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"hp.lr": rng.choice([0.1, 0.01, 0.001], n), "hp.variant": rng.choice(["crate", "crate_n"], n),
                       "hp.dropout": rng.choice([0.0, 0.5], n), "hp.seed": rng.integers(0, 3, n)})
    df["gen.gap_acc"] = rng.integers(0, 4, n) * 0.1 + 0.05 * (df["hp.lr"] > 0.005)  # ties in the gap
    df["measure.m"] = rng.integers(0, 3, n) + (df["hp.lr"] > 0.005)                   # ties in the measure
    df.loc[rng.random(n) < 0.1, "measure.m"] = np.nan
    return df


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("tree_bytes", [kernels.TREE_BYTES, 1])  # all bins in one sweep / one bin per sweep
def test_matches_pairwise_transcription(seed, tree_bytes, monkeypatch):
    monkeypatch.setattr(kernels, "TREE_BYTES", tree_bytes)
    df = small_table(seed)
    d = Design.from_table(df)
    r = conditional_mutual_information(df["measure.m"], df["gen.gap_acc"], d)
    ref = naive_per_set(df, "measure.m", "gen.gap_acc", list(d.axes))
    assert set(r.per_set) == set(ref)
    for S, v in ref.items():
        assert r.per_set[S] == pytest.approx(v, abs=1e-10), S
    assert r.K == pytest.approx(min(ref.values()), abs=1e-10)
    assert r.per_set[r.argmin] == pytest.approx(r.K)


def grid(seed=0, n_seeds=3):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(list(itertools.product(range(4), range(3), range(n_seeds))),
                      columns=["hp.h", "hp.z", "hp.seed"])
    df["gen.gap_acc"] = 0.1 * df["hp.h"] + rng.normal(0, 0.01, len(df))
    return df, rng


def test_measure_equal_gap_gives_one():
    df, _ = grid()
    d = Design.from_table(df)
    g = df["gen.gap_acc"]
    assert conditional_mutual_information(g, g, d).K == pytest.approx(1.0, abs=1e-9)
    assert conditional_mutual_information(-g, g, d).K == pytest.approx(1.0, abs=1e-9)  # K ignores the sign


def test_constant_measure_gives_zero():
    df, _ = grid()
    r = conditional_mutual_information(np.full(len(df), 2.0), df["gen.gap_acc"], Design.from_table(df))
    assert r.K == 0.0


def test_confounded_axis_explains_everything():
    # h drives both the gap and the measure, with independent noise: τ is high but
    # conditioning on h leaves no information in the measure -> K ≈ 0, arg-min holds h.
    df, rng = grid(n_seeds=6)
    mu = df["hp.h"] + rng.normal(0, 0.01, len(df))
    r = conditional_mutual_information(mu, df["gen.gap_acc"], Design.from_table(df))
    assert kendall_tau(mu, df["gen.gap_acc"]) > 0.7
    assert r.K < 0.05
    assert "hp.h" in r.argmin
    assert r.per_set[()] > 0.5  # unconditioned, the association is strong


def test_self_pairs_excluded():
    # two models: the only ordered pairs are (1,2) and (2,1); V_μ = V_g on both -> K = 1.
    # counting self-pairs (PGDL) would add two (0, 0) pairs and give K < 1.
    df = pd.DataFrame({"hp.a": [0, 1], "gen.gap_acc": [0.1, 0.2]})
    d = Design.from_table(df)
    r = conditional_mutual_information(np.array([1.0, 2.0]), df["gen.gap_acc"], d)
    assert r.per_set[()] == pytest.approx(1.0)
    # conditioning on hp.a determines V_g: Ĥ = 0 and K_S := 0 (nothing left to explain)
    assert r.per_set[("hp.a",)] == 0.0
