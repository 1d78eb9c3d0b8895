"""Build the tidy table (one row per trained model) from sweep directories.

A sweep directory holds run directories at any depth; a run directory is one that
contains ``metrics.json``. Per run directory:

- ``hparams.json``  {name: scalar}                  -> ``hp.<name>`` (nested dicts are
  flattened with dots, lists are stored as JSON text);
- ``metrics.json``  {"status", "converged", numbers} -> ``status`` (text),
  ``is.diverged`` (status == "diverged"), ``is.failed`` (status == "failed"),
  ``is.converged``, ``gen.<key>`` for every number or null, ``is.<key>`` for other
  booleans, ``run_id`` (default: the directory name);
- ``measures.json`` {"values": {name: float}} (optional) -> ``measure.<name>``;
- ``run_dir``: the path of the run directory.

Filters (each prints how many rows it removed): diverged runs, runs not flagged converged
(a missing flag counts as not converged), runs with ``gen.train_acc`` below a threshold
(or missing). The table is written as CSV or Parquet (pyarrow) by file extension.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from analysis.schema import GEN, HP, IS, MEASURE, SEED, AnalysisError

METRICS, HPARAMS, MEASURES, HISTORY = "metrics.json", "hparams.json", "measures.json", "history.csv"


def find_run_dirs(root: str | os.PathLike) -> list[Path]:
    """All directories under ``root`` (itself included) that contain ``metrics.json``, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise AnalysisError(f"sweep directory not found: {root}")
    found = [Path(d) for d, _, files in os.walk(root, followlinks=False) if METRICS in files]
    return sorted(found)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(v)
        else:
            out[key] = np.nan if v is None else v
    return out


def _read_json(path: Path) -> dict:
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def read_run(run_dir: str | os.PathLike) -> dict:
    """One row of the tidy table from a run directory (raises on unreadable JSON)."""
    run_dir = Path(run_dir)
    row: dict = {"run_id": run_dir.name, "run_dir": str(run_dir)}
    if (run_dir / HPARAMS).exists():
        for k, v in _flatten(_read_json(run_dir / HPARAMS)).items():
            row[HP + k] = v
    metrics = _read_json(run_dir / METRICS)
    status = metrics.get("status")
    row["status"] = None if status is None else str(status)
    row[IS + "diverged"] = status == "diverged"
    row[IS + "failed"] = status == "failed"
    conv = metrics.get("converged")
    row[IS + "converged"] = None if conv is None else bool(conv)
    for k, v in metrics.items():
        if k in ("status", "converged"):
            continue
        if k == "run_id" and v is not None:
            row["run_id"] = str(v)
        elif isinstance(v, bool):
            row[IS + k] = v
        elif v is None or isinstance(v, (int, float)):
            row[GEN + k] = np.nan if v is None else float(v)
    if (run_dir / MEASURES).exists():
        values = _read_json(run_dir / MEASURES).get("values") or {}
        for k, v in values.items():
            row[MEASURE + k] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan
    return row


def _order_columns(df: pd.DataFrame) -> pd.DataFrame:
    def rank(c: str):
        for i, p in enumerate(("run_id", "run_dir", "status", HP, GEN, IS, MEASURE)):
            if c == p or c.startswith(p):
                return (i, c == SEED, c)
        return (7, False, c)
    return df[sorted(df.columns, key=rank)]


def collect_runs(sweep_dirs: Iterable[str | os.PathLike], log: Callable[[str], None] = print) -> pd.DataFrame:
    """The unfiltered tidy table of every run directory under ``sweep_dirs``."""
    sweep_dirs = list(sweep_dirs)
    dirs: dict[Path, None] = {}
    for s in sweep_dirs:
        for d in find_run_dirs(s):
            dirs.setdefault(d.resolve(), None)
    if not dirs:
        raise AnalysisError("no run directory (with metrics.json) under: "
                            + ", ".join(str(s) for s in sweep_dirs))
    rows, bad = [], 0
    for d in dirs:
        try:
            rows.append(read_run(d))
        except (OSError, ValueError) as e:  # JSONDecodeError is a ValueError
            bad += 1
            warnings.warn(f"skipped unreadable run directory {d}: {e}")
    if bad:
        log(f"collect: skipped {bad} unreadable run director{'y' if bad == 1 else 'ies'}")
    if not rows:
        raise AnalysisError("no readable run directory found")
    df = pd.DataFrame(rows)
    for c in df.columns:
        if c.startswith(IS):
            df[c] = df[c].astype("boolean")
    log(f"collect: {len(df)} runs from {len(sweep_dirs)} sweep director{'y' if len(sweep_dirs) == 1 else 'ies'}")
    return _order_columns(df).reset_index(drop=True)


