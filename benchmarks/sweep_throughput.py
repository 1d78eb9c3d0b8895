"""Sweep throughput: models per hour, one run at a time against several at once.

Runs the same small grid (``--runs`` seeds of one model, no measures) through
``srr-train -m`` once per launcher setting, each into a fresh sweep directory, and
times the whole command (start-up and the grid check included, as a user sees it):

    python -m benchmarks.sweep_throughput                               # CPU: basic vs joblib 2
    python -m benchmarks.sweep_throughput --modes basic,joblib:2,joblib:4 --device cuda --size cifar_small

``basic`` is Hydra's basic launcher: one run after another in one process, torch using
every core. ``joblib:N`` runs N at a time in worker processes, each limited by joblib to
cores/N threads; on one GPU, the N runs share it. A suffix ``@T`` sets T threads per run
(``basic@1``: one at a time, one thread). Rounds alternate between the settings so that
machine noise hits all of them; the median round is reported.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = "from sweeps.cli import train_main; train_main()"
ROOT = Path(__file__).resolve().parents[1]


def parse_mode(mode: str) -> tuple[str, int, str | None]:
    """"joblib:2@1" -> ("joblib", 2, "1"): launcher, runs at a time, threads per run (None: the default)."""
    mode, _, threads = mode.partition("@")
    name, _, n = mode.partition(":")
    if name not in ("basic", "joblib") or (name == "basic" and n):
        raise SystemExit(f"unknown mode {mode!r}; use basic, joblib:N, optionally @THREADS")
    return name, int(n or 1), threads or None


def run_sweep(mode: str, out: Path, args: argparse.Namespace) -> float:
    """Seconds for one ``srr-train -m`` of the grid under ``mode`` (see ``parse_mode``)."""
    name, n_jobs, threads = parse_mode(mode)
    if name == "basic":
        launcher = ["launcher=basic"]
    else:
        launcher = ["launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"]
    cmd = [sys.executable, "-c", TRAIN, "-m", f"hydra.sweep.dir={out}", *launcher, "measure=none",
           f"size={args.size}", f"data={args.data}", f"model={args.model}", f"train.epochs={args.epochs}",
           f"train.batch_size={args.batch_size}", f"train.device={args.device}", "train.progress=false",
           f"seed=range(0,{args.runs})", *args.overrides]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if threads:
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=out.parent)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{mode}: srr-train failed:\n{r.stderr[-3000:]}")
    done = sum(1 for p in out.glob("*/metrics.json") if json.loads(p.read_text())["status"] == "done")
    if done != args.runs:
        raise SystemExit(f"{mode}: {done} of {args.runs} runs finished:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return wall


def threads_per_job(mode: str) -> str:
    name, n_jobs, threads = parse_mode(mode)
    cores = os.cpu_count() or 1
    default = str(cores) if name == "basic" else str(max(1, cores // n_jobs))  # joblib's limit in its workers
    return threads or os.environ.get("OMP_NUM_THREADS", default)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default="basic,joblib:2", help="comma-separated: basic, joblib:N (default basic,joblib:2)")
    ap.add_argument("--runs", type=int, default=8, help="runs in the grid (seeds 0..runs-1)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--size", default="mini", help="size preset (default mini)")
    ap.add_argument("--data", default="digits")
    ap.add_argument("--model", default="crate")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--rounds", type=int, default=1, help="repeat every mode this many times (median reported)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = ap.parse_args(argv)
    modes = args.modes.split(",")
    times: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="srr-sweep-bench-") as tmp:
        for r in range(args.rounds):
            for m in modes:
                out = Path(tmp) / f"{m.replace(':', '').replace('@', 't')}-{r}"
                times[m].append(run_sweep(m, out, args))
                print(f"round {r + 1}: {m:<10} {times[m][-1]:7.1f}s", flush=True)
    base = statistics.median(times[modes[0]])
    print(f"\n{args.runs} runs of {args.model} ({args.size}) on {args.data}, {args.epochs} epochs, batch {args.batch_size},"
          f" device {args.device}, {os.cpu_count()} CPU cores; wall time of the whole srr-train -m")
    print(f"  {'mode':<10} {'threads/job':>11} {'wall s':>8} {'models/hour':>12} {'vs ' + modes[0]:>10}")
    rows = []
    for m in modes:
        wall = statistics.median(times[m])
        rows.append(dict(mode=m, threads_per_job=threads_per_job(m), wall_s=wall, models_per_hour=args.runs / wall * 3600,
                         speedup=base / wall, rounds=times[m]))
        print(f"  {m:<10} {threads_per_job(m):>11} {wall:8.1f} {args.runs / wall * 3600:12.0f} {base / wall:9.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(args=vars(args), results=rows), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
