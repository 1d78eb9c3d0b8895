"""The tidy table: column conventions, validation and the hyperparameter design.

One row per trained model. Columns (spec §5):

- ``hp.<name>``      every hyperparameter of the run; ``hp.seed`` is the seed, never an axis;
- ``gen.<name>``     accuracies, losses, gaps, ``gen.n_test`` (test-set size), ...;
- ``measure.<name>`` float complexity measures;
- ``is.<flag>``      booleans (``is.converged``, ``is.diverged``, ``is.failed``); a missing
  ``is.converged`` (no stopping target under ``train.stop=epochs``) is NA, not False;
- ``undecided.<name>`` true where measure ``<name>``'s own search did not decide its value
  (its diagnostics say ``converged: false``: a PAC-Bayes σ search whose accuracy drop at σ
  is not known to lie within its tolerance); only for measures that run such a search;
- ``status``, ``diverged_reason`` text from ``metrics.json``;
- ``run_id``, ``run_dir`` (strings, informative only).

An **axis** is an ``hp.`` column other than ``hp.seed`` that takes at least two distinct
values in the table (a missing value counts as a value of its own). Columns that are
constant are not axes: they do not split models into groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

HP = "hp."
GEN = "gen."
MEASURE = "measure."
IS = "is."
UNDECIDED = "undecided."
SEED = "hp.seed"
DEFAULT_GAP = "gen.gap_acc"


class AnalysisError(ValueError):
    """Bad input for the analysis (missing column, malformed table, ...).

    The message is a single line meant for the user; the CLI prints it and exits 2.
    """


def measure_columns(df: pd.DataFrame) -> list[str]:
    """All ``measure.*`` columns, in table order."""
    return [c for c in df.columns if isinstance(c, str) and c.startswith(MEASURE)]


def strip(name: str) -> str:
    """``measure.srr`` -> ``srr``, ``hp.lr`` -> ``lr`` (the first ``prefix.`` only)."""
    for prefix in (MEASURE, HP, GEN, IS):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def axis_columns(df: pd.DataFrame) -> list[str]:
    """``hp.*`` columns except ``hp.seed`` with at least two distinct values (NaN is a value)."""
    return [c for c in df.columns
            if isinstance(c, str) and c.startswith(HP) and c != SEED
            and df[c].nunique(dropna=False) >= 2]


def flag(df: pd.DataFrame, col: str) -> pd.Series:
    """A boolean column as True/False with missing -> False (also for CSV text 'True'/'1')."""
    if col not in df.columns:
        return pd.Series(False, index=df.index)
    s = df[col]
    if s.dtype == object:
        s = s.map(lambda v: str(v).strip().lower() in ("true", "1", "1.0") if pd.notna(v) else False)
    return s.fillna(False).astype(bool)


def has_seeds(df: pd.DataFrame) -> bool:
    """True when ``hp.seed`` exists and takes at least two values."""
    return SEED in df.columns and df[SEED].nunique(dropna=True) >= 2


def validate(df: pd.DataFrame, gap: str, measures: list[str] | None = None) -> list[str]:
    """Check that ``df`` is a usable tidy table; return the measure columns to analyse.

    Raises :class:`AnalysisError` with a one-line message otherwise.
    """
    if not isinstance(df, pd.DataFrame) or df.shape[1] == 0:
        raise AnalysisError("the table has no columns")
    if gap not in df.columns:
        gaps = [c for c in df.columns if isinstance(c, str) and c.startswith(GEN + "gap")]
        hint = f" (gap columns present: {', '.join(gaps)})" if gaps else ""
        raise AnalysisError(f"gap column {gap!r} not found in the table{hint}")
    if not pd.api.types.is_numeric_dtype(df[gap]):
        raise AnalysisError(f"gap column {gap!r} is not numeric")
    cols = measure_columns(df) if measures is None else [_as_measure(m) for m in measures]
    if not cols:
        raise AnalysisError("the table has no 'measure.*' column")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise AnalysisError(f"measure column(s) not found: {', '.join(missing)}")
    bad = [c for c in cols if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise AnalysisError(f"measure column(s) are not numeric: {', '.join(bad)}")
    if len(df) < 2:
        raise AnalysisError(f"the table has {len(df)} row(s); at least 2 models are needed")
    return cols


def _as_measure(name: str) -> str:
    return name if name.startswith(MEASURE) else MEASURE + name


def dense_codes(values: pd.Series | np.ndarray) -> tuple[np.ndarray, int]:
    """Integer codes 0..k-1 of a column, sorted by value; NaN gets a code of its own."""
    values = pd.Series(values)
    try:
        codes, uniques = pd.factorize(values, sort=True, use_na_sentinel=False)
    except TypeError:  # mixed types that do not compare: order of appearance
        codes, uniques = pd.factorize(values, sort=False, use_na_sentinel=False)
    return codes.astype(np.int64), len(uniques)


def row_ids(codes: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense id (0..k-1) of every distinct row of an integer matrix ``(n, m)``."""
    if codes.shape[1] == 0:
        return np.zeros(codes.shape[0], np.int64), 1
    _, inv = np.unique(codes, axis=0, return_inverse=True)
    inv = inv.reshape(-1).astype(np.int64)
    return inv, int(inv.max()) + 1 if inv.size else 0


