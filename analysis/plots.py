"""Figures of the correlation study (matplotlib, object API on the Agg canvas).

- :func:`plot_scatter`      measure vs gap, one panel per measure, colour = ``hp.variant``
                            (marker = another design axis, e.g. n_train, when asked);
- :func:`plot_bars`         τ and Ψ per measure, with bootstrap CIs when present; flagged
  measures (:mod:`analysis.flags`) are drawn apart, below a line, in grey, with their flag;
- :func:`plot_heatmap`      ψ per measure × axis (diverging colormap centred at 0), flagged
  measures last and marked;
- :func:`plot_layer_profile` SRR components across layers (``measure.srr.L<i>.<comp>``),
  mean ± sd over runs per variant;
- :func:`plot_layer_history` per-layer quantities across epochs (``layer.<i>.<q>``
  columns of ``history.csv``), mean over runs per variant;
- :func:`plot_spec_curve`   specification curve of one measure against one gap: τ and Ψ of
  every specification (sorted by τ, with intervals) above a panel of their settings.

No pyplot state is used: each function builds a :class:`matplotlib.figure.Figure`, saves a
PNG and returns its path (or ``None`` when the table has nothing to plot).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullFormatter

from analysis.flags import is_flagged
from analysis.schema import MEASURE
from analysis.tables import axes_of, sort_rows

VARIANT = "hp.variant"
LAYER_MEASURE = re.compile(r"^measure\.srr\.(?:L|layer)(\d+)\.(.+)$")
LAYER_HISTORY = re.compile(r"^layer\.(\d+)\.(.+)$")
COMPONENT_ORDER = ["R", "Rc", "dR", "l0", "sparsity", "srr"]
COMPONENT_LABEL = {"R": r"$R(Z)$ (coding rate)", "Rc": r"$R^c(Z\mid U)$ (compressed rate)",
                   "dR": r"$\Delta R = R - R^c$", "l0": r"$\|Z\|_0$ (sparsity)",
                   "sparsity": r"$\|Z\|_0$ (sparsity)", "srr": "SRR objective"}
DPI = 130


def _groups(df: pd.DataFrame) -> list[tuple[str, np.ndarray]]:
    """(label, row mask) per variant, or one group of all rows."""
    if VARIANT in df.columns and df[VARIANT].nunique(dropna=True) > 1:
        values = sorted(df[VARIANT].dropna().unique(), key=str)
        return [(str(v), (df[VARIANT] == v).to_numpy()) for v in values]
    return [("all runs", np.ones(len(df), bool))]


def _colors(n: int) -> list:
    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def _log_x(x: np.ndarray) -> bool:
    x = x[np.isfinite(x)]
    return x.size > 1 and x.min() > 0 and x.max() / x.min() > 100


def _finish_grid(fig: Figure, axs: np.ndarray, n_used: int, n_groups: int, **legend_kw) -> None:
    """Hide the unused panels of a grid of axes; one legend of the variants below it."""
    for ax in list(axs.flat)[n_used:]:
        ax.set_visible(False)
    if n_groups > 1:
        handles, labels = axs.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(n_groups, 6),
                   title="variant (hp.variant)", fontsize=9, **legend_kw)


MARKERS = "o^sDvP*X"


def _shapes(df: pd.DataFrame, axis: str | None) -> list[tuple[str, np.ndarray, str]]:
    """(label, row mask, marker) per value of ``hp.<axis>`` (at most len(MARKERS) values, in
    their natural order), or one marker for all rows."""
    col = f"hp.{axis}" if axis else None
    if col not in df.columns or not 1 < df[col].nunique(dropna=True) <= len(MARKERS):
        return [("", np.ones(len(df), bool), "o")]
    values = _value_order(df[col].dropna().unique())
    return [(str(v), (df[col] == v).to_numpy(), mk) for v, mk in zip(values, MARKERS)]


def plot_scatter(df: pd.DataFrame, corr: pd.DataFrame, gap: str, out: str | Path,
                 measures: list[str] | None = None, ncols: int = 4, shape: str | None = None) -> Path | None:
    """Measure (x) vs gap (y), one panel per measure in ``corr`` order (best Ψ first); colour =
    variant, marker = the value of design axis ``shape`` (e.g. n_train) when given."""
    names = measures or list(sort_rows(corr)["measure"])
    names = [m for m in names if MEASURE + m in df.columns]
    if not names:
        return None
    ncols = min(ncols, len(names))
    nrows = -(-len(names) // ncols)
    fig = Figure(figsize=(3.4 * ncols, 2.9 * nrows + 0.6), layout="constrained")
    axs = fig.subplots(nrows, ncols, squeeze=False)
    groups, shapes = _groups(df), _shapes(df, shape)
    stats = corr.set_index("measure")
    y = df[gap].to_numpy(float)
    for ax, m in zip(axs.flat, names):
        x = df[MEASURE + m].to_numpy(float)
        for (label, mask), color in zip(groups, _colors(len(groups))):
            for _, where, marker in shapes:
                sel = mask & where
                ax.scatter(x[sel], y[sel], s=14, alpha=0.75, color=color, marker=marker, edgecolors="none",
                           label=label if where is shapes[0][1] else None)
        if _log_x(x):
            ax.set_xscale("log")
        else:
            ax.xaxis.set_major_locator(MaxNLocator(5))
        r = stats.loc[m]
        ax.set_title(m, fontsize=9, fontweight="bold", loc="left")
        if short_flags(r.get("flags")):
            ax.set_title(short_flags(r["flags"]), fontsize=7, color="0.4", loc="right")
        ax.text(0.98, 0.97, f"τ {r['tau']:.2f}  Ψ {r['Psi']:.2f}", transform=ax.transAxes, ha="right", va="top",
                fontsize=8, color="0.25", bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=1))
        ax.margins(y=0.14)  # room above the top points for the τ/Ψ label
        ax.set_xlabel(m, fontsize=8)
        ax.set_ylabel(gap, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if len(shapes) > 1:  # one legend for both encodings
        _finish_grid(fig, axs, len(names), 1)
        colour = [Line2D([], [], ls="", marker="o", color=c, label=label)
                  for (label, _), c in zip(groups, _colors(len(groups)))] if len(groups) > 1 else []
        marks = [Line2D([], [], ls="", marker=mk, color="0.3", label=f"{shape} {label}") for label, _, mk in shapes]
        fig.legend(handles=colour + marks, loc="outside lower center", ncols=min(len(colour) + len(marks), 8),
                   fontsize=9, title=("colour: hp.variant, " if colour else "") + f"marker: hp.{shape}")
    else:
        _finish_grid(fig, axs, len(names), len(groups), markerscale=1.8)
    fig.suptitle(f"Measures vs generalization gap ({gap}), {len(df)} models", fontsize=11)
    return _save(fig, Path(out))


def short_flags(flags) -> str:
    """A measure's flags without their parenthesised details ('nearly constant', 'NaN on 3/40 runs')."""
    return re.sub(r"\s*\([^)]*\)", "", flags) if isinstance(flags, str) else ""


