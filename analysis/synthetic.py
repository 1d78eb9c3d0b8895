"""Synthetic tidy tables with known structure, for tests, benchmarks and demos.

The gap is a sum of per-axis effects plus seed noise. Measures cycle through kinds with a
known expected behaviour: ``signal`` (gap + noise of growing size), ``confounded`` (a
function of the first axis only, which also drives the gap), ``noise``, ``anti``
(−gap + noise) and ``nan`` (signal with some missing values). Randomness comes only from
``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

KINDS = ("signal", "confounded", "noise", "anti", "nan")


def grid(sizes: dict[str, int], n_seeds: int) -> pd.DataFrame:
    """Every combination of ``sizes`` (values 0..k-1 per axis) times ``n_seeds`` seeds."""
    combos = np.array(list(itertools.product(*[range(k) for k in sizes.values()])), dtype=float)
    combos = combos.reshape(-1, len(sizes))
    rep = np.repeat(combos, n_seeds, axis=0)
    df = pd.DataFrame(rep, columns=[f"hp.{k}" for k in sizes])
    df["hp.seed"] = np.tile(np.arange(n_seeds), len(combos))
    return df


def synthetic_table(sizes: dict[str, int] | None = None, n_seeds: int = 3, n_measures: int = 10,
                    n_models: int | None = None, seed: int = 0, noise: float = 0.02,
                    n_test: int = 10_000) -> pd.DataFrame:
    """A tidy table over a full grid (or ``n_models`` of it, drawn without replacement).

    The first axis has the largest effect on the gap. ``gen.gap_acc`` is a fraction.
    """
    rng = np.random.default_rng(seed)
    sizes = sizes or {"lr": 3, "batch_size": 3, "dropout": 2, "width": 2}
    df = grid(sizes, n_seeds)
    if n_models is not None and n_models < len(df):
        df = df.iloc[np.sort(rng.choice(len(df), n_models, replace=False))].reset_index(drop=True)
    n = len(df)
    axes = list(df.columns[:-1])
    weights = np.linspace(1.0, 0.3, len(axes)) * 0.05
    effect = sum(w * df[a].to_numpy() for w, a in zip(weights, axes))
    gap = effect + rng.normal(0, noise, n)
    train = np.clip(1.0 - rng.uniform(0, 0.01, n), 0, 1)
    df["gen.train_acc"] = train
    df["gen.test_acc"] = train - gap
    df["gen.gap_acc"] = gap
    df["gen.n_test"] = n_test
    first = df[axes[0]].to_numpy() if axes else np.zeros(n)
    measures = {}
    for m in range(n_measures):
        kind = KINDS[m % len(KINDS)]
        scale = noise * (0.5 + m / max(n_measures, 1) * 4)
        if kind == "signal":
            v = gap + rng.normal(0, scale, n)
        elif kind == "confounded":
            v = first + rng.normal(0, 1e-3, n)
        elif kind == "noise":
            v = rng.normal(0, 1, n)
        elif kind == "anti":
            v = -gap + rng.normal(0, scale, n)
        else:
            v = np.where(rng.random(n) < 0.1, np.nan, gap + rng.normal(0, scale, n))
        measures[f"measure.{kind}_{m:02d}"] = v
    rest = {"is.converged": True, "is.diverged": False, "run_id": [f"run{i:05d}" for i in range(n)],
            "run_dir": ""}
    return pd.concat([df, pd.DataFrame({**measures, **rest}, index=df.index)], axis=1)  # one block each
