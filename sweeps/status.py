"""``srr-status SWEEP_DIR``: a sweep's runs by state, with counts and the time left.

    srr-status multirun/demo            counts, failures with their reasons, time left
    srr-status multirun/demo --runs     one line per run
    srr-status multirun/demo --json     the same as JSON

States (``sweeps.state``): done, diverged, failed, damaged (a run file missing or
unreadable, named with what a relaunch does about it), running (lock held), interrupted (started, nobody on it: a relaunch
resumes it; also a trained run whose measures, asked for in its config.yaml, are
unfinished) and pending (in the grid, no directory yet; the grid comes from the sweep
manifest written at launch, else from Hydra's ``multirun.yaml``).

The time left counts whole jobs, measures included: a job's training time is predicted
from the trained runs (metrics.json's ``wall_s``) and its measuring time from the measured
ones (the sum of measures.json's per-measure ``wall_s``); the runs still to do (pending,
interrupted in training, half of each running one) take a whole job each, the trained runs
with unfinished measures the measuring part; the total is divided by the number running
now. A grid whose settings change a run's cost (the training-set size, the width) is
predicted setting by setting (``predict_seconds``: each override value multiplies the time
by a factor fitted over the finished runs), so cheap runs finishing first do not promise
too early an end once each costly value has one finished run; a value no finished run has
takes its setting's average (its cost cannot be known before); without a manifest every job
takes the mean. Reads files only: safe while the sweep runs. Also
``python -m sweeps.status``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from srr_bench.rundir import MEASURES, find_runs

from .grid import read_manifests
from .state import STATES, RunState, read_json, run_state

PathLike = Union[str, os.PathLike]


def find_run_dirs(sweep_dir: Path) -> list[Path]:
    """The run directories under ``sweep_dir`` (``srr_bench.rundir.find_runs``), as absolute paths."""
    return sorted(d.resolve() for d in find_runs(sweep_dir))


def _grid(sweep_dir: Path, enumerate_grid: bool) -> tuple[dict[Path, dict[str, Any]], str]:
    grid = read_manifests(sweep_dir)
    if grid:
        return grid, "manifest"
    if enumerate_grid and (sweep_dir / "multirun.yaml").exists():
        try:
            from .grid import jobs_from_multirun_yaml, manifest_entries

            found = jobs_from_multirun_yaml(sweep_dir)
        except Exception:  # a multirun.yaml from another config tree: count what exists
            found = None
        if found:
            return {(sweep_dir / e["dir"]).resolve(): e for e in manifest_entries(sweep_dir, found)}, "multirun.yaml"
    return {}, "directories"


def sweep_status(sweep_dir: PathLike, enumerate_grid: bool = True, fresh_s: float = 600.0) -> dict[str, Any]:
    """Every run of a sweep with its state, the counts, and the estimated time left (seconds or None)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir}: no such sweep directory")
    grid, source = _grid(sweep_dir, enumerate_grid)
    dirs = sorted(set(find_run_dirs(sweep_dir)) | set(grid))
    runs = [run_state(d, fresh_s=fresh_s, measure_cfg="run") for d in dirs]
    counts = Counter(r.state for r in runs)
    mean, left = time_left(runs, counts, {p: e.get("overrides") or [] for p, e in grid.items()})
    return dict(sweep_dir=str(sweep_dir), grid_source=source, total=len(runs),
                counts={s: counts[s] for s in STATES}, mean_run_s=mean, time_left_s=left,
                runs=[_row(r, sweep_dir) for r in runs])


