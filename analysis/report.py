"""One-stop report: tidy table -> correlation tables + figures + ``report.md``.

``report(source, out_dir)`` accepts sweep directories (collected with
:func:`analysis.collect.collect`, and saved as ``results.csv``), a tidy CSV/Parquet file, or
a DataFrame. It writes into ``out_dir``::

    report.md                 the report, embedding the figures by relative path
    results.csv               the tidy table (when built from sweep directories): every run,
                              those without metrics.json included (status 'unfinished'/'failed')
    correlations.csv|.md|.tex the statistics (full precision) and the paper-layout tables
    correlations_table.csv    paper layout, 3 decimals
    figures/*.png             bars, ψ heatmap, measure-vs-gap scatter pages, layer plots

The report says how many runs the correlations left out and why, how many values each
measure lost (NaN, ±inf), which hyperparameter values disappeared with them
(:mod:`analysis.exclusions`), and which measures are flagged rather than ranked
(:mod:`analysis.flags`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

import pandas as pd

from analysis import plots
from analysis.collect import apply_filters, collect, read_histories, read_table, write_table
from analysis.correlate import correlate
from analysis.exclusions import left_out
from analysis.schema import DEFAULT_GAP, SEED, AnalysisError, Design, measure_columns, strip
from analysis.tables import axes_of, fmt, markdown_block, notes, sort_rows, to_markdown, write_tables

PANELS_PER_PAGE = 12


def load_source(source, drop_nonconverged: bool = False, drop_diverged: bool = False,
                min_train_acc: float | None = None, log: Callable[[str], None] = print,
                unfinished: bool = False):
    """(table, built_from_sweeps) from a DataFrame, a table file or sweep directories;
    ``unfinished``: keep run directories without metrics.json as rows (to count them)."""
    if isinstance(source, pd.DataFrame):
        return source, False
    paths = [Path(source)] if isinstance(source, (str, os.PathLike)) else [Path(s) for s in source]
    if len(paths) == 1 and paths[0].is_file():
        df = apply_filters(read_table(paths[0]), drop_nonconverged, drop_diverged, min_train_acc, log)
        return df, False
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise AnalysisError(f"not found: {', '.join(missing)}")
    return collect(paths, drop_nonconverged, drop_diverged, min_train_acc, log, unfinished), True


def used_runs(df: pd.DataFrame, corr: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``df`` that :func:`correlate` used for ``corr`` (same rules, from its attrs)."""
    f = corr.attrs.get("filters", {})
    return df.loc[left_out(df, corr.attrs["gap"], **f).used]


def _design_lines(df: pd.DataFrame) -> list[str]:
    design = Design.from_table(df)
    lines = []
    for a in design.axes:
        col = a.split("+")[0]  # merged (aliased) axes are named 'hp.width+heads'
        vals = sorted(df[col].dropna().unique(), key=str)
        shown = ", ".join(str(v) for v in vals[:8]) + (", …" if len(vals) > 8 else "")
        alias = " (aliased axes, merged)" if "+" in a else ""
        lines.append(f"- `{strip(a)}`: {len(vals)} values ({shown}){alias}")
    if SEED in df.columns:
        lines.append(f"- seeds: {df[SEED].nunique()} (`hp.seed` is never an axis)")
    return lines


