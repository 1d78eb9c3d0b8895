"""The compiled analysis (analysis.kernels) against the code it replaced and against
pair-by-pair transcriptions.

``tests/data/analysis_10k_fb2cc9d.csv`` and ``analysis_bootstrap_fb2cc9d.csv`` are the
tables ``correlate`` gave at commit fb2cc9d (the vectorised numpy version, which enumerated
the pairs of the conditional mutual information and of the sign-error, and merge-sorted in
numpy) on the synthetic tables built below. Statistics made of pair counts (τ, τ_b, ψ, Ψ,
the bootstrap intervals, the group counts) must be equal to the last bit; those that go
through ``log``/``exp`` (K(μ), the p-value, the Hoeffding-weighted sign-errors) to 1e-12,
because numpy's vectorised ``log`` and ``exp`` may differ in the last bit between CPUs.
"""

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import kernels
from analysis.correlate import correlate
from analysis.sign_error import SignErrorScorer, hoeffding_weight
from analysis.schema import Design
from analysis.synthetic import synthetic_table

DATA = Path(__file__).parent / "data"
TRANSCENDENTAL = ("tau_p", "cmi", "sign_error")


def same_table(res: pd.DataFrame, ref_csv: Path):
    ref = pd.read_csv(ref_csv)
    res = pd.read_csv(pd.io.common.StringIO(res.to_csv(index=False, float_format="%.17g")))
    assert list(res.columns) == list(ref.columns)
    for c in ref.columns:
        a, b = ref[c], res[c]
        if a.dtype.kind == "f" and c.startswith(TRANSCENDENTAL):
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=0, err_msg=c)
        elif a.dtype.kind in "fi":
            np.testing.assert_array_equal(b.to_numpy(), a.to_numpy(), err_msg=c)
        else:
            assert a.fillna("").tolist() == b.fillna("").tolist(), c


@pytest.mark.slow
def test_ten_thousand_models_as_before():
    sizes = {"variant": 4, "lr": 4, "batch_size": 4, "dropout": 4, "width": 2}
    df = synthetic_table(sizes, n_seeds=20, n_measures=40, n_models=10_000, seed=0)
    same_table(correlate(df, gap="gen.gap_acc"), DATA / "analysis_10k_fb2cc9d.csv")


def test_bootstrap_as_before():
    sizes = {"lr": 3, "batch_size": 3, "dropout": 2, "width": 2}
    df = synthetic_table(sizes, n_seeds=40, n_measures=10, n_models=1_400, seed=1)
    same_table(correlate(df, gap="gen.gap_acc", n_boot=50, seed=0), DATA / "analysis_bootstrap_fb2cc9d.csv")


def tied(rng, n, k):
    """n values with many ties (k distinct)."""
    return rng.integers(0, k, n).astype(float)


@pytest.mark.parametrize("seed", range(4))
def test_pair_sign_tables_count_every_ordered_pair(seed):
    rng = np.random.default_rng(seed)
    n = 60
    x, y = tied(rng, n, 7), tied(rng, n, 5)
    keys = np.stack([rng.integers(0, 3, n), rng.integers(0, 5, n)], axis=1)
    rx = np.unique(x, return_inverse=True)[1]
    ry = np.unique(y, return_inverse=True)[1]
    tables = kernels.pair_sign_tables(keys, [3, 5], rx, ry)
    for s, K in enumerate((3, 5)):
        ref = np.zeros((K, K, 3, 3), np.int64)
        for i, j in itertools.permutations(range(n), 2):
            ref[keys[i, s], keys[j, s], int(np.sign(x[i] - x[j])) + 1, int(np.sign(y[i] - y[j])) + 1] += 1
        np.testing.assert_array_equal(tables[s], ref)


@pytest.mark.parametrize("seed", range(4))
def test_group_concordance_counts_pairs(seed):
    rng = np.random.default_rng(seed)
    n, G = 80, 4
    x, y, g = tied(rng, n, 9), tied(rng, n, 6), rng.integers(0, G, n)
    rx = np.unique(x, return_inverse=True)[1]
    ry = np.unique(y, return_inverse=True)[1]
    order = np.lexsort((ry, rx, g))
    size, xt, yt, xyt, dis = kernels.group_concordance(g[order], rx[order], ry[order], G)
    for k in range(G):
        idx = np.flatnonzero(g == k)
        pairs = list(itertools.combinations(idx, 2))
        assert size[k] == len(idx)
        assert xt[k] == sum(x[i] == x[j] for i, j in pairs)
        assert yt[k] == sum(y[i] == y[j] for i, j in pairs)
        assert xyt[k] == sum(x[i] == x[j] and y[i] == y[j] for i, j in pairs)
        assert dis[k] == sum((x[i] - x[j]) * (y[i] - y[j]) < 0 for i, j in pairs)


def test_environment_sums_against_pairs():
    """Σw, Σw², Σw·e of every environment by a loop over its pairs, NaN measures included."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame(list(itertools.product(range(3), range(2), range(4))), columns=["hp.a", "hp.b", "hp.seed"])
    df = df.sample(frac=0.8, random_state=1).reset_index(drop=True)
    gap = np.round(rng.uniform(0, 0.3, len(df)), 2)
    x = tied(rng, len(df), 4)
    x[rng.random(len(df)) < 0.15] = np.nan
    design = Design.from_table(df)
    scorer = SignErrorScorer(design, gap, n_test=np.full(len(df), 2000.0))
    for a, name in enumerate(design.axes):
        group, _ = design.other_groups[a]
        code = design.codes[:, a]
        expect = []
        for grp in np.unique(group):
            for c1, c2 in itertools.combinations(np.unique(code[group == grp]), 2):
                sw = sw2 = swe = 0.0
                for i in np.flatnonzero((group == grp) & (code == c1)):
                    for j in np.flatnonzero((group == grp) & (code == c2)):
                        w = 0.0 if np.isnan(x[i]) or np.isnan(x[j]) else \
                            float(hoeffding_weight(gap[i] - gap[j], 2000.0))
                        e = (1 - np.sign(np.nan_to_num(x[i] - x[j])) * np.sign(gap[i] - gap[j])) / 2
                        sw, sw2, swe = sw + w, sw2 + w * w, swe + w * e
                if sw > 0:
                    expect.append(swe / sw)
        np.testing.assert_allclose(scorer.score(x).losses[name], expect, rtol=1e-12)


def test_results_do_not_depend_on_the_thread_count():
    import numba
    sizes = {"lr": 3, "batch_size": 3, "dropout": 2}
    df = synthetic_table(sizes, n_seeds=6, n_measures=5, seed=3)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = correlate(df, gap="gen.gap_acc")
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = correlate(df, gap="gen.gap_acc")
    finally:
        numba.set_num_threads(before)
    pd.testing.assert_frame_equal(one, many, check_exact=True)