def _flag(df: pd.DataFrame, col: str) -> pd.Series:
    """A boolean column as True/False with missing -> False (also for CSV text)."""
    if col not in df.columns:
        return pd.Series(False, index=df.index)
    s = df[col]
    if s.dtype == object:
        s = s.map(lambda v: str(v).strip().lower() in ("true", "1", "1.0") if pd.notna(v) else False)
    return s.fillna(False).astype(bool)


def apply_filters(df: pd.DataFrame, drop_nonconverged: bool = False, drop_diverged: bool = False,
                  min_train_acc: float | None = None, log: Callable[[str], None] = print) -> pd.DataFrame:
    """Drop diverged, non-converged and low-train-accuracy runs; log what each removed."""
    if drop_diverged:
        keep = ~_flag(df, IS + "diverged")
        log(f"filter drop-diverged: removed {int((~keep).sum())} of {len(df)} rows")
        df = df.loc[keep]
    if drop_nonconverged:
        keep = _flag(df, IS + "converged")
        log(f"filter drop-nonconverged: removed {int((~keep).sum())} of {len(df)} rows")
        df = df.loc[keep]
    if min_train_acc is not None:
        col = GEN + "train_acc"
        if col not in df.columns:
            raise AnalysisError(f"--min-train-acc needs a {col} column")
        keep = pd.to_numeric(df[col], errors="coerce") >= float(min_train_acc)
        log(f"filter min-train-acc {min_train_acc:g}: removed {int((~keep).sum())} of {len(df)} rows")
        df = df.loc[keep]
    return df.reset_index(drop=True)


def collect(sweep_dirs, drop_nonconverged: bool = False, drop_diverged: bool = False,
            min_train_acc: float | None = None, log: Callable[[str], None] = print) -> pd.DataFrame:
    """Tidy table of the runs under ``sweep_dirs`` (a path or a list), filtered."""
    if isinstance(sweep_dirs, (str, os.PathLike)):
        sweep_dirs = [sweep_dirs]
    df = collect_runs(list(sweep_dirs), log)
    return apply_filters(df, drop_nonconverged, drop_diverged, min_train_acc, log)


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` as CSV (``.csv``) or Parquet (``.parquet``/``.pq``, via pyarrow)."""
    path = Path(path)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        df.to_csv(path, index=False)
    elif suffix in (".parquet", ".pq"):
        out = df.copy()
        for c in out.columns:  # mixed-type object columns (e.g. 0.1 and "auto") as text
            if out[c].dtype == object and out[c].dropna().map(type).nunique() > 1:
                out[c] = out[c].map(lambda v: v if pd.isna(v) else str(v))
        out.to_parquet(path, index=False, engine="pyarrow")
    else:
        raise AnalysisError(f"unknown table format {suffix!r} (use .csv or .parquet)")
    return path


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a tidy table from CSV or Parquet; one-line :class:`AnalysisError` on failure."""
    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path)
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AnalysisError(f"cannot read table {path}: {msg}") from None
    if df.shape[1] == 0 or len(df) == 0:
        raise AnalysisError(f"table {path} is empty")
    return df


def read_histories(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``history.csv`` of every run in ``df`` (by ``run_id``) that has one."""
    out = {}
    if "run_dir" not in df.columns:
        return out
    for run_id, d in zip(df.get("run_id", df["run_dir"]), df["run_dir"]):
        p = Path(str(d)) / HISTORY
        if p.is_file():
            try:
                out[str(run_id)] = pd.read_csv(p)
            except (ValueError, OSError, pd.errors.ParserError):
                warnings.warn(f"skipped unreadable {p}")
    return out
