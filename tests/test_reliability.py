"""Reliability of a run and of its directory (issue 12, items 4, 5, 7, 8, 9; issue 10, defect 5):
divergence defined and recorded, the regulariser's blow-up final, every job stage under the
run's thread and device settings, damaged run directories repaired or named in one line."""
import dataclasses
import json
import math
import os
import shutil

import pandas as pd
import pytest
import torch

import srr_bench.train as training
from srr_bench.train import chance_level, divergence, train
from sweeps import runner
from sweeps.runner import run_job
from srr_bench.rundir import CHECKPOINT, FINAL, INIT
from sweeps.state import complete, damage, finished, keep_light, run_state

try:
    import measures  # noqa: F401

    HAVE_MEASURES = True
except ImportError:
    HAVE_MEASURES = False

FAST = ("measure=none",)
SUBSPACES = ("data=subspaces", "data.n_train=200", "data.n_test=100", "train.batch_size=32", "model.patch_size=4",
             "optim.lr=3e-3")


# --- item 4: what "diverged" and "converged" mean -----------------------------------------

def test_chance_level_is_the_largest_class_plus_three_standard_errors():
    labels = torch.arange(1000) % 10  # balanced: p = 0.1, n = 1000
    p, threshold = chance_level(labels)
    assert p == 0.1 and threshold == pytest.approx(0.1 + 3 * math.sqrt(0.1 * 0.9 / 1000))  # 0.128460
    assert "chance level" in divergence(2.3, 2.0, 0.128, labels)
    assert divergence(2.3, 2.0, 0.129, labels) is None
    assert "above 2x its initial value 2" in divergence(2.0, 4.01, 0.9, labels)
    assert divergence(2.0, 3.99, 0.9, labels) is None
    assert "non-finite" in divergence(2.0, math.inf, 0.9, labels)


def test_a_finite_blow_up_is_diverged_with_its_reason_and_metrics(small_cfg, tmp_path):
    m = train(small_cfg("optim.lr=10", *FAST), tmp_path)  # AdamW at lr 10: finite loss ~100x the initial one
    assert m["status"] == "diverged" and "above 2x its initial value" in m["diverged_reason"]
    assert m["converged"] is None  # train.stop=epochs has no target
    assert math.isfinite(m["train_loss"]) and m["train_loss"] > 2 * m["init_train_loss"]
    assert math.isfinite(m["test_acc"]) and (tmp_path / FINAL).exists()
    assert m["init_train_loss"] == pytest.approx(math.log(10), rel=0.2)
    assert run_state(tmp_path).reason == m["diverged_reason"]


def test_converged_is_null_without_a_target_and_false_when_diverged(small_cfg, tmp_path):
    m = train(small_cfg(*FAST), tmp_path / "epochs")
    assert m["status"] == "done" and m["converged"] is None and m["diverged_reason"] is None
    m = train(small_cfg("train.stop=ce", "train.target=0.01", "optim.lr=10", *FAST), tmp_path / "ce")
    assert m["status"] == "diverged" and m["converged"] is False


# --- item 5: the regulariser's blow-up ------------------------------------------------------

# Each way a regularised step can fail is forced on purpose below, so that no test depends on
# which one a CPU's BLAS happens to take: on an AVX-512 CPU with MKL the Cholesky of a blown-up
# Gram matrix meets negative pivots and no zero one (no LinAlgError: the loss is NaN), with
# AVX2 kernels it meets a zero one (LinAlgError). Both are divergence, neither a failure.
DIVERGED_REASONS = ("singular or non-finite state in epoch", "non-finite training loss in epoch",
                    "non-finite parameters in epoch")
REG = ("reg.alpha=1", "optim=sgd", "optim.lr=0.01", "optim.warmup_epochs=0", "train.epochs=1", *FAST)


def _rates(monkeypatch, logdet):
    """The regulariser's log-determinants replaced by ``logdet(G, c, call_number)``."""
    import srr_bench.rates as rates

    calls = []

    def patched(G, c):
        calls.append(1)
        return logdet(G, c, len(calls))

    monkeypatch.setattr(rates, "logdet_eye_plus", patched)
    return calls


def _nan_logdet(G, c):
    """NaN with a NaN gradient, computed without any linear algebra (so no BLAS decides anything)."""
    return G.sum((-2, -1)) * float("nan")