def valid_groups(group, n_groups: int, axis_code) -> np.ndarray:
    """Whether the axis takes ≥ 2 distinct values in each group."""
    group = np.asarray(group, np.int64)
    axis_code = np.asarray(axis_code, np.int64)
    k = int(axis_code.max()) + 1 if axis_code.size else 1
    distinct = np.bincount(np.unique(group * k + axis_code) // k, minlength=n_groups)
    return distinct >= 2


@dataclass(frozen=True)
class Design:
    """The hyperparameter design of a table: its axes and their integer codes.

    ``codes[:, a]`` is the code of axis ``axes[a]`` for every row (0..sizes[a]-1, sorted
    by value). A *cell* is one setting of all axes; runs that differ only in ``hp.seed``
    share a cell.
    """

    axes: tuple[str, ...]
    codes: np.ndarray
    sizes: tuple[int, ...]

    @classmethod
    def from_table(cls, df: pd.DataFrame, axes: list[str] | None = None) -> "Design":
        """Build from ``df``; ``axes`` defaults to :func:`axis_columns` (seed excluded).

        With the default axes, hp columns that determine each other on the table's rows
        (e.g. ``width`` and ``heads`` swept together) are *aliased*: no group can vary one
        with the other fixed, so each would get no valid group. They are merged into one
        axis named ``hp.width+heads``. Explicit ``axes`` are taken as given.
        """
        if axes is not None and SEED in axes:
            raise AnalysisError("hp.seed cannot be an axis")
        names = axis_columns(df) if axes is None else list(axes)
        coded = {a: dense_codes(df[a]) for a in names}
        groups: list[list[str]] = []
        for a in names:
            for g in groups if axes is None else []:
                (c0, k0), (c1, k1) = coded[g[0]], coded[a]
                if k0 == k1 and row_ids(np.stack([c0, c1], axis=1))[1] == k0:
                    g.append(a)
                    break
            else:
                groups.append([a])
        merged = tuple(g[0] + "".join("+" + strip(m) for m in g[1:]) for g in groups)
        cols = [coded[g[0]] for g in groups]
        codes = (np.stack([c for c, _ in cols], axis=1) if cols
                 else np.zeros((len(df), 0), np.int64))
        return cls(merged, codes, tuple(k for _, k in cols))

    @property
    def names(self) -> list[str]:
        """Axis names without the ``hp.`` prefix."""
        return [strip(a) for a in self.axes]

    @cached_property
    def cells(self) -> tuple[np.ndarray, int]:
        """(cell id per row, number of cells)."""
        return row_ids(self.codes)

    def groups_without(self, a: int) -> tuple[np.ndarray, int]:
        """Group id per row for 'every setting of the axes other than axis ``a``'."""
        return row_ids(np.delete(self.codes, a, axis=1))

    @cached_property
    def other_groups(self) -> list[tuple[np.ndarray, int]]:
        """:meth:`groups_without` for every axis, computed once."""
        return [self.groups_without(a) for a in range(len(self.axes))]

    @cached_property
    def valid_groups(self) -> list[np.ndarray]:
        """Per axis: whether each group of :attr:`other_groups` holds ≥ 2 of its values."""
        return [valid_groups(g, G, self.codes[:, a]) for a, (g, G) in enumerate(self.other_groups)]

    def take(self, rows: np.ndarray) -> "Design":
        """The design restricted to (or resampled along) ``rows``."""
        return Design(self.axes, self.codes[rows], self.sizes)
