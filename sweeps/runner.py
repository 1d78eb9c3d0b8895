"""One job of a sweep: train a run directory (once), then measure it.

``run_job(cfg, run_dir)`` is what ``srr-train`` calls for every job, under any launcher:

1. a complete run (metrics.json, and measures.json when measures are on, no damaged file)
   is returned as is, without opening anything in its directory for writing: never retrained;
2. otherwise the job takes ``run_dir/.lock`` without waiting; when another process holds
   it, the job reports the run as running elsewhere and moves on; a directory it cannot
   write (read-only, or a file in the way) is reported in one line;
3. under the lock: a previous failure.json is removed (the run is retried), temporary
   files of a killed writer are cleared, the config is checked, the run's thread count
   and device are applied (to every stage: a measure-only job runs as its training did),
   damaged files are repaired (``srr_bench.rundir.RunDir.repair``: derived files rewritten or
   recomputed, a run whose record cannot be trusted retrained, each said in one line),
   and ``train`` starts or resumes from its checkpoint;
4. a done run is measured (``measure.names``) when ``measure.enabled`` and the measures
   package is installed; measures already stored are not recomputed.

A failure (an exception in training or measuring) is written to failure.json with its
reason and traceback and printed at once in one line; divergence is recorded by ``train``
as ``status: diverged`` with its reason. Neither stops the sweep. KeyboardInterrupt and
SIGKILL are not failures: the run stays resumable.
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

from srr_bench.config import RunConfig, measure_section
from srr_bench.locking import Lock, claim_gpu, run_lock
from .schema import validate
from srr_bench.rundir import FILES as RUN_FILES, METRICS, TRAINING_OUTPUTS, RunDir  # noqa: F401
from .state import FAILURE, complete, measure_names, measure_settings, read_json

# The temporary siblings of the run files (".<name>.*.tmp", from srr_bench.io.atomic_write)
# are left behind only by a killed writer.


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
    try:
        print(msg, file=sys.stderr if err else sys.stdout, flush=True)
    except BrokenPipeError:  # the reader went away (srr-train ... | head): end quietly, the run stays resumable
        from srr_bench.io import closed_pipe_exit

        raise SystemExit(closed_pipe_exit()) from None


def one_line(e: BaseException) -> str:
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return f"{type(e).__name__}: {' '.join(msg.split())}"


def record_failure(run_dir: Path, e: BaseException, stage: str) -> str:
    from srr_bench.io import write_json

    msg = one_line(e)
    note = ""
    if run_dir.is_dir():  # deleted meanwhile: not recreated with a failure only
        try:
            write_json(run_dir / FAILURE, dict(error=msg, stage=stage, traceback=traceback.format_exc(),
                                               host=socket.gethostname(), pid=os.getpid(),
                                               time=time.strftime("%Y-%m-%dT%H:%M:%S%z")))
        except OSError as w:  # the disk that failed the run cannot take its record either: said here only
            note = f" [{FAILURE} not written: {w.strerror or w}]"
    say(f"FAILED ({stage}): {msg} -> {run_dir}{note}", err=True)
    return msg


def _summary(m: dict[str, Any]) -> str:
    return f"test_acc={m['test_acc']:.4f} gap_acc={m['gap_acc']:.4f}" if m.get("status") == "done" else ""


def run_job(cfg: dict[str, Any], run_dir: str | os.PathLike, job_num: int = 0) -> Outcome:
    """Train and measure one run directory (see the module docstring); never raises for a failed run."""
    run_dir = Path(run_dir)
    measure_cfg = measure_section(cfg)  # measure.settings and the run's srr section
    if complete(run_dir, measure_cfg):
        return _finished_before(run_dir)
    lock = run_lock(run_dir)
    try:
        acquired = lock.acquire(tries=5)
    except OSError as e:  # a read-only directory, a file where the directory should be, ...
        msg = f"cannot write in the run directory: {e.strerror or e} ({e.filename or run_dir})"
        say(f"FAILED: {msg} -> {run_dir}", err=True)
        return Outcome("failed", run_dir, message=msg)
    if not acquired:
        say(f"skipped, running in another process -> {run_dir}")
        return Outcome("running", run_dir, message="running in another process")
    gpu: Optional[Lock] = None
    try:
        if complete(run_dir, measure_cfg):  # finished by another process since the first look
            return _finished_before(run_dir)
        lock.write_holder(job=job_num)
        _clear_stale(run_dir)
        try:
            run, gpu = _place(validate(cfg, where=str(run_dir)), job_num)  # the typed config, built once
            device = _apply_settings(run)
            repair(run.plain, run_dir)
        except Exception as e:
            return Outcome("failed", run_dir, message=record_failure(run_dir, e, "setup"))
        metrics = read_json(run_dir / METRICS)  # trained before, measures still to do
        if metrics is None:
            try:
                metrics = _train(run, run_dir)
            except Exception as e:  # recorded per run, so that a sweep survives it
                return Outcome("failed", run_dir, message=record_failure(run_dir, e, "train"))
            if metrics.get("status") != "done":
                say(f"DIVERGED: {metrics.get('diverged_reason') or 'non-finite training loss'} -> {run_dir}", err=True)
                return Outcome("diverged", run_dir, metrics)
            say(f"done: {_summary(metrics)} -> {run_dir}")
        if measure_cfg.get("enabled", False):
            try:
                _measure(run_dir, measure_cfg, device)
            except Exception as e:
                return Outcome("failed", run_dir, metrics, record_failure(run_dir, e, "measures"))
        return Outcome("trained", run_dir, metrics)
    finally:
        if gpu is not None:
            gpu.release()
        lock.release()


def _apply_settings(run: RunConfig) -> Any:
    """The run's ``train.threads`` and ``train.device``, for every stage of the job; returns the device."""
    import torch

    from srr_bench.device import resolve_device

    if run.train.threads:
        torch.set_num_threads(run.train.threads)
    return resolve_device(run.train.device)


