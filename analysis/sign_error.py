"""Robust sign-error over coupled environments (Dziugaite, Drouin et al., NeurIPS 2020,
"In Search of Robust Measures of Generalization", §4; code: nitarshan/robust-generalization-
measures, ``experiments/coupled_networks``).

- An **environment** is a pair of hyperparameter settings (cells) that differ in exactly one
  axis H_i (v1 ↔ v2), all other axes equal. ``hp.seed`` is not an axis: the environment
  pairs every seed of one cell with every seed of the other (all seed pairs).
- Per pair of models the sign-error is ``(1 − sign(μ1 − μ2)·sign(g1 − g2)) / 2`` ∈ [0, 1]
  (a tie in μ scores 1/2, a coin flip).
- **Monte-Carlo noise filter**: each pair gets the Hoeffding weight
  ``w = max(0, 1 − 2 exp(−2 n (|Δg|/2)²))²`` with n the *real* test-set size (here
  ``min(gen.n_test)`` of the two models; RGM hard-codes 10,000), then ``w ← (w − 0.5)₊``:
  pairs whose gaps could be equal by test-sampling noise get no weight. The bound assumes
  a gap of a [0, 1]-bounded loss (an accuracy gap as a fraction); for other gaps use
  ``hoeffding=False`` (all weights 1).
- The environment loss is the weighted mean sign-error; environments with Σw = 0 or an
  effective sample size ESS = (Σw)²/Σw² below ``min_ess`` are dropped (RGM's figures use
  12; the default 1 keeps every environment with positive weight, as small grids have few
  seeds).
- Summaries: mean, 90th percentile (linear interpolation, as ``np.percentile``) and max of
  the environment losses, per axis and over all environments. RGM lists every environment
  twice (v1→v2 and v2→v1, equal losses); we list it once, which leaves these unchanged.
- Rows with a NaN measure or gap are dropped for that measure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.kernels import environment_pairs, environment_sums, thread_map
from analysis.schema import AnalysisError, Design


_CHUNK = 1 << 16


def hoeffding_weight(delta_gap, n, min_weight: float = 0.5) -> np.ndarray:
    """RGM's weight ``(max(0, 1 − 2 exp(−2n(|Δg|/2)²))² − min_weight)₊``."""
    d, n = np.broadcast_arrays(np.abs(np.asarray(delta_gap, float)), np.asarray(n, float))
    out = np.empty(d.shape)
    flat_d, flat_n, flat_out = d.reshape(-1), n.reshape(-1), out.reshape(-1)
    for s in range(0, flat_d.size, _CHUNK):  # in blocks that stay in cache
        dd, nn = flat_d[s:s + _CHUNK], flat_n[s:s + _CHUNK]
        w = np.maximum(0.0, 1.0 - 2.0 * np.exp(-2.0 * nn * (dd / 2) ** 2)) ** 2
        flat_out[s:s + _CHUNK] = np.maximum(w - min_weight, 0.0)
    return out


def sign_error(m1, m2, g1, g2) -> np.ndarray:
    """``(1 − sign(m1 − m2)·sign(g1 − g2)) / 2`` elementwise."""
    return (1.0 - np.sign(np.subtract(m1, m2)) * np.sign(np.subtract(g1, g2))) / 2.0


@dataclass(frozen=True)
class SignErrorResult:
    """Summaries of the environment losses, overall and per axis (``hp.`` names)."""

    mean: float
    p90: float
    max: float
    n_envs: int
    per_axis: dict[str, dict[str, float]] = field(default_factory=dict)
    losses: dict[str, np.ndarray] = field(default_factory=dict)


def _summary(losses: np.ndarray) -> dict[str, float]:
    if losses.size == 0:
        return {"mean": np.nan, "p90": np.nan, "max": np.nan, "n_envs": 0}
    return {"mean": float(losses.mean()), "p90": float(np.percentile(losses, 90)),
            "max": float(losses.max()), "n_envs": int(losses.size)}


class SignErrorScorer:
    """Coupled environments of one design and gap, scored for many measures.

    ``n_test``: per-row test-set sizes (array) or one size for all, used by the Hoeffding
    weights; required when ``hoeffding`` is True.
    """

    def __init__(self, design: Design, gap, n_test=None, hoeffding: bool = True,
                 min_weight: float = 0.5, min_ess: float = 1.0):
        g = np.asarray(gap, float)
        n = len(g)
        if hoeffding:
            nt = np.broadcast_to(np.asarray(n_test if n_test is not None else np.nan, float), (n,))
            if np.isnan(nt[~np.isnan(g)]).any():
                raise AnalysisError("Hoeffding weights need the test-set size (gen.n_test) of every run")
        self.min_ess = float(min_ess)
        self.axes = design.axes
        self.gap = g
        self.weighted = bool(hoeffding)
        self._rows = np.flatnonzero(~np.isnan(g))
        _ = design.other_groups  # computed once, before the threads read it
        self.envs = thread_map(lambda a: self._environments(design, a, nt if hoeffding else None, min_weight),
                               range(len(design.axes)))  # per axis: (row order, environments, weights, sums)

    def _environments(self, design: Design, a: int, nt, min_weight: float):
        group, _ = design.other_groups[a]
        g = self.gap
        rows = self._rows[np.lexsort((design.codes[self._rows, a], group[self._rows]))]
        *env, dg, nmin = environment_pairs(group[rows], design.codes[rows, a], g[rows],
                                           nt[rows] if nt is not None else np.zeros(len(rows)))
        w = hoeffding_weight(dg, nmin, min_weight) if nt is not None else np.zeros(0)
        del dg, nmin
        sums = [np.full(len(env[0]), np.nan) for _ in range(3)]  # Σw, Σw², Σw·e
        environment_sums(np.zeros(len(rows)), g[rows], w, self.weighted, *env, *sums, True)
        return rows, env, w, sums[:2]

    def _axis_losses(self, x: np.ndarray, a: int) -> np.ndarray:
        rows, env, w, (sw_all, sw2_all) = self.envs[a]
        sw, sw2, swe = sw_all.copy(), sw2_all.copy(), np.empty(len(sw_all))
        environment_sums(x[rows], self.gap[rows], w, self.weighted, *env, sw, sw2, swe, False)
        with np.errstate(divide="ignore", invalid="ignore"):
            ess = np.where(sw2 > 0, sw * sw / sw2, 0.0)
            keep = (sw > 0) & ((ess >= self.min_ess) | np.isclose(ess, self.min_ess))
            return swe[keep] / sw[keep]

    def score(self, measure) -> SignErrorResult:
        """Environment losses of one measure (aligned with the design rows) and summaries."""
        x = np.asarray(measure, float)
        losses = dict(zip(self.axes, thread_map(lambda a: self._axis_losses(x, a), range(len(self.axes)))))
        per_axis = {name: _summary(v) for name, v in losses.items()}
        allv = np.concatenate(list(losses.values())) if losses else np.zeros(0)
        s = _summary(allv)
        return SignErrorResult(s["mean"], s["p90"], s["max"], s["n_envs"], per_axis, losses)


def robust_sign_error(measure, gap, design: Design, n_test=None, hoeffding: bool = True,
                      min_weight: float = 0.5, min_ess: float = 1.0) -> SignErrorResult:
    """Sign-error summaries of one measure; see the module docstring for the conventions."""
    return SignErrorScorer(design, gap, n_test, hoeffding, min_weight, min_ess).score(measure)