def _mean(values: list[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def measure_seconds(run_dir: Path) -> Optional[float]:
    """Time spent measuring a run: the sum of measures.json's per-measure ``wall_s`` (None without one)."""
    data = read_json(run_dir / MEASURES)
    if not isinstance(data, dict):
        return None
    diags = data.get("diagnostics") or {}
    return float(sum(d.get("wall_s", 0.0) for d in diags.values() if isinstance(d, dict)
                     and isinstance(d.get("wall_s"), (int, float))))


def predict_seconds(known: Sequence[tuple[Sequence[str], float]], todo: Sequence[Sequence[str]]) -> list[float]:
    """Seconds of each run in ``todo`` (its overrides) from ``known`` (overrides, seconds) runs.

    log seconds = intercept + Σ effect(override value), fitted by least squares over the known
    runs (minimum norm: values that always occur together share their effect), over the values
    that some known runs have and others lack (a value seen on every run is the intercept's).
    A run whose value of a setting was never seen takes that setting's average effect over the
    known runs. The predictions are scaled so that those of the known runs add up to their
    real total (without overrides: every run takes the mean of the known runs)."""
    import numpy as np

    if not known:
        return []
    key = lambda v: v.lstrip("+~").split("=", 1)[0]
    seen = [frozenset(o) for o, _ in known]
    values = sorted({v for o in seen for v in o if not all(v in other for other in seen)})
    col = {v: i + 1 for i, v in enumerate(values)}
    cols_of: dict[str, list[int]] = {}
    for v, i in col.items():
        cols_of.setdefault(key(v), []).append(i)

    def design(rows: Sequence[frozenset]) -> np.ndarray:
        x = np.zeros((len(rows), len(values) + 1))
        x[:, 0] = 1.0
        for r, o in enumerate(rows):
            x[r, [col[v] for v in o if v in col]] = 1.0
        return x

    fit = design(seen)
    secs = np.array([max(float(t), 1e-3) for _, t in known])
    coef = np.linalg.lstsq(fit, np.log(secs), rcond=None)[0]
    scale = secs.sum() / np.exp(fit @ coef).sum()
    rows = [frozenset(o) for o in todo]
    x = design(rows)
    for r in range(len(rows)):
        for idx in cols_of.values():
            if not x[r, idx].any():  # this setting's value was never seen: its average effect
                x[r, idx] = fit[:, idx].mean(axis=0)
    return list(scale * np.exp(x @ coef))


def time_left(runs: list[RunState], counts: Counter,
              overrides: Optional[dict[Path, Sequence[str]]] = None) -> tuple[Optional[float], Optional[float]]:
    """(mean seconds of a whole job, seconds left); see the module docstring. None when unknown.

    ``overrides``: each run directory's overrides in the grid (its manifest entry)."""
    of = lambda r: list((overrides or {}).get(r.path, ()))
    trained = [(of(r), float(r.metrics["wall_s"])) for r in runs if r.metrics
               and isinstance(r.metrics.get("wall_s"), (int, float)) and math.isfinite(r.metrics["wall_s"])]
    measured = [(of(r), s) for r, s in ((r, measure_seconds(r.path)) for r in runs if r.state == "done") if s is not None]
    if not trained:
        return None, None
    job = _mean([t for _, t in trained]) + (_mean([t for _, t in measured]) or 0.0)
    whole = [r for r in runs if r.state == "pending" or r.state == "running"
             or (r.state == "interrupted" and not r.extra.get("measures_left"))]
    unmeasured = [r for r in runs if r.extra.get("measures_left")]
    share = [0.5 if r.state == "running" else 1.0 for r in whole]
    train_s = predict_seconds(trained, [of(r) for r in whole])
    measure_s = predict_seconds(measured, [of(r) for r in whole + unmeasured]) or [0.0] * (len(whole) + len(unmeasured))
    todo = sum(w * (t + m) for w, t, m in zip(share, train_s, measure_s)) + sum(measure_s[len(whole):])
    return job, (todo / max(1, counts["running"]) if todo else 0.0)


def _row(r: RunState, sweep_dir: Path) -> dict[str, Any]:
    try:
        name = str(r.path.relative_to(sweep_dir.resolve()))
    except ValueError:
        name = str(r.path)
    row: dict[str, Any] = dict(run=name, state=r.state, reason=r.reason)
    if r.metrics:
        row.update({k: r.metrics.get(k) for k in ("test_acc", "gap_acc", "epochs", "wall_s")})
    if r.extra.get("holder", {}).get("since"):
        row["running_for_s"] = time.time() - float(r.extra["holder"]["since"])
    return row


def _duration(s: Optional[float]) -> str:
    if s is None:
        return "unknown (no finished run yet)"
    if s < 60:
        return f"{s:.1f}s" if s < 10 else f"{s:.0f}s"
    s = int(round(s))
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"


def format_status(report: dict[str, Any], brief: bool = False, every_run: bool = False) -> str:
    c = report["counts"]
    lines = [f"sweep {report['sweep_dir']}: {report['total']} runs ("
             + ", ".join(f"{c[s]} {s}" for s in STATES if c[s] or s in ("done", "pending")) + ")"]
    if not brief:
        lines += [f"  {s:<12} {c[s]:>5}" for s in STATES]
    if report["time_left_s"] == 0:
        lines.append("time left: none (nothing pending or running)")
    elif report["time_left_s"] is not None or not brief:
        mean = report["mean_run_s"]
        per_run = f"; mean run {_duration(mean)}" if mean is not None else ""
        running = f", {c['running']} running" if c["running"] else ""
        lines.append(f"time left: {_duration(report['time_left_s'])}{per_run}{running}")
    for state in ("failed", "damaged", "diverged", "running", "interrupted"):
        rows = [r for r in report["runs"] if r["state"] == state]
        if rows and (state in ("failed", "damaged", "diverged") or not brief):
            lines.append(f"{state}:")
            lines += [f"  {r['run']}: {r['reason']}" for r in rows]
    if every_run:
        lines.append("runs:")
        for r in report["runs"]:
            acc = f" test_acc={r['test_acc']:.4f}" if isinstance(r.get("test_acc"), float) else ""
            lines.append(f"  {r['state']:<12} {r['run']}{acc}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="srr-status", description="A sweep's runs by state, with the time left.")
    ap.add_argument("sweep_dir", help="the sweep directory (hydra.sweep.dir), e.g. multirun/demo")
    ap.add_argument("--runs", action="store_true", help="also list every run with its state")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--fresh-s", type=float, default=600.0,
                    help="a run locked on another host counts as running while its files are this fresh (default 600)")
    ap.add_argument("--keep-light", metavar="DEST",
                    help="copy every finished run's small files (no weights) to DEST/<run>: what a study commits, "
                         "and what carries a sweep to another machine")
    args = ap.parse_args(argv)
    if args.keep_light:
        from .state import finished, keep_light

        try:
            kept = [keep_light(run, args.keep_light) for run in find_run_dirs(args.sweep_dir) if finished(run)]
        except (FileNotFoundError, OSError) as e:
            print(f"srr-status: {e}", file=sys.stderr)
            return 2
        print(f"kept {len(kept)} finished runs' small files in {args.keep_light}")
        return 0
    try:
        report = sweep_status(args.sweep_dir, fresh_s=args.fresh_s)
    except FileNotFoundError as e:
        print(f"srr-status: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else format_status(report, every_run=args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