def measure_labels(c: pd.DataFrame) -> list[str]:
    """Measure names, with their (short) flags in brackets for flagged measures."""
    flags = c["flags"] if "flags" in c.columns else pd.Series("", index=c.index)
    return [f"{m}  [{short_flags(f)}]" if short_flags(f) else str(m) for m, f in zip(c["measure"], flags)]


def plot_bars(corr: pd.DataFrame, out: str | Path) -> Path | None:
    """Horizontal bars of τ and Ψ per measure (sorted by Ψ), CI error bars when present.

    Flagged measures are not ranked: they sit below a dashed line, in grey, their flags
    in their labels."""
    if corr.empty:
        return None
    c = sort_rows(corr).iloc[::-1]  # best at the top of a horizontal chart
    flagged = is_flagged(c).to_numpy()
    n = len(c)
    ypos = np.arange(n)
    fig = Figure(figsize=(7.5 + (2.5 if flagged.any() else 0), 1.2 + 0.32 * n), layout="constrained")
    ax = fig.subplots()
    h = 0.38
    for off, key, label, color, grey in ((h / 2, "tau", "Kendall τ", "#4C72B0", "0.55"),
                                         (-h / 2, "Psi", "granulated Ψ", "#DD8452", "0.78")):
        v = c[key].to_numpy(float)
        err = None
        if f"{key}_lo" in c.columns:
            lo, hi = c[f"{key}_lo"].to_numpy(float), c[f"{key}_hi"].to_numpy(float)
            err = np.vstack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)])
            err = np.nan_to_num(err)
        for rows, col, lab in ((~flagged, color, label), (flagged, grey, None)):
            if rows.any():
                ax.barh(ypos[rows] + off, np.nan_to_num(v[rows]), height=h, color=col, label=lab,
                        xerr=None if err is None else err[:, rows],
                        error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "0.25"})
    ax.axvline(0, color="0.2", lw=0.8)
    ax.set_yticks(ypos, measure_labels(c), fontsize=8)
    for tick, k in zip(ax.get_yticklabels(), flagged):
        tick.set_color("0.45" if k else "black")
    if flagged.any() and not flagged.all():
        ax.axhline(flagged.sum() - 0.5, color="0.3", lw=0.9, ls="--")
        ax.text(-1.03, flagged.sum() - 0.55, "flagged below: not ranked", ha="left", va="top", fontsize=7.5,
                color="0.3", bbox=dict(facecolor="white", edgecolor="none", alpha=0.85, pad=1))
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel("correlation with the generalization gap")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ci = " (bars: 95% bootstrap CI over seeds)" if "tau_lo" in c.columns else ""
    ax.set_title(f"Kendall τ and granulated Ψ per measure{ci}", fontsize=10)
    return _save(fig, Path(out))


