"""How much a measure's verdict depends on its conventions: τ and Ψ of every specification.

A measure computed under several settings is stored as named specifications
(``measures.specs``), collected as one column each: ``measure.srr`` (the defaults) and
``measure.srr[eps=0.05,representation=z_half]`` (:func:`analysis.collect.parse_measure_column`
reads the settings back). ``sensitivity(df, "srr")`` scores every specification against
every gap definition (default: the accuracy gap of Jiang et al. 2020 and the loss gap,
test − train cross-entropy) with :func:`analysis.correlate.correlate`, so the runs left
out (diverged, failed, unfinished, filters) and the values left out (NaN, ±inf per
specification) follow :mod:`analysis.exclusions` and are counted in the notes; τ is
Jiang's sign τ, Ψ the granulated τ, and the intervals the stratified seed bootstrap of
:mod:`analysis.bootstrap` (the same resampled rows for every specification of one gap).

Which value of a specification: a measure that reports its layer aggregates as
``<spec>.mean`` and ``<spec>.last`` (SRR: the main value is the mean over layers) gets one
more setting, ``value`` ∈ {mean, last}, the column ``<spec>`` or ``<spec>.last``: the
aggregation is a choice of column, not a computed setting. ``values`` picks other suffixes.

A setting a specification leaves at its default is shown with the default's value when a
run directory of the table holds a measures.json that records it (``stored_defaults``),
else as "default". The table: one row per (gap, specification); the figure
(:func:`analysis.plots.plot_spec_curve`) is Simonsohn, Simmons & Nelson's (2020)
specification curve: the specifications sorted by τ with their intervals, Ψ beneath in
the same order, and a panel marking the settings of each.

Against other measures (``against=("path_norm", "sharpness")``): each is scored at its
defaults in the same :func:`correlate` call, so on the same runs and the same bootstrap
resamples; the summary says in how many specifications τ (and Ψ) is above the other's,
and above the upper end of its interval (a conservative "beats"), and the figure draws
each as a dashed line across the curve. The intervals are separate, not of differences.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.collect import parse_measure_column
from analysis.correlate import correlate
from analysis.schema import GEN, MEASURE, AnalysisError, measure_columns
from analysis.tables import axes_of, fmt
from srr_bench.rundir import MEASURES

GAPS = ("gen.gap_acc", "gen.gap_loss")
VALUE = "value"  # the pseudo-setting: which value of a specification (main / mean / last ...)
SET = "set."     # table columns of the settings: set.eps, set.representation, ..., set.value
STATS = ("n", "tau", "tau_lo", "tau_hi", "Psi", "Psi_lo", "Psi_hi", "flags")


def gap_column(name: str) -> str:
    """``gap_acc`` or ``gen.gap_acc`` -> ``gen.gap_acc``."""
    name = name.strip()
    return name if name.startswith(GEN) else GEN + name


def spec_columns(df: pd.DataFrame, measure: str) -> dict[str, dict]:
    """{column: settings} of every specification of ``measure`` in ``df`` (its main values:
    ``measure.<m>`` and ``measure.<m>[...]``, not their suffixed values)."""
    out = {}
    for col in measure_columns(df):
        base, settings, suffix = parse_measure_column(col)
        if base == measure and not suffix:
            out[col] = settings
    if not out:
        raise AnalysisError(f"no column of measure {measure!r} (measure.{measure} or measure.{measure}[...]) "
                            "in the table")
    return out


def value_choices(df: pd.DataFrame, columns, values: list[str] | None) -> list[tuple[str, str]]:
    """(column suffix, label) of the values to score per specification: ``values`` (suffixes,
    '' the main value), or by default mean/last when every specification stores both."""
    if values is None:
        both = all(f"{c}.mean" in df.columns and f"{c}.last" in df.columns for c in columns)
        return [("", "mean"), ("last", "last")] if both else [("", "main")]
    return [(v, v or "main") for v in dict.fromkeys(v.strip() for v in values)]


def stored_defaults(df: pd.DataFrame, measure: str) -> dict:
    """The settings measures.json records for ``measure`` (its defaults) in the first run
    directory of ``df`` that has them; {} when none can be read."""
    for d in df.get("run_dir", pd.Series(dtype=object)).dropna():
        try:
            settings = json.loads((Path(str(d)) / MEASURES).read_text()).get("settings", {})
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(settings, dict) and isinstance(settings.get(measure), dict):
            return settings[measure]
    return {}


def label(v) -> str:
    """A setting value as the figure and the tables show it (``0.05``, ``1``, ``z_half``)."""
    if isinstance(v, bool) or v is None:
        return str(v).lower()
    if isinstance(v, (int, float, np.number)):
        return f"{float(v):g}"
    return str(v)


def _rows(df: pd.DataFrame, measure: str, values: list[str] | None, defaults: dict) -> pd.DataFrame:
    """One row per scored column: ``column``, ``spec`` (its name) and ``set.<key>`` labels."""
    specs = spec_columns(df, measure)
    keys = sorted({k for s in specs.values() for k in s})
    choices = value_choices(df, specs, values)
    rows = []
    for col, settings in specs.items():
        for suffix, vlabel in choices:
            column = f"{col}.{suffix}" if suffix else col
            if column not in df.columns:
                raise AnalysisError(f"no column {column!r}: --values {suffix!r} is not stored for every specification")
            row = {"column": column, "spec": column[len(MEASURE):]}
            row.update({SET + k: label(settings[k]) if k in settings else label(defaults.get(k, "default"))
                        for k in keys})
            if len(choices) > 1:
                row[SET + VALUE] = vlabel
            rows.append(row)
    return pd.DataFrame(rows)


def sensitivity(df: pd.DataFrame, measure: str = "srr", gaps=GAPS, values: list[str] | None = None,
                n_boot: int = 200, seed: int = 0, level: float = 0.95, include_diverged: bool = False,
                converged_only: bool = False, min_train_acc: float | None = None,
                defaults: dict | None = None, against=(), drop_undecided: bool = False) -> pd.DataFrame:
    """τ and Ψ (with seed-bootstrap intervals) of every specification of ``measure`` against
    every gap in ``gaps``; one row per (gap, specification), sorted by gap then τ (descending).

    Columns: ``gap``, ``spec``, ``column``, ``set.<key>`` (the settings, ``set.value`` the
    value), ``default`` (the measure at its defaults, its main value), ``n``, ``tau``,
    ``tau_lo``, ``tau_hi``, ``Psi``, ``Psi_lo``, ``Psi_hi``, ``psi.<axis>`` (ψ within each axis of
    the design: which axes a specification follows), ``flags``. ``attrs``: ``measure``,
    ``keys`` (the setting columns), ``notes`` ({gap: lines on what was left out}),
    ``n_models`` ({gap: runs used}), ``n_boot``, ``level``, ``against`` ({gap: {measure:
    its n, τ, Ψ and intervals at its defaults}}, for each measure named in ``against``).
    The filters, ``drop_undecided`` among them, are :func:`analysis.correlate.correlate`'s.
    """
    against = [a for a in dict.fromkeys(against) if a]
    missing = [a for a in against if MEASURE + a not in df.columns]
    if missing:
        raise AnalysisError(f"--against: no column {', '.join(MEASURE + a for a in missing)} in the table")
    defaults = stored_defaults(df, measure) if defaults is None else defaults
    specs = _rows(df, measure, values, defaults)
    keys = [c for c in specs.columns if c.startswith(SET)]
    default_col = MEASURE + measure
    parts, notes, n_models, others = [], {}, {}, {}
    for gap in map(gap_column, gaps):
        columns = list(dict.fromkeys([*specs["column"], *(MEASURE + a for a in against)]))
        corr = correlate(df, gap=gap, measures=columns, n_boot=n_boot, seed=seed, level=level,
                         cmi=False, sign_error=False, include_diverged=include_diverged,
                         converged_only=converged_only, min_train_acc=min_train_acc,
                         drop_undecided=drop_undecided)
        stats = corr.reindex(columns=["measure", *STATS, *(f"psi.{a}" for a in axes_of(corr))])
        others[gap] = {a: stats.set_index("measure").loc[a].to_dict() for a in against}
        part = specs.merge(stats, left_on="spec", right_on="measure", how="left").drop(columns="measure")
        part.insert(0, "gap", gap)
        parts.append(part)
        notes[gap], n_models[gap] = list(corr.attrs.get("notes", [])), corr.attrs.get("n_models")
    out = pd.concat(parts, ignore_index=True)
    out.insert(3, "default", out["column"] == default_col)
    out = out.sort_values(["gap", "tau"], ascending=[True, False], na_position="last", kind="stable")
    out = out.reset_index(drop=True)
    out.attrs.update(measure=measure, keys=keys, notes=notes, n_models=n_models, n_boot=int(n_boot), level=level,
                     against=others)
    return out


def _ci(row: pd.Series, key: str) -> str:
    lo, hi = row.get(f"{key}_lo"), row.get(f"{key}_hi")
    ci = f" [{fmt(lo)}, {fmt(hi)}]" if pd.notna(lo) and pd.notna(hi) else ""
    return fmt(row[key]) + ci


def summary(table: pd.DataFrame) -> list[str]:
    """Per gap: the range of τ and Ψ over the specifications, the default's τ, how many
    intervals lie above / below 0, and each axis's range of ψ (how many specifications follow it)."""
    lines = []
    for gap, part in table.groupby("gap", sort=False):
        tau = part["tau"].dropna()
        line = f"- `{gap}`: {len(part)} specifications"
        if len(tau):
            line += (f"; τ from {fmt(tau.min())} to {fmt(tau.max())} (median {fmt(tau.median())}), "
                     f"Ψ from {fmt(part['Psi'].min())} to {fmt(part['Psi'].max())}")
        d = part[part["default"]]
        if len(d):
            line += f"; the default: τ = {_ci(d.iloc[0], 'tau')}"
        if part["tau_lo"].notna().any():
            above, below = int((part["tau_lo"] > 0).sum()), int((part["tau_hi"] < 0).sum())
            line += f"; τ interval above 0: {above}, below 0: {below}"
        lines.append(line)
        psi = [(a, part[f"psi.{a}"].dropna()) for a in axes_of(part)]
        if any(len(v) for _, v in psi):
            lines.append("  - ψ within each axis, lowest to highest (specifications above 0): " + "; ".join(
                f"{a} {fmt(v.min())} to {fmt(v.max())} ({int((v > 0).sum())})" for a, v in psi if len(v)))
        for name, other in (table.attrs.get("against") or {}).get(gap, {}).items():
            lines.append("  - " + _against_line(part, name, other))
    return lines