def _diverged_once(cfg, run, capsys, reason_start):
    out = run_job(cfg, run)
    assert out.state == "diverged" and not (run / "failure.json").exists()
    reason = out.metrics["diverged_reason"]
    assert reason.startswith(reason_start) and reason in capsys.readouterr().err
    assert run_state(run).state == "diverged" and run_state(run).reason == reason
    assert run_job(cfg, run).state == "finished_before"  # final: not retried
    return reason


def test_a_zero_pivot_in_the_regulariser_is_diverged_not_failed_and_not_retried(small_cfg, tmp_path, capsys, monkeypatch):
    from srr_bench.rates import _LogdetSPD

    # The Cholesky factor of an exactly zero matrix has a zero pivot on every CPU: the
    # forward pass gives NaN and the backward pass raises LinAlgError.
    calls = _rates(monkeypatch, lambda G, c, n: _LogdetSPD.apply(0.0 * G))
    reason = _diverged_once(small_cfg(*REG), tmp_path, capsys, "singular or non-finite state in epoch 1 (")
    assert len(calls) == 2  # R and R^c of the first step, then the step raised
    assert "\n" not in reason


def test_a_non_finite_regulariser_without_an_exception_is_diverged(small_cfg, tmp_path, capsys, monkeypatch):
    _rates(monkeypatch, lambda G, c, n: _nan_logdet(G, c))
    _diverged_once(small_cfg(*REG), tmp_path, capsys, "non-finite training loss in epoch 1")
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["batch_loss"].isna().iloc[-1]  # the epoch it diverged in is kept in the history


def test_an_error_once_the_parameters_are_non_finite_is_diverged(small_cfg, tmp_path, capsys, monkeypatch):
    def logdet(G, c, n):  # the first step poisons the weights, the second meets an error of any kind
        if n > 2:
            raise RuntimeError("a kernel refused its input")
        return _nan_logdet(G, c)

    _rates(monkeypatch, logdet)
    reason = _diverged_once(small_cfg(*REG), tmp_path, capsys, "non-finite parameters in epoch 1 (RuntimeError")
    assert "a kernel refused its input" in reason


def test_an_error_with_finite_parameters_is_a_failure_and_is_retried(small_cfg, tmp_path, capsys, monkeypatch):
    def logdet(G, c, n):
        raise RuntimeError("a kernel refused its input")

    _rates(monkeypatch, logdet)
    cfg = small_cfg(*REG)
    out = run_job(cfg, tmp_path)
    assert out.state == "failed" and out.message == "RuntimeError: a kernel refused its input"
    assert json.loads((tmp_path / "failure.json").read_text())["error"] == out.message
    assert run_state(tmp_path).state == "failed"
    monkeypatch.undo()
    assert run_job(cfg, tmp_path).state == "trained"  # a failure is retried, a divergence is not


def test_srr_regulariser_blow_up_is_diverged_not_failed_and_not_retried(small_cfg, tmp_path, capsys):
    """The real blow-up (SGD at lr 10), unforced: diverged for one of the reasons above, whichever
    the CPU's linear algebra takes, in epoch 1; never a failure, never retried."""
    cfg = small_cfg("reg.alpha=1", "optim=sgd", "optim.lr=10", "optim.warmup_epochs=0", "train.epochs=1", *FAST)
    reason = _diverged_once(cfg, tmp_path, capsys, "")
    assert reason.startswith(DIVERGED_REASONS) and "epoch 1" in reason


# --- issue 10 defect 5 / issue 11: milestones without per-epoch evaluation -----------------

