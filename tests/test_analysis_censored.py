"""Censored optimisation measures (measures/optimization.py) are missing, not the best value,
and the analysis drops them per measure and counts them."""

import math

import numpy as np
import pandas as pd
from torch import nn

from analysis.correlate import correlate
from measures.api import compute

NAMES = ["steps_to_ce_0.1", "steps_ce_0.1_to_0.01"]


def measured(metrics: dict) -> dict:
    return compute(nn.Linear(2, 2), NAMES, metrics=metrics, write=False)


def test_reached_milestones_give_step_counts():
    out = measured({"steps_to_ce_0.1": 30, "steps_to_ce_0.01": 80, "steps": 100, "train_loss": 0.005})
    assert out["values"] == {"steps_to_ce_0.1": 30.0, "steps_ce_0.1_to_0.01": 50.0}
    assert not out["diagnostics"]["steps_ce_0.1_to_0.01"]["censored"]


def test_a_run_that_never_reached_ce_01_is_missing_not_zero():
    out = measured({"steps_to_ce_0.1": None, "steps_to_ce_0.01": None, "steps": 500, "train_loss": 0.8})
    for name in NAMES:  # before: 500 steps and 500 − 500 = 0 steps, the best value of the grid
        assert math.isnan(out["values"][name])
        d = out["diagnostics"][name]
        assert d["censored"] and d["reason"] == "censored: CE 0.1 never reached in 500 steps"
    assert not out["failures"]


def test_reaching_01_but_not_001_is_censored_with_the_step_of_01():
    out = measured({"steps_to_ce_0.1": 120, "steps_to_ce_0.01": None, "steps": 400, "train_loss": 0.05})
    assert out["values"]["steps_to_ce_0.1"] == 120.0
    assert math.isnan(out["values"]["steps_ce_0.1_to_0.01"])
    assert out["diagnostics"]["steps_ce_0.1_to_0.01"]["reason"] == \
        "censored: CE 0.01 never reached in 400 steps (CE 0.1 at step 120)"


def test_a_milestone_missing_below_the_final_loss_was_not_recorded():
    out = measured({"steps_to_ce_0.1": None, "steps_to_ce_0.01": None, "steps": 400, "train_loss": 0.05})
    assert math.isnan(out["values"]["steps_to_ce_0.1"])
    assert out["diagnostics"]["steps_to_ce_0.1"]["reason"].startswith(
        "not recorded: the final train CE 0.05 is below 0.1 but the record has no steps_to_ce_0.1")


def test_a_record_without_milestones_is_a_failure_not_a_value():
    out = measured({"steps": 400})
    assert set(out["failures"]) == set(NAMES) and "no steps_to_ce_0.1" in out["failures"]["steps_to_ce_0.1"]


def test_censored_runs_are_left_out_of_the_correlation_and_counted():
    """Four runs reach CE 0.01 (faster ones generalise better); two never reach CE 0.1.
    Before, the two were scored 0 steps (the 'best'), which reversed τ."""
    rng = np.random.default_rng(0)
    records = [{"steps_to_ce_0.1": a, "steps_to_ce_0.01": b, "steps": 500, "train_loss": 0.005}
               for a, b in ((50, 100), (60, 140), (70, 190), (80, 250))]
    records += [{"steps_to_ce_0.1": None, "steps_to_ce_0.01": None, "steps": 500, "train_loss": 0.9}] * 2
    values = [measured(r)["values"]["steps_ce_0.1_to_0.01"] for r in records]
    df = pd.DataFrame({"hp.lr": [1, 2, 3, 4, 5, 6], "gen.gap_acc": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
                       "measure.steps_ce_0.1_to_0.01": values, "measure.noise": rng.normal(size=6)})
    r = correlate(df, hoeffding=False).set_index("measure").loc["steps_ce_0.1_to_0.01"]
    assert (r["n"], r["n_nan"], r["tau"]) == (4, 2, 1.0)
    assert r["flags"] == "NaN on 2/6 runs"