def _against_line(part: pd.DataFrame, name: str, other: dict) -> str:
    """How many specifications have τ (Ψ) above ``other``'s, and above its interval."""
    n = int(part["tau"].notna().sum())
    flags = f"; flagged: {other['flags']}" if isinstance(other.get("flags"), str) and other["flags"] else ""
    line = (f"against `{name}` at its defaults (τ = {_ci(pd.Series(other), 'tau')}, "
            f"Ψ = {_ci(pd.Series(other), 'Psi')}{flags}):")
    if pd.isna(other.get("tau")):
        return line + " undefined on these runs"
    line += (f" τ above it in {int((part['tau'] > other['tau']).sum())} of {n} specifications, "
             f"Ψ above it in {int((part['Psi'] > other['Psi']).sum())}")
    if pd.notna(other.get("tau_hi")) and part["tau_lo"].notna().any():
        line += (f"; τ interval entirely above its τ interval in {int((part['tau_lo'] > other['tau_hi']).sum())}, "
                 f"entirely below in {int((part['tau_hi'] < other['tau_lo']).sum())}")
    return line


def to_markdown(table: pd.DataFrame) -> str:
    """The table as Markdown, one section per gap, specifications sorted by τ."""
    keys = table.attrs.get("keys", [c for c in table.columns if c.startswith(SET)])
    level = int(round(100 * table.attrs.get("level", 0.95)))
    out = [f"Specifications of `{table.attrs.get('measure', '')}`; τ and Ψ with {level}% seed-bootstrap "
           "intervals in brackets; * marks the measure at its defaults.", "", *summary(table)]
    for gap, part in table.groupby("gap", sort=False):
        axes = [a for a in axes_of(part) if part[f"psi.{a}"].notna().any()]
        head = ["", *(k[len(SET):] for k in keys), "n", "τ", "Ψ", *(f"ψ {a}" for a in axes), "flags"]
        out += ["", f"### {gap}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for _, r in part.iterrows():
            n = "–" if pd.isna(r["n"]) else str(int(r["n"]))
            flags = "" if pd.isna(r["flags"]) else str(r["flags"])
            cells = ["*" if r["default"] else "", *(str(r[k]) for k in keys), n, _ci(r, "tau"), _ci(r, "Psi"),
                     *(fmt(r[f"psi.{a}"]) for a in axes), flags]
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def write_sensitivity(table: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """``sensitivity_<measure>.csv`` (full precision) and ``.md`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"sensitivity_{safe_name(table.attrs.get('measure', 'measure'))}"
    paths = {"csv": out / f"{stem}.csv", "md": out / f"{stem}.md"}
    table.to_csv(paths["csv"], index=False)
    paths["md"].write_text(to_markdown(table))
    return paths


def safe_name(text: str) -> str:
    """A file-name-safe version of a measure or gap name."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)