def repair(cfg: dict[str, Any], run_dir: Path) -> list[str]:
    """Under the lock: ``RunDir.repair`` (what ``srr-status`` names as damage, fixed; one line said per file)."""
    return RunDir(run_dir).repair(cfg, say)


def _finished_before(run_dir: Path) -> Outcome:
    m = read_json(run_dir / METRICS) or {}
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


def _train(run: RunConfig, run_dir: Path) -> dict[str, Any]:
    from srr_bench.train import train

    ckpt = RunDir(run_dir).checkpoint
    if ckpt.exists():
        say(f"resuming from {ckpt.name} -> {run_dir}")
    return train(run, run_dir)


def _place(run: RunConfig, job_num: int) -> tuple[RunConfig, Optional[Lock]]:
    """``train.device: auto`` on a machine with several visible GPUs: claim one free GPU slot
    (the run's device, not its identity: ``train.device`` is not hashed)."""
    if run.train.device != "auto":
        return run, None
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n <= 1:
        return run, None
    index, slot = claim_gpu(n, first=job_num % n)
    torch.cuda.set_device(index)
    device = f"cuda:{index}"
    plain = {**run.plain, "train": {**run.plain["train"], "device": device}}
    return run.model_copy(update=dict(train=run.train.model_copy(update=dict(device=device)), plain=plain)), slot


def _measure(run_dir: Path, measure_cfg: dict[str, Any], device: Any) -> None:
    try:
        from measures import compute
    except ImportError:
        return  # the measures package is optional: train-only sweeps still work

    t0 = time.perf_counter()
    out = compute(run_dir, names=measure_names(measure_cfg), exclude=list(measure_cfg.get("exclude") or []),
                  settings=measure_settings(measure_cfg), device=device, batch_size=int(measure_cfg.get("batch_size", 256)))
    failed = sorted((out or {}).get("failures") or {})
    note = f", {len(failed)} failed ({', '.join(failed)})" if failed else ""
    say(f"measured: {len((out or {}).get('values') or {})} values{note} in {time.perf_counter() - t0:.1f}s -> {run_dir}")