def plot_heatmap(corr: pd.DataFrame, out: str | Path) -> Path | None:
    """ψ_i per measure (rows, sorted by Ψ) and axis (columns), plus a Ψ column; annotated."""
    axes = axes_of(corr)
    if corr.empty or not axes:
        return None
    c = sort_rows(corr)
    cols = [f"psi.{a}" for a in axes] + ["Psi"]
    M = c[cols].to_numpy(float)
    nr, nc = M.shape
    fig = Figure(figsize=(1.6 + 0.95 * nc + 0.08 * max(len(m) for m in measure_labels(c)),
                          1.3 + 0.34 * nr), layout="constrained")
    ax = fig.subplots()
    cmap = colormaps["RdBu_r"].with_extremes(bad="0.85")
    im = ax.imshow(np.ma.masked_invalid(M), cmap=cmap, vmin=-1, vmax=1, aspect="auto")
    for i in range(nr):
        for j in range(nc):
            v = M[i, j]
            txt = "–" if np.isnan(v) else f"{v:.2f}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=7.5,
                    color="white" if abs(np.nan_to_num(v)) > 0.6 else "black")
    ng = [c.get(f"n_groups.{a}") for a in axes]
    xl = [f"{a}\n(m={int(g.max())})" if g is not None else a for a, g in zip(axes, ng)] + ["Ψ\n(mean)"]
    ax.set_xticks(range(nc), xl, fontsize=8)
    ax.set_yticks(range(nr), measure_labels(c), fontsize=8)
    flagged = is_flagged(c).to_numpy()
    for tick, k in zip(ax.get_yticklabels(), flagged):
        tick.set_color("0.45" if k else "black")
    if flagged.any() and not flagged.all():
        ax.axhline(nr - flagged.sum() - 0.5, color="black", lw=2, ls="--")
    ax.axvline(nc - 1.5, color="white", lw=3)
    ax.xaxis.tick_top()
    fig.colorbar(im, ax=ax, shrink=0.8, label="ψ (granulated Kendall per axis)")
    ax.set_title("ψ per hyperparameter axis (m = groups)", fontsize=10)
    return _save(fig, Path(out))


