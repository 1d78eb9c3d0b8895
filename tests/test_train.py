"""Training end to end on digits: run directory, stopping rules, resume after SIGKILL, divergence."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from safetensors import safe_open
from safetensors.torch import load_file

from srr_bench.checkpoints import load_model, load_training_state
from srr_bench.rundir import CHECKPOINT, FINAL, INIT
from srr_bench.config import ConfigError
from srr_bench.train import train

METRIC_KEYS = {"train_acc", "test_acc", "train_loss", "test_loss", "gap_acc", "gap_loss", "epochs", "steps",
               "steps_to_ce_0.1", "steps_to_ce_0.01", "sum_train_loss", "converged", "status", "wall_s",
               "train_evals", "train_eval_wall_s", "final_eval_wall_s"}


def test_run_directory_is_complete_and_self_describing(small_cfg, tmp_path):
    cfg = small_cfg("model=crate_n", "train.epochs=3")
    m = train(cfg, tmp_path)
    assert METRIC_KEYS <= set(m) and m["status"] == "done" and m["epochs"] == 3
    assert m["gap_acc"] == pytest.approx(m["train_acc"] - m["test_acc"])
    assert m["gap_loss"] == pytest.approx(m["test_loss"] - m["train_loss"])
    files = {p.name for p in tmp_path.iterdir()}
    assert {"config.yaml", "hparams.json", INIT, FINAL, "history.csv", "metrics.json"} <= files
    assert CHECKPOINT not in files  # removed once the final weights and metrics.json exist
    assert not any(name.endswith((".pt", ".pth", ".pkl")) for name in files)  # nothing written is a pickle
    with safe_open(str(tmp_path / FINAL), framework="pt") as f:
        assert json.loads(f.metadata()["model_config"])["name"] == "crate_n"
    model = load_model(tmp_path / FINAL).eval()
    from srr_bench.train import evaluate
    from srr_bench.data import load_data

    assert evaluate(model, load_data(cfg["data"]), "test")[1] == pytest.approx(m["test_acc"])
    hist = (tmp_path / "history.csv").read_text().splitlines()
    assert len(hist) == 5 and hist[0].startswith("epoch,step,") and hist[1].startswith("0,0,")  # + initialisation
    assert json.loads((tmp_path / "hparams.json").read_text())["variant"] == "crate_n"


def test_finished_run_is_never_retrained(small_cfg, tmp_path):
    cfg = small_cfg()
    first = train(cfg, tmp_path)
    stamp = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert train(cfg, tmp_path) == first
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stamp


def test_deterministic_for_a_seed_and_seed_matters(small_cfg, tmp_path):
    a = train(small_cfg("seed=3", "model.dropout=0.1"), tmp_path / "a")
    b = train(small_cfg("seed=3", "model.dropout=0.1"), tmp_path / "b")
    c = train(small_cfg("seed=4", "model.dropout=0.1"), tmp_path / "c")
    drop = lambda m: {k: v for k, v in m.items() if not k.endswith("wall_s")}
    assert drop(a) == drop(b)
    assert a["train_loss"] != c["train_loss"]


def test_crate_fix_output_operator_does_not_train(small_cfg, tmp_path):
    train(small_cfg("model=crate_fix"), tmp_path)
    init, final = (load_file(str(tmp_path / f)) for f in (INIT, FINAL))
    fixed = [k for k in init if ".out_op.proj." in k]
    assert fixed and all(init[k].equal(final[k]) for k in fixed)
    assert not init["layers.0.mssa.qkv.weight"].equal(final["layers.0.mssa.qkv.weight"])


def test_stop_on_train_accuracy_target(small_cfg, tmp_path):
    m = train(small_cfg("train.epochs=30", "train.stop=acc", "train.target=0.5", "optim.lr=3e-3"), tmp_path)
    assert m["converged"] and m["train_acc"] >= 0.5 and m["epochs"] < 30


def test_unreached_target_is_not_converged(small_cfg, tmp_path):
    m = train(small_cfg("train.epochs=1", "train.stop=ce", "train.target=0.01"), tmp_path)
    assert m["status"] == "done" and not m["converged"] and m["steps_to_ce_0.01"] is None


@pytest.mark.parametrize("opt", ["sgd", "lion"])
def test_other_optimizers_train(small_cfg, tmp_path, opt):
    lr = {"sgd": 0.05, "lion": 1e-3}[opt]
    m = train(small_cfg(f"optim={opt}", f"optim.lr={lr}", "train.epochs=4"), tmp_path)
    assert m["status"] == "done" and m["train_acc"] > 0.3


def test_divergence_is_recorded_not_raised(small_cfg, tmp_path):
    m = train(small_cfg("optim=sgd", "optim.lr=1e12", "optim.warmup_epochs=0"), tmp_path)
    assert m["status"] == "diverged" and not m["converged"]
    assert (tmp_path / "metrics.json").exists() and not (tmp_path / FINAL).exists()


_CHILD = """
import json, sys
from srr_bench.train import train
train(json.loads(sys.argv[1]), sys.argv[2])
"""


@pytest.mark.slow
def test_sigkill_and_resume_ends_with_the_same_metrics(small_cfg, tmp_path):
    # One thread in both processes: a float sum's order, and so its last digits, depend on
    # the thread count, and this process's count is whatever the tests before it left.
    cfg = small_cfg("train.epochs=12", "model.dropout=0.1", "size=mini", "model.dim=64", "seed=5", "train.threads=1")
    before = torch.get_num_threads()
    try:
        reference = train(cfg, tmp_path / "uninterrupted")
    finally:
        torch.set_num_threads(before)
    run = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    kills = 0
    for target_epoch in (3, 7):
        proc = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(cfg), str(run)], env=env)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            ck = run / CHECKPOINT
            if ck.exists():
                try:
                    epoch = load_training_state(ck)["state"]["epoch"]
                except Exception:  # mid-replace: try again
                    epoch = 0
                if epoch >= target_epoch:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
                    break
            time.sleep(0.01)
        proc.wait()
    assert kills >= 1 and not (run / "metrics.json").exists()
    try:
        resumed = train(cfg, run)
    finally:
        torch.set_num_threads(before)
    drop = lambda m: {k: v for k, v in m.items() if not k.endswith("wall_s")}
    assert drop(resumed) == drop(reference)
    a, b = (load_file(str(p / FINAL)) for p in (tmp_path / "uninterrupted", run))
    assert all(a[k].equal(b[k]) for k in a)


@pytest.mark.slow
def test_srr_train_cli_trains_into_the_given_directory(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-c", "from sweeps.cli import train_main; train_main()", "model=crate_t", "data=digits",
         "optim.lr=1e-3", "train.epochs=2", "seed=1", "train.device=cpu", "measure=none", f"hydra.run.dir={out}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert str(out) in r.stdout and (out / "metrics.json").exists()
    assert json.loads((out / "hparams.json").read_text())["seed"] == 1


@pytest.mark.slow
def test_srr_train_cli_default_directory_is_named_by_config_hash(tmp_path):
    cmd = [sys.executable, "-c", "from sweeps.cli import train_main; train_main()", "train.epochs=1", "train.device=cpu", "measure=none"]
    r1 = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    r2 = subprocess.run(cmd + ["train.progress=false"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    runs = list((tmp_path / "runs").iterdir())
    assert r1.returncode == 0 and r2.returncode == 0 and len(runs) == 1  # verbosity is not part of the identity
    assert runs[0].name.startswith("crate-digits-")


def test_unknown_model_fails_before_any_work(small_cfg, tmp_path):
    cfg = small_cfg()
    cfg["model"]["name"] = "crate_x"
    with pytest.raises(ConfigError, match="unknown model"):
        train(cfg, tmp_path)


def test_thread_count_is_a_setting_not_an_identity(small_cfg, tmp_path):
    from srr_bench.runs import run_id

    before = torch.get_num_threads()
    try:
        m = train(small_cfg("train.threads=1", "train.epochs=1"), tmp_path)
        assert m["status"] == "done" and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert run_id(small_cfg("train.threads=1")) == run_id(small_cfg())
