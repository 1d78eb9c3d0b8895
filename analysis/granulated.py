"""Granulated Kendall coefficient Ψ (Jiang et al., ICLR 2020, §2, eq. for ψ_i and Ψ).

For hyperparameter axis i with value set Θ_i,

    ψ_i = (1/m_i) Σ_{θ_1..θ_{i-1}, θ_{i+1}..θ_n} τ( ∪_{θ_i ∈ Θ_i} {(μ(θ), g(θ))} ),
    Ψ   = (1/n) Σ_i ψ_i,

with τ Jiang's sign τ (:mod:`analysis.kendall`). Conventions here (cf. the pitfalls of
public implementations listed in docs/background/measure_suites.md §2.6):

- A *group* is one observed setting of the axes other than i. ``hp.seed`` is never an
  axis: runs that differ only in seed fall into the same group, and τ is taken over all
  models of the group (pairs of seeds of one setting included).
- Groups where axis i takes fewer than 2 distinct values are skipped and not counted, so
  m_i is the number of *valid observed* groups (reported as ``n_groups``), not the size of
  the Cartesian product: missing runs shrink groups or remove them, they never add NaN.
- A group whose measure (or gap) is constant has τ = 0, not NaN (Jiang's τ-a; scipy's τ_b
  would give NaN and a later ``.mean()`` would silently drop the group).
- Rows whose measure or gap is NaN are dropped for that measure before grouping.
- ψ_i is NaN when axis i has no valid group; Ψ is the mean over the axes with a valid ψ_i.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.kendall import concordance, dense_rank, ranked_concordance
from analysis.schema import Design, valid_groups


@dataclass(frozen=True)
class Granulated:
    """ψ_i and the number of valid groups per axis (keys: ``hp.`` column names), and Ψ."""

    psi: dict[str, float]
    n_groups: dict[str, int]
    Psi: float


def group_taus(x, y, group, n_groups: int, axis_code, origin=None):
    """τ per group and whether the group is valid (axis takes ≥ 2 distinct values in it).

    Returns ``(tau, valid)``, arrays of length ``n_groups``. ``tau`` of an invalid group
    is meaningless (NaN or a value that must be ignored).
    """
    tau = concordance(x, y, group, n_groups, origin=origin).tau
    return tau, valid_groups(group, n_groups, axis_code)


def _psi(tau: np.ndarray, valid: np.ndarray) -> tuple[float, int]:
    k = int(valid.sum())
    return (float(tau[valid].mean()) if k else float("nan")), k


def psi_for_axis(x, y, design: Design, a: int, rows=None, origin=None) -> tuple[float, int]:
    """(ψ_a, number of valid groups) for axis index ``a`` of ``design``.

    ``rows`` selects (or, with repeats, resamples) rows of the design; x and y are aligned
    with the selected rows and contain no NaN.
    """
    group, G = design.other_groups[a]
    code = design.codes[:, a]
    if rows is not None:
        group, code = group[rows], code[rows]
    return _psi(*group_taus(x, y, group, G, code, origin=origin))


def granulated_kendall(measure, gap, design: Design) -> Granulated:
    """ψ_i for every axis of ``design`` and Ψ, for one measure against the gap.

    ``measure`` and ``gap`` are aligned with the rows the design was built from. Rows
    where either is NaN are dropped (documented convention, see the module docstring).
    The ranks and the order by (measure, gap) are computed once and shared by the axes.
    """
    x = np.asarray(measure, float)
    y = np.asarray(gap, float)
    keep = ~(np.isnan(x) | np.isnan(y))
    rows = None if keep.all() else np.flatnonzero(keep)
    xs, ys = (x, y) if rows is None else (x[rows], y[rows])
    psi, ngroups = {}, {}
    if len(xs):
        rx, ry = dense_rank(xs), dense_rank(ys)
        by_xy = np.lexsort((ry, rx))
    for a, name in enumerate(design.axes):
        group, G = design.other_groups[a]
        if rows is None:
            valid = design.valid_groups[a]
        else:
            group = group[rows]
            valid = valid_groups(group, G, design.codes[rows, a])
        if not len(xs):
            psi[name], ngroups[name] = float("nan"), 0
            continue
        tau = ranked_concordance(rx, ry, group, G, by_xy).tau
        psi[name], ngroups[name] = _psi(tau, valid)
    vals = [v for v in psi.values() if not np.isnan(v)]
    return Granulated(psi, ngroups, float(np.mean(vals)) if vals else float("nan"))
