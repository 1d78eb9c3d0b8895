"""Which runs and values the correlations leave out, and why: every one is counted.

**Runs** are left out of every measure's statistics, each under the first reason that
applies (so the counts add up to the number of runs left out):

1. ``diverged``     ``is.diverged`` true or ``status`` 'diverged' (unless asked to keep them);
2. ``failed``       ``is.failed`` true or ``status`` 'failed';
3. ``unfinished``   ``status`` running / interrupted / pending / unfinished (a run directory
   without ``metrics.json``, see :func:`analysis.collect.collect_runs`);
4. ``status 'x'``   any other status that is not 'done';
5. ``not converged`` / ``convergence unknown (no stopping target)``: ``is.converged`` false /
   missing, only when the analysis asks for converged runs only;
6. ``train accuracy below X (or missing)``: only with a threshold;
7. ``no value of <gap>`` and ``non-finite <gap>`` (±inf).

**Values**: among the runs kept, a measure's NaN (undefined, censored, not measured) and
±inf values are left out of *that measure's* τ, Ψ, K and sign-error only; ±inf is never
ranked as "largest". ``correlate`` stores the counts per measure (``n``, ``n_nan``,
``n_inf``).

**Undecided values**: a measure that runs its own search (the PAC-Bayes σ search) records
whether it decided its value (``undecided.<name>``, :mod:`analysis.collect`). They are used
as they are and counted per measure (``n_undecided``); asked to (``drop_undecided``), the
correlations leave them out of that measure's statistics, as its NaN values.

**Axes**: a hyperparameter value all of whose runs are left out disappears from the
design; when an axis keeps a single value it is no longer an axis. Both are warned about,
for the whole table and per measure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.schema import IS, UNDECIDED, axis_columns, flag, strip

STATUS = "status"
UNFINISHED = ("running", "interrupted", "pending", "unfinished")
MAX_SHOWN = 6  # hyperparameter values listed in one warning


def is_diverged(df: pd.DataFrame) -> pd.Series:
    """``is.diverged`` true or ``status == 'diverged'`` (missing -> False)."""
    return flag(df, IS + "diverged") | _status(df).eq("diverged")


def _status(df: pd.DataFrame) -> pd.Series:
    if STATUS not in df.columns:
        return pd.Series("", index=df.index)
    return df[STATUS].map(lambda v: "" if pd.isna(v) else str(v).strip().lower())


def _converged(df: pd.DataFrame) -> pd.Series:
    """``is.converged`` as 1.0 / 0.0 / NaN (None under ``train.stop=epochs``: no target)."""
    if IS + "converged" not in df.columns:
        return pd.Series(np.nan, index=df.index)
    known = df[IS + "converged"].notna()
    return flag(df, IS + "converged").astype(float).where(known)


def run_reasons(df: pd.DataFrame, gap: str, include_diverged: bool = False, converged_only: bool = False,
                min_train_acc: float | None = None) -> pd.Series:
    """Per row, the reason it is left out of the correlations ('' when it is used)."""
    status = _status(df)
    gap_v = pd.to_numeric(df[gap], errors="coerce") if gap in df.columns else pd.Series(np.nan, index=df.index)
    rules = [("diverged", is_diverged(df) & (not include_diverged)),
             ("failed", flag(df, IS + "failed") | status.eq("failed")),
             ("unfinished", status.isin(UNFINISHED))]
    other = ~status.isin(("", "done", "diverged", "failed", *UNFINISHED))
    rules += [(f"status '{s}'", status.eq(s) & other) for s in sorted(set(status[other]))]
    if converged_only:
        conv = _converged(df)
        rules += [("not converged", conv.eq(0.0)), ("convergence unknown (no stopping target)", conv.isna())]
    if min_train_acc is not None:
        acc = pd.to_numeric(df.get("gen.train_acc", pd.Series(np.nan, index=df.index)), errors="coerce")
        rules.append((f"train accuracy below {min_train_acc:g} (or missing)", ~(acc >= float(min_train_acc))))
    rules += [(f"no value of {gap}", gap_v.isna()), (f"non-finite {gap}", np.isinf(gap_v))]
    reason = np.full(len(df), "", dtype=object)
    for name, mask in rules:
        reason[(reason == "") & mask.to_numpy(bool)] = name
    return pd.Series(pd.Categorical(reason, categories=["", *dict.fromkeys(n for n, _ in rules)]),
                     index=df.index)


def count(reasons: pd.Series) -> dict[str, int]:
    """{reason: number of runs left out}, in the order the rules apply (reasons with runs only)."""
    n = reasons.value_counts(sort=False)
    return {r: int(n[r]) for r in reasons.cat.categories if r and n[r]}


def value_counts(x: np.ndarray) -> tuple[int, int]:
    """(NaN, ±inf) counts of one measure's values among the runs used."""
    x = np.asarray(x, float)
    return int(np.isnan(x).sum()), int(np.isinf(x).sum())


def undecided_rows(df: pd.DataFrame, column: str) -> np.ndarray:
    """Per row, whether the value of measure column ``column`` (``measure.<name>`` or one of its
    suffixes ``measure.<name>.<suffix>``) was left undecided by its measure's own search."""
    name = strip(column)
    owners = [c for c in df.columns if isinstance(c, str) and c.startswith(UNDECIDED)
              and (name == c[len(UNDECIDED):] or name.startswith(c[len(UNDECIDED):] + "."))]
    if not owners:
        return np.zeros(len(df), bool)
    return flag(df, max(owners, key=len)).to_numpy(bool)


