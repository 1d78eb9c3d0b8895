"""One row of correlation statistics per measure: the paper's table as data.

``correlate(df, gap)`` runs, for every ``measure.*`` column of a tidy table:

- τ (Jiang et al. 2020 sign τ), τ_b and its asymptotic p-value  (:mod:`analysis.kendall`)
- ψ_i per axis with its number of groups, and Ψ                  (:mod:`analysis.granulated`)
- K(μ), the conditional mutual information, and its arg-min set  (:mod:`analysis.cmi`)
- robust sign-error mean / p90 / max, overall and per axis       (:mod:`analysis.sign_error`)
- seed-bootstrap percentile CIs of τ and Ψ when asked and seeds exist (:mod:`analysis.bootstrap`)

Runs left out of every measure (diverged by default, failed, unfinished, not converged
when only converged runs are asked for, below a train accuracy, without a finite gap) are
dropped first and counted per reason (:mod:`analysis.exclusions`); then the axes are found
on what is left (``hp.*`` except ``hp.seed`` with ≥ 2 values; hp columns that determine each
other are merged into one axis named like ``width+heads``, see
:class:`analysis.schema.Design`). A NaN or ±inf measure value drops that run for that
measure only: ``n`` reports how many models each measure was scored on, ``n_nan`` and
``n_inf`` how many were left out, and ``flags`` says why a measure should not be ranked
(:mod:`analysis.flags`). ``n_undecided`` counts the values a measure's own search left
undecided (PAC-Bayes); ``drop_undecided`` leaves them out of that measure as well.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from analysis.bootstrap import seed_bootstrap
from analysis.cmi import CMIScorer
from analysis.exclusions import left_out, measure_axis_warnings, run_lines, undecided_rows, value_counts
from analysis.flags import measure_flags
from analysis.granulated import granulated_kendall
from analysis.kendall import kendall
from analysis.schema import (DEFAULT_GAP, SEED, AnalysisError, Design, axis_columns, has_seeds,
                             strip, validate)
from analysis.sign_error import SignErrorScorer

N_TEST = "gen.n_test"


def _hoeffding_setup(df: pd.DataFrame, gap: str, hoeffding: bool | None, n_test):
    """Decide on Hoeffding weighting; return (use it, per-row n or None)."""
    n = df[N_TEST].to_numpy(float) if N_TEST in df.columns else None
    if n_test is not None:
        n = np.full(len(df), float(n_test)) if n is None else np.where(np.isnan(n), n_test, n)
    available = n is not None and not np.isnan(n).any()
    if hoeffding is None:
        hoeffding = "acc" in gap and available
        if "acc" in gap and not available:
            warnings.warn("no test-set size (gen.n_test) for every run: sign-error is unweighted")
    elif hoeffding and not available:
        raise AnalysisError("Hoeffding weights need gen.n_test for every run (or pass n_test)")
    return bool(hoeffding), n


def correlate(df: pd.DataFrame, gap: str = DEFAULT_GAP, measures: list[str] | None = None,
              axes: list[str] | None = None, n_boot: int = 0, seed: int = 0,
              level: float = 0.95, cmi: bool = True, sign_error: bool = True,
              hoeffding: bool | None = None, n_test: float | None = None,
              min_ess: float = 1.0, include_diverged: bool = False, converged_only: bool = False,
              min_train_acc: float | None = None, drop_undecided: bool = False) -> pd.DataFrame:
    """Correlation statistics of every measure with ``gap``; one row per measure.

    Columns: ``measure`` (without prefix), ``n`` (models used), ``n_nan``, ``n_inf`` (values
    left out), ``n_undecided`` (values its search left undecided: used, or with
    ``drop_undecided`` left out), ``flags``, ``tau``, ``tau_b``, ``tau_p``, ``Psi``, ``psi.<axis>``,
    ``n_groups.<axis>``, ``cmi``, ``cmi_set`` (axes joined by '+', 'none' for S = ∅),
    ``sign_error_mean|p90|max``, ``n_envs``, ``sign_error_<stat>.<axis>``, and with
    ``n_boot > 0`` and ≥ 2 seeds ``tau_lo``, ``tau_hi``, ``Psi_lo``, ``Psi_hi``.
    ``hoeffding=None`` weights sign-errors by the test-set size when the gap is an
    accuracy gap and ``gen.n_test`` is known. Metadata are in ``result.attrs``, among them
    ``n_runs`` (rows of the table), ``n_models`` (runs used), ``left_out`` ({reason: runs})
    and ``notes`` (the lines that say what was left out, and the axis warnings).
    """
    cols = validate(df, gap, measures)
    out_runs = left_out(df, gap, include_diverged, converged_only, min_train_acc)
    full = df.reset_index(drop=True)
    used = out_runs.used
    df = full.loc[used].reset_index(drop=True)
    if len(df) < 2:
        why = "; ".join(f"{n} {r}" for r, n in out_runs.counts.items())
        raise AnalysisError(f"fewer than 2 of the {len(full)} runs are left for the correlations ({why})")
    design = Design.from_table(df, axes)
    y = df[gap].to_numpy(float)
    cmi_scorer = CMIScorer(design, y) if cmi else None
    use_h, n = _hoeffding_setup(df, gap, hoeffding, n_test) if sign_error else (False, None)
    se_scorer = SignErrorScorer(design, y, n, use_h, min_ess=min_ess) if sign_error else None

    rows, values, notes = [], {}, []
    kept_axes = [a for a in axis_columns(df) if axes is None or a in axes]
    for col in cols:
        raw = df[col].to_numpy(float)
        undecided = undecided_rows(df, col)
        x = np.where(np.isinf(raw) | (undecided & drop_undecided), np.nan, raw)  # ±inf is left out, never ranked
        values[col] = x
        rows.append(_measure_row(col, raw, x, y, design, cmi_scorer, se_scorer, undecided, drop_undecided))
        if np.isfinite(x).sum() >= 2:
            notes += measure_axis_warnings(strip(col), df, np.isfinite(x), kept_axes)
    out = pd.DataFrame(rows)

    if n_boot > 0 and has_seeds(df):
        cis = seed_bootstrap(values, y, design, n_boot, seed, level)
        for k in ("tau_lo", "tau_hi", "Psi_lo", "Psi_hi"):
            out[k] = [getattr(cis[c], k) for c in cols]
    out.attrs.update(gap=gap, axes=list(design.names), n_models=len(df), n_runs=len(full),
                     left_out=dict(out_runs.counts),
                     notes=[*run_lines(len(full), out_runs.counts), *out_runs.warnings, *notes],
                     filters=dict(include_diverged=include_diverged, converged_only=converged_only,
                                  min_train_acc=min_train_acc),
                     n_seeds=int(df[SEED].nunique()) if SEED in df.columns else 1,
                     hoeffding=use_h, n_boot=int(n_boot) if has_seeds(df) else 0, level=level,
                     min_ess=min_ess, drop_undecided=drop_undecided)
    return out


def _measure_row(col: str, raw, x, y, design: Design, cmi_scorer, se_scorer, undecided, drop_undecided) -> dict:
    """One measure's statistics: ``raw`` its values on the runs used, ``x`` the same with
    ±inf (and, when dropped, undecided values) as NaN (NaN rows are dropped by every statistic)."""
    keep = ~(np.isnan(x) | np.isnan(y))
    dropped = undecided if drop_undecided else None
    n_nan, n_inf = value_counts(raw if dropped is None else raw[~dropped])
    row: dict = {"measure": strip(col), "n": int(keep.sum()), "n_nan": n_nan, "n_inf": n_inf,
                 "n_undecided": int(undecided.sum()), "flags": measure_flags(raw, dropped=dropped)}
    if keep.sum() >= 2:
        k = kendall(x[keep], y[keep])
        row.update(tau=k.tau, tau_b=k.tau_b, tau_p=k.pvalue)
    else:
        row.update(tau=np.nan, tau_b=np.nan, tau_p=np.nan)
    gk = granulated_kendall(x, y, design)
    row["Psi"] = gk.Psi
    for a in design.axes:
        row[f"psi.{strip(a)}"] = gk.psi[a]
    for a in design.axes:
        row[f"n_groups.{strip(a)}"] = gk.n_groups[a]
    if cmi_scorer is not None:
        r = cmi_scorer.score(x)
        row["cmi"] = r.K
        row["cmi_set"] = ("+".join(strip(a) for a in r.argmin) or "none") if not np.isnan(r.K) else ""
    if se_scorer is not None:
        s = se_scorer.score(x)
        row.update(sign_error_mean=s.mean, sign_error_p90=s.p90, sign_error_max=s.max,
                   n_envs=s.n_envs)
        for a, stats in s.per_axis.items():
            for stat in ("mean", "p90", "max"):
                row[f"sign_error_{stat}.{strip(a)}"] = stats[stat]
    return row
