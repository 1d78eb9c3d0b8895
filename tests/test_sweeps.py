"""Sweeps: the config tree and its schema, experiment grids, launchers, run locks, the job
runner (skip / resume / retry / measure), GPU slots and ``srr-status``."""
import functools
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from srr_bench.config import CONF_DIR, RunConfig, compose, register_resolvers
from srr_bench.runs import run_id
from sweeps import grid
from srr_bench import locking
from sweeps.runner import run_job
from sweeps.schema import ConfigError, validate
from srr_bench.rundir import CHECKPOINT, FINAL, INIT
from sweeps.state import complete, run_state
from sweeps.status import format_status, main as status_main, sweep_status

ROOT = Path(__file__).resolve().parents[1]
TRAIN = "from sweeps.cli import train_main; train_main()"
FAST = ["train.epochs=1", "train.device=cpu", "train.progress=false", "measure=none"]

try:
    import measures  # noqa: F401

    HAVE_MEASURES = True
except ImportError:
    HAVE_MEASURES = False


def env() -> dict:
    # One thread per process: tiny models run faster so, and results do not depend on the load.
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def srr_train(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", TRAIN, *args], capture_output=True, text=True, cwd=cwd,
                          env=env(), timeout=timeout)


def master_config(*overrides: str):
    """The primary multirun config (hydra node included) and a config loader, as srr-train -m sees them."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        master = hydra_compose("config", overrides=list(overrides), return_hydra_config=True)
        return master, GlobalHydra.instance().config_loader()


@functools.lru_cache(maxsize=None)
def experiment_jobs(*overrides: str) -> tuple:
    """The jobs of the multirun config with these overrides, composed once per test session (Hydra
    composes a 128-run grid in about 25 s here); shared read-only by the tests that inspect it."""
    master, loader = master_config(*overrides)
    return tuple(grid.jobs(master, loader))


def grid_axes(overrides: list[list[str]]) -> dict[str, set]:
    axes: dict[str, set] = {}
    for job in overrides:
        for o in job:
            k, _, v = o.partition("=")
            axes.setdefault(k, set()).add(v)
    return {k: v for k, v in axes.items() if len(v) > 1}


# --- config tree and schema -------------------------------------------------------------

def test_demo_grid_has_16_models_over_variant_and_two_more_axes():
    jobs = experiment_jobs("experiment=demo")
    assert len(jobs) >= 16 and len({j.run_id for j in jobs}) == len(jobs)
    axes = grid_axes([j.overrides for j in jobs])
    assert axes["model"] == {"crate", "crate_c", "crate_n", "crate_t"} and len(axes) >= 3
    for j in jobs:
        validate(j.cfg)
        assert j.cfg["data"]["name"] == "digits" and j.run_dir.name.endswith(j.run_id)


def test_cifar10_small_grid_is_the_correlation_study_on_a_cifar_subset():
    master, loader = master_config("experiment=cifar10_small")
    overrides = grid.job_overrides(master, loader)
    axes = grid_axes(overrides)
    assert axes["model"] == {"crate", "crate_c", "crate_n", "crate_t"}
    assert {"optim.lr", "train.batch_size", "model.dropout", "seed"} <= set(axes)
    cfg = compose(["experiment=cifar10_small", *overrides[-1]])
    validate(cfg)
    assert cfg["data"]["name"] == "cifar10" and cfg["data"]["n_train"] <= 10000 and cfg["model"]["dim"] <= 128
    with_folder = compose(["experiment=cifar10_small", "data=imagefolder", "data.options.path=/x/cifar10.tar.gz"])
    validate(with_folder)
    assert with_folder["data"]["n_train"] == cfg["data"]["n_train"]


def test_paper_cifar10_grid_spans_both_widths_and_the_same_axes():
    master, loader = master_config("experiment=paper_cifar10")
    overrides = grid.job_overrides(master, loader)  # 432 jobs: composing them all is the launcher's job
    axes = grid_axes(overrides)
    assert axes["size"] == {"cifar_tiny", "cifar_base"}
    assert axes["model"] == {"crate", "crate_c", "crate_n", "crate_t"}
    assert {"optim.lr", "train.batch_size", "model.dropout", "seed"} <= set(axes)
    widths = set()
    for job in (overrides[0], overrides[-1]):
        cfg = compose(["experiment=paper_cifar10", *job])
        validate(cfg)
        widths.add(cfg["model"]["dim"])
        assert cfg["data"]["name"] == "cifar10" and cfg["data"]["n_train"] is None
    assert widths == {384, 768}


@pytest.mark.parametrize("main, layers, n_layers, dataset", [
    ("reg_cifar10", "reg_layers_cifar10", 12, "cifar10"), ("reg_cifar100", None, 12, "cifar100"),
    ("reg_cifar10_small", "reg_layers_cifar10_small", 4, "cifar10")])
def test_regularization_grids_compare_ce_and_srr_and_share_their_baseline(main, layers, n_layers, dataset):
    master, loader = master_config(f"experiment={main}")
    jobs = grid.jobs(master, loader)
    assert len(jobs) == 24 and len({j.run_id for j in jobs}) == 24  # 4 variants x {CE, CE + SRR} x 3 seeds
    assert grid_axes([j.overrides for j in jobs]) == {"model": {"crate", "crate_c", "crate_n", "crate_t"},
                                                      "reg.alpha": {"0", "0.001"}, "seed": {"0", "1", "2"}}
    for j in jobs:
        validate(j.cfg)
        assert j.cfg["data"]["name"] == dataset and j.cfg["model"]["depth"] == n_layers
        assert j.cfg["train"]["record_layers"]["every"] > 0
    if layers is None:
        return
    master, loader = master_config(f"experiment={layers}")
    layer_jobs = grid.jobs(master, loader)
    choices = {str(j.cfg["reg"]["layers"]) for j in layer_jobs}
    assert choices == ({"2", "4", "6", "8", "10", "12", "random"} if n_layers == 12 else {"1", "2", "3", "4", "random"})
    assert {j.cfg["model"]["name"] for j in layer_jobs} == {"crate"} and {j.cfg["reg"]["alpha"] for j in layer_jobs} == {1e-3}
    assert master.hydra.sweep.dir == f"multirun/{main}"  # one sweep directory: the CE runs are shared
    ce = {j.run_id for j in jobs if j.cfg["reg"]["alpha"] == 0 and j.cfg["model"]["name"] == "crate"}
    same_settings = compose([f"experiment={layers}", "reg.alpha=0", "seed=0"])
    assert run_id(same_settings) in ce  # the layer experiment's CE point is the main grid's run


@pytest.mark.parametrize("launcher,target", [("basic", "BasicLauncher"), ("joblib", "JoblibLauncher"),
                                             ("submitit_local", "LocalLauncher"), ("slurm", "SlurmLauncher")])
def test_launcher_files_select_their_hydra_launcher(launcher, target):
    master, _ = master_config(f"launcher={launcher}")
    assert master.hydra.launcher._target_.endswith(target)
    if launcher == "slurm":
        assert master.hydra.launcher.gpus_per_task == 1 and master.hydra.launcher.max_num_timeout > 0


def test_ray_launcher_file_needs_the_optional_plugin():
    try:
        import hydra_plugins.hydra_ray_launcher  # noqa: F401
    except ImportError:  # Hydra's own error type, not its wording
        from hydra.errors import MissingConfigException

        with pytest.raises(MissingConfigException):
            master_config("launcher=ray")
    else:
        assert master_config("launcher=ray")[0].hydra.launcher._target_.endswith("RayLauncher")


def test_measure_and_launcher_do_not_change_run_identity():
    base = run_id(compose([]))
    assert run_id(compose(["measure=none", "launcher=joblib"])) == base
    assert run_id(compose(["measure.names=[l2]", "launcher=slurm"])) == base


@pytest.mark.parametrize("overrides,message", [  # our lines: the key, what is wrong (or the fix), the value
    (["+train.epoch=3"], "train.epoch: unknown key (did you mean 'epochs'?)"),
    (["optim.lr=abc"], "optim.lr:"),
    (["model.name=crate_x"], "unknown model 'crate_x'"),
    (["data.name=cifar11"], "unknown data set 'cifar11'"),
    (["optim=sgd", "+optim.betas=[0.9,0.99]"], "optim.betas: unknown key"),
    (["model.heads=5"], "dim=64 is not divisible by heads=5"),
    (["train.stop=ce"], "train.stop=ce needs a train.target"),
    (["+seeds=3"], "seeds: unknown key (did you mean 'seed'?)"),
    (["data.n_train=0.5"], "data.n_train:"),
    (["data.n_train=-499"], "got -499"),
    (["data.n_test=0"], "data.n_test:"),
    (["optim.lr=-0.001"], "got -0.001"),
])
def test_schema_names_the_problem(overrides, message):
    with pytest.raises(ConfigError) as e:
        validate(compose(overrides, validate=False))
    assert message in str(e.value)
    with pytest.raises(ConfigError, match=re.escape(message)):  # compose itself checks
        compose(overrides)


@pytest.mark.skipif(not HAVE_MEASURES, reason="measures package not installed")
def test_schema_checks_measure_names_against_the_registry():
    with pytest.raises(ConfigError, match="unknown measure 'nope'"):
        validate(compose(["measure.names=[l2,nope]"]))
    validate(compose(["measure.names=[l2,srr]", "measure.enabled=false"]))


def test_validation_changes_nothing_and_every_option_of_every_group_passes():
    cfg = compose([])
    before = json.dumps(cfg, sort_keys=True)
    validate(cfg)
    assert json.dumps(cfg, sort_keys=True) == before
    for group in ("model", "size", "data", "optim", "measure"):
        for f in sorted((Path(CONF_DIR) / group).glob("*.yaml")):
            validate(compose([f"{group}={f.stem}"]))


# --- locks and GPU slots ----------------------------------------------------------------

_HOLD = """
import sys, time
from srr_bench.locking import Lock
lock = Lock(sys.argv[1])
assert lock.acquire()
lock.write_holder()
print("held", flush=True)
time.sleep(120)
"""


def hold_lock(path: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", _HOLD, str(path)], stdout=subprocess.PIPE, text=True, env=env())
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_locked_run_is_skipped_and_the_lock_dies_with_its_holder(small_cfg, tmp_path):
    run = tmp_path / "run"
    holder = hold_lock(run / ".lock")
    try:
        assert locking.is_locked(run / ".lock")
        assert run_state(run).state == "running" and str(holder.pid) in run_state(run).reason
        out = run_job(small_cfg(), run)
        assert out.state == "running" and sorted(p.name for p in run.iterdir()) == [".lock"]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert not locking.is_locked(run / ".lock")  # SIGKILL leaves no stale lock
    assert run_job(small_cfg("measure=none"), run).state == "trained"


def test_gpu_slots_give_one_gpu_per_job_then_share(tmp_path):
    a, la = locking.claim_gpu(2, first=0, where=tmp_path)
    b, lb = locking.claim_gpu(2, first=0, where=tmp_path)
    c, lc = locking.claim_gpu(2, first=1, where=tmp_path)
    assert (a, b) == (0, 1) and c in (0, 1)  # two GPUs taken: the third job shares one
    la.release()
    assert locking.claim_gpu(2, first=1, where=tmp_path)[0] == 0  # a freed GPU is taken first
    for lock in (lb, lc):
        lock.release()


def test_auto_device_claims_a_free_gpu_when_there_are_several(monkeypatch, tmp_path):
    import torch

    from sweeps import runner

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: None)
    monkeypatch.setattr(locking, "slot_dir", lambda: tmp_path)
    run = RunConfig.read(compose([]))  # train.device: auto
    first, l1 = runner._place(run, job_num=4)
    second, l2 = runner._place(run, job_num=4)
    assert first.train.device == "cuda:1" and second.train.device == "cuda:2"
    assert first.plain["train"]["device"] == "cuda:1" and first.run_id == run.run_id  # the device is not the identity
    pinned = RunConfig.read(compose(["train.device=cpu"]))
    assert runner._place(pinned, job_num=0) == (pinned, None)
    l1.release()
    l2.release()


# --- the job runner ---------------------------------------------------------------------

def snapshot(run: Path) -> dict:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(run.iterdir()) if p.is_file()}


def test_finished_run_is_returned_untouched(small_cfg, tmp_path):
    cfg = small_cfg("measure=none")
    first = run_job(cfg, tmp_path)
    assert first.state == "trained" and complete(tmp_path, cfg["measure"])
    before = snapshot(tmp_path)
    again = run_job(cfg, tmp_path)
    assert again.state == "finished_before" and again.metrics == first.metrics
    assert snapshot(tmp_path) == before


def test_failed_run_is_recorded_then_retried_on_relaunch(small_cfg, tmp_path, capsys):
    bad = small_cfg("measure=none", "data=imagefolder", "data.options.path=missing.tar.gz")
    out = run_job(bad, tmp_path)
    failure = json.loads((tmp_path / "failure.json").read_text())
    assert out.state == "failed" and "DataError" in failure["error"] and failure["stage"] == "train"
    assert "Traceback" in failure["traceback"] and "FAILED (train): DataError" in capsys.readouterr().err
    assert run_state(tmp_path).state == "failed"
    (tmp_path / ".metrics.json.abc123.tmp").write_bytes(b"{half")  # a killed writer's leftover
    good = small_cfg("measure=none")  # e.g. the data has been fixed: same directory, relaunched
    assert run_job(good, tmp_path).state == "trained"
    assert not (tmp_path / "failure.json").exists() and not list(tmp_path.glob(".*.tmp"))
    assert "retrying after an earlier failure (DataError" in capsys.readouterr().out


def test_divergence_is_final_and_reported(small_cfg, tmp_path, capsys):
    cfg = small_cfg("measure=none", "optim=sgd", "optim.lr=1e12", "optim.warmup_epochs=0")
    assert run_job(cfg, tmp_path).state == "diverged"
    assert "DIVERGED" in capsys.readouterr().err
    assert run_state(tmp_path).state == "diverged" and complete(tmp_path, cfg["measure"])
    assert run_job(cfg, tmp_path).state == "finished_before"


def test_interrupted_run_resumes_from_its_checkpoint(small_cfg, tmp_path, capsys, monkeypatch):
    import srr_bench.train as training

    cfg = small_cfg("measure=none", "train.epochs=3")
    reference = training.train(cfg, tmp_path / "reference")
    real = training._checkpoint

    def interrupted_after_saving(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt  # not a failure: the run stays resumable

    monkeypatch.setattr(training, "_checkpoint", interrupted_after_saving)
    with pytest.raises(KeyboardInterrupt):
        run_job(cfg, tmp_path / "run")
    monkeypatch.setattr(training, "_checkpoint", real)
    run = tmp_path / "run"
    assert run_state(run).state == "interrupted" and not (run / "failure.json").exists()
    out = run_job(cfg, run)
    assert out.state == "trained" and f"resuming from {CHECKPOINT}" in capsys.readouterr().out
    drop = lambda m: {k: v for k, v in m.items() if not k.endswith("wall_s")}
    assert drop(out.metrics) == drop(reference)


@pytest.mark.skipif(not HAVE_MEASURES, reason="measures package not installed")
def test_measures_run_at_the_end_and_are_not_redone(small_cfg, tmp_path):
    cfg = small_cfg("measure.names=[l2,params]")
    assert run_job(cfg, tmp_path).state == "trained"
    values = json.loads((tmp_path / "measures.json").read_text())["values"]
    assert {"l2", "params"} <= set(values) and complete(tmp_path, cfg["measure"])
    before = snapshot(tmp_path)
    assert run_job(cfg, tmp_path).state == "finished_before" and snapshot(tmp_path) == before
    more = small_cfg("measure.names=[l2,params,srr]")  # a measure added later: measured, not retrained
    assert not complete(tmp_path, more["measure"])
    assert run_job(more, tmp_path).state == "trained"
    after = snapshot(tmp_path)
    assert all(after[f] == before[f] for f in ("metrics.json", FINAL, INIT, "history.csv"))
    assert "srr" in json.loads((tmp_path / "measures.json").read_text())["values"]


# --- status -----------------------------------------------------------------------------

FAKE_CONFIG = "seed: 0\nmodel: {}\ndata: {}\noptim: {}\ntrain: {}\n"


def fake_run(path: Path, metrics: dict | None = None, failure: str | None = None, checkpoint: bool = False,
             weights: bool = False) -> None:
    """A run's files without a model: finished ones as a copy kept without weights (config,
    hparams, history, metrics) unless ``weights``, an interrupted one with init weights and a
    resumable state (tiny stand-ins in the suite's safetensors formats)."""
    from safetensors.numpy import save_file

    from srr_bench.rundir import MODEL_FORMAT, STATE_FORMAT

    path.mkdir(parents=True)
    for name, text in (("config.yaml", FAKE_CONFIG), ("hparams.json", "{}")):
        (path / name).write_text(text)
    if metrics is not None:
        (path / "metrics.json").write_text(json.dumps(metrics))
        (path / "history.csv").write_text("epoch\n" + "".join(f"{e}\n" for e in range(metrics.get("epochs", 0) + 1)))
    if failure is not None:
        (path / "failure.json").write_text(json.dumps({"error": failure}))
    import numpy as np

    files = [(INIT, MODEL_FORMAT)] * (checkpoint or weights) + [(CHECKPOINT, STATE_FORMAT)] * checkpoint \
        + [(FINAL, MODEL_FORMAT)] * weights
    if files:
        for name, fmt in files:
            save_file({"w": np.zeros(1, np.float32)}, str(path / name), metadata=dict(format=fmt, model_config="{}"))


def test_status_counts_every_state_and_estimates_the_time_left(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    fake_run(sweep / "a", dict(status="done", test_acc=0.9, gap_acc=0.05, epochs=3, wall_s=100.0))
    fake_run(sweep / "b", dict(status="done", test_acc=0.8, gap_acc=0.1, epochs=3, wall_s=300.0))
    fake_run(sweep / "c", dict(status="diverged", epochs=1, wall_s=10.0))
    fake_run(sweep / "d", failure="DataError: no such archive")
    fake_run(sweep / "e", checkpoint=True)
    fake_run(sweep / "f")
    runs = [dict(job=i, run_id=n, dir=n, overrides=[]) for i, n in enumerate("abcdefgh")]
    (sweep / ".srr-sweep").mkdir()
    (sweep / ".srr-sweep" / "grid-0.json").write_text(json.dumps(dict(runs=runs)))
    holder = hold_lock(sweep / "f" / ".lock")
    try:
        report = sweep_status(sweep)
    finally:
        holder.kill()
        holder.wait()
    c = report["counts"]
    assert (c["done"], c["diverged"], c["failed"], c["running"], c["interrupted"], c["pending"]) == (2, 1, 1, 1, 1, 2)
    mean = (100 + 300 + 10) / 3
    assert report["mean_run_s"] == pytest.approx(mean)
    assert report["time_left_s"] == pytest.approx(mean * (2 + 1 + 0.5) / 1)  # pending + interrupted + running/2
    text = format_status(report)
    assert "8 runs" in text and "d: DataError: no such archive" in text and "time left:" in text
    assert status_main([str(sweep), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["pending"] == 2
    assert status_main([str(tmp_path / "nope")]) == 2


@pytest.mark.skipif(not HAVE_MEASURES, reason="measures package not installed")
def test_status_counts_unfinished_measures_and_times_whole_jobs(tmp_path):
    from measures import MEASURES
    from measures.registry import validate_overrides
    from measures.store import _plain

    sweep, measure = tmp_path / "sweep", "measure:\n  enabled: true\n  names: [l2]\n"
    fake_run(sweep / "a", dict(status="done", test_acc=0.9, gap_acc=0.0, epochs=3, wall_s=100.0), weights=True)
    fake_run(sweep / "b", dict(status="done", test_acc=0.9, gap_acc=0.0, epochs=3, wall_s=100.0), weights=True)
    for name in ("a", "b"):
        (sweep / name / "config.yaml").write_text(FAKE_CONFIG + measure)
    settings = _plain(MEASURES.get("l2").settings(validate_overrides({"seed": 0})))
    (sweep / "a" / "measures.json").write_text(json.dumps(dict(
        values={"l2": 1.0}, diagnostics={"l2": {"wall_s": 50.0}}, failures={}, settings={"l2": settings})))
    runs = [dict(job=i, run_id=n, dir=n, overrides=[]) for i, n in enumerate("abc")]
    (sweep / ".srr-sweep").mkdir()
    (sweep / ".srr-sweep" / "grid-0.json").write_text(json.dumps(dict(runs=runs)))
    report = sweep_status(sweep)
    c = report["counts"]
    assert (c["done"], c["interrupted"], c["pending"]) == (1, 1, 1)  # b: trained, not measured
    assert "measures not started" in next(r["reason"] for r in report["runs"] if r["run"] == "b")
    assert report["mean_run_s"] == pytest.approx(150.0)  # training 100 s + measuring 50 s
    assert report["time_left_s"] == pytest.approx(150.0 + 50.0)  # c: a whole job; b: its measures


def test_status_runs_as_a_module(tmp_path):
    fake_run(tmp_path / "x", dict(status="done", test_acc=0.5, gap_acc=0.0, epochs=1, wall_s=1.0))
    r = subprocess.run([sys.executable, "-m", "sweeps.status", str(tmp_path), "--runs"], capture_output=True,
                       text=True, env=env(), timeout=60)
    assert r.returncode == 0 and "1 done" in r.stdout and "done         x test_acc=0.5000" in r.stdout


# --- whole sweeps through srr-train -m ---------------------------------------------------

FAILING_GRID = ["optim=sgd", "optim.warmup_epochs=0", "data=digits,imagefolder", "optim.lr=0.05,1e12"]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib", "submitit_local"])
def test_failures_and_divergence_do_not_stop_the_sweep(launcher, tmp_path):
    out = tmp_path / "sweep"
    r = srr_train("-m", f"hydra.sweep.dir={out}", f"launcher={launcher}", *FAST, *FAILING_GRID, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    counts = sweep_status(out)["counts"]
    assert (counts["done"], counts["diverged"], counts["failed"], counts["pending"]) == (1, 1, 2, 0)
    for run in out.glob("crate-imagefolder-*"):
        assert "DataError" in json.loads((run / "failure.json").read_text())["error"]
    if launcher != "submitit_local":  # submitit keeps each job's output in .submitit/<job>/*.err
        assert r.stderr.count("FAILED (train): DataError") == 2 and "DIVERGED" in r.stderr
    assert "4 runs (1 done, 1 diverged, 2 failed" in r.stderr  # the summary at the end


@pytest.mark.slow
def test_an_invalid_grid_stops_before_any_run(tmp_path):
    out = tmp_path / "sweep"
    r = srr_train("-m", f"hydra.sweep.dir={out}", *FAST, "model.heads=4,5", "+train.epoch=2", cwd=tmp_path)
    assert r.returncode == 2
    assert "invalid config in 2 of 2 jobs; nothing was started" in r.stderr
    assert "train.epoch: unknown key (did you mean 'epochs'?)" in r.stderr and "heads=5" in r.stderr
    assert not out.exists()


@pytest.mark.slow
def test_relaunch_skips_finished_runs_and_status_sees_the_grid(tmp_path):
    out = tmp_path / "sweep"
    first = srr_train("-m", f"hydra.sweep.dir={out}", *FAST, "model=crate,crate_n", "seed=0", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and ".srr-sweep" not in p.parts
              and p.name != "multirun.yaml"}
    second = srr_train("-m", f"hydra.sweep.dir={out}", *FAST, "model=crate,crate_n", "seed=0,1", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "4 runs: 2 finished, 2 new" in second.stderr
    assert second.stdout.count("done: test_acc") == 2  # the finished two are not trained again (nor dispatched)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert sweep_status(out)["counts"]["done"] == 4
    # the grid is known before any run directory exists: a fresh sweep dir with only the manifest
    (out / "multirun.yaml").unlink()
    report = sweep_status(out)
    assert report["grid_source"] == "manifest" and report["total"] == 4


def test_time_left_is_predicted_setting_by_setting_from_the_finished_runs():
    from sweeps.status import predict_seconds

    cost = lambda model, n: 100.0 * (n / 250) * (3.0 if model == "c" else 1.0)  # exactly multiplicative
    done = [("a", 250), ("a", 500), ("a", 1000), ("c", 250), ("c", 500)]
    known = [([f"model={m}", f"data.n_train={n}", "seed=0", "model.dim=64"], cost(m, n)) for m, n in done]
    todo = [["model=c", "data.n_train=1000", "seed=0", "model.dim=64"],  # seen values, new combination
            ["model=a", "data.n_train=250", "seed=1", "model.dim=64"],  # a seed never seen: no effect
            ["model=d", "data.n_train=500", "seed=0", "model.dim=64"]]  # a variant never seen: the average one
    c_1000, a_250_seed1, d_500 = predict_seconds(known, todo)
    assert c_1000 == pytest.approx(1200.0)
    assert a_250_seed1 == pytest.approx(100.0)
    assert d_500 == pytest.approx(200.0 * 3.0 ** 0.4)  # geometric mean of the variants' factors, by frequency 3:2
    assert predict_seconds([([], 100.0), ([], 300.0)], [[], []]) == pytest.approx([200.0, 200.0])  # no grid: the mean
    assert predict_seconds([], [["model=a"]]) == []
