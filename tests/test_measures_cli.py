"""srr-measure on real run directories: measures.json, skipping, recompute, failures, refusals."""
import json
import shutil

import pytest
import torch

from srr_bench.rundir import FINAL, INIT

from measures import compute
from measures.cli import main

QUICK = ["--set", "pacbayes.n_images=64", "--set", "pacbayes.mc_samples=2", "--set", "pacbayes.max_evals=6", "--n-images", "8", "-q"]


def read(run):
    return json.loads((run / "measures.json").read_text())


def test_measures_json_has_values_diagnostics_failures_settings(run):
    assert main([str(run), "--measures", "l2,params,srr,steps_to_ce_0.1,pacbayes_flatness", *QUICK]) == 0
    out = read(run)
    assert set(out) == {"values", "diagnostics", "failures", "settings"} and out["failures"] == {}
    assert {"l2", "params", "srr", "srr.L1.R", "srr.L2.srr", "srr.Rc.last", "pacbayes_flatness.sigma"} <= set(out["values"])
    assert out["settings"]["srr"]["n_images"] == 8 and out["settings"]["pacbayes_flatness"]["mc_samples"] == 2
    assert "converged" in out["diagnostics"]["pacbayes_flatness"] and "wall_s" in out["diagnostics"]["l2"]


def test_current_measures_are_skipped_and_new_ones_added(run):
    assert main([str(run), "--measures", "l2,srr", *QUICK]) == 0
    first = read(run)
    assert main([str(run), "--measures", "l2,srr,inverse_margin", *QUICK]) == 0
    second = read(run)
    assert second["diagnostics"]["l2"]["wall_s"] == first["diagnostics"]["l2"]["wall_s"]  # not recomputed
    assert second["diagnostics"]["srr"]["wall_s"] == first["diagnostics"]["srr"]["wall_s"]
    assert "inverse_margin" in second["values"]
    assert main([str(run), "--measures", "l2,srr", "--eps", "0.5", *QUICK]) == 0  # a new setting: srr only
    third = read(run)
    assert third["settings"]["srr"]["eps"] == 0.5 and third["values"]["srr.R.mean"] != second["values"]["srr.R.mean"]
    assert third["diagnostics"]["l2"]["wall_s"] == first["diagnostics"]["l2"]["wall_s"]
    assert main([str(run), "--measures", "l2", "--recompute", *QUICK]) == 0
    assert read(run)["diagnostics"]["l2"]["wall_s"] != first["diagnostics"]["l2"]["wall_s"]


def test_every_run_under_a_sweep_directory(run):
    other = shutil.copytree(run, run.parent / "run-b")
    assert main([str(run.parent), "--measures", "params", *QUICK]) == 0
    assert read(run)["values"]["params"] == read(other)["values"]["params"] > 0


def test_unknown_measure_or_setting_is_a_one_line_usage_error(run, capsys):
    assert main([str(run), "--measures", "l2,nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown measure 'nope'" in err
    assert main([str(run), "--set", "srr.nope=1"]) == 2
    assert "unknown setting 'srr.nope'" in capsys.readouterr().err
    assert not (run / "measures.json").exists()


def test_untrusted_checkpoint_is_refused_with_one_line(run, capsys):
    (run / FINAL).unlink()  # an older run's final.pt, holding pickled code
    torch.save({"format": "srr-bench/model/1", "payload": torch.nn.Linear(2, 2)}, run / "final.pt")
    assert main([str(run), "--measures", "l2", "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "refused" in err and "pickled Python code" in err


def test_a_failure_is_recorded_and_reported(run, capsys):
    (run / INIT).write_bytes(b"not a checkpoint")
    assert main([str(run), "--measures", "l2_dist,l2", "-q"]) == 1
    out = read(run)
    assert "l2" in out["values"] and out["failures"]["l2_dist"].startswith("CheckpointError: ")
    assert "l2_dist failed" in capsys.readouterr().err


def test_compute_from_python_on_a_run_and_on_a_model(run):
    out = compute(run, ["params", "grad_noise"], settings={"grad_noise.n_batches": 2})
    assert out["values"]["params"] > 0 and out["diagnostics"]["grad_noise"]["batch_size"] == 64  # the run's batch
    assert read(run)["values"] == out["values"]
    from srr_bench.runs import load_run

    r = load_run(run)
    mem = compute(r.model("final"), ["params"], init_model=r.model("init"))
    assert mem["values"]["params"] == out["values"]["params"]


def test_list_shows_measures_and_settings(capsys):
    assert main(["--list"]) == 0
    text = capsys.readouterr().out
    assert "pacbayes_flatness" in text and "srr: representation='ista_out'" in text
