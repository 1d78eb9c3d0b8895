"""Flags of measures that cannot be ranked fairly against the others.

Over the runs the correlations use, a measure is flagged when it is

- **undefined on part of the grid**: NaN on some runs (``NaN on k/n runs``), or undecided
  by the measure's own search and left out (``undecided on k/n runs (left out)``, only when
  asked to drop them); its statistics are computed on fewer models than the others', so
  they are not comparable;
- **non-finite**: ±inf on some runs (``±inf on k/n runs``); these values are left out, never
  ranked as the largest;
- **constant**: one distinct finite value (τ = Ψ = 0 by ties, not by a lack of signal);
- **nearly constant**: fewer than :data:`MIN_DISTINCT` distinct finite values (``2 distinct
  values``), or a relative spread (max − min) / max|μ| below :data:`REL_SPREAD`
  (``nearly constant (relative spread 3.1e-07)``): differences at the level of floating
  point noise would decide its ranks.

A flagged measure keeps its statistics in the tables, but the tables list it after the
ranked measures and the headline figures draw it apart, in grey.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MIN_DISTINCT = 3
REL_SPREAD = 1e-5
FLAGS_RULE = (f"over the runs used, they are NaN or ±inf (or undecided and left out) on some runs, "
              f"constant, or nearly constant (fewer than {MIN_DISTINCT} distinct values, or a relative "
              f"spread (max − min)/max|μ| below {REL_SPREAD:g})")


def measure_flags(values, min_distinct: int = MIN_DISTINCT, rel_spread: float = REL_SPREAD,
                  dropped=None) -> str:
    """The flags of one measure's values over the runs used, joined by '; ' ('' when none);
    ``dropped`` (a mask) marks the values left out as undecided by the measure's search."""
    x = np.asarray(values, float)
    n = len(x)
    parts = []
    if dropped is not None and np.any(dropped):
        parts.append(f"undecided on {int(np.sum(dropped))}/{n} runs (left out)")
        x = x[~np.asarray(dropped, bool)]
    n_nan, n_inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
    if n_nan:
        parts.append("undefined (NaN on every run)" if n_nan == len(x) else f"NaN on {n_nan}/{n} runs")
    if n_inf:
        parts.append(f"±inf on {n_inf}/{n} runs")
    finite = x[np.isfinite(x)]
    distinct = np.unique(finite).size
    if distinct == 1:
        parts.append("constant")
    elif 1 < distinct < min_distinct:
        parts.append(f"{distinct} distinct values")
    elif distinct >= min_distinct:
        spread = float(np.ptp(finite) / np.abs(finite).max())
        if spread < rel_spread:
            parts.append(f"nearly constant (relative spread {spread:.1e})")
    return "; ".join(parts)


def is_flagged(corr: pd.DataFrame) -> pd.Series:
    """True for the rows of a correlation table whose measure carries a flag."""
    if "flags" not in corr.columns:
        return pd.Series(False, index=corr.index)
    return corr["flags"].fillna("").astype(str).str.len() > 0
