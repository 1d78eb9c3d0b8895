"""``srr-status SWEEP_DIR``: a sweep's runs by state, with counts and the time left.

    srr-status multirun/demo            counts, failures with their reasons, time left
    srr-status multirun/demo --runs     one line per run
    srr-status multirun/demo --json     the same as JSON

States (``sweeps.state``): done, diverged, failed, damaged (a run file missing or
unreadable, named with what a relaunch does about it), running (lock held), interrupted (started, nobody on it: a relaunch
resumes it; also a trained run whose measures, asked for in its config.yaml, are
unfinished) and pending (in the grid, no directory yet; the grid comes from the sweep
manifest written at launch, else from Hydra's ``multirun.yaml``).

The time left counts whole jobs, measures included: a job takes the mean training time
of the trained runs (metrics.json's ``wall_s``) plus the mean measuring time of the
measured ones (the sum of measures.json's per-measure ``wall_s``); the runs still to do
(pending, interrupted in training, half of each running one) take a whole job each, the
trained runs with unfinished measures the measuring part; the total is divided by the
number running now. Reads files only: safe while the sweep runs. Also
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
    mean, left = time_left(runs, counts)
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


def time_left(runs: list[RunState], counts: Counter) -> tuple[Optional[float], Optional[float]]:
    """(mean seconds of a whole job, seconds left); see the module docstring. None when unknown."""
    trained = [float(r.metrics["wall_s"]) for r in runs if r.metrics and isinstance(r.metrics.get("wall_s"), (int, float))
               and math.isfinite(r.metrics["wall_s"])]
    measured = [s for s in (measure_seconds(r.path) for r in runs if r.state == "done") if s is not None]
    mean_train, mean_measure = _mean(trained), _mean(measured) or 0.0
    if mean_train is None:
        return None, None
    job = mean_train + mean_measure
    unmeasured = sum(1 for r in runs if r.extra.get("measures_left"))
    whole = counts["pending"] + (counts["interrupted"] - unmeasured) + 0.5 * counts["running"]
    todo = whole * job + unmeasured * mean_measure  # failed runs wait for a relaunch
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
