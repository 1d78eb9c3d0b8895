"""The regularization study: test accuracy of CE + α·Σ_{ℓ∈S} SRR_ℓ against plain CE.

A regularized run carries ``hp.srr_alpha`` (α ≠ 0), ``hp.srr_layers`` (``all``,
``random`` or a 1-based layer number; a missing value is read as the config default,
``all``) and ``hp.reg.*`` (``reg.dtype``, ``reg.detach_u``, ...); a cross-entropy (CE) run
has none of them, or α = 0.

A **setting** is one value of every ``hp.*`` column except ``hp.seed``, ``hp.srr_alpha``,
``hp.srr_layers`` and ``hp.reg.*`` (a missing value is a value of its own). Within a
setting, the CE runs are the baseline of every **regularizer configuration** (α, layers,
the other ``hp.reg.*`` values). :func:`regularization_table` gives one row per (setting,
configuration), test accuracy in percent:

- ``ce_mean``/``ce_std``, ``srr_mean``/``srr_std``: mean and sd (ddof = 1; NaN for n < 2)
  over the usable runs, i.e. status ``done`` (when a ``status`` column exists) and a test
  accuracy; the others are counted in ``n_ce_diverged`` / ``n_diverged``, not averaged;
- ``diff`` = srr_mean − ce_mean and its 95% interval ``[diff_lo, diff_hi]``: ``paired``
  (t-interval of the per-seed differences, n − 1 df) when both arms have the same ≥ 2
  distinct seeds, else ``welch`` (Welch–Satterthwaite df); ``none`` (NaN interval) when
  an arm has fewer than 2 runs.

:func:`format_table` renders Markdown or LaTeX (all number formatting is in
:func:`_cells`), :func:`write_regularization` writes ``regularization.csv|.md|.tex`` and
:func:`plot_regularization` the figures ``regularization_bars.png`` and, when some setting
was regularized on more than one layer choice, ``regularization_layers.png``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from analysis.plots import _colors, _save
from analysis.schema import HP, SEED, AnalysisError, dense_codes, row_ids, strip
from analysis.tables import _tex

ALPHA, LAYERS, REG = "hp.srr_alpha", "hp.srr_layers", "hp.reg."
TEST_ACC, STATUS = "gen.test_acc", "status"
DATASET, VARIANT = "hp.dataset", "hp.variant"
STEM = "regularization"
LEVEL = 0.95
STATS = ["alpha", "layers", "n_ce", "n_ce_diverged", "ce_mean", "ce_std", "n_srr", "n_diverged",
         "srr_mean", "srr_std", "diff", "diff_lo", "diff_hi", "ci_kind"]


# -- the table ------------------------------------------------------------------------------

def layer_label(v) -> str:
    """``all`` | ``random`` | ``"2"`` from a JSON, CSV or Parquet value (2, 2.0, "2", "all")."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "all"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v).strip()
    return str(int(f)) if f.is_integer() else str(v)


def layer_order(label: str) -> tuple:
    """Natural order of the layer choices: all, 1, 2, ..., random, anything else."""
    if label == "all":
        return (0, 0, "")
    if label.isdigit():
        return (1, int(label), "")
    return (2, 0, "") if label == "random" else (3, 0, label)


def _sortable(v) -> tuple:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return (2, 0.0, "")
    if isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
        return (0, float(v), "")
    return (1, 0.0, str(v))


