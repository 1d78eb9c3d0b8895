"""Granulated Kendall ψ_i / Ψ (analysis.granulated) on hand-computed grids."""

import itertools

import numpy as np
import pandas as pd
import pytest

from analysis.granulated import granulated_kendall
from analysis.kendall import kendall_tau
from analysis.schema import Design, axis_columns

# 2×2×2 grid, one model per cell. gap rises with the cell index; the measure mostly follows.
#   cell (a,b,c)  gap   measure
#   000           0.1   1.0
#   001           0.2   3.0
#   010           0.3   0.5
#   011           0.4   4.0
#   100           0.5   6.0
#   101           0.6   5.0
#   110           0.7   8.0
#   111           0.8   7.0
GRID = pd.DataFrame(list(itertools.product([0, 1], repeat=3)), columns=["hp.a", "hp.b", "hp.c"])
GRID["gen.gap_acc"] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
GRID["measure.m"] = [1.0, 3.0, 0.5, 4.0, 6.0, 5.0, 8.0, 7.0]


def psi(df, measure="measure.m", gap="gen.gap_acc"):
    return granulated_kendall(df[measure], df[gap], Design.from_table(df))


def test_hand_computed_2x2x2():
    # ψ_a: groups (b,c) = 00: (0.1,1)-(0.5,6) +1; 01: (0.2,3)-(0.6,5) +1; 10: (0.3,0.5)-(0.7,8) +1;
    #      11: (0.4,4)-(0.8,7) +1                                                     -> ψ_a = 1
    # ψ_b: groups (a,c) = 00: (0.1,1)-(0.3,0.5) −1; 01: (0.2,3)-(0.4,4) +1; 10: (0.5,6)-(0.7,8) +1;
    #      11: (0.6,5)-(0.8,7) +1                                                     -> ψ_b = 1/2
    # ψ_c: groups (a,b) = 00: (0.1,1)-(0.2,3) +1; 01: (0.3,0.5)-(0.4,4) +1; 10: (0.5,6)-(0.6,5) −1;
    #      11: (0.7,8)-(0.8,7) −1                                                     -> ψ_c = 0
    r = psi(GRID)
    assert r.psi == {"hp.a": 1.0, "hp.b": 0.5, "hp.c": 0.0}
    assert r.n_groups == {"hp.a": 4, "hp.b": 4, "hp.c": 4}
    assert r.Psi == pytest.approx(0.5)
    # overall τ: 4 discordant pairs (1,0.5) (3,0.5) (6,5) (8,7) of 28 -> (24 − 4) / 28
    assert kendall_tau(GRID["measure.m"], GRID["gen.gap_acc"]) == pytest.approx(20 / 28)


def test_missing_run_shrinks_groups():
    # without cell 111 the groups that contained it have one value of the axis left: skipped
    # ψ_a = mean(+1, +1, +1) over 3 groups; ψ_b = mean(−1, +1, +1); ψ_c = mean(+1, +1, −1)
    r = psi(GRID.iloc[:7])
    assert r.n_groups == {"hp.a": 3, "hp.b": 3, "hp.c": 3}
    assert r.psi["hp.a"] == 1.0
    assert r.psi["hp.b"] == pytest.approx(1 / 3)
    assert r.psi["hp.c"] == pytest.approx(1 / 3)
    assert r.Psi == pytest.approx((1 + 1 / 3 + 1 / 3) / 3)


def test_measure_equal_gap_negated_and_constant():
    df = GRID.assign(**{"measure.gap": GRID["gen.gap_acc"], "measure.neg": -GRID["gen.gap_acc"],
                        "measure.const": 3.0})
    assert psi(df, "measure.gap").Psi == 1.0
    assert psi(df, "measure.neg").Psi == -1.0
    r = psi(df, "measure.const")
    assert r.Psi == 0.0 and set(r.psi.values()) == {0.0}  # τ = 0 per group, never NaN
    assert r.n_groups == {"hp.a": 4, "hp.b": 4, "hp.c": 4}