def _shown(values) -> str:
    vals = [str(v) for v in values]
    return ", ".join(vals[:MAX_SHOWN]) + (", …" if len(vals) > MAX_SHOWN else "")


def _sorted_values(s: pd.Series) -> list:
    return sorted(s.dropna().unique(), key=lambda v: (str(type(v)), v))


def lost_values(full: pd.DataFrame, used: np.ndarray, columns: list[str] | None = None) -> dict[str, tuple[list, list]]:
    """{axis: (values no run is left for, values left)} for every axis of ``full`` that lost
    a value once only the rows ``used`` are kept (NaN is not reported as a value)."""
    out = {}
    for col in axis_columns(full) if columns is None else columns:
        before = _sorted_values(full[col])
        after = _sorted_values(full.loc[used, col])
        lost = [v for v in before if v not in set(after)]
        if lost and len(before) >= 2:
            out[col] = (lost, after)
    return out


def axis_warnings(full: pd.DataFrame, reasons: pd.Series) -> list[str]:
    """One warning per hyperparameter axis that lost a value (or collapsed) with the runs left out."""
    used = (reasons == "").to_numpy()
    lines = []
    for col, (lost, left) in lost_values(full, used).items():
        why = count(reasons[full[col].isin(lost).to_numpy()])
        because = "all its runs were left out, " + ", ".join(f"{n} {r}" for r, n in why.items())
        lines.append(_axis_line(f"axis `{strip(col)}`", strip(col), lost, left, because, "the correlations cover"))
    return lines


def measure_axis_warnings(name: str, full: pd.DataFrame, used: np.ndarray, axes: list[str]) -> list[str]:
    """Warnings for the axes one measure loses through its own NaN / ±inf values (``used``:
    rows with a finite value of the measure among the runs kept; ``axes``: the axes kept)."""
    return [_axis_line(f"`{name}`", strip(col), lost, left, "it is NaN or ±inf on all those runs",
                       "its statistics cover")
            for col, (lost, left) in lost_values(full, used, axes).items()]


def _axis_line(who: str, axis: str, lost: list, left: list, why: str, cover: str) -> str:
    """'warning: axis `lr` lost lr = 10: all its runs were left out, 3 diverged; the
    correlations cover lr = 0.001, 0.01 only' (or '... so lr is no longer an axis')."""
    head = f"warning: {who} lost {axis} = {_shown(lost)}: {why}"
    if len(left) < 2:
        return head + (f"; {cover} {axis} = {_shown(left)} only, so {axis} is no longer an axis" if left
                       else f"; {axis} is no longer an axis")
    return head + f"; {cover} {axis} = {_shown(left)} only"


@dataclass(frozen=True)
class LeftOut:
    """The runs used by the correlations and what was left out, with the report's lines."""

    reasons: pd.Series          # per row of the full table: '' (used) or the reason
    counts: dict[str, int]      # reason -> runs
    warnings: list[str]         # axis warnings

    @property
    def used(self) -> np.ndarray:
        return (self.reasons == "").to_numpy()

    @property
    def n_runs(self) -> int:
        return len(self.reasons)


def left_out(df: pd.DataFrame, gap: str, include_diverged: bool = False, converged_only: bool = False,
             min_train_acc: float | None = None) -> LeftOut:
    """The runs :func:`analysis.correlate.correlate` leaves out of every measure, and why."""
    reasons = run_reasons(df, gap, include_diverged, converged_only, min_train_acc)
    return LeftOut(reasons, count(reasons), axis_warnings(df, reasons))


def run_lines(n_runs: int, counts: dict[str, int]) -> list[str]:
    """'Runs left out of every correlation: 5 of 40 (35 used)' and one line per reason."""
    n_out = sum(counts.values())
    if not n_out:
        return [f"All {n_runs} runs of the table are used."]
    return ([f"Runs left out of every correlation: {n_out} of {n_runs} ({n_runs - n_out} used):"]
            + [f"- {reason}: {n}" for reason, n in counts.items()])


def measure_lines(corr: pd.DataFrame) -> list[str]:
    """One line per measure scored on fewer runs than were used (its own NaN / ±inf, and with
    ``drop_undecided`` its undecided values, left out), then one per measure whose undecided
    values were kept."""
    dropped = bool(corr.attrs.get("drop_undecided"))
    lines, kept = [], []
    for _, r in corr.iterrows():
        n_nan, n_inf, n_und = (int(r[k]) if k in r and pd.notna(r[k]) else 0
                               for k in ("n_nan", "n_inf", "n_undecided"))
        parts = ([f"{n_nan} missing (NaN)"] if n_nan else []) + ([f"{n_inf} infinite (±inf)"] if n_inf else [])
        if dropped and n_und:
            parts.append(f"{n_und} undecided by its search")
        elif n_und:
            kept.append(f"- `{r['measure']}`: {n_und} of {int(r['n'])}")
        if parts:
            total = int(r["n"]) + n_nan + n_inf + (n_und if dropped else 0)
            lines.append(f"- `{r['measure']}`: {int(r['n'])} of {total} runs; " + ", ".join(parts))
    out = ["Measures scored on fewer runs (their own missing, infinite or undecided values left out):", *lines] \
        if lines else []
    if kept:
        out += ["Values their measure's search left undecided (diagnostics `converged: false`), used as they are "
                "(`--drop-undecided` leaves them out):", *kept]
    return out
