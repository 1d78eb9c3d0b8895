"""One job of a sweep: train a run directory (once), then measure it.

``run_job(cfg, run_dir)`` is what ``srr-train`` calls for every job, under any launcher:

1. a complete run (metrics.json, and measures.json when measures are on) is returned as
   is, without opening anything in its directory for writing: never retrained;
2. otherwise the job takes ``run_dir/.lock`` without waiting; when another process holds
   it, the job reports the run as running elsewhere and moves on;
3. under the lock: a previous failure.json is removed (the run is retried), temporary
   files of a killed writer are cleared, and ``train`` starts or resumes from checkpoint.pt;
4. a done run is measured (``measure.names``) when ``measure.enabled`` and the measures
   package is installed; measures already stored are not recomputed.

A failure (an exception in training or measuring) is written to failure.json with its
reason and traceback and printed at once; divergence is recorded by ``train`` as
``status: diverged``. Neither stops the sweep. KeyboardInterrupt and SIGKILL are not
failures: the run stays resumable.
"""
from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .locking import Lock, claim_gpu, run_lock
from .schema import validate
from .state import FAILURE, complete, measure_names, measure_settings, read_json

# Names of the files a run directory holds; their temporary siblings (".<name>.*.tmp",
# from srr_bench.io.atomic_write) are left behind only by a killed writer.
RUN_FILES = ("config.yaml", "hparams.json", "init.pt", "checkpoint.pt", "history.csv", "final.pt", "metrics.json",
             "measures.json", FAILURE)


@dataclass
class Outcome:
    state: str  # trained | finished_before | diverged | failed | running
    run_dir: Path
    metrics: Optional[dict[str, Any]] = None
    message: str = ""

    @property
    def value(self) -> Optional[float]:
        """What the Hydra task returns (test accuracy; None when there is none)."""
        if self.metrics and self.metrics.get("status") == "done":
            return self.metrics.get("test_acc")
        return None


def say(msg: str, err: bool = False) -> None:
    print(msg, file=sys.stderr if err else sys.stdout, flush=True)


def one_line(e: BaseException) -> str:
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return f"{type(e).__name__}: {' '.join(msg.split())}"


def record_failure(run_dir: Path, e: BaseException, stage: str) -> str:
    from srr_bench.io import write_json

    msg = one_line(e)
    write_json(run_dir / FAILURE, dict(error=msg, stage=stage, traceback=traceback.format_exc(), host=socket.gethostname(),
                                       pid=os.getpid(), time=time.strftime("%Y-%m-%dT%H:%M:%S%z")))
    say(f"FAILED ({stage}): {msg} -> {run_dir}", err=True)
    return msg


def _summary(m: dict[str, Any]) -> str:
    return f"test_acc={m['test_acc']:.4f} gap_acc={m['gap_acc']:.4f}" if m.get("status") == "done" else ""


def run_job(cfg: dict[str, Any], run_dir: str | os.PathLike, job_num: int = 0) -> Outcome:
    """Train and measure one run directory (see the module docstring); never raises for a failed run."""
    run_dir = Path(run_dir)
    measure_cfg = dict(cfg.get("measure") or {})
    if complete(run_dir, measure_cfg):
        return _finished_before(run_dir)
    lock = run_lock(run_dir)
    if not lock.acquire(tries=5):
        say(f"skipped, running in another process -> {run_dir}")
        return Outcome("running", run_dir, message="running in another process")
    gpu: Optional[Lock] = None
    try:
        if complete(run_dir, measure_cfg):  # finished by another process since the first look
            return _finished_before(run_dir)
        lock.write_holder(job=job_num)
        _clear_stale(run_dir)
        metrics = read_json(run_dir / "metrics.json")  # trained before, measures still to do
        if metrics is None:
            try:
                validate(cfg, where=str(run_dir))
                cfg, gpu = _place(cfg, job_num)
                metrics = _train(cfg, run_dir)
            except Exception as e:  # recorded per run, so that a sweep survives it
                return Outcome("failed", run_dir, message=record_failure(run_dir, e, "train"))
            if metrics.get("status") != "done":
                epoch = int(metrics.get("epochs") or 0) + 1
                say(f"DIVERGED: non-finite training loss in epoch {epoch} -> {run_dir}", err=True)
                return Outcome("diverged", run_dir, metrics)
            say(f"done: {_summary(metrics)} -> {run_dir}")
        if measure_cfg.get("enabled", False):
            try:
                _measure(cfg, run_dir, measure_cfg)
            except Exception as e:
                return Outcome("failed", run_dir, metrics, record_failure(run_dir, e, "measures"))
        return Outcome("trained", run_dir, metrics)
    finally:
        if gpu is not None:
            gpu.release()
        lock.release()


def _finished_before(run_dir: Path) -> Outcome:
    m = read_json(run_dir / "metrics.json") or {}
    say(" ".join(filter(None, [f"finished before ({m.get('status')}):", _summary(m), f"-> {run_dir}"])))
    return Outcome("finished_before", run_dir, m)


def _clear_stale(run_dir: Path) -> None:
    """Under the lock: drop a previous failure (the run is retried) and a killed writer's temporaries."""
    old = read_json(run_dir / FAILURE)
    if old is not None or (run_dir / FAILURE).exists():
        say(f"retrying after an earlier failure ({(old or {}).get('error', '?')}) -> {run_dir}")
        (run_dir / FAILURE).unlink(missing_ok=True)
    for p in run_dir.glob(".*.tmp"):
        if any(p.name.startswith(f".{name}.") for name in RUN_FILES):
            p.unlink(missing_ok=True)


def _train(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    from srr_bench.train import train

    if (run_dir / "checkpoint.pt").exists():
        say(f"resuming from checkpoint.pt -> {run_dir}")
    return train(cfg, run_dir)


def _place(cfg: dict[str, Any], job_num: int) -> tuple[dict[str, Any], Optional[Lock]]:
    """``train.device: auto`` on a machine with several visible GPUs: claim one free GPU slot."""
    if cfg["train"].get("device", "auto") != "auto":
        return cfg, None
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n <= 1:
        return cfg, None
    index, slot = claim_gpu(n, first=job_num % n)
    torch.cuda.set_device(index)
    return {**cfg, "train": {**cfg["train"], "device": f"cuda:{index}"}}, slot


def _measure(cfg: dict[str, Any], run_dir: Path, measure_cfg: dict[str, Any]) -> None:
    try:
        from measures import compute
    except ImportError:
        return  # the measures package is optional: train-only sweeps still work
    from srr_bench.train import resolve_device

    t0 = time.perf_counter()
    out = compute(run_dir, names=measure_names(measure_cfg), exclude=list(measure_cfg.get("exclude") or []),
                  settings=measure_settings(measure_cfg), device=resolve_device(cfg["train"].get("device", "auto")),
                  batch_size=int(measure_cfg.get("batch_size", 256)))
    failed = sorted((out or {}).get("failures") or {})
    note = f", {len(failed)} failed ({', '.join(failed)})" if failed else ""
    say(f"measured: {len((out or {}).get('values') or {})} values{note} in {time.perf_counter() - t0:.1f}s -> {run_dir}")
