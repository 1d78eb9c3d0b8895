"""Speed of the full correlation analysis on a RGM-sized synthetic table.

10,000 models × 40 measures over 5 hyperparameter axes plus seeds (4·4·4·4·2 = 512
settings × 20 seeds, 240 runs missing at random so the grid is incomplete). Runs τ, τ_b,
ψ_i/Ψ, K(μ) (exact, all |S| ≤ 2) and the robust sign-error, without bootstrap, and prints
the wall time and the table size. Target: under 2 minutes on a 2-core CPU.

    python -m benchmarks.analysis_speed [--models N] [--measures M]
"""

from __future__ import annotations

import argparse
import time


def main(argv=None) -> int:
    from analysis.correlate import correlate
    from analysis.synthetic import synthetic_table

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=10_000)
    p.add_argument("--measures", type=int, default=40)
    p.add_argument("--seeds", type=int, default=20)
    args = p.parse_args(argv)

    sizes = {"variant": 4, "lr": 4, "batch_size": 4, "dropout": 4, "width": 2}
    t0 = time.perf_counter()
    df = synthetic_table(sizes, n_seeds=args.seeds, n_measures=args.measures,
                         n_models=args.models, seed=0)
    t1 = time.perf_counter()
    res = correlate(df, gap="gen.gap_acc")
    t2 = time.perf_counter()
    n_axes = len(res.attrs["axes"])
    print(f"table: {len(df)} models x {args.measures} measures, {n_axes} axes + "
          f"{df['hp.seed'].nunique()} seeds ({df.shape[1]} columns)")
    print(f"synthetic table built in {t1 - t0:.1f} s")
    print(f"correlate (tau, tau_b, Psi, K, sign-error; no bootstrap): {t2 - t1:.1f} s "
          f"({(t2 - t1) / args.measures:.2f} s per measure)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
