"""The demo: train a grid of CRATE variants on digits, measure them, and correlate.

``srr-demo`` (or ``make demo``) runs ``srr-train -m experiment=demo`` into
``multirun/demo`` (each run is measured at its end, with the experiment's measure
settings), then ``srr-analyze report`` on it, and prints where everything went.
Relaunching skips finished work. It sits above every package it drives (sweeps,
measures, analysis).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from .cli import output_dir_problem


def _train_grid(out: Path, extra: list[str]) -> int:
    cmd = [sys.executable, "-m", "sweeps.cli", "-m", "experiment=demo", f"hydra.sweep.dir={out}",
           "train.progress=false", *extra]
    print("$ srr-train -m experiment=demo " + " ".join(cmd[5:]), flush=True)
    return subprocess.call(cmd)


def summary(out: Path) -> str:
    from srr_bench.io import RunFileError
    from srr_bench.rundir import FAILURE, HPARAMS, METRICS, RunDir, find_runs

    rows = []
    for path in find_runs(out):
        run = RunDir(path)
        try:
            m = run.read_metrics() if run.has(METRICS) else None
            hp = run.read_hparams() if run.has(HPARAMS) else {}
        except RunFileError:  # srr-status names the file and the fix
            m, hp = None, {}
        status = m["status"] if m else ("failed" if run.has(FAILURE) else "unfinished")
        acc = f"{m['train_acc']:.3f} {m['test_acc']:.3f} {m['gap_acc']:+.3f}" if m and m["status"] == "done" else "-"
        rows.append(f"| {hp.get('variant', '?'):8s} | {hp.get('lr', '?'):<6} | {hp.get('dropout', '?'):<4} | {status:8s} | {acc} |")
    head = "| variant  | lr     | drop | status   | train test gap |\n|---|---|---|---|---|"
    return "\n".join([head, *sorted(rows)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="multirun/demo", help="sweep directory (default: multirun/demo)")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = ap.parse_args(argv)
    out = Path(args.out)
    problem = output_dir_problem("--out", args.out)
    if problem:
        print(f"srr-demo: {problem}", file=sys.stderr)
        return 2
    t0 = time.time()
    if _train_grid(out, args.overrides) != 0:
        print("the training sweep failed; see the messages above", file=sys.stderr)
        return 1
    print(f"\ntrained in {time.time() - t0:.0f}s:\n{summary(out)}\n")
    # No separate srr-measure pass: the sweep measured every run with the experiment's
    # measure settings, which a pass with the defaults would recompute.
    steps = [("analysis.cli", ["srr-analyze", "report", str(out), "--out", str(out / "report")])]
    for module, argv_ in steps:
        try:
            mod = __import__(module, fromlist=["main"])
        except ImportError:
            continue
        print("$ " + " ".join(argv_), flush=True)
        rc = mod.main(argv_[1:])
        if rc:
            return rc
    table = _correlation_table(out / "report" / "correlations.csv")
    if table:
        print("\nCorrelation of each measure with the generalization gap (gen.gap_acc):\n" + table)
        print(f"report: {out / 'report' / 'report.md'}")
    print(f"done in {time.time() - t0:.0f}s; runs are in {out}")
    return 0


def _correlation_table(path: Path) -> str:
    """The report's table, measures only (their per-layer components are in the report)."""
    try:
        import pandas as pd

        from analysis.report import headline
        from analysis.tables import to_markdown
    except ImportError:
        return ""
    return to_markdown(headline(pd.read_csv(path))) if path.exists() else ""


if __name__ == "__main__":
    sys.exit(main())
