"""Fault tolerance of whole sweeps (scaled small, on digits, CPU):

- an 8-run sweep SIGKILLed (its whole process group) at seeded random moments and
  relaunched each time ends with the same table as an uninterrupted sweep (all but wall
  times), never retrains or rewrites a finished run, and leaves no truncated file;
- two sweeps launched into one directory at once train every run exactly once.
"""
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from srr_bench.rundir import CHECKPOINT, METRICS
from sweeps.state import complete, run_state
from sweeps.status import find_run_dirs, sweep_status

ROOT = Path(__file__).resolve().parents[1]
TRAIN = "from sweeps.cli import train_main; train_main()"
GRID = ["model=crate,crate_n", "optim.lr=1e-3,3e-3", "seed=0,1"]  # 8 runs

try:
    import measures  # noqa: F401

    MEASURE = {"enabled": True, "names": ["l2", "srr"]}
    MEASURE_ARGS = ["measure.names=[l2,srr]"]
except ImportError:
    MEASURE = {"enabled": False}
    MEASURE_ARGS = ["measure=none"]

COMMON = ["train.epochs=4", "train.device=cpu", "train.progress=false", *MEASURE_ARGS]


def launch(out: Path, log: Path, grid=GRID) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with open(log, "a") as f:
        return subprocess.Popen([sys.executable, "-c", TRAIN, "-m", f"hydra.sweep.dir={out}", *COMMON, *grid],
                                cwd=out.parent, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def run_to_end(out: Path, log: Path, grid=GRID) -> None:
    p = launch(out, log, grid)
    assert p.wait(timeout=600) == 0, log.read_text()[-3000:]


def table(sweep: Path):
    from analysis.collect import collect

    df = collect(sweep, log=lambda _: None)
    drop = [c for c in df.columns if c == "run_dir" or c.endswith("wall_s")]
    return df.drop(columns=drop).sort_values("run_id").reset_index(drop=True)


def fingerprint(run: Path) -> dict:
    return {p.name: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(run.iterdir()) if p.is_file() and p.name != ".lock"}


def assert_nothing_corrupt(sweep: Path) -> None:
    for p in sweep.rglob("*"):
        if not p.is_file() or ".submitit" in p.parts:
            continue
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".pt":
            torch.load(p, weights_only=True)
        elif p.suffix == ".yaml" and p.name != "multirun.yaml":  # multirun.yaml: Hydra's, rewritten at launch
            yaml.safe_load(p.read_text())


def resumable(run: Path) -> bool:
    """An unfinished run that a relaunch resumes rather than restarts."""
    return (run / CHECKPOINT).exists() and not (run / METRICS).exists()


@pytest.mark.slow
def test_sigkilled_sweep_relaunched_ends_as_an_uninterrupted_one(tmp_path):
    reference, out = tmp_path / "reference", tmp_path / "killed"
    run_to_end(reference, tmp_path / "reference.log")

    rng = random.Random(20240611)
    log = tmp_path / "killed.log"
    finished: dict[Path, dict] = {}  # run dir -> its files when first seen complete
    resumable_seen = 0  # kills that left a run interrupted after a checkpoint
    k = 0
    # Five kills at seeded moments; then, until one run got through between kills and one kill
    # left a run with a checkpoint to resume from (a slow or fast machine can miss both with
    # fixed windows), kills aimed at the moment a run completes, or at the moment a checkpoint
    # of an unfinished run appears.
    while k < 5 or (k < 12 and not (finished and resumable_seen)):
        k += 1
        started = log.read_text().count("\t#0 : ") if log.exists() else 0
        p = launch(out, log)
        while p.poll() is None and log.read_text().count("\t#0 : ") == started:  # startup: imports, grid check
            time.sleep(0.02)
        if k <= 5 or not resumable_seen:
            deadline = time.monotonic() + rng.uniform(0.5, 6.0)  # a seeded moment within the runs
            while p.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
        if k > 5 and not finished:  # a loaded machine may finish no run within the windows
            while p.poll() is None and not any(complete(run, MEASURE) for run in find_run_dirs(out)):
                time.sleep(0.05)
        elif k > 5 and not resumable_seen:
            while p.poll() is None and not any(resumable(run) for run in find_run_dirs(out)):
                time.sleep(0.01)
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)  # the sweep and every child of it
        p.wait()
        assert_nothing_corrupt(out)
        for run, files in finished.items():
            assert fingerprint(run) == files, f"finished run {run.name} was touched"
        for run in find_run_dirs(out):
            if run not in finished and complete(run, MEASURE):
                finished[run] = fingerprint(run)
            resumable_seen += run_state(run).state == "interrupted" and resumable(run)
    assert resumable_seen >= 1, "no kill landed inside a run after its first checkpoint"

    assert 0 < len(finished) < 8
    run_to_end(out, log)
    assert f"resuming from {CHECKPOINT}" in log.read_text()
    for run, files in finished.items():
        assert fingerprint(run) == files, f"finished run {run.name} was touched"
    assert_nothing_corrupt(out)
    assert not list(out.rglob(".*.tmp")) and not list(out.rglob(CHECKPOINT))
    assert sweep_status(out)["counts"]["done"] == 8
    import pandas.testing

    pandas.testing.assert_frame_equal(table(out), table(reference))


@pytest.mark.slow
def test_two_sweeps_into_one_directory_lose_no_run_and_train_each_once(tmp_path):
    out, grid = tmp_path / "shared", ["model=crate,crate_n", "optim.lr=1e-3,3e-3"]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [launch(out, log, grid) for log in logs]
    for p, log in zip(procs, logs):
        assert p.wait(timeout=600) == 0, log.read_text()[-3000:]
    report = sweep_status(out)
    assert report["total"] == 4 and report["counts"]["done"] == 4
    text = "".join(log.read_text() for log in logs)
    for run in find_run_dirs(out):
        assert complete(run, MEASURE)
        assert text.count(f"-> {run}\n") >= 1  # the other sweep may not dispatch it once it is finished
        trained = sum(line.startswith("done: ") and line.endswith(f"-> {run}") for line in text.splitlines())
        assert trained == 1, f"{run.name} trained {trained} times"


def test_srr_status_keeps_the_small_files_of_finished_runs_only(small_cfg, tmp_path, capsys):
    import shutil

    from srr_bench.rundir import LIGHT_FILES
    from sweeps.runner import run_job
    from sweeps.state import run_state
    from sweeps.status import main

    sweep = tmp_path / "sweep"
    assert run_job(small_cfg("measure.names=[l2]"), sweep / "done-run").state == "trained"
    shutil.copytree(sweep / "done-run", sweep / "unmeasured-run")
    (sweep / "unmeasured-run" / "measures.json").unlink()
    assert main([str(sweep), "--keep-light", str(tmp_path / "kept")]) == 0
    assert "kept 1 " in capsys.readouterr().out
    kept = tmp_path / "kept" / "done-run"
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["done-run"]
    assert sorted(p.name for p in kept.iterdir()) == sorted(LIGHT_FILES)
    assert run_state(kept, measure_cfg="run").state == "done"
