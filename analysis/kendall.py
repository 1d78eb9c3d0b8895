"""Kendall's rank correlation: Jiang et al.'s sign-based τ and τ_b, in O(n log² n).

Jiang, Neyshabur, Mobahi, Krishnan & Bengio (ICLR 2020), "Fantastic Generalization
Measures and Where to Find Them", §2 (eq. for τ): over the set T of (μ, g) pairs,

    τ(T) = 1/(|T|(|T|-1)) Σ_{i≠j} sign(μ_i − μ_j) · sign(g_i − g_j)

i.e. (C − D) / (n(n−1)/2) with C, D the concordant and discordant unordered pairs. Ties
count 0 and there is no tie correction (this is τ-a). A constant measure gives τ = 0.
τ_b = (C − D) / sqrt((n0 − n1)(n0 − n2)) (n1, n2 pairs tied in x, in y) is also given; it
equals ``scipy.stats.kendalltau`` and is NaN when x or y is constant (scipy's convention).

C − D = n0 − n1 − n2 + n3 − 2·dis (n3: pairs tied in both; dis: discordant pairs), with
``dis`` counted as the inversions of a merge sort (Knight 1966), compiled
(:func:`analysis.kernels.group_concordance`). It runs on many independent groups at once
(the granulated τ and the bootstrap use this): rows are sorted by group, then x, then y,
and pairs never cross groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from analysis.kernels import group_concordance, stable_group_order


@dataclass(frozen=True)
class Concordance:
    """Pair statistics per group (arrays of length ``n_groups``).

    ``pairs`` counts unordered pairs of distinct models; pairs of copies of the same model
    (bootstrap resampling, see ``origin``) are excluded from it. ``x_ties``/``y_ties``
    count pairs tied in x / in y (copies included, as scipy would).
    """

    n: np.ndarray
    pairs: np.ndarray
    cmd: np.ndarray
    x_ties: np.ndarray
    y_ties: np.ndarray

    @property
    def tau(self) -> np.ndarray:
        """Jiang's sign-based τ (τ-a) per group; 0 for a constant x or y, NaN if < 1 pair."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.pairs > 0, self.cmd / np.maximum(self.pairs, 1), np.nan)

    @property
    def tau_b(self) -> np.ndarray:
        """τ_b per group (NaN when x or y is constant in the group, like scipy)."""
        tot = self.n * (self.n - 1) / 2
        den = np.sqrt((tot - self.x_ties).astype(float) * (tot - self.y_ties))
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(den > 0, self.cmd / np.where(den > 0, den, 1.0), np.nan)
        return np.clip(out, -1.0, 1.0)


def dense_rank(x: np.ndarray) -> np.ndarray:
    """Dense ranks 0..k-1 (equal values share a rank)."""
    _, inv = np.unique(np.asarray(x), return_inverse=True)
    return inv.reshape(-1).astype(np.int64)


def tied_pairs_by_group(group: np.ndarray, key: np.ndarray, n_groups: int) -> np.ndarray:
    """Σ t(t−1)/2 over runs of equal (group, key), per group; input sorted by them."""
    n = len(group)
    change = np.ones(n, bool)
    change[1:] = (group[1:] != group[:-1]) | (key[1:] != key[:-1])
    starts = np.flatnonzero(change)
    t = np.diff(np.append(starts, n))
    return np.bincount(group[starts], weights=t * (t - 1) / 2, minlength=n_groups)


def concordance(x, y, groups=None, n_groups: int | None = None, origin=None) -> Concordance:
    """Concordance statistics of (x, y) within each group, all groups in one pass.

    x, y: 1-D float arrays without NaN. groups: int array in [0, n_groups) (default: one
    group). origin: optional int id of the model each row is a copy of (bootstrap
    resampling); pairs of rows with the same origin in the same group are not pairs of
    models and are removed from ``pairs`` (they are tied in both x and y, so C − D is
    unchanged).
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("x and y must be 1-D arrays of the same length")
    if np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("concordance() needs x and y without NaN; drop those rows first")
    g = np.zeros(len(x), np.int64) if groups is None else np.asarray(groups, np.int64)
    G = int(n_groups if n_groups is not None else (g.max() + 1 if g.size else 0))
    if len(x) == 0:
        z = np.zeros(G)
        return Concordance(z, z, z, z, z)
    rx, ry = dense_rank(x), dense_rank(y)
    return ranked_concordance(rx, ry, g, G, np.lexsort((ry, rx)), origin)


def ranked_concordance(rx, ry, g, n_groups: int, by_xy, origin=None, by_origin=None) -> Concordance:
    """:func:`concordance` from ranks (any order-preserving integers); ``by_xy`` is the order
    of the rows by (rx, ry), and ``by_origin`` a stable order by ``origin``, which several
    groupings of the same rows can share."""
    if origin is not None:
        origin = np.asarray(origin, np.int64)
        by_origin = np.argsort(origin, kind="stable") if by_origin is None else by_origin
        oo = by_origin[stable_group_order(g[by_origin], n_groups)]  # by group, then origin
        copies = tied_pairs_by_group(g[oo], origin[oo], n_groups=n_groups)
    order = by_xy[stable_group_order(g[by_xy], n_groups)]  # by group, then x, then y
    g, rx, ry = g[order], rx[order], ry[order]
    size, x_ties, y_ties, xy_ties, dis = group_concordance(g, rx, ry, n_groups)
    n_per = size.astype(float)
    tot = n_per * (n_per - 1) / 2
    cmd = tot - x_ties - y_ties + xy_ties - 2.0 * dis
    pairs = tot - copies if origin is not None else tot
    return Concordance(n_per, pairs, cmd, x_ties.astype(float), y_ties.astype(float))


def kendall_tau(x, y) -> float:
    """Jiang et al. (2020) sign-based τ of x against y (ties count 0); NaN if n < 2."""
    return float(concordance(x, y).tau[0])


def kendall_tau_b(x, y) -> float:
    """τ_b, equal to ``scipy.stats.kendalltau(x, y).statistic``."""
    return float(concordance(x, y).tau_b[0])


@dataclass(frozen=True)
class KendallResult:
    tau: float      # Jiang's sign τ (τ-a)
    tau_b: float    # tie-corrected τ_b (scipy)
    pvalue: float   # two-sided, asymptotic normal approximation with tie correction
    n: int


def kendall(x, y) -> KendallResult:
    """τ, τ_b and the asymptotic two-sided p-value of τ_b (scipy's 'asymptotic' method:
    the variance of C − D with tie correction, Kendall 1970, eq. 4.4)."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    c = concordance(x, y)
    n = len(x)
    tau, tau_b = float(c.tau[0]), float(c.tau_b[0])
    if n < 3 or np.isnan(tau_b):
        return KendallResult(tau, tau_b, float("nan"), n)

    def stats(v):
        t = np.unique(v, return_counts=True)[1].astype(float)
        return (t * (t - 1) / 2).sum(), (t * (t - 1) * (t - 2)).sum(), (t * (t - 1) * (2 * t + 5)).sum()

    xt, x0, x1 = stats(x)
    yt, y0, y1 = stats(y)
    m = n * (n - 1.0)
    var = (m * (2 * n + 5) - x1 - y1) / 18 + 2 * xt * yt / m + x0 * y0 / (9 * m * (n - 2))
    p = float(2 * norm.sf(abs(c.cmd[0]) / np.sqrt(var)))
    return KendallResult(tau, tau_b, min(p, 1.0), n)