def test_constant_gap_in_group_gives_zero():
    df = GRID.copy()
    df.loc[df["hp.a"] == 1, "gen.gap_acc"] = 0.5  # gap constant in every ψ_b and ψ_c group with a=1
    r = psi(df)
    # ψ_b groups: a0c0 −1, a0c1 +1, a1c0 0, a1c1 0
    assert r.psi["hp.b"] == pytest.approx(0.0)
    assert not np.isnan(r.Psi)


def test_seeds_fall_in_the_same_group():
    # 2 axes × 2 seeds; hp.seed is not an axis. ψ_a group b=0 holds 4 models:
    #   a  seed gap  measure
    #   0  0    0.1  1
    #   0  1    0.2  3
    #   1  0    0.3  2
    #   1  1    0.4  4
    # pairs: (1,3)+ (1,2)+ (1,4)+ (3,2)− (3,4)+ (2,4)+ -> τ = (5 − 1)/6 = 2/3.
    # group b=1 is the same with measure + 10 -> 2/3.  ψ_a = 2/3.
    rows = []
    for b in (0, 1):
        for a, seed, g, m in [(0, 0, 0.1, 1), (0, 1, 0.2, 3), (1, 0, 0.3, 2), (1, 1, 0.4, 4)]:
            rows.append({"hp.a": a, "hp.b": b, "hp.seed": seed, "gen.gap_acc": g + b, "measure.m": m + 10 * b})
    df = pd.DataFrame(rows)
    assert axis_columns(df) == ["hp.a", "hp.b"]
    r = psi(df)
    assert set(r.psi) == {"hp.a", "hp.b"}
    assert r.n_groups["hp.a"] == 2
    assert r.psi["hp.a"] == pytest.approx(2 / 3)


def test_nan_measure_rows_are_dropped():
    df = GRID.copy()
    df.loc[7, "measure.m"] = np.nan  # same as removing run 111
    assert psi(df).psi == pytest.approx(psi(GRID.iloc[:7]).psi)


def naive_granulated(df, measure, gap, axes):
    """Direct transcription: groupby the other axes, Jiang τ, skip single-valued groups."""
    out = {}
    for a in axes:
        others = [o for o in axes if o != a]
        taus = []
        for _, grp in (df.groupby(others, dropna=False) if others else [(None, df)]):
            if grp[a].nunique(dropna=False) >= 2:
                x, y = grp[measure].to_numpy(), grp[gap].to_numpy()
                n = len(x)
                s = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i in range(n) for j in range(n) if i != j)
                taus.append(s / (n * (n - 1)))
        out[a] = (np.mean(taus) if taus else np.nan, len(taus))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_random_incomplete_grid_matches_groupby(seed):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(list(itertools.product([0.1, 0.01, 0.001], ["crate", "crate_n"], [0, 1], [0, 1, 2])),
                      columns=["hp.lr", "hp.variant", "hp.dropout", "hp.seed"])
    df = df.sample(frac=0.7, random_state=seed).reset_index(drop=True)  # missing runs
    df["gen.gap_acc"] = rng.integers(0, 5, len(df)) * 0.01
    df["measure.m"] = rng.integers(0, 4, len(df)).astype(float)
    r = psi(df)
    ref = naive_granulated(df, "measure.m", "gen.gap_acc", ["hp.lr", "hp.variant", "hp.dropout"])
    for a, (v, k) in ref.items():
        assert r.n_groups[a] == k
        assert r.psi[a] == pytest.approx(v, abs=1e-12)


def test_aliased_axes_are_merged():
    # width and heads swept together (tiny/small): no group varies one with the other
    # fixed; they act as one axis "width+heads" instead of two axes without any group.
    df = GRID.assign(**{"hp.heads": GRID["hp.a"] * 6 + 6})
    r = psi(df)
    assert set(r.psi) == {"hp.a+heads", "hp.b", "hp.c"}
    assert r.psi["hp.a+heads"] == 1.0 and r.n_groups["hp.a+heads"] == 4
