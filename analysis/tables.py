"""Correlation tables in the paper's layout (Jiang et al. 2020, Table 2; Hu et al. 2024).

Rows are measures; columns are the number of models ``n`` each measure was scored on, ψ
per hyperparameter axis, the overall τ, Ψ, the conditional mutual information K, the
robust sign-error (mean / p90 / max over environments) and the measure's ``flags``
(:mod:`analysis.flags`). Measures without a flag come first, sorted by Ψ, then τ, best
first (NaN last); flagged measures follow, sorted the same way: they are not ranked among
the others. Numbers have 3 decimals, and bootstrap intervals, when present, follow τ and Ψ
as [lo, hi]. Inputs are the frames returned by :func:`analysis.correlate.correlate`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.exclusions import measure_lines
from analysis.flags import FLAGS_RULE, is_flagged

SE_STATS = (("sign_error_mean", "SE mean"), ("sign_error_p90", "SE p90"), ("sign_error_max", "SE max"))


def axes_of(corr: pd.DataFrame) -> list[str]:
    """Axis names (without ``hp.``) present as ``psi.<axis>`` columns, in order."""
    return [c[len("psi."):] for c in corr.columns if c.startswith("psi.")]


SE_AXIS = "sign_error_mean."  # the mean sign-error over the environments that differ in one axis


def _se_axes(corr: pd.DataFrame) -> list[str]:
    return [a for a in axes_of(corr) if f"{SE_AXIS}{a}" in corr.columns]


def sort_rows(corr: pd.DataFrame, by: str = "Psi") -> pd.DataFrame:
    """Unflagged measures first, then flagged ones; each best first by ``by`` (then τ), NaN last."""
    keys = [k for k in (by, "tau") if k in corr.columns]
    ranked = corr.sort_values(keys, ascending=False, na_position="last", kind="stable")
    return ranked.iloc[np.argsort(is_flagged(ranked).to_numpy(), kind="stable")]


def fmt(v, nan: str = "–") -> str:
    """3 decimals, no negative zero, ``nan`` for missing."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return nan
    if isinstance(v, str):
        return v
    v = float(v)
    if abs(v) < 5e-4:
        v = 0.0
    return f"{v:.3f}"


def _with_ci(row: pd.Series, key: str, nan: str) -> str:
    s = fmt(row.get(key), nan)
    lo, hi = row.get(f"{key}_lo"), row.get(f"{key}_hi")
    if lo is not None and hi is not None and not (pd.isna(lo) or pd.isna(hi)):
        s += f" [{fmt(lo)}, {fmt(hi)}]"
    return s


def layout(corr: pd.DataFrame, nan: str = "–", sort_by: str = "Psi") -> pd.DataFrame:
    """The paper layout as strings; columns are display headers."""
    rows = []
    for _, r in sort_rows(corr, sort_by).iterrows():
        out = {"measure": r["measure"]}
        if "n" in corr.columns:
            out["n"] = "" if pd.isna(r["n"]) else str(int(r["n"]))
        for a in axes_of(corr):
            out[f"ψ {a}"] = fmt(r[f"psi.{a}"], nan)
        out["τ"] = _with_ci(r, "tau", nan)
        out["Ψ"] = _with_ci(r, "Psi", nan)
        if "cmi" in corr.columns:
            out["K"] = fmt(r["cmi"], nan)
        for key, head in SE_STATS:
            if key in corr.columns:
                out[head] = fmt(r[key], nan)
        for a in _se_axes(corr):  # Dziugaite et al.'s per-intervention view: pairs differing in `a`
            out[f"SE {a}"] = fmt(r[f"{SE_AXIS}{a}"], nan)
        if "flags" in corr.columns:
            out["flags"] = "" if pd.isna(r["flags"]) else str(r["flags"])
        rows.append(out)
    return pd.DataFrame(rows)


def groups_note(corr: pd.DataFrame) -> str:
    """'groups per axis: lr 12, batch_size 18' (a range when measures differ)."""
    parts = []
    for a in axes_of(corr):
        col = corr.get(f"n_groups.{a}")
        if col is None or col.empty:
            continue
        lo, hi = int(col.min()), int(col.max())
        parts.append(f"{a} {lo}" if lo == hi else f"{a} {lo}–{hi}")
    return "groups per axis: " + ", ".join(parts) if parts else ""


