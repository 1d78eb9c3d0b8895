"""Named specifications: canonical names, side-by-side storage, recomputation of only what
changed, the --grid / --study CLI on a real digits run, collection as separate columns, and
the converged experiment's grid."""
import json
import math

import pytest

import measures.srr
from analysis.collect import collect, parse_measure_column
from measures import compute, select
from measures.cli import main
from measures.registry import MEASURES, MeasureError
from measures.specs import (
    STUDY_GRIDS, check_grid, expand, format_value, is_spec, resolve, specify, split, study_specs,
)
from srr_bench.config import compose

FEW = ["--n-images", "8", "-q"]


def read(run):
    return json.loads((run / "measures.json").read_text())


# --- names ------------------------------------------------------------------------------

def test_a_spec_name_is_canonical_and_round_trips():
    spec = resolve("srr[representation=z_half, eps=5e-2]")
    assert spec.name == "srr[eps=0.05,representation=z_half]"  # sorted keys, shortest float text
    assert resolve(spec.name).name == spec.name and spec.settings({})["eps"] == 0.05
    assert resolve("srr[eps=0.1]").name == "srr"  # every setting at its default: the measure itself
    assert resolve("srr[lambda0=0.0]").name == resolve("srr[lambda0=0]").name == "srr[lambda0=0]"
    # A string setting keeps "none" (it is not None), and reads back the same.
    assert resolve("srr[normalize=none]").settings({})["normalize"] == "none"
    # A specification of a measure with fixed settings is named against those.
    assert resolve("srr_ref[normalize=head]").name == "srr_ref"
    assert resolve("srr_ref[normalize=token]").settings({})["representation"] == "mssa_in"
    assert split("path_norm[q=1]") == ("path_norm", {"q": "1"})
    assert [format_value(v) for v in (0.05, 1.0, 1e-5, 5e-4, True, None, 20)] == [
        "0.05", "1", "1e-05", "0.0005", "true", "none", "20"]
    assert is_spec("srr[eps=0.05]") and is_spec("srr[eps]") and not is_spec("pacbayes*") and not is_spec("srr")


@pytest.mark.parametrize("name, message", [
    ("srr[nope=1]", "srr: no setting 'nope'"), ("srr[eps=abc]", "cannot read 'abc' as float"),
    ("srr[eps]", "'eps' is not key=value"), ("srr[eps=1,eps=2]", "'eps' given twice"),
    ("nope[eps=1]", "unknown measure 'nope'")])
def test_a_bad_spec_is_one_line(name, message):
    with pytest.raises(MeasureError, match=message) as e:
        select([name])
    assert "\n" not in str(e.value)


def test_a_grid_is_the_cartesian_product_per_group():
    chosen = expand(select(["srr", "srr_ref", "l2"]), {"srr.eps": ["0.05", 0.1], "srr.normalize": ["token", "none"]})
    names = [m.name for m in chosen]
    assert names == ["srr[eps=0.05]", "srr[eps=0.05,normalize=none]", "srr", "srr[normalize=none]",
                     "srr_ref[eps=0.05,normalize=token]", "srr_ref[eps=0.05,normalize=none]",
                     "srr_ref[normalize=token]", "srr_ref[normalize=none]", "l2"]
    with pytest.raises(MeasureError, match="no selected measure reads the settings group"):
        expand(select(["l2"]), {"srr.eps": [0.05]})
    with pytest.raises(MeasureError, match="unknown setting 'srr.nope'"):
        check_grid({"srr.nope": [1]})


def test_study_grids_name_real_settings_and_give_every_spec_once():
    names = study_specs()
    sizes = [math.prod(len(v) for v in grid.values()) for grid in STUDY_GRIDS["srr"]]
    assert sizes == [54, 12, 3]  # the grids are disjoint: the union holds every point once
    assert len([n for n in names if n.split("[")[0] == "srr"]) == 69
    assert len(names) == len(set(names)) and {"srr", "path_norm", "path_norm[q=1]", "sharpness"} <= set(names)
    assert "srr[eps=0.5,lambda0=0,normalize=none,representation=mssa_in]" in names
    # The reference code's conventions are one point of the study; the raw count on the layer output another.
    ref = MEASURES.get("srr_ref")
    assert specify(MEASURES.get("srr"), {k: ref.fixed[k] for k in ("representation", "l0_representation", "normalize")}
                   ).name in names
    assert {"srr[l0=count]", "srr[l0=count,l0_representation=ista_out,normalize=head,representation=mssa_in]"} <= set(names)
    assert [m.name for m in select(["study:sharpness"])] == [
        "sharpness[steps=10]", "sharpness", "sharpness[radius=0.002,steps=10]", "sharpness[radius=0.002]"]


