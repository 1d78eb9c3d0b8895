"""Sweeps beyond one process: finished runs are not dispatched (any launcher), submitit's
local executor (pre-emption, requeue, a killed job), Ray on a local two-worker cluster,
and srr-measure under the run lock.

The end-to-end tests train a tiny digits grid (2 runs of 3 epochs of ``size=mini``, one
thread each) and compare every metric except wall time with the same runs trained one
after another by the basic launcher.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sweeps import grid
from srr_bench.locking import holder, run_lock
from sweeps.runner import run_job
from srr_bench.rundir import CHECKPOINT
from sweeps.state import complete
from sweeps.sweeper import dispatch_line, unfinished
from tests import test_sweeps
from tests.test_sweeps import FAST, env, srr_train

GRID = ["train.epochs=3", "train.threads=1", "train.device=cpu", "train.progress=false", "measure=none",
        "train.checkpoint_every=1"]
SEEDS = "seed=0,1"
SWEEPER = "hydra_plugins.srr_sweeper.skip_finished.SkipFinishedSweeper"


def multirun_config(*overrides: str):
    """The primary config and config loader of ``srr-train -m OVERRIDES`` (sweep values kept as sweeps)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from srr_bench.config import CONF_DIR, register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        return loader.load_configuration("config", list(overrides), run_mode=RunMode.MULTIRUN), loader


def finished(run_dir: Path, status: str = "done") -> None:
    """A finished run kept without its weights (a light copy: what srr_bench.rundir reads as finished)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text("seed: 0\nmodel: {}\ndata: {}\noptim: {}\ntrain: {}\n")
    (run_dir / "hparams.json").write_text("{}")
    (run_dir / "history.csv").write_text("epoch\n0\n")
    (run_dir / "metrics.json").write_text(json.dumps({"status": status}))


def metrics(sweep: Path) -> dict:
    """Run directory name -> metrics.json without its wall times."""
    out = {}
    for path in sorted(sweep.glob("*/metrics.json")):
        m = json.loads(path.read_text())
        out[path.parent.name] = {k: v for k, v in m.items() if not k.endswith("wall_s")}
    return out


def launched(text: str) -> int:
    """Jobs handed to a launcher: Hydra's launchers log one "\\t#<num> : <overrides>" line per job."""
    return sum(1 for line in text.splitlines() if line.split("] ", 1)[-1].startswith("\t#"))


def launch(sweep: Path, log: Path, *args: str, environ: dict = None) -> subprocess.Popen:
    with open(log, "a") as f:
        cmd = [sys.executable, "-c", test_sweeps.TRAIN, "-m", f"hydra.sweep.dir={sweep}", *GRID, *args]
        return subprocess.Popen(cmd, cwd=sweep.parent, env=environ or env(), stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)


