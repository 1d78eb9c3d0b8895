"""collect: fabricated run directories -> tidy table, filters, CSV/Parquet."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis.collect import apply_filters, collect, find_run_dirs, read_table, write_table
from analysis.schema import AnalysisError

try:  # tests/ is a package
    from tests.conftest_analysis import make_run_dir, make_sweep
except ImportError:  # tests/ on sys.path (no __init__.py)
    from conftest_analysis import make_run_dir, make_sweep


@pytest.fixture()
def sweep(tmp_path):
    info = make_sweep(tmp_path / "sweep")
    return tmp_path / "sweep", info


def test_collect_end_to_end(sweep):
    root, info = sweep
    assert len(find_run_dirs(root)) == info["n_good"] + 3
    df = collect(root, log=lambda m: None)
    assert len(df) == info["n_good"] + 3
    for c in ["run_id", "run_dir", "hp.variant", "hp.lr", "hp.dropout", "hp.seed", "hp.dim", "gen.gap_acc",
              "gen.n_test", "gen.steps_to_ce_0.1", "is.converged", "is.diverged", "is.failed",
              "measure.srr", "measure.params", "measure.srr.L0.Rc"]:
        assert c in df.columns, c
    assert df["gen.steps_to_ce_0.01"].isna().all()  # null in metrics.json
    assert df.set_index("run_id").loc["diverged", "is.diverged"]
    assert not df.set_index("run_id").loc["nonconv", "is.converged"]
    r0 = df.set_index("run_id").loc["r000"]
    assert (r0["hp.variant"], r0["hp.lr"], r0["gen.n_test"]) == ("crate", 0.001, 360)
    assert list(df.columns[:3]) == ["run_id", "run_dir", "status"]


def test_filters_report_what_they_remove(sweep):
    root, info = sweep
    lines = []
    df = collect(root, drop_diverged=True, drop_nonconverged=True, min_train_acc=0.9, log=lines.append)
    assert len(df) == info["n_good"]
    assert not set(info["bad"]) & set(df["run_id"])
    n = info["n_good"] + 3
    assert f"filter drop-diverged: removed 1 of {n} rows" in lines
    assert f"filter drop-nonconverged: removed 1 of {n - 1} rows" in lines
    assert f"filter min-train-acc 0.9: removed 1 of {n - 2} rows" in lines


def test_filters_work_on_a_csv_round_trip(sweep, tmp_path):
    root, info = sweep
    path = write_table(collect(root, log=lambda m: None), tmp_path / "r.csv")
    df = apply_filters(read_table(path), True, True, 0.9, log=lambda m: None)
    assert len(df) == info["n_good"]


@pytest.mark.parametrize("ext", [".csv", ".parquet"])
def test_write_and_read(sweep, tmp_path, ext):
    root, _ = sweep
    df = collect(root, log=lambda m: None)
    back = read_table(write_table(df, tmp_path / f"results{ext}"))
    assert list(back.columns) == list(df.columns)
    pd.testing.assert_series_equal(back["measure.srr"], df["measure.srr"])
    assert back["hp.variant"].tolist() == df["hp.variant"].tolist()


def test_unknown_extension(tmp_path):
    with pytest.raises(AnalysisError, match="format"):
        write_table(pd.DataFrame({"a": [1]}), tmp_path / "r.xlsx")


def test_missing_measures_and_broken_runs(tmp_path):
    make_run_dir(tmp_path, "a", {"lr": 0.1, "seed": 0}, {"status": "failed", "converged": False})
    make_run_dir(tmp_path, "b", {"lr": 0.2, "seed": 0}, {"status": "done", "converged": True, "gap_acc": 0.1},
                 {"values": {"srr": 1.5, "sharp": None}})
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "metrics.json").write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable"):
        df = collect(tmp_path, log=lambda m: None)
    assert sorted(df["run_id"]) == ["a", "b"]
    a = df.set_index("run_id").loc["a"]
    assert a["is.failed"] and np.isnan(a["measure.srr"]) and np.isnan(a["gen.gap_acc"])
    assert np.isnan(df.set_index("run_id").loc["b", "measure.sharp"])


def test_nested_hparams_are_flattened(tmp_path):
    make_run_dir(tmp_path, "a", {"optim": {"name": "adamw", "lr": 0.1}, "layers": [1, 2]}, {"status": "done"})
    df = collect(tmp_path, log=lambda m: None)
    assert df.loc[0, "hp.optim.name"] == "adamw" and df.loc[0, "hp.optim.lr"] == 0.1
    assert json.loads(df.loc[0, "hp.layers"]) == [1, 2]


def test_errors(tmp_path):
    with pytest.raises(AnalysisError, match="not found"):
        collect(tmp_path / "nope")
    with pytest.raises(AnalysisError, match="no run directory"):
        collect(tmp_path)


def test_values_from_several_versions_of_a_measure_are_said(tmp_path):
    def measured(version: int, sharp_version: int = 1) -> dict:
        return {"values": {"pb": 1.0, "sharp": 2.0},
                "settings": {"pb": {"seed": 0, "version": version}, "sharp": {"seed": 0, "version": sharp_version}}}

    for i, v in enumerate([2, 2, 3]):
        make_run_dir(tmp_path, f"r{i}", {"lr": 0.1, "seed": i}, {"status": "done", "gap_acc": 0.1}, measured(v))
    lines: list[str] = []
    df = collect(tmp_path, log=lines.append)
    assert len(df) == 3 and not any(c.startswith("version") or "\0" in c for c in df.columns)
    mixed = [line for line in lines if "versions of the measure's code" in line]
    assert mixed == ["collect: pb was computed by version 2 (2 runs) and version 3 (1 run): "
                     "its values mix versions of the measure's code"]