def to_markdown(corr: pd.DataFrame, sort_by: str = "Psi") -> str:
    """GitHub Markdown table plus a line with the number of groups per axis."""
    t = layout(corr, sort_by=sort_by)
    head = list(t.columns)
    align = ["---" if h in ("measure", "flags") else "---:" for h in head]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in t.values]
    note = groups_note(corr)
    return "\n".join(lines) + ("\n\n" + note + "\n" if note else "\n")


def notes(corr: pd.DataFrame) -> list[str]:
    """What the correlations left out (runs per reason, values per measure), the axis
    warnings and the flags rule, as Markdown lines."""
    lines = [*corr.attrs.get("notes", []), *measure_lines(corr)]
    if is_flagged(corr).any():
        lines.append(f"Flagged measures are listed last and not ranked: {FLAGS_RULE}.")
    return lines


def markdown_block(lines: list[str]) -> list[str]:
    """Lines as Markdown paragraphs and list items (a list item stays in its list; a
    'warning: ...' line becomes a bold **Warning** paragraph)."""
    out: list[str] = []
    for line in lines:
        item = line.startswith("- ")
        if out and not (item and out[-1].startswith("- ")):
            out.append("")
        out.append(f"**Warning**: {line[len('warning: '):]}" if line.startswith("warning: ") else line)
    return out


def _tex(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"),
                 ("#", r"\#"), ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("–", "--"),
                 ("±", r"$\pm$")):
        s = s.replace(a, b)
    return s


def to_latex(corr: pd.DataFrame, caption: str | None = None, label: str = "tab:correlations",
             sort_by: str = "Psi") -> str:
    """A booktabs ``table`` with math headers (ψ_axis, τ, Ψ, K)."""
    t = layout(corr, nan="--", sort_by=sort_by)
    heads = []
    for h in t.columns:
        if h.startswith("ψ "):
            heads.append(r"$\psi_{\mathrm{" + _tex(h[2:]) + "}}$")
        else:
            heads.append({"measure": "Measure", "n": r"$n$", "τ": r"$\tau$", "Ψ": r"$\Psi$",
                          "K": r"$K$"}.get(h, _tex(h)))
    body = [" & ".join(_tex(str(v)).replace("[", r"{\scriptsize[").replace("]", "]}") for v in row)
            + r" \\" for row in t.values]
    flagged = " Flagged measures (last rows) are not ranked." if is_flagged(corr).any() else ""
    cap = caption or ("Kendall correlations of each measure with the generalization gap "
                      "(" + _tex(groups_note(corr)) + "); $n$: models each measure was scored on." + flagged)
    return "\n".join([r"\begin{table}[t]", r"\centering", r"\small",
                      r"\begin{tabular}{l" + "r" * (len(heads) - 1) + "}", r"\toprule",
                      " & ".join(heads) + r" \\", r"\midrule", *body, r"\bottomrule",
                      r"\end{tabular}", rf"\caption{{{cap}}}", rf"\label{{{label}}}",
                      r"\end{table}", ""])


def to_csv_table(corr: pd.DataFrame, sort_by: str = "Psi") -> pd.DataFrame:
    """The paper layout as numbers rounded to 3 decimals (CI bounds as separate columns)."""
    cols = ["measure", "n", *[f"psi.{a}" for a in axes_of(corr)], "tau", "tau_lo", "tau_hi",
            "Psi", "Psi_lo", "Psi_hi", "cmi", "cmi_set", *[k for k, _ in SE_STATS],
            *[f"{SE_AXIS}{a}" for a in _se_axes(corr)], "flags"]
    t = sort_rows(corr, sort_by)[[c for c in cols if c in corr.columns]].copy()
    num = t.select_dtypes(include=[np.number]).columns
    t[num] = t[num].round(3).replace(-0.0, 0.0)
    return t


def write_tables(corr: pd.DataFrame, out_dir: str | Path, stem: str = "correlations") -> dict[str, Path]:
    """Write ``<stem>.csv`` (all statistics, full precision), ``<stem>.md``, ``<stem>.tex``
    and ``<stem>_table.csv`` (paper layout, 3 decimals) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / f"{stem}.csv", "md": out / f"{stem}.md", "tex": out / f"{stem}.tex",
             "table_csv": out / f"{stem}_table.csv"}
    corr.to_csv(paths["csv"], index=False)
    extra = markdown_block(notes(corr))
    paths["md"].write_text(to_markdown(corr) + ("\n" + "\n".join(extra) + "\n" if extra else ""))
    paths["tex"].write_text(to_latex(corr))
    to_csv_table(corr).to_csv(paths["table_csv"], index=False)
    return paths
