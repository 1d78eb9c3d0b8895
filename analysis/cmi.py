"""Conditional mutual information K(μ) (Jiang et al., ICLR 2020, §2, "conditional
independence test"; also the scoring of the PGDL competition, arXiv 2012.07976).

For an ordered pair of *distinct* models (θ, θ') (self-pairs excluded):

    V_g = sign(g(θ) − g(θ')),   V_μ = sign(μ(θ) − μ(θ')),   U_S = (θ_S, θ'_S)

with S a set of hyperparameter axes and U_S the values both models of the pair take on
them. Then, with plug-in probabilities over all ordered pairs,

    Î(V_μ, V_g | U_S) = Σ_u p(u) Σ_{a,b} p(a, b | u) log[p(a, b | u) / (p(a | u) p(b | u))]
    Ĥ(V_g | U_S)      = −Σ_u p(u) Σ_b p(b | u) log p(b | u)
    K(μ)              = min_{S : |S| ≤ 2} Î(V_μ, V_g | U_S) / Ĥ(V_g | U_S).

Conventions (fixing the quirks of the PGDL scorer, measure_suites.md §3.4 and §15.2):

- S ranges over ∅, every axis and every pair of axes; ``hp.seed`` is not an axis, so pairs
  of seeds of one setting fall in the bin u = (θ_S, θ_S). The arg-min set is reported.
- Bins are tuples of integer codes (no string concatenation) weighted by p(u).
- Signs are three-valued: a tie gives 0 (PGDL puts ties in "−"). So μ = g and μ = −g
  both give K = 1; K is blind to the direction of the association (use τ for that).
- When Ĥ(V_g | U_S) = 0 the axes in S determine the order of the gaps, V_μ ⟂ V_g | U_S
  holds trivially (Î = 0) and K_S := 0: the measure adds nothing to the hyperparameters.
- Rows whose measure or gap is NaN are dropped for that measure.
- The log base cancels in the ratio (natural log here).

Computation is **exact** (no subsampling) and visits no pair: for every maximal S (each
pair of axes), the ordered pairs are counted by (u_i, u_j, V_μ, V_g) in one sweep of the
models in μ order, with a Fenwick tree over the gap ranks that holds one count per bin
(:func:`analysis.kernels.pair_sign_table`); the tables of its subsets are sums over it.
Cost: O(n·B·log n) per pair of axes (B bins of S), ≈0.1 s for n = 100,000 and 10 pairs
of 4×4 bins, against n²/2 pair visits before (≈0.2 s at n = 10,000, 20 s at 100,000).
A set whose table would exceed ``MAX_TABLE`` entries is skipped with a warning.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field

import numpy as np

from analysis.kendall import dense_rank
from analysis.kernels import pair_sign_tables
from analysis.schema import Design

MAX_TABLE = 20_000_000  # largest (key, key, 3, 3) count table held in memory (int64 entries)


def ratio(table: np.ndarray) -> float:
    """Î(V_μ, V_g | U) / Ĥ(V_g | U) from counts ``(bins, 3, 3)`` = [u, V_μ+1, V_g+1]."""
    t = table.reshape(-1, 3, 3).astype(float)
    nu = t.sum(axis=(1, 2))
    total = nu.sum()
    if total == 0:
        return float("nan")
    t, nu = t[nu > 0], nu[nu > 0]
    p = t / nu[:, None, None]                # p(a, b | u)
    pa = p.sum(axis=2, keepdims=True)        # p(V_μ = a | u)
    pb = p.sum(axis=1, keepdims=True)        # p(V_g = b | u)
    with np.errstate(divide="ignore", invalid="ignore"):
        mi = np.where(p > 0, p * np.log(p / (pa * pb)), 0.0).sum(axis=(1, 2))
        h = -np.where(pb > 0, pb * np.log(pb), 0.0).sum(axis=(1, 2))
    w = nu / total
    i_hat, h_hat = float(w @ mi), float(w @ h)
    if h_hat <= 1e-12:
        return 0.0
    return max(0.0, i_hat / h_hat)


@dataclass(frozen=True)
class CMIResult:
    """K(μ), its arg-min conditioning set (tuple of ``hp.`` names) and K_S for every S."""

    K: float
    argmin: tuple[str, ...]
    per_set: dict[tuple[str, ...], float] = field(default_factory=dict)


def _marginalise(table: np.ndarray, sizes: tuple[int, ...], keep: tuple[int, ...]) -> np.ndarray:
    """Sum a (Π sizes, Π sizes, 3, 3) table over the axes not in ``keep`` (both sides)."""
    A = len(sizes)
    t = table.reshape(sizes + sizes + (3, 3))
    drop = tuple(a for a in range(A) if a not in keep)
    t = t.sum(axis=drop + tuple(A + a for a in drop))
    return t.reshape(-1, 3, 3)


class CMIScorer:
    """K(μ) of many measures against one gap on one design (the gap's ranks and the keys of
    the conditioning sets are computed once)."""

    def __init__(self, design: Design, gap):
        self.design = design
        self.gap = np.asarray(gap, float)
        A = len(design.axes)
        self.sets = [s for r in range(min(A, 2) + 1) for s in itertools.combinations(range(A), r)]
        self.maximal = [s for s in self.sets if len(s) == min(A, 2)]
        self._rows = np.flatnonzero(~np.isnan(self.gap))
        self._ry = dense_rank(self.gap[self._rows])
        sizes = design.sizes
        self._keys: dict[tuple[int, ...], tuple[np.ndarray, int]] = {}
        for s in self.maximal:
            sz = tuple(sizes[a] for a in s)
            if int(np.prod(sz)) ** 2 * 9 > MAX_TABLE:
                warnings.warn(f"CMI: conditioning set {s} has too many bins; skipped")
                continue
            codes = design.codes[self._rows][:, list(s)]
            key = np.ravel_multi_index(codes.T, sz) if s else np.zeros(len(self._rows), np.int64)
            self._keys[s] = (key, int(np.prod(sz)))
        self._key_matrix = (np.stack([k for k, _ in self._keys.values()], axis=1) if self._keys
                            else np.zeros((len(self._rows), 0), np.int64))

    def score(self, measure) -> CMIResult:
        """K(μ) for one measure (aligned with the design rows)."""
        x = np.asarray(measure, float)
        ok = ~np.isnan(x[self._rows])
        if ok.sum() < 2:
            return CMIResult(float("nan"), ())
        rx = dense_rank(x[self._rows][ok])
        ry = self._ry[ok] if ok.all() else dense_rank(self.gap[self._rows][ok])
        bases = list(self._keys)
        tables = pair_sign_tables(self._key_matrix[ok], [self._keys[b][1] for b in bases], rx, ry)
        sizes = self.design.sizes
        per_set: dict[tuple[int, ...], float] = {}
        for base, table in zip(bases, tables):
            bsizes = tuple(sizes[a] for a in base)
            for s in self.sets:
                if s not in per_set and set(s) <= set(base):
                    keep = tuple(base.index(a) for a in s)
                    per_set[s] = ratio(_marginalise(table, bsizes, keep))
        names = self.design.axes
        named = {tuple(names[a] for a in s): v for s, v in per_set.items()}
        valid = {s: v for s, v in named.items() if not np.isnan(v)}
        if not valid:
            return CMIResult(float("nan"), (), named)
        best = min(valid, key=lambda s: (round(valid[s], 9), len(s)))  # ties: smaller S
        return CMIResult(valid[best], best, named)


def conditional_mutual_information(measure, gap, design: Design) -> CMIResult:
    """K(μ) = min_{|S| ≤ 2} Î(V_μ, V_g | U_S) / Ĥ(V_g | U_S) for one measure."""
    return CMIScorer(design, gap).score(measure)