def _text(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def _alpha(df: pd.DataFrame) -> pd.Series:
    """α per run; NaN where the column is absent or empty (CE runs)."""
    if ALPHA not in df.columns:
        return pd.Series(np.nan, index=df.index)
    a = pd.to_numeric(df[ALPHA], errors="coerce")
    bad = a.isna() & df[ALPHA].notna()
    if bad.any():
        raise AnalysisError(f"{ALPHA} is not numeric (e.g. {df.loc[bad, ALPHA].iloc[0]!r})")
    return a


def _usable(df: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(test accuracy in percent, usable flag: status 'done' and an accuracy)."""
    if TEST_ACC not in df.columns:
        raise AnalysisError(f"the table has no {TEST_ACC} column (the test accuracy is needed)")
    acc = pd.to_numeric(df[TEST_ACC], errors="coerce") * 100.0
    ok = acc.notna()
    if STATUS in df.columns:
        ok &= df[STATUS].astype("string").str.strip().eq("done").fillna(False).astype(bool)
    return acc, ok


def _mean_std(x: np.ndarray) -> tuple[float, float]:
    mean = float(np.mean(x)) if x.size else math.nan
    return mean, float(np.std(x, ddof=1)) if x.size >= 2 else math.nan


def difference_ci(ce: np.ndarray, srr: np.ndarray, ce_seeds: np.ndarray | None = None,
                  srr_seeds: np.ndarray | None = None, level: float = LEVEL) -> tuple[float, float, float, str]:
    """(diff, lo, hi, kind) of mean(srr) − mean(ce), accuracies in any unit.

    ``paired`` when both arms have the same set of ≥ 2 distinct seeds: the t-interval of the
    per-seed differences d_i, mean(d) ± t_{(1+level)/2, n−1}·sd(d)/√n. Otherwise ``welch``:
    ± t_{(1+level)/2, ν}·se with se² = s₁²/n₁ + s₂²/n₂ and ν = se⁴ / Σ (s_k²/n_k)²/(n_k − 1).
    ``none`` with a NaN interval when an arm has fewer than 2 values.
    """
    diff = float(np.mean(srr) - np.mean(ce)) if ce.size and srr.size else math.nan
    if ce.size < 2 or srr.size < 2:
        return diff, math.nan, math.nan, "none"
    q = (1 + level) / 2
    if _same_seeds(ce_seeds, srr_seeds):
        d = (pd.Series(srr, index=srr_seeds).sort_index().to_numpy()
             - pd.Series(ce, index=ce_seeds).sort_index().to_numpy())
        half = stats.t.ppf(q, d.size - 1) * np.std(d, ddof=1) / math.sqrt(d.size)
        return diff, diff - half, diff + half, "paired"
    a, b = np.var(srr, ddof=1) / srr.size, np.var(ce, ddof=1) / ce.size
    se = math.sqrt(a + b)
    if se == 0:
        return diff, diff, diff, "welch"
    df = (a + b) ** 2 / (a ** 2 / (srr.size - 1) + b ** 2 / (ce.size - 1))
    half = stats.t.ppf(q, df) * se
    return diff, diff - half, diff + half, "welch"


def _same_seeds(s1, s2) -> bool:
    if s1 is None or s2 is None or len(s1) < 2 or np.isnan(s1).any() or np.isnan(s2).any():
        return False
    u1, u2 = np.unique(s1), np.unique(s2)
    return u1.size == len(s1) and u2.size == len(s2) and np.array_equal(u1, u2)


def regularization_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (setting, regularizer configuration): CE vs CE+SRR test accuracy (%).

    Columns: the setting's ``hp`` columns that vary over the compared runs (always
    ``dataset`` and ``variant`` when present; ``hp.`` stripped), then :data:`STATS` with
    the varying-or-not ``reg.*`` columns after ``layers``. Rows are sorted by dataset,
    variant, the other setting columns, layers (all, 1, 2, ..., random), α.
    """
    if not isinstance(df, pd.DataFrame) or len(df) == 0:
        raise AnalysisError("no runs in the table")
    df = df.reset_index(drop=True)
    acc, ok = _usable(df)
    alpha = _alpha(df)
    reg = (alpha.notna() & (alpha != 0)).to_numpy()
    if not reg.any():
        raise AnalysisError(f"no regularized runs: no run has {ALPHA} ≠ 0")
    if reg.all():
        raise AnalysisError(f"no CE baseline: every run has {ALPHA} ≠ 0")
    hp = [c for c in df.columns if isinstance(c, str) and c.startswith(HP)]
    setting = [c for c in hp if c not in (SEED, ALPHA, LAYERS) and not c.startswith(REG)]
    extras = sorted(c for c in hp if c.startswith(REG))
    codes = [dense_codes(df[c])[0] for c in setting]
    sid = row_ids(np.stack(codes, axis=1) if codes else np.zeros((len(df), 0), np.int64))[0]
    layers = df[LAYERS].map(layer_label) if LAYERS in df.columns else pd.Series("all", index=df.index)
    seeds = pd.to_numeric(df[SEED], errors="coerce").to_numpy(float) if SEED in df.columns else None
    acc_v, ok_v = acc.to_numpy(float), ok.to_numpy(bool)

    keys = pd.DataFrame({"_sid": sid, "_alpha": alpha, "_layers": layers,
                         **{e: df[e].map(_text) for e in extras}})[reg]
    groups = keys.groupby(list(keys.columns), sort=False).indices
    compared = np.isin(sid, keys["_sid"].unique())
    shown = _shown_columns(df.loc[compared], setting)

    rows = []
    for key, idx in groups.items():
        s, a, lab = key[0], key[1], key[2]
        srr_rows = keys.index[idx].to_numpy()
        ce_rows = np.flatnonzero((sid == s) & ~reg)
        row = {strip(c) if strip(c) not in STATS else c: df.at[srr_rows[0], c] for c in shown}
        row.update({"alpha": float(a), "layers": lab,
                    **{strip(e): v for e, v in zip(extras, key[3:])}})
        row.update(_compare(acc_v, ok_v, seeds, ce_rows, srr_rows))
        row["_key"] = (*(_sortable(df.at[srr_rows[0], c]) for c in shown),
                       layer_order(lab), float(a), tuple(key[3:]))
        rows.append(row)
    out = pd.DataFrame(sorted(rows, key=lambda r: r["_key"])).drop(columns="_key")
    if (out["n_ce"] + out["n_ce_diverged"]).eq(0).all():
        apart = [strip(c) for c in setting if not set(df.loc[reg, c].map(_text)) & set(df.loc[~reg, c].map(_text))]
        hint = f" (they differ in: {', '.join(apart)})" if apart else ""
        raise AnalysisError("no CE baseline: no cross-entropy run shares a setting with the "
                            "regularized runs" + hint)
    lonely = int((out["n_ce"] + out["n_ce_diverged"]).eq(0).sum())
    if lonely:
        warnings.warn(f"{lonely} regularizer configuration(s) have no CE run in their setting")
    order = [c for c in out.columns if c not in STATS and not c.startswith("reg.")]
    order += ["alpha", "layers", *[strip(e) for e in extras], *STATS[2:]]
    return out[order]


def _shown_columns(df: pd.DataFrame, setting: list[str]) -> list[str]:
    """dataset, variant (when present), then the setting columns that vary over ``df``."""
    first = [c for c in (DATASET, VARIANT) if c in setting]
    return first + [c for c in setting if c not in first and df[c].nunique(dropna=False) >= 2]


def _compare(acc, ok, seeds, ce_rows, srr_rows) -> dict:
    ce_ok, srr_ok = ce_rows[ok[ce_rows]], srr_rows[ok[srr_rows]]
    ce, srr = acc[ce_ok], acc[srr_ok]
    ce_mean, ce_std = _mean_std(ce)
    srr_mean, srr_std = _mean_std(srr)
    diff, lo, hi, kind = difference_ci(ce, srr, None if seeds is None else seeds[ce_ok],
                                       None if seeds is None else seeds[srr_ok])
    return {"n_ce": ce.size, "n_ce_diverged": ce_rows.size - ce.size, "ce_mean": ce_mean,
            "ce_std": ce_std, "n_srr": srr.size, "n_diverged": srr_rows.size - srr.size,
            "srr_mean": srr_mean, "srr_std": srr_std, "diff": diff, "diff_lo": lo, "diff_hi": hi,
            "ci_kind": kind}


# -- tables ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Style:
    minus: str      # the minus sign of numbers
    pm: str         # between mean and sd
    nan: str        # a missing value
    math: str       # wraps a number cell ("$" in LaTeX)
    ci: str         # "{}" around the interval ("\scriptsize" in LaTeX)
    text: Callable[[str], str]  # escapes text cells


MD = _Style("−", " ± ", "–", "", "{}", lambda s: s.replace("|", "\\|"))
TEX = _Style("-", r" \pm ", "--", "$", r"{{\scriptsize {}}}", _tex)
DIGITS = 1  # accuracies in percent


def _num(v: float, style: _Style, signed: bool = False) -> str:
    s = f"{v:+.{DIGITS}f}" if signed else f"{v:.{DIGITS}f}"
    if float(s) == 0:  # no "-0.0"
        s = s.replace("-", "+" if signed else "")
    return s.replace("-", style.minus)


def _cells(r: pd.Series, style: _Style) -> dict[str, str]:
    """The number cells of one table row: the one place where numbers are formatted."""
    def mean_sd(m, s):
        if pd.isna(m):
            return style.nan
        body = _num(m, style) + ("" if pd.isna(s) else style.pm + _num(s, style))
        return style.math + body + style.math

    def diff():
        if pd.isna(r["diff"]):
            return style.nan
        out = style.math + _num(r["diff"], style, signed=True) + style.math
        if pd.notna(r["diff_lo"]) and pd.notna(r["diff_hi"]):
            ci = (f"{style.math}[{_num(r['diff_lo'], style, True)}, "
                  f"{_num(r['diff_hi'], style, True)}]{style.math}")
            out += " " + style.ci.format(ci)
        return out

    return {"alpha": f"{r['alpha']:g}", "ce": mean_sd(r["ce_mean"], r["ce_std"]),
            "srr": mean_sd(r["srr_mean"], r["srr_std"]), "diff": diff(),
            "n": f"{int(r['n_ce'])} / {int(r['n_srr'])}",
            "diverged": f"{int(r['n_ce_diverged'])} / {int(r['n_diverged'])}"}


def _display(table: pd.DataFrame, style: _Style) -> tuple[list[str], list[list[str]]]:
    """(headers, rows of strings); setting and reg.* columns are text, shown as given."""
    i_alpha, i_n = list(table.columns).index("alpha"), list(table.columns).index("n_ce")
    setting = list(table.columns[:i_alpha])
    extras = [c for c in table.columns[i_alpha + 2:i_n] if table[c].map(_text).nunique() > 1]
    tex = style is TEX
    diverged = bool((table["n_ce_diverged"] + table["n_diverged"]).gt(0).any())
    heads = [*setting, r"$\alpha$" if tex else "α", "layers", *extras, "CE (%)", "CE+SRR (%)",
             r"$\Delta$ [95\% CI]" if tex else "Δ [95% CI]", "n CE / SRR",
             *(["diverged CE / SRR"] if diverged else []), "CI"]
    rows = []
    for _, r in table.iterrows():
        c = _cells(r, style)
        rows.append([*(style.text(_text(r[k])) for k in setting), c["alpha"], style.text(str(r["layers"])),
                     *(style.text(_text(r[k])) for k in extras), c["ce"], c["srr"], c["diff"], c["n"],
                     *([c["diverged"]] if diverged else []), style.text(str(r["ci_kind"]))])
    return [h if tex and h.startswith("$") else style.text(h) for h in heads], rows


NOTE = ("Test accuracy (%), mean ± sd over seeds; Δ = CE+SRR − CE with its 95% interval: "
        "paired t over seeds when both arms have the same seeds, else Welch t; "
        "n counts the runs that finished (diverged runs are not averaged).")


def format_table(table: pd.DataFrame, fmt: str = "md") -> str:
    """The table as ``md`` (GitHub Markdown, with a note) or ``tex`` (booktabs ``table``)."""
    if fmt == "md":
        heads, rows = _display(table, MD)
        n_text = list(heads).index("α")
        align = ["---"] * n_text + ["---:"] * (len(heads) - n_text - 1) + ["---"]
        lines = ["| " + " | ".join(heads) + " |", "| " + " | ".join(align) + " |"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + "\n\n" + NOTE + "\n"
    if fmt == "tex":
        heads, rows = _display(table, TEX)
        n_text = list(heads).index(r"$\alpha$")
        cols = "l" * n_text + "r" * (len(heads) - n_text - 1) + "l"
        cap = (_tex(NOTE.replace("±", "PM").replace("Δ", "DELTA"))
               .replace("PM", r"$\pm$").replace("DELTA", r"$\Delta$").replace("−", "$-$"))
        return "\n".join([r"\begin{table}[t]", r"\centering", r"\small",
                          r"\begin{tabular}{" + cols + "}", r"\toprule", " & ".join(heads) + r" \\",
                          r"\midrule", *[" & ".join(r) + r" \\" for r in rows], r"\bottomrule",
                          r"\end{tabular}", rf"\caption{{{cap}}}", r"\label{tab:regularization}",
                          r"\end{table}", ""])
    raise AnalysisError(f"unknown table format {fmt!r} (use md or tex)")


def write_regularization(table: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """Write ``regularization.csv`` (full precision), ``.md`` and ``.tex`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f"{STEM}.{k}" for k in ("csv", "md", "tex")}
    table.to_csv(paths["csv"], index=False)
    paths["md"].write_text(format_table(table, "md"))
    paths["tex"].write_text(format_table(table, "tex"))
    return paths


# -- figures --------------------------------------------------------------------------------

CE_COLOR = "0.6"


def _setting_label(table: pd.DataFrame, r: pd.Series, skip: tuple[str, ...]) -> str:
    """'crate_n' or 'crate_n\\nlr=0.001': the setting columns of a row except ``skip``."""
    cols = list(table.columns[:list(table.columns).index("alpha")])
    parts = [_text(r[c]) if c in ("dataset", "variant") else f"{c}={_text(r[c])}" for c in cols if c not in skip]
    return "\n".join(parts) or "all runs"


def _config_label(table: pd.DataFrame, r: pd.Series) -> str:
    """'α=0.1' plus the reg.* values that vary in the table."""
    i, n = list(table.columns).index("alpha"), list(table.columns).index("n_ce")
    extras = [c for c in table.columns[i + 2:n] if table[c].map(_text).nunique() > 1]
    return ", ".join([f"α={r['alpha']:g}", *(f"{c[len('reg.'):]}={_text(r[c])}" for c in extras)])


def _legend(fig: Figure, axs) -> None:
    """One legend for all panels, below them (no panel's data hidden under it)."""
    seen = {}
    for ax in axs:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncols=min(len(seen), 4), fontsize=9)


def _by_dataset(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    if "dataset" not in table.columns:
        return [("", table)]
    return [(_text(d), g) for d, g in table.groupby(table["dataset"].map(_text), sort=False)]


def plot_bars(table: pd.DataFrame, out: str | Path) -> Path | None:
    """Per dataset: grouped bars of test accuracy per setting (variant), CE vs CE+SRR on
    ``all`` layers (the first layer choice when no run used all), ± sd error bars."""
    if table.empty:
        return None
    panels = _by_dataset(table)
    configs = list(dict.fromkeys(_config_label(table, r) for _, r in table.iterrows()))
    colors = dict(zip(configs, _colors(len(configs))))
    fig = Figure(figsize=(min(5.0 * len(panels), 15), 4.4), layout="constrained")
    axs = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (dataset, t) in zip(axs, panels):
        layers = min(t["layers"], key=layer_order)
        t = t[t["layers"] == layers]
        setting = t.apply(lambda r: _setting_label(table, r, ("dataset",)), axis=1)
        settings = list(dict.fromkeys(setting))
        width = 0.8 / (1 + setting.value_counts().max())
        labelled, ends = set(), []
        for xi, s in enumerate(settings):
            g = t[setting == s]
            bars = [("CE", g.iloc[0]["ce_mean"], g.iloc[0]["ce_std"], CE_COLOR, math.nan)]
            bars += [(f"CE+SRR, {c}", r["srr_mean"], r["srr_std"], colors[c], r["diff"])
                     for c, (_, r) in ((_config_label(table, r), (i, r)) for i, r in g.iterrows())]
            for j, (label, m, sd, color, diff) in enumerate(bars):
                if pd.isna(m):
                    continue
                pos = xi + (j - (len(bars) - 1) / 2) * width
                sd = 0.0 if pd.isna(sd) else sd
                ax.bar(pos, m, width * 0.92, color=color, yerr=sd, label=None if label in labelled else label,
                       error_kw={"elinewidth": 1, "capsize": 3, "ecolor": "0.2"})
                labelled.add(label)
                if pd.notna(diff):
                    ax.text(pos, m + sd, _num(diff, MD, signed=True), ha="center", va="bottom",
                            fontsize=8, color="0.15")
                ends += [m - sd, m + sd]
        if not ends:  # every run of the panel diverged: the table says so
            ax.text(0.5, 0.5, "no finished runs", transform=ax.transAxes, ha="center")
            continue
        lo, hi = min(ends), max(ends)
        pad = max(0.1 * (hi - lo), 0.5)
        ax.set_ylim(max(lo - 3 * pad, 0), min(hi + 2.5 * pad, 100))
        ax.set_xticks(range(len(settings)), settings, fontsize=9)
        ax.set_ylabel("test accuracy (%)")
        ax.set_xlabel("variant")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        ax.set_title(f"{dataset + ': ' if dataset else ''}SRR on layers: {layers}", fontsize=10)
    _legend(fig, axs)
    fig.suptitle("CE vs CE+SRR: mean test accuracy over seeds, ± 1 sd "
                 "(numbers: Δ = CE+SRR − CE, points)", fontsize=10)
    return _save(fig, Path(out))


def plot_layers(table: pd.DataFrame, out: str | Path) -> Path | None:
    """Test accuracy vs the regularized layer(s), one panel per setting with more than one
    layer choice: CE+SRR mean ± sd per α, the CE mean ± sd as a grey band."""
    cols = list(table.columns[:list(table.columns).index("alpha")])
    if cols:
        key = table[cols].apply(lambda r: tuple(_text(v) for v in r), axis=1)
        panels = [g for _, g in table.groupby(key, sort=False) if g["layers"].nunique() > 1]
    else:
        panels = [table] if table["layers"].nunique() > 1 else []
    if not panels:
        return None
    configs = list(dict.fromkeys(_config_label(table, r) for _, r in table.iterrows()))
    colors = _colors(len(configs))
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(4.6 * ncols, 3.4 * nrows + 0.5), layout="constrained")
    axs = fig.subplots(nrows, ncols, squeeze=False)
    for ax, g in zip(axs.flat, panels):
        labels = sorted(g["layers"].unique(), key=layer_order)
        first = g.iloc[0]
        if pd.notna(first["ce_mean"]):
            sd = 0 if pd.isna(first["ce_std"]) else first["ce_std"]
            ax.axhspan(first["ce_mean"] - sd, first["ce_mean"] + sd, color=CE_COLOR, alpha=0.3, lw=0,
                       label="CE mean ± sd")
            ax.axhline(first["ce_mean"], color="0.35", lw=1, ls="--", label="CE mean")
        present = [c for c in configs if any(_config_label(table, r) == c for _, r in g.iterrows())]
        for j, conf in enumerate(present):
            rows = g[[_config_label(table, r) == conf for _, r in g.iterrows()]]
            xs = [labels.index(v) + (j - (len(present) - 1) / 2) * 0.12 for v in rows["layers"]]
            ax.errorbar(xs, rows["srr_mean"], yerr=rows["srr_std"].fillna(0), fmt="o", ms=6, capsize=4,
                        color=colors[configs.index(conf)], label=f"CE+SRR, {conf}")
        diverged = g.groupby("layers")["n_diverged"].sum()
        ax.set_xticks(range(len(labels)), [f"{v}\n({diverged[v]} diverged)" if diverged[v] else v for v in labels])
        ax.set_xlim(-0.5, len(labels) - 0.5)
        ax.set_xlabel("regularized layer(s) S")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.set_title(_setting_label(table, first, ()).replace("\n", " · "), fontsize=10)
    for ax in list(axs.flat)[len(panels):]:
        ax.set_visible(False)
    _legend(fig, axs.flat)
    fig.suptitle("Test accuracy vs the regularized layer (mean ± sd over seeds)", fontsize=11)
    return _save(fig, Path(out))


def plot_regularization(table: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """``regularization_bars.png`` and, when relevant, ``regularization_layers.png``."""
    out = Path(out_dir)
    paths = [plot_bars(table, out / f"{STEM}_bars.png"), plot_layers(table, out / f"{STEM}_layers.png")]
    return [p for p in paths if p is not None]


def plot_layerwise(df: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """The layer-wise study from the runs' recorded histories (``train.record_layers``).

    ``layers_ce_epochs.png`` / ``layers_ce_history.png``: per-layer R, R^c, ΔR, ‖Z‖₀ and SRR
    of the CE runs across layers (one line per recorded epoch) and across epochs (one line
    per layer); ``layers_srr_epochs.png``: the same across layers for the runs regularized
    on all layers. Nothing when no run recorded its layers.
    """
    from analysis.collect import read_histories
    from analysis.plots import plot_layer_epochs, plot_layer_history

    out = Path(out_dir)
    alpha = _alpha(df)
    ce = df[(alpha.isna() | (alpha == 0)).to_numpy()]
    reg_all = df[((alpha > 0) & (df.get(LAYERS, pd.Series("all", index=df.index)).map(layer_label) == "all")).to_numpy()]
    paths = []
    if len(ce):
        h = read_histories(ce)
        paths += [plot_layer_epochs(h, ce, out / "layers_ce_epochs.png", title="CE: per-layer quantities by epoch"),
                  plot_layer_history(h, ce, out / "layers_ce_history.png", title="CE: per-layer quantities across epochs")]
    if len(reg_all):
        paths.append(plot_layer_epochs(read_histories(reg_all), reg_all, out / "layers_srr_epochs.png",
                                       title="CE + SRR (all layers): per-layer quantities by epoch"))
    return [p for p in paths if p is not None]
