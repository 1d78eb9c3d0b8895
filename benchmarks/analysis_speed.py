"""Speed of the full correlation analysis on an RGM-sized synthetic table.

10,000 models × 40 measures over 5 hyperparameter axes plus seeds (4·4·4·4·2 = 512
settings × 20 seeds, 240 runs missing at random so the grid is incomplete). Runs τ, τ_b,
ψ_i/Ψ, K(μ) (exact, all |S| ≤ 2) and the robust sign-error (Hoeffding-weighted), without
bootstrap, and prints the wall time of each statistic and of the whole.

    python -m benchmarks.analysis_speed                                  # 10,000 models
    python -m benchmarks.analysis_speed --models 100000 --seeds 200      # target: ≤ 60 s on 2 cores

Machines here are shared, so the time is also given as a ratio to a unit measured in the
same run just before and after: sorting 10⁷ random floats with numpy (``--unit-reps``
times, the median). At commit fb2cc9d (pairs enumerated in numpy) 10,000 models took 15 s
on an idle 2-core AMD EPYC and 100,000 did not finish in 15 minutes.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def sort_unit(reps: int) -> float:
    """Median time of ``np.sort`` on 10⁷ random floats."""
    x = np.random.default_rng(0).random(10_000_000)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        np.sort(x)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> int:
    from analysis.cmi import CMIScorer
    from analysis.correlate import correlate
    from analysis.granulated import granulated_kendall
    from analysis.kendall import kendall
    from analysis.schema import Design
    from analysis.sign_error import SignErrorScorer
    from analysis.synthetic import synthetic_table

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=10_000)
    p.add_argument("--measures", type=int, default=40)
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--unit-reps", type=int, default=3)
    args = p.parse_args(argv)

    sizes = {"variant": 4, "lr": 4, "batch_size": 4, "dropout": 4, "width": 2}
    df = synthetic_table(sizes, n_seeds=args.seeds, n_measures=args.measures,
                         n_models=args.models, seed=0)
    gap = "gen.gap_acc"
    # compile the kernels (numba caches them on disk; the first run of a clone compiles)
    correlate(df.head(300), gap=gap)
    unit = sort_unit(args.unit_reps)
    t0 = time.perf_counter()
    res = correlate(df, gap=gap)
    total = time.perf_counter() - t0
    unit = (unit + sort_unit(args.unit_reps)) / 2

    # the same statistics one by one, on the same table (correlate's other work is the rest)
    design = Design.from_table(df)
    y = df[gap].to_numpy(float)
    cols = [c for c in df.columns if c.startswith("measure.")]
    parts = {}
    t = time.perf_counter()
    cmi = CMIScorer(design, y)
    se = SignErrorScorer(design, y, df["gen.n_test"].to_numpy(float))
    parts["set-up (gap side of K and sign-error)"] = time.perf_counter() - t
    for name, f in (("tau, tau_b, p", lambda x: kendall(x[~np.isnan(x)], y[~np.isnan(x)])),
                    ("psi, Psi", lambda x: granulated_kendall(x, y, design)),
                    ("K (CMI)", cmi.score), ("sign-error", se.score)):
        t = time.perf_counter()
        for c in cols:
            f(df[c].to_numpy(float))
        parts[name] = time.perf_counter() - t

    print(f"table: {len(df)} models x {args.measures} measures, {len(res.attrs['axes'])} axes + "
          f"{df['hp.seed'].nunique()} seeds; unit (np.sort of 1e7 floats): {unit:.3f} s")
    print(f"{'statistic':40s} {'s':>8s} {'units':>8s}")
    for name, s in parts.items():
        print(f"{name:40s} {s:8.2f} {s / unit:8.1f}")
    print(f"{'correlate, all of it (no bootstrap)':40s} {total:8.2f} {total / unit:8.1f}   "
          f"({total / args.measures:.2f} s per measure; {total / 60:.2f} of the 60 s target)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
