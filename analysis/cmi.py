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

Computation is **exact** (no subsampling): every unordered pair of models is visited once
per measure in vectorised row blocks and counted by (cell_i, cell_j, V_μ, V_g), where a
cell is a setting of all axes; the table over ordered pairs follows by symmetry, and the
table of every S is a sum over that cell-pair table. The gap side of each block is cached
across measures. Cost: n²/2 pair visits per measure (≈0.3 s for n = 10,000). When the
cell-pair table would be too large (a sparse grid with many cells), pairs are counted
directly for every pair of axes instead (n²/2 visits per pair of axes).
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field

import numpy as np

from analysis.kendall import dense_rank
from analysis.schema import Design

MAX_TABLE = 20_000_000  # largest (key, key, 3, 3) count table held in memory (int64 entries)
_CACHE_BYTES = 400e6    # memory for the gap-side caches of the pair blocks (all counters)


class PairSignCounter:
    """Counts ordered pairs (i, j), i ≠ j, by (key_i, key_j, sign(x_i − x_j), sign(y_i − y_j)).

    ``y`` (the gap) is fixed at construction; :meth:`counts` takes one ``x`` (a measure) at a
    time. Rows are sorted by key so that each block of rows covers few keys and is counted
    with a small ``bincount``.
    """

    def __init__(self, key, n_keys: int, y, cache: bool = True, block_elems: int = 2_000_000):
        key = np.asarray(key, np.int64)
        self.order = np.argsort(key, kind="stable")
        self.key = key[self.order]
        self.K = int(n_keys)
        self.ry = dense_rank(y)[self.order].astype(np.int32)
        n = len(key)
        self.n = n
        self.rows = max(16, min(n, block_elems // max(n, 1)))
        self.dtype = np.int32 if self.K * self.K * 9 + 9 < 2**31 else np.int64
        self._cache = [self._gap_block(r0) for r0 in range(0, n, self.rows)] if cache else None

    def _gap_block(self, r0: int):
        """Key/gap part of the codes of the pairs (i, j), r0 ≤ i < r1, i < j."""
        r1 = min(self.n, r0 + self.rows)
        K, k, ry = self.K, self.key, self.ry
        c0 = k[r0]
        kb = (k[r0:r1] - c0).astype(self.dtype)[:, None]
        off = (kb * K + k[None, r1:].astype(self.dtype)) * 9 + 4  # (rows, n - r1)
        off += np.sign(ry[r0:r1, None] - ry[None, r1:]).astype(self.dtype)
        iu, ju = np.triu_indices(r1 - r0, 1)
        diag = ((k[r0 + iu] - c0) * K + k[r0 + ju]) * 9 + 4 + np.sign(ry[r0 + iu] - ry[r0 + ju])
        nbins = int((k[r1 - 1] - c0 + 1) * K * 9)
        return r0, r1, int(c0), nbins, off, iu, ju, diag.astype(self.dtype)

    def counts(self, x) -> np.ndarray:
        """Table ``(K, K, 3, 3)``: [key_i, key_j, sign(x_i−x_j)+1, sign(y_i−y_j)+1]."""
        rx = dense_rank(x)[self.order].astype(np.int32)
        K = self.K
        upper = np.zeros(K * K * 9, np.int64)
        blocks = self._cache or (self._gap_block(r0) for r0 in range(0, self.n, self.rows))
        for r0, r1, c0, nbins, off, iu, ju, diag in blocks:
            sx = np.sign(rx[r0:r1, None] - rx[None, r1:]).astype(self.dtype)
            sx *= 3
            sx += off
            sd = np.sign(rx[r0 + iu] - rx[r0 + ju]).astype(self.dtype) * 3 + diag
            start = c0 * K * 9
            upper[start:start + nbins] += np.bincount(sx.ravel(), minlength=nbins)
            upper[start:start + nbins] += np.bincount(sd, minlength=nbins)
        upper = upper.reshape(K, K, 3, 3)  # pairs i < j in sorted order
        # the ordered pair (j, i) swaps the keys and negates both signs
        return upper + upper.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]


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
    """K(μ) of many measures against one gap on one design (the gap side is shared)."""

    def __init__(self, design: Design, gap):
        self.design = design
        self.gap = np.asarray(gap, float)
        A = len(design.axes)
        self.sets = [s for r in range(min(A, 2) + 1) for s in itertools.combinations(range(A), r)]
        self.maximal = [s for s in self.sets if len(s) == min(A, 2)]
        self._counters: dict[tuple[int, ...], PairSignCounter] | None = None
        self._rows = np.flatnonzero(~np.isnan(self.gap))

    def _build(self, rows: np.ndarray, reuse: bool) -> dict[tuple[int, ...], PairSignCounter]:
        """One counter over all axes (cell-pair table) or one per maximal set S; the gap
        side is cached when the counters will be ``reuse``d and memory allows."""
        codes, sizes = self.design.codes[rows], self.design.sizes
        g = self.gap[rows]
        full = tuple(range(len(sizes)))
        pair_bytes = 4 * len(rows) ** 2 / 2 if reuse else np.inf  # gap-side cache of one counter
        if int(np.prod(sizes, dtype=float)) ** 2 * 9 <= MAX_TABLE:
            key = np.ravel_multi_index(codes.T, sizes) if sizes else np.zeros(len(rows), int)
            return {full: PairSignCounter(key, int(np.prod(sizes)), g, cache=pair_bytes <= _CACHE_BYTES)}
        out = {}
        cache = pair_bytes * len(self.maximal) <= _CACHE_BYTES
        for s in self.maximal:
            sz = tuple(sizes[a] for a in s)
            if int(np.prod(sz)) ** 2 * 9 > MAX_TABLE:
                warnings.warn(f"CMI: conditioning set {s} has too many bins; skipped")
                continue
            key = np.ravel_multi_index(codes[:, list(s)].T, sz)
            out[s] = PairSignCounter(key, int(np.prod(sz)), g, cache=cache)
        return out

    def score(self, measure) -> CMIResult:
        """K(μ) for one measure (aligned with the design rows)."""
        x = np.asarray(measure, float)
        rows = self._rows[~np.isnan(x[self._rows])]
        if len(rows) < 2:
            return CMIResult(float("nan"), ())
        if len(rows) == len(self._rows):
            if self._counters is None:
                self._counters = self._build(self._rows, reuse=True)
            counters = self._counters
        else:
            counters = self._build(rows, reuse=False)  # NaN rows of this measure removed
        sizes = self.design.sizes
        per_set: dict[tuple[int, ...], float] = {}
        for base, counter in counters.items():
            table = counter.counts(x[rows])
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
