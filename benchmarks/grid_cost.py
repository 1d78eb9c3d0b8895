"""Where a trained grid's time went, and what the gated stopping check would save.

Reads the finished runs of a sweep (or of a committed results folder: metrics.json,
measures.json, history.csv, config.yaml) and prints, per model and for the grid:

- the time of each stage, from what the runs recorded: training steps (``wall_s`` less the
  full train-set evaluations), the train-set evaluations that the CE stopping rule reads
  (``train_eval_wall_s``, ``train_evals`` of them), the final train and test evaluation
  (``final_eval_wall_s``) and the measures (the sum of every measure's ``wall_s`` in
  measures.json), each as a share of the whole;
- models per hour at ``--jobs`` runs at a time (the sum of the stages, so start-up and data
  loading are not counted), and, for a sweep directory still on disk, the wall-clock rate
  between the first run's start (its config.yaml) and the last one's end;
- the gated check (``train.eval_train_every_epoch=false``): :func:`srr_bench.train.replay_gate`
  replays it on every run that evaluated each epoch and counts the runs whose stopping
  epoch or CE milestones it would change, the evaluations it would skip and the time saved
  (runs with dropout evaluate every epoch under the gate too, see ``srr_bench.train``).

    python -m benchmarks.grid_cost /root/srr-grids/converged --jobs 2
    python -m benchmarks.grid_cost results/converged_cifar10_cpu/runs
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

from srr_bench.config import RunConfig
from srr_bench.io import RunFileError
from srr_bench.rundir import CONFIG, HISTORY, MEASURES, METRICS, RunDir, find_runs
from srr_bench.train import replay_gate, uses_dropout

STAGES = ("steps", "train_eval", "final_eval", "measures")


def run_cost(run: Path) -> dict | None:
    """One finished run's stage times (s) and gate replay; None when it is not finished (not
    yet measured, where its config measures) or predates the time split."""
    rd = RunDir(run)
    if not rd.has(METRICS):
        return None  # not finished
    try:
        m = rd.read_metrics()
        if m.get("status") != "done" or m.get("train_eval_wall_s") is None:
            return None
        cfg = rd.read_config()
        measures = rd.read_measures() if rd.has(MEASURES) else None
    except RunFileError as e:  # unfinished or damaged: left out, named
        print(f"grid_cost: left out {' '.join(str(e).split())}", file=sys.stderr)
        return None
    if measures is None and (cfg.get("measure") or {}).get("enabled"):
        return None  # trained, not yet measured
    measured = sum(float(d.get("wall_s", 0.0)) for d in (measures or {}).get("diagnostics", {}).values()
                   if isinstance(d, dict))
    out = {"run": run.name, "path": run, "epochs": m["epochs"], "converged": m.get("converged"),
           "steps": m["wall_s"] - m["train_eval_wall_s"], "train_eval": m["train_eval_wall_s"],
           "final_eval": m["final_eval_wall_s"], "measures": measured, "train_evals": m["train_evals"]}
    rc = RunConfig.read(cfg)
    t, dropout = rc.train, uses_dropout(rc.model)
    if t.eval_train_every_epoch and rd.history_problem(m) is None:
        with open(rd / HISTORY, newline="") as f:
            replay = replay_gate(list(csv.DictReader(f)), t, dropout)
        out["gate"], out["dropout"] = replay, dropout
        out["gate_same"] = (replay["stop_epoch"] == (m["epochs"] if m.get("converged") else None)
                            and replay["steps_to"] == {"0.1": m["steps_to_ce_0.1"], "0.01": m["steps_to_ce_0.01"]})
    return out


def wall_clock_rate(runs: list[Path]) -> float | None:
    """Finished models per hour between the first config.yaml and the last measures.json
    (or metrics.json) of the runs, for a sweep still on disk; None for a committed copy (no
    run has its init weights). Runs trained in several sessions make it an underestimate."""
    if not any(RunDir(r).weights("init").exists() for r in runs):
        return None
    starts = [(r / CONFIG).stat().st_mtime for r in runs]
    ends = [max((r / n).stat().st_mtime for n in (METRICS, MEASURES) if (r / n).exists()) for r in runs]
    span = max(ends) - min(starts)
    return 3600 * len(runs) / span if span > 0 else None


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time when the grid was trained (default 2)")
    args = ap.parse_args(argv)
    runs = find_runs(args.sweep)
    costs = [c for c in map(run_cost, runs) if c]
    if not costs:
        sys.exit(f"{args.sweep}: no finished run with the time split (metrics.json train_eval_wall_s)")
    total = {s: sum(c[s] for c in costs) for s in STAGES}
    whole = sum(total.values())
    print(f"{len(costs)} finished runs of {len(runs)} in {args.sweep}")
    print(f"{'stage':<12}{'mean s/model':>14}{'share':>8}")
    for s in STAGES:
        print(f"{s:<12}{total[s] / len(costs):>14.1f}{total[s] / whole:>8.1%}")
    per_model = whole / len(costs)
    print(f"{'all':<12}{per_model:>14.1f}   -> {3600 * args.jobs / per_model:.1f} models/hour at {args.jobs} at a time"
          " (stages only)")
    rate = wall_clock_rate([c["path"] for c in costs])
    if rate:
        print(f"wall clock: {rate:.1f} finished models/hour (first start to last end, start-up and idle included)")
    epochs = [c["epochs"] for c in costs]
    capped = sum(c["converged"] is False for c in costs)
    print(f"epochs: median {statistics.median(epochs):g}, range {min(epochs)}-{max(epochs)}; "
          f"{capped} of {len(costs)} hit the cap without reaching the target")
    replayed = [c for c in costs if "gate" in c]
    if replayed:
        skipped = sum(c["train_evals"] - c["gate"]["train_evals"] for c in replayed)
        saved = sum(c["train_eval"] * (1 - c["gate"]["train_evals"] / c["train_evals"]) for c in replayed)
        changed = [c["run"] for c in replayed if not c["gate_same"]]
        print(f"gated train-set evaluation (train.eval_train_every_epoch=false), replayed on {len(replayed)} runs: "
              f"{sum(c['gate']['train_evals'] for c in replayed) / sum(c['train_evals'] for c in replayed):.1%} of the "
              f"evaluations ({skipped} skipped), {saved / whole:.1%} of the grid's time saved; stopping epoch and "
              f"milestones unchanged in {len(replayed) - len(changed)} of {len(replayed)}"
              + (f" (changed: {', '.join(changed)})" if changed else "")
              + (f"; the gate is off (every epoch evaluated) in the {n} with dropout"
                 if (n := sum(c["dropout"] for c in replayed)) else ""))


if __name__ == "__main__":
    main()
