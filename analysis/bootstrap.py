"""Bootstrap confidence intervals over seeds for τ and Ψ (measure_suites.md §15.2).

Scheme (stratified seed bootstrap): within every hyperparameter setting (cell), the
seed replicates are resampled with replacement, as many as the cell has; τ (Jiang's sign
τ) and Ψ are recomputed on the resampled table; the interval is the percentile interval
of the replicates at ``level``. The grid structure is kept (every cell keeps its size).

A model drawn twice appears as two identical rows; such a pair is not a pair of distinct
models, so it is removed from the denominators of τ (``origin`` in
:func:`analysis.kendall.concordance`); pairs between copies of different models are
counted with their multiplicity. The same resampled rows serve every measure, so the
intervals of two measures come from paired replicates. Randomness comes only from
``numpy.random.default_rng(seed)``. Meaningful only when ``hp.seed`` takes ≥ 2 values.

Caveat (checked on synthetic grids): for measures that vary with the seed the replicates
are centred on the point estimate; for a measure constant across seeds (e.g. #params)
the loss of within-cell pairs in resampling pushes |τ| and |Ψ| up slightly, so with 2-3
seeds its interval can sit just beside the point estimate. Counting copies as tied pairs
instead would bias every seed-varying measure towards 0, which is worse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.kendall import dense_rank, ranked_concordance
from analysis.schema import Design, valid_groups

_BATCH_ELEMS = 2_000_000  # rows × replicates evaluated in one vectorised call


@dataclass(frozen=True)
class BootstrapCI:
    tau_lo: float
    tau_hi: float
    Psi_lo: float
    Psi_hi: float
    n_boot: int
    level: float


def resample_within_cells(cell: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, n)`` row indices: each cell's rows drawn with replacement within the cell."""
    order = np.argsort(cell, kind="stable")
    sizes = np.bincount(cell)
    starts = np.cumsum(sizes) - sizes
    c = cell[order]
    draw = np.floor(rng.random((n_boot, len(cell))) * sizes[c]).astype(np.int64)
    return order[starts[c] + draw]


def _tau_psi(rx, ry, nan, design: Design, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """τ and Ψ for each replicate (rows of ``rows``), rows where x or y is NaN (``nan``) dropped;
    ``rx``, ``ry`` are ranks of x and y over the whole table."""
    B, n = rows.shape
    rep = np.repeat(np.arange(B), n)
    r = rows.ravel()
    ok = ~nan[r]
    rep, r = rep[ok], r[ok]
    xs, ys = rx[r], ry[r]
    by_xy, by_origin = np.lexsort((ys, xs)), np.argsort(r, kind="stable")
    tau = ranked_concordance(xs, ys, rep, B, by_xy, origin=r, by_origin=by_origin).tau
    psis = []
    for a in range(len(design.axes)):
        group, G = design.other_groups[a]
        g = rep * G + group[r]
        t = ranked_concordance(xs, ys, g, B * G, by_xy, origin=r, by_origin=by_origin).tau
        valid = valid_groups(g, B * G, design.codes[r, a])
        k = np.bincount(np.arange(B * G)[valid] // G, minlength=B)
        s = np.bincount(np.arange(B * G)[valid] // G, weights=t[valid], minlength=B)
        with np.errstate(invalid="ignore", divide="ignore"):
            psis.append(np.where(k > 0, s / np.maximum(k, 1), np.nan))
    if not psis:
        return tau, np.full(B, np.nan)
    P = np.vstack(psis)
    with np.errstate(invalid="ignore"):
        cnt = (~np.isnan(P)).sum(axis=0)
        Psi = np.where(cnt > 0, np.nansum(P, axis=0) / np.maximum(cnt, 1), np.nan)
    return tau, Psi


def seed_bootstrap(measures: dict[str, np.ndarray], gap, design: Design, n_boot: int = 200,
                   seed: int = 0, level: float = 0.95) -> dict[str, BootstrapCI]:
    """Percentile CIs of τ and Ψ for each measure (dict name -> values aligned with design)."""
    y = np.asarray(gap, float)
    ry = dense_rank(y)
    cell, _ = design.cells
    rng = np.random.default_rng(seed)
    rows = resample_within_cells(cell, n_boot, rng)
    batch = max(1, _BATCH_ELEMS // max(len(y), 1))
    q = [50 * (1 - level), 50 * (1 + level)]
    out = {}
    for name, values in measures.items():
        x = np.asarray(values, float)
        rx, nan = dense_rank(x), np.isnan(x) | np.isnan(y)
        taus, Psis = [], []
        for b0 in range(0, n_boot, batch):
            t, p = _tau_psi(rx, ry, nan, design, rows[b0:b0 + batch])
            taus.append(t)
            Psis.append(p)
        t, p = np.concatenate(taus), np.concatenate(Psis)
        tl, th = _pct(t, q)
        pl, ph = _pct(p, q)
        out[name] = BootstrapCI(tl, th, pl, ph, n_boot, level)
    return out


def _pct(v: np.ndarray, q: list[float]) -> tuple[float, float]:
    v = v[~np.isnan(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(v, q)
    return float(lo), float(hi)