def test_ce_milestones_and_stopping_epoch_do_not_need_every_epoch_evaluated(small_cfg, tmp_path):
    every = train(small_cfg(*SUBSPACES, "train.epochs=6", *FAST), tmp_path / "every")
    gated = train(small_cfg(*SUBSPACES, "train.epochs=6", "train.eval_train_every_epoch=false", *FAST), tmp_path / "gated")
    assert every["steps_to_ce_0.1"] is not None
    drop = lambda m: {k: v for k, v in m.items() if not k.endswith("wall_s") and k not in ("run_id", "train_evals")}  # noqa: E731
    assert drop(gated) == drop(every)
    assert gated["train_evals"] < every["train_evals"] == 6 + 1  # every epoch and initialisation
    stop = [train(small_cfg(*SUBSPACES, "train.epochs=30", "train.stop=ce", "train.target=0.1", *FAST,
                            f"train.eval_train_every_epoch={flag}"), tmp_path / f"stop{flag}") for flag in ("true", "false")]
    assert drop(stop[0]) == drop(stop[1]) and stop[0]["converged"] and stop[0]["epochs"] < 30
    import pandas as pd

    evaluated = pd.read_csv(tmp_path / "stopfalse" / "history.csv")["train_loss"].notna().sum()
    assert evaluated == stop[1]["train_evals"] < stop[1]["epochs"] + 1  # fewer than epochs (+ initialisation)
    assert 0 < stop[1]["train_eval_wall_s"] < stop[1]["wall_s"] and stop[0]["final_eval_wall_s"] > 0
    # The gate replayed on the run that evaluated every epoch is what the gated run did.
    from srr_bench.config import RunConfig
    from srr_bench.train import replay_gate

    every_epoch = pd.read_csv(tmp_path / "stoptrue" / "history.csv").to_dict("records")
    cfg = small_cfg(*SUBSPACES, "train.epochs=30", "train.stop=ce", "train.target=0.1", *FAST)
    replay = replay_gate(every_epoch, RunConfig.read(cfg).train)
    assert replay == {"stop_epoch": stop[1]["epochs"], "train_evals": stop[1]["train_evals"],
                      "steps_to": {"0.1": stop[1]["steps_to_ce_0.1"], "0.01": stop[1]["steps_to_ce_0.01"]}}


def test_with_dropout_the_gate_is_off_and_every_epoch_is_evaluated(small_cfg, tmp_path):
    from srr_bench.config import RunConfig
    from srr_bench.train import evaluate_train_now, replay_gate, uses_dropout

    # A running batch CE far above the target (dropout's thinned networks) opens no gate without
    # dropout, and evaluation happens anyway with it.
    t = RunConfig.read(small_cfg("train.stop=ce", "train.target=0.01", "train.eval_train_every_epoch=false")).train
    left = {"0.1": 5, "0.01": None}
    assert not evaluate_train_now(t, 0.05, left) and evaluate_train_now(t, 0.05, left, dropout=True)
    assert (uses_dropout({"dropout": 0.1}), uses_dropout({"emb_dropout": 0.2}), uses_dropout({"dropout": 0.0}),
            uses_dropout({})) == (True, True, False, False)
    # End to end: with dropout, the gated run is the every-epoch run (same stop, same evaluations).
    args = (*SUBSPACES, "model.dropout=0.2", "train.epochs=30", "train.stop=ce", "train.target=0.1", *FAST)
    runs = [train(small_cfg(*args, f"train.eval_train_every_epoch={flag}"), tmp_path / flag) for flag in ("true", "false")]
    drop = lambda m: {k: v for k, v in m.items() if not k.endswith("wall_s") and k != "run_id"}  # noqa: E731
    assert drop(runs[0]) == drop(runs[1]) and runs[1]["train_evals"] == runs[1]["epochs"] + 1
    import pandas as pd

    every_epoch = pd.read_csv(tmp_path / "true" / "history.csv").to_dict("records")
    replay = replay_gate(every_epoch, RunConfig.read(small_cfg(*args)).train, dropout=True)
    assert (replay["stop_epoch"], replay["train_evals"]) == (runs[0]["epochs"] if runs[0]["converged"] else None,
                                                             runs[0]["train_evals"])


# --- item 7: every stage under the run's settings --------------------------------------------

@pytest.mark.skipif(not HAVE_MEASURES, reason="measures package not installed")
def test_a_measure_only_job_uses_the_runs_threads_and_device(small_cfg, tmp_path, monkeypatch):
    import measures
    import measures.cli  # noqa: F401  (binds the real compute before it is replaced here)

    cfg = small_cfg("train.threads=1", "measure.names=[l2]")
    before = torch.get_num_threads()  # train() and the job set the process's threads: restored below
    seen = {}

    def compute(run_dir, **kw):
        seen.update(threads=torch.get_num_threads(), device=str(kw["device"]))
        return {"values": {}, "failures": {}}

    try:
        train(cfg, tmp_path)  # trained before: the job only measures
        monkeypatch.setattr(measures, "compute", compute)
        torch.set_num_threads(2)
        assert run_job(cfg, tmp_path).state == "trained"
    finally:
        torch.set_num_threads(before)
    assert seen == {"threads": 1, "device": "cpu"}


# --- item 8: damaged run directories ----------------------------------------------------------