def _layer_columns(columns, pattern: re.Pattern) -> dict[str, dict[int, str]]:
    """{component: {layer: column}} for columns matching ``pattern``."""
    found: dict[str, dict[int, str]] = {}
    for col in columns:
        m = pattern.match(str(col))
        if m:
            found.setdefault(m.group(2), {})[int(m.group(1))] = col
    order = {k: i for i, k in enumerate(COMPONENT_ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def plot_layer_profile(df: pd.DataFrame, out: str | Path) -> Path | None:
    """SRR components (R, R^c, ‖Z‖₀, SRR, ...) across layers, mean ± sd over runs per variant."""
    comps = _layer_columns(df.columns, LAYER_MEASURE)
    if not comps:
        return None
    groups = _groups(df)
    ncols = min(4, len(comps))
    nrows = -(-len(comps) // ncols)
    fig = Figure(figsize=(3.6 * ncols, 2.9 * nrows + 0.6), layout="constrained")
    axs = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (comp, cols) in zip(axs.flat, comps.items()):
        layers = sorted(cols)
        vals = df[[cols[i] for i in layers]].to_numpy(float)
        for (label, mask), color in zip(groups, _colors(len(groups))):
            mu = np.nanmean(vals[mask], axis=0)
            sd = np.nanstd(vals[mask], axis=0)
            ax.plot(layers, mu, "-o", ms=3, color=color, label=label)
            ax.fill_between(layers, mu - sd, mu + sd, color=color, alpha=0.15, lw=0)
        ax.set_title(COMPONENT_LABEL.get(comp, comp), fontsize=9)
        ax.set_xlabel("layer", fontsize=8)
        ax.set_xticks(layers)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    _finish_grid(fig, axs, len(comps), len(groups))
    fig.suptitle(f"SRR components across layers (mean ± sd over {len(df)} runs)", fontsize=11)
    return _save(fig, Path(out))


def _layer_frames(histories: dict[str, pd.DataFrame], df: pd.DataFrame) -> pd.DataFrame | None:
    """The recorded rows (those with layer values) of every history, with the run's variant."""
    variant = dict(zip(df["run_id"].astype(str), df[VARIANT].astype(str))) if VARIANT in df.columns else {}
    frames = []
    for run_id, h in histories.items():
        cols = [c for c in h.columns if LAYER_HISTORY.match(str(c))]
        if not cols:
            continue
        h = h[h[cols].notna().any(axis=1)].copy()  # epochs without a record hold no layer values
        if "epoch" not in h.columns:
            h["epoch"] = np.arange(len(h))
        h["_variant"] = variant.get(str(run_id), "all runs")
        frames.append(h)
    return pd.concat(frames, ignore_index=True) if frames else None


def _layer_grid(histories: dict[str, pd.DataFrame], df: pd.DataFrame, out: str | Path, title: str, xlabel: str,
                draw) -> Path | None:
    """Rows = variants, columns = quantities; ``draw(ax, mean, cols)`` draws one panel from
    the variant's mean over runs per epoch and the quantity's {layer: column}."""
    allh = _layer_frames(histories, df)
    if allh is None:
        return None
    comps = _layer_columns(allh.columns, LAYER_HISTORY)
    variants = sorted(allh["_variant"].unique())
    fig = Figure(figsize=(3.4 * len(comps), 2.6 * len(variants) + 0.8), layout="constrained")
    axs = fig.subplots(len(variants), len(comps), squeeze=False)
    for r, v in enumerate(variants):
        mean = allh[allh["_variant"] == v].groupby("epoch").mean(numeric_only=True)
        for c, (comp, cols) in enumerate(comps.items()):
            ax = axs[r, c]
            draw(ax, mean, cols)
            ax.set_title(f"{v}: {COMPONENT_LABEL.get(comp, comp)}", fontsize=9)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    h, lab = axs[0, 0].get_legend_handles_labels()
    fig.legend(h, lab, loc="outside right center", fontsize=8)
    fig.suptitle(f"{title} (mean over the runs of each variant)", fontsize=11)
    return _save(fig, Path(out))


def plot_layer_history(histories: dict[str, pd.DataFrame], df: pd.DataFrame, out: str | Path,
                       title: str = "Per-layer quantities across epochs") -> Path | None:
    """Per-layer quantities across epochs: rows = variants, columns = quantities, one line
    per layer (mean over the runs of the variant, at the recorded epochs)."""
    cmap = colormaps["viridis"]

    def draw(ax, mean, cols):
        nl = max(cols)
        for layer in sorted(cols):
            y = mean[cols[layer]].dropna()
            ax.plot(y.index, y.to_numpy(), "-o", ms=2.5, lw=1.2, color=cmap((layer - 1) / max(nl - 1, 1)),
                    label=f"layer {layer}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))

    return _layer_grid(histories, df, out, title, "epoch", draw)


def plot_layer_epochs(histories: dict[str, pd.DataFrame], df: pd.DataFrame, out: str | Path,
                      title: str = "Per-layer quantities at the recorded epochs") -> Path | None:
    """The same records across layers: rows = variants, columns = quantities, x = layer, one
    line per recorded epoch (dark = early, light = late; mean over the runs of the variant)."""
    cmap = colormaps["viridis"]

    def draw(ax, mean, cols):
        layers, epochs = sorted(cols), list(mean.index)
        for k, epoch in enumerate(epochs):
            ax.plot(layers, mean.loc[epoch, [cols[i] for i in layers]].to_numpy(float), "-o", ms=2.5, lw=1.2,
                    color=cmap(k / max(len(epochs) - 1, 1)), label=f"epoch {int(epoch)}")
        ax.set_xticks(layers)

    return _layer_grid(histories, df, out, title, "layer", draw)


def _value_order(values) -> list:
    """Setting values in reading order: numbers ascending, then text (alphabetical)."""
    def key(v):
        try:
            return (0, float(v), "")
        except (TypeError, ValueError):
            return (1, 0.0, str(v))
    return sorted(set(values), key=key)


def _spec_colors(part: pd.DataFrame) -> list:
    """Per specification: blue when its τ interval lies above 0, red below, grey otherwise
    (or without an interval)."""
    lo = part.get("tau_lo", pd.Series(np.nan, index=part.index)).to_numpy(float)
    hi = part.get("tau_hi", pd.Series(np.nan, index=part.index)).to_numpy(float)
    return ["tab:blue" if a > 0 else "tab:red" if b < 0 else "0.45" for a, b in zip(lo, hi)]


def _interval_panel(ax, x: np.ndarray, part: pd.DataFrame, key: str, colors: list, label: str) -> None:
    """Point estimates of ``key`` with their intervals (``key_lo``/``key_hi``), the default ringed."""
    y = part[key].to_numpy(float)
    lo, hi = (part.get(f"{key}_{s}", pd.Series(np.nan, index=part.index)).to_numpy(float) for s in ("lo", "hi"))
    ax.axhline(0, color="0.6", lw=0.8, zorder=0)
    ax.vlines(x, lo, hi, colors=colors, lw=1.2, alpha=0.7)
    ax.scatter(x, y, c=colors, s=14, zorder=3)
    d = part["default"].to_numpy(bool)
    ax.scatter(x[d], y[d], s=90, facecolors="none", edgecolors="black", lw=1.4, zorder=4, label="at its defaults")
    ax.set_ylabel(label)
    ax.grid(axis="y", alpha=0.3)


def plot_spec_curve(table: pd.DataFrame, gap: str, out: str | Path) -> Path | None:
    """Specification curve (Simonsohn, Simmons & Nelson 2020) of one measure against ``gap``:
    the specifications of :func:`analysis.sensitivity.sensitivity` sorted by τ (ascending,
    left to right) with their bootstrap intervals; Ψ beneath in the same order; then one row
    per value of every setting (``set.<key>``), marked under each specification that uses it.
    Blue: τ interval above 0, red: below 0, grey: containing 0; ringed: the defaults; dashed
    lines: the measures the table was scored against (``table.attrs["against"]``)."""
    part = table[table["gap"] == gap].sort_values("tau", kind="stable", na_position="first").reset_index(drop=True)
    if part.empty or part["tau"].notna().sum() == 0:
        return None
    keys = table.attrs.get("keys", [c for c in table.columns if c.startswith("set.")])
    rows = [(k, v) for k in keys for v in _value_order(part[k].astype(str))]
    n = len(part)
    x = np.arange(n)
    colors = _spec_colors(part)
    width = min(max(7.0, 0.13 * n + 2.5), 30.0)
    heights = [3.0, 2.0, max(1.0, 0.24 * len(rows) + 0.3)]
    fig = Figure(figsize=(width, sum(heights) + 1.0), layout="constrained")
    ax_tau, ax_psi, ax_set = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": heights})
    _interval_panel(ax_tau, x, part, "tau", colors, "Kendall τ")
    _interval_panel(ax_psi, x, part, "Psi", colors, "granulated Ψ")
    others = (table.attrs.get("against") or {}).get(gap, {})
    for (name, other), color in zip(others.items(), ("tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink")):
        for ax, key in ((ax_tau, "tau"), (ax_psi, "Psi")):  # the other measures at their defaults
            if pd.notna(other.get(key)):
                ax.axhline(other[key], color=color, ls="--", lw=1.2, zorder=1,
                           label=f"{name} at its defaults" if key == "tau" else None)
    for ax in (ax_tau, ax_psi, ax_set):  # the defaults, through every panel
        for xd in x[part["default"].to_numpy(bool)]:
            ax.axvline(xd, color="black", lw=0.8, ls=":", alpha=0.6, zorder=0)
    kinds = [("tab:blue", "τ interval above 0"), ("tab:red", "τ interval below 0"), ("0.45", "τ interval holds 0")]
    handles = [*ax_tau.get_legend_handles_labels()[0],
               *(ax_tau.scatter([], [], c=c, s=14, label=lab) for c, lab in kinds)]
    ax_tau.legend(handles=handles, loc="upper left", fontsize=8, frameon=False)
    for i, (k, v) in enumerate(rows):
        on = (part[k].astype(str) == v).to_numpy()
        ax_set.scatter(x[on], np.full(on.sum(), i), c=[c for c, o in zip(colors, on) if o], marker="s", s=10)
    starts = [i for i, (k, _) in enumerate(rows) if i == 0 or rows[i - 1][0] != k]
    for s in starts[1:]:
        ax_set.axhline(s - 0.5, color="0.75", lw=0.8)
    ax_set.set_yticks(range(len(rows)), [f"{k[len('set.'):]} = {v}" for k, v in rows], fontsize=8)
    ax_set.set_ylim(len(rows) - 0.5, -0.5)
    ax_set.set_xlim(-1, n)
    ax_set.set_xlabel(f"specification (sorted by τ; {n} in all)")
    ax_set.tick_params(axis="x", bottom=False, labelbottom=False)
    ax_set.grid(axis="x", alpha=0.15)
    boot = table.attrs.get("n_boot") or 0
    models = (table.attrs.get("n_models") or {}).get(gap)
    title = (f"{table.attrs.get('measure', '')} against {gap}: every specification"
             + (f", {models} models" if models else "")
             + (f"; {int(round(100 * table.attrs.get('level', 0.95)))}% seed-bootstrap intervals" if boot else ""))
    fig.suptitle(title, fontsize=11)
    fig.align_ylabels([ax_tau, ax_psi, ax_set])
    from analysis.sensitivity import safe_name

    return _save(fig, Path(out) / f"spec_curve_{safe_name(table.attrs.get('measure', ''))}_{safe_name(gap)}.png")


def plot_retest(table: pd.DataFrame, out: str | Path) -> Path | None:
    """Test–retest (``analysis.retest``) of the measures at their defaults (no ``[...]``
    specification, no ``.component``): the retest noise against the seed-to-seed spread
    (left, log scale; 1 = a changed kernel moves the value as much as a new seed) and the τ
    with the gap in the test and in the retest (right), noisiest at the bottom."""
    if "noise_ratio" not in table.columns:
        return None
    named = table["measure"].astype(str)
    plain = ~named.str.contains(r"\[", regex=True) & (named.str.startswith("gen.") | ~named.str.contains(".", regex=False))
    t = table[plain & np.isfinite(table["noise_ratio"].astype(float))]
    if t.empty:
        return None
    t = t.sort_values("noise_ratio", ascending=False)  # the least noisy at the top of the chart
    n = len(t)
    y = np.arange(n)
    fig = Figure(figsize=(9.5, 1.2 + 0.26 * n), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [1.3, 1]})
    ratio = np.clip(t["noise_ratio"].to_numpy(float), 1e-4, None)
    exact = t["identical"].to_numpy(float) == 1
    left.barh(y, ratio, color=np.where(exact, "0.6", "#4C72B0"), height=0.7)
    left.set_xscale("log")
    ticks = [t for t in (1e-4, 1e-3, 0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30) if ratio.min() / 1.5 <= t <= ratio.max() * 1.5]
    left.set_xticks(ticks, [f"{t:g}" for t in ticks])
    left.xaxis.set_minor_formatter(NullFormatter())
    left.axvline(1, color="0.2", lw=0.9, ls="--")
    left.set_yticks(y, [m.removeprefix("measure.") for m in t["measure"]], fontsize=7.5)
    left.set_ylim(-0.6, n - 0.4)
    left.set_xlabel("retest noise / seed-to-seed spread (grey: identical in every run)")
    left.grid(axis="x", alpha=0.3)
    if "tau_gap" in t.columns:
        right.scatter(t["tau_gap"], y, s=18, color="#4C72B0", label="test", zorder=3)
        right.scatter(t["tau_gap_retest"], y, s=22, marker="x", color="#DD8452", label="retest", zorder=3)
        right.axvline(0, color="0.2", lw=0.8)
        right.set_xlim(-1.05, 1.05)
        right.set_xlabel(f"Kendall τ with {table.attrs.get('gap', 'the gap')}")
        right.grid(axis="x", alpha=0.3)
        right.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Test–retest of each measure ({table.attrs.get('n_runs', '?')} runs trained twice)", fontsize=10)
    return _save(fig, Path(out))