# --- storage ----------------------------------------------------------------------------

def test_specs_are_stored_side_by_side_and_only_the_changed_one_is_recomputed(run, monkeypatch):
    calls = []
    real = measures.srr.srr_result

    def counting(ctx, s):
        calls.append(s["eps"])
        return real(ctx, s)

    monkeypatch.setattr(measures.srr, "srr_result", counting)
    few = {"srr.n_images": 8}
    out = compute(run, ["srr", "srr[eps=0.05]", "srr[eps=0.5,normalize=none]"], settings=few)
    assert sorted(calls) == [0.05, 0.1, 0.5]
    v = out["values"]
    assert {"srr", "srr[eps=0.05]", "srr[eps=0.05].L1.R", "srr[eps=0.5,normalize=none].last"} <= set(v)
    assert len({v["srr"], v["srr[eps=0.05]"], v["srr[eps=0.5,normalize=none]"]}) == 3
    assert out["settings"]["srr[eps=0.5,normalize=none]"]["normalize"] == "none"
    assert out["settings"]["srr[eps=0.05]"]["eps"] == 0.05 and out["settings"]["srr"]["eps"] == 0.1
    # The same value as the plain measure run with those settings.
    plain = compute(run, ["srr"], settings={**few, "srr.eps": 0.05}, write=False)
    assert plain["values"]["srr"] == pytest.approx(v["srr[eps=0.05]"], rel=1e-12)

    calls.clear()
    compute(run, ["srr", "srr[eps=0.05]", "srr[eps=0.5,normalize=none]"], settings=few)
    assert calls == []  # everything current: nothing recomputed
    # One spec's own stored settings change (e.g. an older version): only it is recomputed.
    data = read(run)
    data["settings"]["srr[eps=0.05]"]["version"] = 0
    (run / "measures.json").write_text(json.dumps(data))
    compute(run, ["srr", "srr[eps=0.05]", "srr[eps=0.5,normalize=none]"], settings=few)
    assert calls == [0.05]
    # A new spec is added beside the others, which stay as they were.
    calls.clear()
    before = read(run)["values"]
    after = compute(run, ["srr[eps=0.05]", "srr[lambda0=0]"], settings=few)["values"]
    assert calls == [0.1] and all(after[k] == before[k] for k in before)
    assert after["srr[lambda0=0]"] == pytest.approx(v["srr.Rc.mean"] - v["srr.R.mean"], rel=1e-9)


# --- CLI --------------------------------------------------------------------------------

def test_grid_cli_computes_each_point_as_its_spec_and_collect_gives_columns(run, capsys):
    assert main([str(run), "--measures", "srr,l2", "--grid", "srr.eps=0.05,0.5", "--grid",
                 "srr.normalize=token,none", *FEW]) == 0
    out = read(run)
    specs = ["srr[eps=0.05]", "srr[eps=0.05,normalize=none]", "srr[eps=0.5]", "srr[eps=0.5,normalize=none]"]
    assert set(specs) | {"l2"} <= set(out["values"]) and "srr" not in out["values"] and out["failures"] == {}
    for s in specs:
        assert out["settings"][s]["eps"] in (0.05, 0.5) and out["settings"][s]["n_images"] == 8
    df = collect(run.parent, log=lambda m: None)
    cols = [c for c in df.columns if "[" in c and "." not in c.split("]")[1]]
    assert sorted(cols) == sorted("measure." + s for s in specs)
    assert parse_measure_column("measure.srr[eps=0.5,normalize=none].last") == (
        "srr", {"eps": 0.5, "normalize": "none"}, "last")
    assert df.loc[0, "measure.srr[eps=0.05]"] == out["values"]["srr[eps=0.05]"]


def test_a_specification_with_several_settings_is_one_name_on_the_command_line(run):
    """The README's form: commas inside the brackets belong to the specification, those outside
    separate names (it used to answer "unknown measure 'srr[eps=0.05'")."""
    from srr_bench.settings import split_list

    assert split_list("srr[eps=0.05,representation=z_half], l2 ,") == ["srr[eps=0.05,representation=z_half]", "l2"]
    assert main([str(run), "--measures", "srr[representation=z_half,eps=0.05],l2", *FEW]) == 0
    assert {"srr[eps=0.05,representation=z_half]", "l2"} <= set(read(run)["values"])