def holder_after_checkpoint(sweep: Path, proc: subprocess.Popen, timeout: float = 300) -> tuple[Path, int]:
    """Wait until a run of ``sweep`` has saved a checkpoint and is held: (run dir, holder pid)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for ckpt in sweep.glob(f"*/{CHECKPOINT}"):
            h = holder(ckpt.parent / ".lock") or {}
            if h.get("pid"):
                return ckpt.parent, int(h["pid"])
        time.sleep(0.02)
    raise AssertionError(f"no run of {sweep} reached a checkpoint (sweep rc {proc.poll()})")


@pytest.fixture(scope="module")
def reference_sweep(tmp_path_factory) -> Path:
    """The tiny grid trained by the basic launcher."""
    sweep = tmp_path_factory.mktemp("reference") / "sweep"
    r = srr_train("-m", f"hydra.sweep.dir={sweep}", *GRID, SEEDS, cwd=sweep.parent)
    assert r.returncode == 0, r.stderr[-3000:]
    found = metrics(sweep)
    assert len(found) == 2 and all(m["status"] == "done" for m in found.values())
    return sweep


@pytest.fixture
def reference(reference_sweep) -> dict:
    """Run dir name -> metrics of the reference sweep."""
    return metrics(reference_sweep)


# --- finished runs are not dispatched -----------------------------------------------------

def test_the_sweeper_is_hydras_basic_grid_less_finished_runs(tmp_path):
    master, loader = multirun_config(f"hydra.sweep.dir={tmp_path}", *FAST, "seed=0,1,2,3")
    assert master.hydra.sweeper._target_ == SWEEPER
    jobs = grid.jobs(master, loader)
    assert grid.jobs(master, loader) is jobs  # the callback and the sweeper compose once
    done, diverged, failed, new = jobs
    for job, status in ((done, "done"), (diverged, "diverged"), (failed, "done")):
        finished(job.run_dir, status)
    (failed.run_dir / "failure.json").write_text(json.dumps({"error": "measures failed"}))
    todo, n_finished = unfinished(master, loader, [j.overrides for j in jobs])
    assert todo == [failed.overrides, new.overrides] and n_finished == 2
    assert [j.overrides in todo for j in jobs] == [not complete(j.run_dir, j.cfg["measure"]) for j in jobs]
    assert dispatch_line(2, 2, "hydra._internal.core_plugins.basic_launcher.BasicLauncher") == \
        "dispatching 2 of 4 jobs to BasicLauncher (2 finished runs not dispatched)"
    assert dispatch_line(0, 4, "x.Y") == "nothing to dispatch: all 4 runs are finished"
    assert dispatch_line(4, 0, "x.Y") == "dispatching 4 jobs to Y"
    assert dispatch_line(1, 1, "x.Y") == "dispatching 1 of 2 jobs to Y (1 finished run not dispatched)"


def test_the_sweeper_plugin_is_installed_with_the_package(tmp_path):
    """Hydra finds plugins under the hydra_plugins namespace only: the installed package (not
    the source tree on sys.path) must provide it, or srr-train -m fails with "Unknown plugin class"."""
    bare = {k: v for k, v in env().items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", "import hydra_plugins.srr_sweeper.skip_finished"], cwd=tmp_path,
                       env=bare, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, "hydra_plugins is not packaged (pyproject packages.find include): " + r.stderr[-300:]


def test_a_done_run_whose_measures_are_missing_is_dispatched(tmp_path):
    pytest.importorskip("measures")
    master, loader = multirun_config(f"hydra.sweep.dir={tmp_path}", *FAST[:-1], "measure.names=[l2]", "seed=0")
    (job,) = grid.jobs(master, loader)
    finished(job.run_dir)
    assert unfinished(master, loader, [job.overrides]) == ([job.overrides], 0)


@pytest.mark.slow
def test_a_relaunch_hands_only_unfinished_jobs_to_the_launcher(tmp_path, capsys):
    """In process, Hydra's own sweep loop with the basic launcher; the task counts its calls."""
    from hydra.core.plugins import Plugins
    from hydra.core.utils import JobReturn
    from hydra._internal.callbacks import Callbacks
    from hydra.types import HydraContext

    master, loader = multirun_config(f"hydra.sweep.dir={tmp_path}", *FAST, "seed=0,1,2")
    calls = []

    def task(cfg) -> None:
        calls.append(int(cfg.seed))

    def sweep() -> list:
        calls.clear()
        sweeper = Plugins.instance().instantiate_sweeper(
            config=master, hydra_context=HydraContext(config_loader=loader, callbacks=Callbacks()), task_function=task)
        assert type(sweeper).__module__ + "." + type(sweeper).__name__ == SWEEPER
        return sweeper.sweep(arguments=list(master.hydra.overrides.task))

    jobs = grid.jobs(master, loader)
    assert [len(batch) for batch in sweep()] == [3] and sorted(calls) == [0, 1, 2]
    for job in jobs[:2]:  # two runs finish
        finished(job.run_dir)
    results = sweep()
    assert calls == [2] and isinstance(results[0][0], JobReturn)
    assert "dispatching 1 of 3 jobs to BasicLauncher (2 finished runs not dispatched)" in capsys.readouterr().err
    finished(jobs[2].run_dir, "diverged")
    assert sweep() == [] and calls == []
    assert "nothing to dispatch: all 3 runs are finished" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib", "submitit_local"])
