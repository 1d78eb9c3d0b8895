"""Build the tidy table (one row per trained model) from sweep directories.

A sweep directory holds run directories at any depth; a run directory is one that
contains ``metrics.json``. Per run directory:

- ``hparams.json``  {name: scalar}                  -> ``hp.<name>`` (nested dicts are
  flattened with dots, lists are stored as JSON text);
- ``metrics.json``  {"status", "converged", numbers} -> ``status`` and ``diverged_reason``
  (text), ``is.diverged`` (status == "diverged" or ``diverged: true``), ``is.failed``
  (status == "failed"), ``is.converged`` (null -> NA: under ``train.stop=epochs`` there is no
  target), ``gen.<key>`` for every number or null, ``is.<key>`` for other booleans,
  ``run_id`` (default: the directory name);
- ``measures.json`` {"values": {name: float}} (optional) -> ``measure.<name>``; null is NaN
  and the strings "inf" / "-inf" (how ``measures.store`` writes them) are ±inf. A measure
  stored under several settings (a named specification, ``measures.specs``) gives a column
  per specification, ``measure.srr[eps=0.05,representation=z_half]`` beside ``measure.srr``;
  :func:`parse_measure_column` reads such a name back into (measure, settings, suffix);
  a measure whose diagnostics hold a boolean ``converged`` (its own search: PAC-Bayes)
  also gives ``undecided.<name>`` (not converged);
- ``run_dir``: the path of the run directory.

A run directory without ``metrics.json`` (``config.yaml``, ``hparams.json``, a checkpoint
or ``failure.json`` only) is counted in the log; a run whose metrics.json, measures.json or
hparams.json is unreadable or of the wrong shape is left out, one log line naming the file; with ``unfinished=True`` it becomes a row
with ``status`` 'failed' (``failure.json``) or 'unfinished' and no results, so that the
analysis can count it among the runs it leaves out.

Filters (each prints how many rows it removed): diverged runs, runs not flagged converged
(a missing flag counts as not converged), runs with ``gen.train_acc`` below a threshold
(or missing). The correlations apply the same rules themselves and count what they
leave out (:mod:`analysis.exclusions`). The table is written as CSV or Parquet (pyarrow)
by file extension.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from analysis.exclusions import is_diverged
from analysis.schema import GEN, HP, IS, MEASURE, SEED, UNDECIDED, AnalysisError, flag

from srr_bench.io import RunFileError
from srr_bench.rundir import FAILURE, HISTORY, HPARAMS, MEASURES, METRICS, RunDir, find_runs

# A specification's value: <measure>[<key>=<value>,...] then optionally .<suffix> (measures.specs).
SPEC_COLUMN = re.compile(r"(?P<measure>[^\[\]=,\s]+)\[(?P<body>[^\[\]]*)\](?:\.(?P<suffix>.+))?")
TEXT_METRICS = ("status", "diverged_reason")


def find_run_dirs(root: str | os.PathLike, finished: bool = True) -> list[Path]:
    """Run directories under ``root`` (itself included; ``srr_bench.rundir.find_runs``) that
    contain ``metrics.json``, sorted; with ``finished=False`` those without it instead."""
    root = Path(root)
    if not root.is_dir():
        raise AnalysisError(f"sweep directory not found: {root}")
    return find_runs(root, finished=finished)


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


def read_run(run_dir: str | os.PathLike) -> dict:
    """One row of the tidy table from a run directory; a run file that is unreadable or of the
    wrong shape raises ``RunFileError`` naming it (``srr_bench.rundir``: the one reader)."""
    return _read_run(run_dir)[0]


def _read_run(run_dir: str | os.PathLike) -> tuple[dict, dict]:
    """``read_run``'s row, and the version of each measure's code that computed its values."""
    versions: dict = {}
    rd = RunDir(run_dir)
    run_dir = rd.path
    row: dict = {"run_id": run_dir.name, "run_dir": str(run_dir)}
    if rd.has(HPARAMS):
        for k, v in _flatten(rd.read_hparams()).items():
            row[HP + k] = v
    metrics = rd.read_metrics()
    for k in TEXT_METRICS:
        row[k] = None if metrics.get(k) is None else str(metrics[k])
    status = row["status"]
    row[IS + "diverged"] = status == "diverged" or metrics.get("diverged") is True
    row[IS + "failed"] = status == "failed"
    conv = metrics.get("converged")
    row[IS + "converged"] = None if conv is None else bool(conv)
    for k, v in metrics.items():
        if k in (*TEXT_METRICS, "converged", "diverged"):
            continue
        if k == "run_id" and v is not None:
            row["run_id"] = str(v)
        elif isinstance(v, bool):
            row[IS + k] = v
        elif v is None or isinstance(v, (int, float)):
            row[GEN + k] = np.nan if v is None else float(v)
    if rd.has(MEASURES):
        stored = rd.read_measures()
        for k, v in (stored.get("values") or {}).items():
            row[MEASURE + k] = _measure_value(v)
        diagnostics = stored.get("diagnostics")
        for k, d in (diagnostics.items() if isinstance(diagnostics, dict) else ()):
            if isinstance(d, dict) and isinstance(d.get("converged"), bool):
                row[UNDECIDED + k] = not d["converged"]
        settings = stored.get("settings")
        versions = {k: d.get("version") for k, d in (settings.items() if isinstance(settings, dict) else ())
                    if isinstance(d, dict) and d.get("version") is not None}
    return row, versions


def _mixed_versions(per_run: list[dict]) -> list[str]:
    """One line per measure whose values come from more than one version of its code."""
    seen: dict[str, dict] = {}
    for versions in per_run:
        for name, version in versions.items():
            counts = seen.setdefault(name, {})
            counts[version] = counts.get(version, 0) + 1
    return [f"collect: {name} was computed by " + " and ".join(
                f"version {v} ({_plural(n, 'run', 'runs')})" for v, n in sorted(counts.items(), key=str))
            + ": its values mix versions of the measure's code"
            for name, counts in sorted(seen.items()) if len(counts) > 1]


def _measure_value(v) -> float:
    """A stored measure value: a number, null (NaN) or "inf" / "-inf" / "nan" as text."""
    if isinstance(v, bool):
        return np.nan
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str) and v.strip().lower() in ("inf", "+inf", "-inf", "nan", "infinity", "-infinity"):
        return float(v)
    return np.nan


def _setting_value(text: str):
    """A setting's value from its canonical text (measures.specs.format_value): numbers and
    true/false as such, anything else (``z_half``, ``none``) as text."""
    try:
        v = json.loads(text)
    except json.JSONDecodeError:
        return text
    return v if isinstance(v, (bool, int, float)) else text


def parse_measure_column(column: str) -> tuple[str, dict, str]:
    """(measure, {setting: value}, value suffix) of a measure column (with or without the
    ``measure.`` prefix): ``measure.srr[eps=0.05,representation=z_half].last`` ->
    ``("srr", {"eps": 0.05, "representation": "z_half"}, "last")``. A column without
    settings is its whole name with no settings and no suffix (``srr.last`` -> ``("srr.last",
    {}, "")``: without the registry, a suffix cannot be told from a name holding dots)."""
    name = column[len(MEASURE):] if column.startswith(MEASURE) else column
    m = SPEC_COLUMN.fullmatch(name)
    if not m:
        return name, {}, ""
    settings = {}
    for item in filter(None, m["body"].split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise AnalysisError(f"measure column {column!r}: {item!r} is not key=value")
        settings[key] = _setting_value(value)
    return m["measure"], settings, m["suffix"] or ""


def unfinished_row(run_dir: str | os.PathLike) -> dict:
    """The row of a run directory without ``metrics.json``: its hyperparameters (when
    ``hparams.json`` is readable) and status 'failed' (``failure.json``) or 'unfinished'."""
    run_dir = Path(run_dir)
    failed = (run_dir / FAILURE).exists()
    row: dict = {"run_id": run_dir.name, "run_dir": str(run_dir), "status": "failed" if failed else "unfinished",
                 IS + "diverged": False, IS + "failed": failed, IS + "converged": None}
    try:
        row.update({HP + k: v for k, v in _flatten(RunDir(run_dir).read_hparams()).items()})
    except RunFileError:
        pass  # no hyperparameters: the row still counts the run
    return row


def _order_columns(df: pd.DataFrame) -> pd.DataFrame:
    def rank(c: str):
        order = ("run_id", "run_dir", *TEXT_METRICS, HP, GEN, IS, MEASURE, UNDECIDED)
        for i, p in enumerate(order):
            if c == p or c.startswith(p):
                return (i, c == SEED, c)
        return (len(order), False, c)
    return df[sorted(df.columns, key=rank)]


def _dirs(sweep_dirs: list, finished: bool) -> list[Path]:
    found: dict[Path, None] = {}
    for s in sweep_dirs:
        for d in find_run_dirs(s, finished):
            found.setdefault(d.resolve(), None)
    return list(found)


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def collect_runs(sweep_dirs: Iterable[str | os.PathLike], log: Callable[[str], None] = print,
                 unfinished: bool = False) -> pd.DataFrame:
    """The unfiltered tidy table of every run directory under ``sweep_dirs``; with
    ``unfinished`` also a row per run directory without ``metrics.json``."""
    sweep_dirs = list(sweep_dirs)
    dirs = _dirs(sweep_dirs, finished=True)
    if not dirs:
        raise AnalysisError("no run directory (with metrics.json) under: "
                            + ", ".join(str(s) for s in sweep_dirs))
    rows, versions, bad = [], [], 0
    for d in dirs:
        try:
            row, used = _read_run(d)
            rows.append(row)
            versions.append(used)
        except RunFileError as e:  # names the file and the fix
            bad += 1
            log(f"collect: left out {d}: {' '.join(str(e).split())}")
            warnings.warn(f"left out unreadable run directory {d}: {e}")
    if bad:
        log(f"collect: left out {_plural(bad, 'unreadable run directory', 'unreadable run directories')}")
    if not rows:
        raise AnalysisError("no readable run directory found")
    started = _dirs(sweep_dirs, finished=False)
    if started:
        failed = sum((d / FAILURE).exists() for d in started)
        kinds = [f"{n} {k}" for n, k in ((failed, "failed (failure.json)"), (len(started) - failed, "unfinished"))
                 if n]
        kept = "kept as rows without results" if unfinished else "not in the table"
        log(f"collect: {_plural(len(started), 'run directory', 'run directories')} without metrics.json "
            f"({', '.join(kinds)}), {kept}")
        if unfinished:
            rows += [unfinished_row(d) for d in started]
    for line in _mixed_versions(versions):
        log(line)
    df = pd.DataFrame(rows)
    for c in df.columns:
        if c.startswith((IS, UNDECIDED)):
            df[c] = df[c].astype("boolean")
    log(f"collect: {len(df)} runs from {len(sweep_dirs)} sweep director{'y' if len(sweep_dirs) == 1 else 'ies'}")
    return _order_columns(df).reset_index(drop=True)


def apply_filters(df: pd.DataFrame, drop_nonconverged: bool = False, drop_diverged: bool = False,
                  min_train_acc: float | None = None, log: Callable[[str], None] = print) -> pd.DataFrame:
    """Drop diverged, non-converged and low-train-accuracy runs; log what each removed."""
    if drop_diverged:
        keep = ~is_diverged(df)
        log(f"filter drop-diverged: removed {int((~keep).sum())} of {len(df)} rows")
        df = df.loc[keep]
    if drop_nonconverged:
        keep = flag(df, IS + "converged")
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
            min_train_acc: float | None = None, log: Callable[[str], None] = print,
            unfinished: bool = False) -> pd.DataFrame:
    """Tidy table of the runs under ``sweep_dirs`` (a path or a list), filtered."""
    if isinstance(sweep_dirs, (str, os.PathLike)):
        sweep_dirs = [sweep_dirs]
    df = collect_runs(list(sweep_dirs), log, unfinished)
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
