"""Hydra callback of ``srr-train -m``: check the whole grid before the first job, summarise after the last.

Before any job starts (in the launching process, whatever the launcher):

- every job's config is composed as the launcher will compose it and validated
  (``sweeps.schema``); one bad job stops the sweep here, with every problem listed
  (by ``SystemExit``: Hydra turns a callback's exceptions into warnings);
- the grid is written to the sweep manifest (``sweeps.grid``) for ``srr-status``;
- one line says what the launch will do: how many runs are finished, failed (to retry),
  interrupted (to resume), running elsewhere, and new.

After the last job, a summary by state with the failures and their reasons.
Enabled in ``sweeps/conf/config.yaml`` under ``hydra.callbacks``.
"""
from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# Launchers whose jobs run on other machines: their devices are those machines' business.
REMOTE_LAUNCHERS = ("Slurm", "Ray")


def _device_problems(config: Any, jobs: list) -> list[str]:
    """``train.device`` of every job, resolved on this machine when the launcher runs the jobs
    here (basic, joblib, submitit's local mode): ``cuda:99`` is refused before any job starts
    instead of failing in each one."""
    target = str(config.hydra.launcher.get("_target_", ""))
    if any(name in target for name in REMOTE_LAUNCHERS):
        return []
    from srr_bench.device import DeviceError, resolve_device

    problems = []
    for device in sorted({str(j.cfg["train"].get("device", "auto")) for j in jobs}):
        try:
            resolve_device(device)
        except DeviceError as e:
            n = sum(str(j.cfg["train"].get("device", "auto")) == device for j in jobs)
            problems.append(f"train.device: {e} ({n} job{'s' * (n > 1)}; launcher {target.rsplit('.', 1)[-1]})")
    return problems


class SweepCallback(Callback):
    def __init__(self, validate: bool = True) -> None:
        self.validate = validate

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from .grid import jobs, write_manifest
        from .schema import ConfigError, validate
        from .state import run_state

        t0 = time.perf_counter()
        found = jobs(config)
        if found is None:  # another sweeper (Optuna, ...): jobs are not known in advance
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if self.validate:
            problems = []
            for job in found:
                try:
                    validate(job.cfg)
                except ConfigError as e:
                    problems.append(f"job {job.num} ({' '.join(job.overrides) or 'no overrides'}): " + "; ".join(e.problems))
            bad_jobs = len(problems)
            problems += _device_problems(config, found)
            if problems:
                shown = "\n  ".join(problems[:10]) + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else "")
                where = f"in {bad_jobs} of {len(found)} jobs" if bad_jobs else f"({len(found)} jobs)"
                _say(f"srr-train: invalid config {where}; nothing was started:\n  {shown}")
                raise SystemExit(2)
        write_manifest(sweep_dir, found, list(config.hydra.overrides.task))
        states = Counter(run_state(j.run_dir).state for j in found)
        plan = {"done": "finished", "diverged": "diverged (kept)", "failed": "failed (retried)",
                "damaged": "damaged (repaired, or named)",
                "interrupted": "interrupted (resumed)", "running": "running elsewhere (skipped)", "pending": "new"}
        parts = [f"{states[s]} {label}" for s, label in plan.items() if states[s]]
        _say(f"sweep {sweep_dir}: {len(found)} runs: {', '.join(parts)} "
             f"[checked in {time.perf_counter() - t0:.1f}s]")

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from .status import sweep_status, format_status

        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            report = sweep_status(sweep_dir, enumerate_grid=False)
        except Exception as e:  # a summary must not turn a finished sweep into an error
            _say(f"sweep {sweep_dir}: finished (no summary: {e})")
            return
        _say(format_status(report, brief=True))
