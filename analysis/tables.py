"""Correlation tables in the paper's layout (Jiang et al. 2020, Table 2; Hu et al. 2024).

Rows are measures; columns are ψ per hyperparameter axis, the overall τ, Ψ, the
conditional mutual information K and the robust sign-error (mean / p90 / max over
environments). Rows are sorted by Ψ, then τ, best first (NaN last); numbers have 3
decimals, and bootstrap intervals, when present, follow τ and Ψ as [lo, hi].
Inputs are the frames returned by :func:`analysis.correlate.correlate`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

SE_STATS = (("sign_error_mean", "SE mean"), ("sign_error_p90", "SE p90"), ("sign_error_max", "SE max"))


def axes_of(corr: pd.DataFrame) -> list[str]:
    """Axis names (without ``hp.``) present as ``psi.<axis>`` columns, in order."""
    return [c[len("psi."):] for c in corr.columns if c.startswith("psi.")]


def sort_rows(corr: pd.DataFrame, by: str = "Psi") -> pd.DataFrame:
    """Best first by ``by`` (then τ), NaN last."""
    keys = [k for k in (by, "tau") if k in corr.columns]
    return corr.sort_values(keys, ascending=False, na_position="last", kind="stable")


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
        for a in axes_of(corr):
            out[f"ψ {a}"] = fmt(r[f"psi.{a}"], nan)
        out["τ"] = _with_ci(r, "tau", nan)
        out["Ψ"] = _with_ci(r, "Psi", nan)
        if "cmi" in corr.columns:
            out["K"] = fmt(r["cmi"], nan)
        for key, head in SE_STATS:
            if key in corr.columns:
                out[head] = fmt(r[key], nan)
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
    align = ["---"] + ["---:"] * (len(head) - 1)
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in t.values]
    note = groups_note(corr)
    return "\n".join(lines) + ("\n\n" + note + "\n" if note else "\n")


def _tex(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"),
                 ("#", r"\#"), ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("–", "--")):
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
            heads.append({"measure": "Measure", "τ": r"$\tau$", "Ψ": r"$\Psi$", "K": r"$K$"}.get(h, _tex(h)))
    body = [" & ".join(_tex(str(v)).replace("[", r"{\scriptsize[").replace("]", "]}") for v in row)
            + r" \\" for row in t.values]
    cap = caption or ("Kendall correlations of each measure with the generalization gap "
                      "(" + _tex(groups_note(corr)) + ").")
    return "\n".join([r"\begin{table}[t]", r"\centering", r"\small",
                      r"\begin{tabular}{l" + "r" * (len(heads) - 1) + "}", r"\toprule",
                      " & ".join(heads) + r" \\", r"\midrule", *body, r"\bottomrule",
                      r"\end{tabular}", rf"\caption{{{cap}}}", rf"\label{{{label}}}",
                      r"\end{table}", ""])


def to_csv_table(corr: pd.DataFrame, sort_by: str = "Psi") -> pd.DataFrame:
    """The paper layout as numbers rounded to 3 decimals (CI bounds as separate columns)."""
    cols = ["measure", *[f"psi.{a}" for a in axes_of(corr)], "tau", "tau_lo", "tau_hi",
            "Psi", "Psi_lo", "Psi_hi", "cmi", "cmi_set", *[k for k, _ in SE_STATS]]
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
    paths["md"].write_text(to_markdown(corr))
    paths["tex"].write_text(to_latex(corr))
    to_csv_table(corr).to_csv(paths["table_csv"], index=False)
    return paths
