"""Test–retest: how reproducible each measure is when the same runs are trained again.

Two result tables of the same runs (same run ids), the second retrained under a float-level
perturbation (another CPU, ``MKL_ENABLE_INSTRUCTIONS=AVX2`` on an AVX-512 machine, another
thread count), are matched by ``run_id``. For every measure present in both, and for the
gaps and the stopping epoch (``gen.*``) as well:

- ``identical``: the share of runs whose value is the same to the last bit;
- ``retest_tau_b``: Kendall's τ_b between the two tables' values (1: the retest ranks the
  runs exactly as the test did; τ_b, so that a measure constant within ties, e.g. #params,
  scores 1);
- ``retest_sd``: the measurement noise, sqrt(mean((a − b)²) / 2), the standard deviation of
  one value around its retest mean;
- ``seed_sd``: the seed-to-seed spread, the pooled within-setting standard deviation of the
  first table over the matched runs (settings: the ``hp.*`` columns but the seed);
- ``noise_ratio`` = retest_sd / seed_sd: how much of the seed-to-seed spread a float-level
  perturbation already produces (near 0: reproducible; near 1: the value moves as much under
  a changed kernel as under a new seed, so it cannot rank models more finely than that);
- ``median_rel_change``: the median of |a − b| / |a|;
- ``tau_gap``, ``tau_gap_retest``: the measure's τ with the gap in each table.

Spreads are on a log10 scale (``scale: log10``) for a quantity positive on every matched run
of both tables (norms and bounds span decades), on the raw scale otherwise. NaN and ±inf
values are left out pairwise and counted (``n`` is the number of runs used per row). Runs
that the correlations would leave out of either table (diverged, failed, unfinished, without
a finite gap) are left out and counted, as are runs present in one table only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.exclusions import left_out
from analysis.kendall import kendall
from analysis.schema import DEFAULT_GAP, GEN, SEED, AnalysisError, Design, axis_columns, measure_columns, strip

RUN_ID = "run_id"
EXTRA = ("gen.gap_acc", "gen.gap_loss", "gen.test_acc", "gen.train_loss", "gen.epochs")


def _matched(a: pd.DataFrame, b: pd.DataFrame, gap: str) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    for name, df in (("first", a), ("second", b)):
        if RUN_ID not in df.columns:
            raise AnalysisError(f"the {name} table has no {RUN_ID} column (tables from srr-analyze collect have it)")
        if df[RUN_ID].duplicated().any():
            raise AnalysisError(f"the {name} table names a run twice: {df[RUN_ID][df[RUN_ID].duplicated()].iloc[0]}")
        if gap not in df.columns:
            raise AnalysisError(f"the {name} table has no gap column {gap!r}")
    counts: dict[str, int] = {}
    ids_a, ids_b = set(a[RUN_ID]), set(b[RUN_ID])
    counts["in the first table only"] = len(ids_a - ids_b)
    counts["in the second table only"] = len(ids_b - ids_a)
    used = ids_a & ids_b
    for name, df in (("first", a), ("second", b)):
        reasons = left_out(df, gap).reasons.astype(str).to_numpy()
        for run, reason in zip(df[RUN_ID], reasons):
            if reason and run in used:
                counts[f"{reason} in the {name} table"] = counts.get(f"{reason} in the {name} table", 0) + 1
                used.discard(run)
    if len(used) < 2:
        raise AnalysisError(f"fewer than 2 runs are in both tables and usable ({len(used)})")
    keep = sorted(used)
    # rows taken by position (run ids are unique): no index column inserted into a wide table
    a = a.take(pd.Index(a[RUN_ID]).get_indexer(keep)).reset_index(drop=True)
    b = b.take(pd.Index(b[RUN_ID]).get_indexer(keep)).reset_index(drop=True)
    return a, b, {k: v for k, v in counts.items() if v}


def _pooled_seed_sd(v: np.ndarray, cell: np.ndarray) -> float:
    """Pooled within-cell standard deviation (cells with ≥ 2 finite values)."""
    ss = dof = 0.0
    for c in np.unique(cell):
        x = v[(cell == c) & np.isfinite(v)]
        if len(x) >= 2:
            ss += float(((x - x.mean()) ** 2).sum())
            dof += len(x) - 1
    return float(np.sqrt(ss / dof)) if dof else float("nan")


def retest(a: pd.DataFrame, b: pd.DataFrame, gap: str = DEFAULT_GAP) -> pd.DataFrame:
    """One row per measure (and per ``gen.*`` quantity) with the statistics of the module
    docstring; ``attrs['left_out']`` counts the runs not matched or not usable."""
    a, b, counts = _matched(a, b, gap)
    cols = [c for c in measure_columns(a) if c in b.columns]
    cols += [c for c in EXTRA if c in a.columns and c in b.columns]
    if not cols:
        raise AnalysisError("the two tables share no measure.* column")
    has_seed = SEED in a.columns and a[SEED].nunique() > 1
    cell = Design.from_table(a).cells[0] if axis_columns(a) else np.zeros(len(a), int)
    ga, gb = a[gap].to_numpy(float), b[gap].to_numpy(float)
    rows = []
    for col in cols:
        xa, xb = a[col].to_numpy(float), b[col].to_numpy(float)
        ok = np.isfinite(xa) & np.isfinite(xb)
        row = {"measure": col if col.startswith(GEN) else strip(col), "n": int(ok.sum()),
               "n_left_out": int((~ok).sum())}
        if ok.sum() < 2:
            rows.append(row)
            continue
        va, vb = xa[ok], xb[ok]
        log = bool((va > 0).all() and (vb > 0).all())
        sa, sb = (np.log10(va), np.log10(vb)) if log else (va, vb)
        retest_sd = float(np.sqrt(np.mean((sa - sb) ** 2) / 2))
        seed_sd = _pooled_seed_sd(sa, cell[ok]) if has_seed else float("nan")
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.abs(va - vb) / np.abs(va)
        row.update(identical=float(np.mean(va == vb)), retest_tau_b=kendall(va, vb).tau_b,
                   scale="log10" if log else "raw", retest_sd=retest_sd, seed_sd=seed_sd,
                   noise_ratio=retest_sd / seed_sd if seed_sd > 0 else float("nan"),
                   median_rel_change=float(np.nanmedian(rel)) if np.isfinite(rel).any() else float("nan"))
        if col != gap:
            fa, fb = ok & np.isfinite(ga), ok & np.isfinite(gb)
            row["tau_gap"] = kendall(xa[fa], ga[fa]).tau if fa.sum() >= 2 else float("nan")
            row["tau_gap_retest"] = kendall(xb[fb], gb[fb]).tau if fb.sum() >= 2 else float("nan")
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs.update(gap=gap, n_runs=len(a), left_out=counts, seeds=has_seed)
    return out


def to_markdown(table: pd.DataFrame) -> str:
    """The table, noisiest measures last, with the counts of what was left out."""
    cols = ["measure", "n", "identical", "retest_tau_b", "scale", "retest_sd", "seed_sd", "noise_ratio",
            "median_rel_change", "tau_gap", "tau_gap_retest"]
    t = table[[c for c in cols if c in table.columns]].sort_values("noise_ratio", na_position="last")
    fmt = {c: "{:.3f}" for c in ("identical", "retest_tau_b", "noise_ratio", "tau_gap", "tau_gap_retest")}
    fmt.update({c: "{:.3g}" for c in ("retest_sd", "seed_sd", "median_rel_change")})
    lines = ["| " + " | ".join(t.columns) + " |", "|" + "|".join("---" for _ in t.columns) + "|"]
    for _, r in t.iterrows():
        cells = [fmt[c].format(r[c]) if c in fmt and pd.notna(r[c]) else ("" if pd.isna(r[c]) else str(r[c]))
                 for c in t.columns]
        lines.append("| " + " | ".join(cells) + " |")
    n = table.attrs.get("n_runs")
    lines.append("")
    lines.append(f"{n} runs matched by run id; gap {table.attrs.get('gap')}.")
    for reason, k in table.attrs.get("left_out", {}).items():
        lines.append(f"Left out: {k} run(s) {reason}.")
    return "\n".join(lines) + "\n"


def write_retest(table: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """``retest.csv`` (full precision), ``retest.md`` and ``retest.png`` (``plots.plot_retest``:
    the measures at their defaults) in ``out_dir``."""
    from analysis.plots import plot_retest

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "retest.csv", "md": out / "retest.md"}
    table.to_csv(paths["csv"], index=False)
    paths["md"].write_text(to_markdown(table))
    png = plot_retest(table, out / "retest.png")
    if png is not None:
        paths["png"] = png
    return paths