def report(source, out_dir: str | Path, gap: str = DEFAULT_GAP, n_boot: int = 100, seed: int = 0,
           drop_nonconverged: bool = False, drop_diverged: bool = True,
           min_train_acc: float | None = None, drop_undecided: bool = False,
           log: Callable[[str], None] = print) -> Path:
    """Write tables, figures and ``report.md`` into ``out_dir``; return the report path.

    Every run of the source enters the table (from sweep directories, also those without
    ``metrics.json``); the correlations leave out diverged runs (unless
    ``drop_diverged=False``), failed and unfinished ones, and with the filters the
    non-converged and low-train-accuracy ones, and the report counts each reason (and each
    measure's undecided values, left out of it with ``drop_undecided``)."""
    out = Path(out_dir)
    messages: list[str] = []

    def note(msg: str) -> None:
        messages.append(msg)
        log(msg)

    df, from_sweeps = load_source(source, log=note, unfinished=True)
    out.mkdir(parents=True, exist_ok=True)
    if from_sweeps:
        write_table(df, out / "results.csv")
    # Named specifications (``measure.srr[eps=0.05]``) are compared by ``sensitivity``;
    # the report ranks each measure under its default settings only.
    measures = [c for c in measure_columns(df) if "[" not in c]
    filters = dict(n_boot=n_boot, seed=seed, include_diverged=not drop_diverged, converged_only=drop_nonconverged,
                   min_train_acc=min_train_acc)
    corr = correlate(df, gap=gap, measures=measures, drop_undecided=drop_undecided, **filters)
    for line in notes(corr):
        log(line)
    write_tables(corr, out)
    used = used_runs(df, corr)
    figs = _figures(used, corr, gap, out / "figures")

    md = [f"# Generalization-measure correlation report", "",
          f"{corr.attrs['n_models']} of the {corr.attrs['n_runs']} runs in the table are correlated with "
          f"`{gap}` ({len(corr)} measures); what was left out, and why, is counted below.", "",
          "## Design", "", *_design_lines(used)]
    if messages:
        md += ["", "Collection:", "", *[f"- {m}" for m in messages]]
    md += ["", "## Runs and values left out", "", *markdown_block(notes(corr))]
    boot = (f"; 95% bootstrap intervals over seeds in brackets ({corr.attrs['n_boot']} replicates)"
            if corr.attrs.get("n_boot") else "")
    md += ["", "## Correlations", "",
           "n: models each measure was scored on; "
           "τ: Jiang et al. (2020) sign-based Kendall τ over all models; Ψ: granulated Kendall "
           "(mean of ψ per axis); K: conditional mutual information (min over conditioning sets "
           "of ≤ 2 axes); SE: robust sign-error over coupled environments (Dziugaite et al. 2020, "
           f"{'Hoeffding-weighted' if corr.attrs.get('hoeffding') else 'unweighted'}), "
           "SE <axis>: its mean over the environments whose two runs differ in that axis" + boot
           + "; flags: why a measure is not ranked (listed last).",
           "", to_markdown(corr), *_sign_error_note(df, corr),
           "Files: `correlations.csv` (all statistics), `correlations.md`, "
           "`correlations.tex`, `correlations_table.csv`.", "", *size_reference(df, corr, gap, **filters),
           "## Figures", "",
           "The figures show the measures themselves over the runs used; their per-layer components "
           "and diagnostics (names like `srr.L2.Rc`, `pacbayes_flatness.sigma`) are in the tables. "
           "Flagged measures are drawn in grey below the ranked ones.", ""]
    for title, path in figs:
        md += [f"### {title}", "", f"![{title}]({path.relative_to(out).as_posix()})", ""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path


SIZE_AXIS = "n_train"


def size_reference(df: pd.DataFrame, corr: pd.DataFrame, gap: str, **filters) -> list[str]:
    """Report lines for the training-set size alone, 1/n_train taken as a measure, when n_train is
    an axis of the design (the same runs and filters as ``corr``): what a measure must beat to say
    more about the gap than the data size does. No lines otherwise."""
    if SIZE_AXIS not in corr.attrs.get("axes", []):
        return []
    ref_col = "measure.inverse_train_size"
    size = pd.to_numeric(df[f"hp.{SIZE_AXIS}"], errors="coerce")
    sized = pd.concat([df, (1.0 / size).rename(ref_col)], axis=1)  # one block: no fragmented frame
    r = correlate(sized, gap=gap, measures=[ref_col], cmi=False, sign_error=False, **filters).iloc[0]  # τ, ψ only
    ci = lambda k: f" [{fmt(r[k + '_lo'])}, {fmt(r[k + '_hi'])}]" if f"{k}_lo" in r else ""
    others = [a for a in corr.attrs["axes"] if a != SIZE_AXIS]
    lines = ["## The training-set size alone", "",
             f"1/n_train taken as a measure, on the same runs: τ = {fmt(r['tau'])}{ci('tau')}, "
             f"ψ n_train = {fmt(r.get(f'psi.{SIZE_AXIS}'))}"
             + (f"; it is constant within {', '.join(others)}, so it has no ψ there" if others else "") + ". "]
    if r["tau"] < 0:  # Jiang's τ and ψ change sign with the measure: n_train itself is the line
        lines[-1] += ("This gap grows with the training-set size, so n_train itself is the line a measure "
                      "must beat (τ and ψ of the opposite sign), and a size-adjusted form (`<name>.size_adjusted`, "
                      "a bound divided by m) is pushed the wrong way along n_train by construction.")
    else:
        lines[-1] += ("A size-adjusted form (`<name>.size_adjusted`, a bound divided by m) inherits this much "
                      "correlation along n_train by construction: a measure tells more than the data size only "
                      "where it does better than this line (τ, or ψ within the other axes).")
    return lines + [""]


def _sign_error_note(df: pd.DataFrame, corr: pd.DataFrame) -> list[str]:
    """Explain empty sign-error cells (no environment survived the noise filter)."""
    if "n_envs" not in corr.columns or not (corr["n_envs"] == 0).any():
        return []
    n = df["gen.n_test"].min() if "gen.n_test" in df.columns else None
    size = f" (smallest test set: {int(n)} examples)" if n is not None and pd.notna(n) else ""
    return ["SE '–': no coupled environment kept a positive Hoeffding weight: the gaps of the "
            "paired runs are closer than the test-set sampling error" + size + ".", ""]


# A measure's sub-values are stored as "<name>.<component>" (srr.L2.Rc, pacbayes_flatness.sigma);
# a dot followed by a digit is part of a name (steps_to_ce_0.1).
_SUB_VALUE = re.compile(r"\.[A-Za-z]")


def headline(corr: pd.DataFrame) -> pd.DataFrame:
    """The rows of the measures themselves, without their per-layer and diagnostic sub-values
    (those stay in the tables; figures with a hundred bars are unreadable)."""
    return corr[~corr["measure"].str.contains(_SUB_VALUE)]


def _figures(df: pd.DataFrame, corr: pd.DataFrame, gap: str, fig_dir: Path) -> list[tuple[str, Path]]:
    figs = []
    corr = headline(corr)
    p = plots.plot_bars(corr, fig_dir / "tau_psi_bars.png")
    if p:
        figs.append(("τ and Ψ per measure", p))
    p = plots.plot_heatmap(corr, fig_dir / "psi_heatmap.png")
    if p:
        figs.append(("ψ per measure and axis", p))
    names = list(sort_rows(corr)["measure"])  # ranked measures first, flagged ones after
    pages = [names[i:i + PANELS_PER_PAGE] for i in range(0, len(names), PANELS_PER_PAGE)]
    shape = SIZE_AXIS if SIZE_AXIS in axes_of(corr) else None  # the data-size intervention, when varied
    for k, page in enumerate(pages, 1):
        p = plots.plot_scatter(df, corr, gap, fig_dir / f"scatter_{k}.png", measures=page, shape=shape)
        if p:
            suffix = f" ({k}/{len(pages)})" if len(pages) > 1 else ""
            figs.append(("Measure vs gap" + suffix, p))
    p = plots.plot_layer_profile(df, fig_dir / "srr_layers.png")
    if p:
        figs.append(("SRR components across layers", p))
    histories = read_histories(df)
    p = plots.plot_layer_history(histories, df, fig_dir / "layer_history.png")
    if p:
        figs.append(("Per-layer quantities across epochs", p))
    p = plots.plot_layer_epochs(histories, df, fig_dir / "layer_epochs.png")
    if p:
        figs.append(("Per-layer quantities at the recorded epochs", p))
    return figs