@pytest.mark.parametrize("args, message", [
    (["--grid", "srr.eps=abc"], "cannot read 'abc' as float"),
    (["--grid", "srr.nope=1,2"], "unknown setting 'srr.nope'"),
    (["--grid", "srr.eps=-1,0.1"], "srr.eps:"),
    (["--grid", "srr.eps=inf,0.1"], "'srr.eps': must be a finite number, got inf"),
    (["--grid", "srr.eps"], "--grid needs GROUP.KEY=V1,V2"),
    (["--grid", "path_norm.q=1,2"], "no selected measure reads the settings group(s) path_norm"),
    (["--grid", "srr.eps=0.1,0.5", "--eps", "0.2"], "srr.eps: set and varied by --grid at once"),
    (["--measures", "srr[eps=-0.5]"], "srr.eps:"),
    (["--measures", "srr[eps=inf]"], "'srr.eps': must be a finite number, got inf"),
    (["--measures", "srr[normalize=tokens]"], "srr.normalize:")])
def test_grid_cli_refuses_bad_input_in_one_line(run, capsys, args, message):
    assert main([str(run), "--measures", "srr", *args, "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not (run / "measures.json").exists()


def test_set_keeps_a_string_setting_none(run):
    """--set srr.normalize=none is the string "none" (it used to be read as None, and SRR failed)."""
    assert main([str(run), "--measures", "srr", "--set", "srr.normalize=none", *FEW]) == 0
    assert read(run)["settings"]["srr"]["normalize"] == "none" and read(run)["failures"] == {}
    assert main([str(run), "--measures", "l2", "--set", "size_adjusted=true", "--set", "seed=3", "-q"]) == 0
    assert read(run)["settings"]["l2"]["size_adjusted"] is True and read(run)["settings"]["l2"]["seed"] == 3


def test_study_flag_computes_the_study_grid_of_the_selected_measures(run, capsys):
    assert main([str(run), "--measures", "path_norm,l2", "--study", "--set", "path_norm.n_images=16", "-q"]) == 0
    out = read(run)
    assert {"path_norm", "path_norm[q=1]", "l2"} <= set(out["values"]) and out["failures"] == {}
    assert (out["settings"]["path_norm"]["q"], out["settings"]["path_norm[q=1]"]["q"]) == (2.0, 1.0)
    assert out["values"]["path_norm[q=1]"] != out["values"]["path_norm"]
    assert main([str(run), "--measures", "srr", "--study", "--grid", "srr.eps=0.5", "-q"]) == 2
    assert "--grid and --study: give one of them" in capsys.readouterr().err
    assert main(["--list"]) == 0
    assert "study grids (--study):" in capsys.readouterr().out


# --- the converged experiment -----------------------------------------------------------

@pytest.mark.parametrize("experiment, width_axis, widths, data, n_train, depth, hessian", [
    ("converged_cifar10_cpu", "model.dim", {64, 128}, "imagefolder", 1000, 4, False),  # Hessian: CPU cost
    ("converged_cifar10", "size", {384, 768}, "cifar10", None, 12, True)])
def test_converged_experiments_are_full_grids_trained_to_ce_001_and_measured(experiment, width_axis, widths, data,
                                                                               n_train, depth, hessian):
    from sweeps.schema import validate
    from sweeps.state import measure_names
    from tests.test_sweeps import experiment_jobs, grid_axes

    jobs = experiment_jobs(f"experiment={experiment}")
    assert len(jobs) == 128 and len({j.run_id for j in jobs}) == 128  # 4 variants x 2^4 settings x 2 seeds
    axes = grid_axes([j.overrides for j in jobs])
    assert axes["model"] == {"crate", "crate_c", "crate_n", "crate_t"} and len(axes["seed"]) == 2
    assert set(axes) == {"model", "seed", "optim.lr", "train.batch_size", "model.dropout", width_axis}
    assert all(len(v) == 2 for v in axes.values() if v is not axes["model"])
    assert {j.cfg["model"]["dim"] for j in jobs} == widths
    for j in jobs:
        validate(j.cfg)
        d, t = j.cfg["data"], j.cfg["train"]
        assert d["name"] == data and d["n_train"] == n_train and d["n_test"] is None and d["augment"] is False
        assert (t["stop"], t["target"], t["eval_train_every_epoch"]) == ("ce", 0.01, True) and t["epochs"] >= 200
        assert j.cfg["model"]["depth"] == depth and j.cfg["measure"]["enabled"] is True
    # The first half of the order is the dropout-free design: a grid stopped there is whole.
    assert {j.cfg["model"]["dropout"] for j in jobs[:64]} == {0.0}
    chosen = {m.name for m in select(measure_names(jobs[0].cfg["measure"]), jobs[0].cfg["measure"]["exclude"])}
    assert set(study_specs()) <= chosen and any(n.startswith("hessian") for n in chosen) == hessian