def test_a_relaunch_with_k_finished_runs_launches_only_the_rest(launcher, reference_sweep, reference, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(reference_sweep, sweep)  # 2 runs finished
    r = srr_train("-m", f"hydra.sweep.dir={sweep}", *GRID, "seed=0,1,2", f"launcher={launcher}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "dispatching 1 of 3 jobs" in r.stderr and "(2 finished runs not dispatched)" in r.stderr
    assert launched(r.stdout + r.stderr) == 1
    if launcher == "submitit_local":  # one job submitted, nothing else
        assert len(list((sweep / ".submitit").glob("*/*_submitted.pkl"))) == 1
    assert {k: v for k, v in metrics(sweep).items() if k in reference} == reference
    r = srr_train("-m", f"hydra.sweep.dir={sweep}", *GRID, "seed=0,1,2", f"launcher={launcher}", cwd=tmp_path)
    assert r.returncode == 0 and "nothing to dispatch: all 3 runs are finished" in r.stderr
    assert launched(r.stdout + r.stderr) == 0


# --- submitit's local executor: pre-emption, requeue, a killed job ----------------------

@pytest.mark.slow
def test_submitit_preempted_job_is_requeued_and_resumes_from_its_checkpoint(reference, tmp_path):
    """SIGUSR2 is SLURM's (and submitit's) pre-emption / time-out signal: submitit calls the
    launcher's checkpoint(), the job exits for requeue, its executor starts it again."""
    sweep, log = tmp_path / "sweep", tmp_path / "sweep.log"
    proc = launch(sweep, log, "seed=0", "launcher=submitit_local")
    try:
        run, pid = holder_after_checkpoint(sweep, proc)
        os.kill(pid, signal.SIGUSR2)
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    job_logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*.*[oe][ur][tr]"))
    assert "preempted" in job_logs and "Requeued job" in job_logs
    assert f"resuming from {CHECKPOINT} -> {run}" in job_logs
    assert metrics(sweep) == {run.name: reference[run.name]}


@pytest.mark.slow
def test_submitit_job_killed_mid_run_resumes_on_relaunch(reference, tmp_path):
    sweep, log = tmp_path / "sweep", tmp_path / "sweep.log"
    proc = launch(sweep, log, "seed=1", "launcher=submitit_local")
    try:
        run, pid = holder_after_checkpoint(sweep, proc)
        os.kill(pid, signal.SIGKILL)  # the job's process: no handler runs, no requeue
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (run / "metrics.json").exists() and (run / CHECKPOINT).exists()
    r = srr_train("-m", f"hydra.sweep.dir={sweep}", *GRID, "seed=1", "launcher=submitit_local", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "dispatching 1 job to LocalLauncher" in r.stderr
    job_logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*.*[oe][ur][tr]"))
    assert f"resuming from {CHECKPOINT} -> {run}" in job_logs
    assert metrics(sweep) == {run.name: reference[run.name]}


# --- Ray: a local cluster of two workers ------------------------------------------------

def ray_env() -> dict:
    # Every Ray address on the loopback (Ray would otherwise advertise the machine's
    # outward IP, even with --node-ip-address=127.0.0.1); workers import hydra_plugins.srr_sweeper.
    return dict(env(), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")


def ray_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()"]
    return subprocess.run([*cmd, *args], env=ray_env(), capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_cluster():
    """``ray start --head`` on 127.0.0.1 with 2 CPUs (two runs at once); stopped whatever happens."""
    pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]')")
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="hydra-ray-launcher is not installed")
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths live here
    port = free_port()
    try:
        r = ray_cli("start", "--head", "--num-cpus=2", "--num-gpus=0", f"--port={port}", f"--temp-dir={temp}",
                    "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats")
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
        yield f"127.0.0.1:{port}"
    finally:
        ray_cli("stop", "--force")
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_ray_sweep_completes_resumes_a_killed_worker_and_matches_the_basic_launcher(ray_cluster, reference,
                                                                                    tmp_path):
    sweep, log = tmp_path / "sweep", tmp_path / "sweep.log"
    ray = ["launcher=ray", f"hydra.launcher.ray.init.address={ray_cluster}"]
    proc = launch(sweep, log, SEEDS, *ray, environ=ray_env())
    try:
        run, pid = holder_after_checkpoint(sweep, proc)
        os.kill(pid, signal.SIGKILL)  # the Ray worker process running this run
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert launched(text) == 2
    assert f"resuming from {CHECKPOINT} -> {run}" in text  # Ray reran the task; it resumed
    assert metrics(sweep) == reference
    r = srr_train("-m", f"hydra.sweep.dir={sweep}", *GRID, SEEDS, *ray, cwd=tmp_path)
    assert r.returncode == 0 and "nothing to dispatch: all 2 runs are finished" in r.stderr
    assert launched(r.stdout + r.stderr) == 0  # nothing handed to Ray


# --- srr-measure takes the run lock -----------------------------------------------------

HOLD = "import sys; from srr_bench.locking import run_lock; l = run_lock(sys.argv[1]); assert l.acquire(); " \
       "l.write_holder(job=0); print('held', flush=True); sys.stdin.read()"


@pytest.mark.slow
def test_srr_measure_skips_a_run_locked_by_another_process(small_cfg, tmp_path, capsys):
    pytest.importorskip("measures")
    from measures.cli import main as measure_main

    run = tmp_path / "run"
    assert run_job(small_cfg("train.epochs=1", "measure=none"), run).state == "trained"
    holder_proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True, env=env())
    try:
        assert holder_proc.stdout.readline().strip() == "held"
        assert measure_main([str(run), "--measures", "l2", "-q"]) == 0
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"srr-measure: {run}: skipped, in use by pid {holder_proc.pid} on {socket.gethostname()} "
                       "(training or measuring); measure it when that ends"]
        assert not (run / "measures.json").exists()
    finally:
        holder_proc.stdin.close()
        holder_proc.wait(timeout=60)
    assert measure_main([str(run), "--measures", "l2", "-q"]) == 0  # released: measured now
    assert "l2" in json.loads((run / "measures.json").read_text())["values"]
    assert run_lock(run).acquire()  # srr-measure released it