def test_a_run_directory_deleted_while_training_is_not_recreated_and_is_retrained(small_cfg, tmp_path, monkeypatch):
    cfg = small_cfg("train.epochs=3", *FAST)
    run = tmp_path / "run"
    real = training._checkpoint

    def delete_after_first(path, *args, **kwargs):
        real(path, *args, **kwargs)
        shutil.rmtree(run)  # a user's rm -r while the run trains

    monkeypatch.setattr(training, "_checkpoint", delete_after_first)
    out = run_job(cfg, run)
    assert out.state == "failed" and "deleted while training" in out.message
    assert not run.exists()  # not recreated half-empty
    monkeypatch.setattr(training, "_checkpoint", real)
    assert run_job(cfg, run).state == "trained"
    assert {"config.yaml", "hparams.json", INIT, FINAL, "metrics.json"} <= {p.name for p in run.iterdir()}


def test_an_incomplete_run_directory_is_named_then_retrained(small_cfg, tmp_path, capsys):
    cfg = small_cfg(*FAST)
    reference = train(cfg, tmp_path / "reference")
    run = tmp_path / "run"
    shutil.copytree(tmp_path / "reference", run)
    for name in ("config.yaml", "hparams.json", INIT):  # what a deletion during training leaves
        (run / name).unlink()
    state = run_state(run)
    assert state.state == "damaged" and f"{INIT} is missing" in state.reason and "trains the run again" in state.reason
    assert not complete(run, cfg["measure"])
    out = run_job(cfg, run)
    assert out.state == "trained" and f"repairing: {INIT} is missing" in capsys.readouterr().out
    drop = lambda m: {k: v for k, v in m.items() if not k.endswith("wall_s")}  # noqa: E731
    assert drop(out.metrics) == drop(reference) and (run / "config.yaml").exists() and (run / INIT).exists()


def test_a_finished_run_kept_without_its_weights_stays_finished(small_cfg, tmp_path):
    # The small files of finished runs, committed without weights, carry a study to another
    # machine or session: a relaunch over them must neither retrain nor touch them.
    cfg = small_cfg("measure.names=[l2]")
    assert run_job(cfg, tmp_path / "full").state == "trained"
    light = keep_light(tmp_path / "full", tmp_path / "kept")  # config, hparams, metrics, history, measures
    before = {p.name: p.read_bytes() for p in light.iterdir()}
    assert damage(light) == [] and complete(light, cfg["measure"])
    assert run_state(light, measure_cfg="run").state == "done"
    assert run_job(cfg, light).state == "finished_before"
    assert {p.name: p.read_bytes() for p in light.iterdir()} == before  # nothing retrained or written
    (light / "measures.json").unlink()  # measures it lacks cannot be computed: said, not hidden
    state = run_state(light, measure_cfg="run")
    assert state.state == "interrupted" and f"{FINAL} was not kept" in state.reason
    (light / "config.yaml").unlink()  # no longer a copy: what a deletion during training leaves
    assert [d.file for d in damage(light)] == [INIT, FINAL, "config.yaml"]


def test_a_new_version_of_a_measure_is_computed_again_where_the_weights_are(small_cfg, tmp_path, monkeypatch):
    # A measure's code changed (its version went up): a run with weights measures it again on
    # relaunch; a light copy cannot, so it stays finished with the earlier version's value, named.
    from measures.registry import MEASURES

    cfg = small_cfg("measure.names=[l2]")
    assert run_job(cfg, tmp_path / "full").state == "trained"
    light = keep_light(tmp_path / "full", tmp_path / "kept")  # config, hparams, metrics, history, measures
    stored = json.loads((light / "measures.json").read_text())
    l2 = MEASURES.get("l2")
    monkeypatch.setitem(MEASURES._items, "l2", dataclasses.replace(l2, version=l2.version + 1))
    full = run_state(tmp_path / "full", measure_cfg="run")
    assert full.state == "interrupted" and "l2 computed by an earlier version" in full.reason
    assert not complete(tmp_path / "full", cfg["measure"]) and finished(tmp_path / "full")
    state = run_state(light, measure_cfg="run")
    assert state.state == "done" and "kept as measured: l2 by an earlier version" in state.reason
    assert complete(light, cfg["measure"]) and run_job(cfg, light).state == "finished_before"
    assert json.loads((light / "measures.json").read_text()) == stored
    assert run_job(cfg, tmp_path / "full").state == "trained"  # measured again from its weights
    again = json.loads((tmp_path / "full" / "measures.json").read_text())
    assert again["settings"]["l2"]["version"] == l2.version + 1 == stored["settings"]["l2"]["version"] + 1
    assert run_state(tmp_path / "full", measure_cfg="run").state == "done"
    (tmp_path / "full" / "measures.json").unlink()
    assert not finished(tmp_path / "full") and finished(light)


def test_missing_config_files_of_a_finished_run_are_rewritten_not_retrained(small_cfg, tmp_path):
    cfg = small_cfg(*FAST)
    train(cfg, tmp_path)
    kept = {p: p.stat().st_mtime_ns for p in (tmp_path / "metrics.json", tmp_path / FINAL)}
    hp = (tmp_path / "hparams.json").read_text()
    (tmp_path / "hparams.json").unlink()
    assert run_job(cfg, tmp_path).state == "trained"
    assert (tmp_path / "hparams.json").read_text() == hp and all(p.stat().st_mtime_ns == t for p, t in kept.items())


def test_a_leftover_checkpoint_of_a_finished_run_is_removed(small_cfg, tmp_path):
    cfg = small_cfg(*FAST)
    metrics = train(cfg, tmp_path)
    (tmp_path / CHECKPOINT).write_bytes(b"killed between metrics.json and the removal")
    assert [d.file for d in damage(tmp_path)] == [CHECKPOINT] and not complete(tmp_path, cfg["measure"])
    out = run_job(cfg, tmp_path)
    assert out.metrics == metrics and not (tmp_path / CHECKPOINT).exists()
    assert run_job(cfg, tmp_path).state == "finished_before"


def test_a_corrupt_metrics_json_is_named_then_the_run_is_retrained(small_cfg, tmp_path):
    cfg = small_cfg(*FAST)
    metrics = train(cfg, tmp_path)
    (tmp_path / "metrics.json").write_text('{"status": "do')
    state = run_state(tmp_path)
    assert state.state == "damaged" and state.reason.startswith("metrics.json is not valid JSON")
    out = run_job(cfg, tmp_path)
    drop = lambda m: {k: v for k, v in m.items() if not k.endswith("wall_s")}  # noqa: E731
    assert out.state == "trained" and drop(out.metrics) == drop(metrics)
    assert (tmp_path / "metrics.json.corrupt").read_text() == '{"status": "do'


@pytest.mark.skipif(not HAVE_MEASURES, reason="measures package not installed")
def test_a_corrupt_measures_json_is_named_by_srr_measure_and_repaired_by_a_relaunch(small_cfg, tmp_path, capsys):
    from measures.cli import main as measure_main

    cfg = small_cfg("measure.names=[l2]")
    train(cfg, tmp_path)
    (tmp_path / "measures.json").write_text('{"values": {"l2": 1.')
    assert measure_main([str(tmp_path), "-m", "l2", "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "measures.json: is not valid JSON" in err and "move it aside" in err
    assert run_state(tmp_path).state == "damaged" and "measures.json is not valid JSON" in run_state(tmp_path).reason
    assert run_job(cfg, tmp_path).state == "trained"
    assert "l2" in json.loads((tmp_path / "measures.json").read_text())["values"]
    assert (tmp_path / "measures.json.corrupt").exists() and complete(tmp_path, cfg["measure"])


# --- item 9: directories that cannot be written, devices that are not there -----------------

def test_a_read_only_run_directory_is_one_line(small_cfg, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    run.mkdir()
    real_open = os.open

    def read_only(path, flags, *args):  # what a read-only file system answers (root ignores chmod)
        if str(path).startswith(str(run)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    out = run_job(small_cfg(*FAST), run)
    err = capsys.readouterr().err.strip()
    assert out.state == "failed" and len(err.splitlines()) == 1
    assert "cannot write in the run directory: Permission denied" in err and list(run.iterdir()) == []


def test_a_device_the_machine_lacks_is_refused_before_any_file(small_cfg, tmp_path):
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(training.DeviceError, match="cuda:7"):
        train(small_cfg(f"train.device=cuda:{max(7, n)}", *FAST), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    out = run_job(small_cfg(f"train.device=cuda:{max(7, n)}", *FAST), tmp_path / "job")
    assert out.state == "failed" and out.message.startswith("DeviceError: device 'cuda:")


def test_runner_repair_is_a_no_op_on_a_sound_directory(small_cfg, tmp_path):
    cfg = small_cfg(*FAST)
    train(cfg, tmp_path)
    assert damage(tmp_path) == [] and runner.repair(cfg, tmp_path) == []
