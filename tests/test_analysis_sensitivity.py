"""The sensitivity report: τ and Ψ of every specification of a measure against each gap,
hand-checked on a 4-model table, with the exclusion rules, the bootstrap intervals, the
table files, the specification-curve figure and the CLI."""
import itertools

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main
from analysis.collect import parse_measure_column
from analysis.plots import plot_spec_curve
from analysis.schema import AnalysisError
from analysis.sensitivity import sensitivity, spec_columns, to_markdown, write_sensitivity


def four_models() -> pd.DataFrame:
    """Models (lr, bs) = (1,1), (2,1), (1,2), (2,2); gap_acc 1..4 and gap_loss 4..1.

    Hand-checked against gap_acc (6 pairs):
      m        = 1 2 3 4  all 6 pairs concordant                     τ = 1;   ψ_lr = 1, ψ_bs = 1: Ψ = 1
      m[k=1]   = 4 3 2 1  all discordant                             τ = −1;  Ψ = −1
      m[k=2]   = 1 2 4 3  the pair (3, 4) discordant: (5 − 1)/6      τ = 2/3; ψ_lr = (1 − 1)/2 = 0
                          (bs=2: x 4 > 3, gap 3 < 4), ψ_bs = 1:        Ψ = 1/2
    gap_loss reverses the gap: every τ and Ψ changes sign.
    """
    return pd.DataFrame({
        "hp.lr": [1, 2, 1, 2], "hp.bs": [1, 1, 2, 2], "hp.seed": [0, 0, 0, 0], "status": "done",
        "gen.gap_acc": [1.0, 2.0, 3.0, 4.0], "gen.gap_loss": [4.0, 3.0, 2.0, 1.0],
        "measure.m": [1.0, 2.0, 3.0, 4.0], "measure.m[k=1]": [4.0, 3.0, 2.0, 1.0],
        "measure.m[k=2]": [1.0, 2.0, 4.0, 3.0], "measure.m[k=2].L1": [9.0, 9.0, 9.0, 9.0],
        "measure.other": [0.0, 1.0, 0.0, 1.0]})


def test_tau_and_psi_of_each_spec_match_the_hand_computed_values():
    t = sensitivity(four_models(), "m", n_boot=0, defaults={"k": 0})
    acc = t[t.gap == "gen.gap_acc"].set_index("spec")
    loss = t[t.gap == "gen.gap_loss"].set_index("spec")
    assert list(acc.index) == ["m", "m[k=2]", "m[k=1]"]  # sorted by τ, descending
    assert acc.loc["m", "tau"] == 1 and acc.loc["m[k=1]", "tau"] == -1 and acc.loc["m[k=2]", "tau"] == pytest.approx(2 / 3)
    assert acc.loc["m", "Psi"] == 1 and acc.loc["m[k=1]", "Psi"] == -1 and acc.loc["m[k=2]", "Psi"] == 0.5
    assert (acc.loc["m[k=2]", "psi.lr"], acc.loc["m[k=2]", "psi.bs"]) == (0, 1)  # ψ per axis, beside Ψ
    assert list(acc["psi.lr"]) == [1, 0, -1] and list(acc["psi.bs"]) == [1, 1, -1]
    md = to_markdown(t)
    assert "| ψ lr | ψ bs |" in md and "ψ within each axis, lowest to highest (specifications above 0): " \
        "lr -1.000 to 1.000 (1); bs -1.000 to 1.000 (2)" in md
    for spec in acc.index:
        assert loss.loc[spec, "tau"] == pytest.approx(-acc.loc[spec, "tau"])
        assert loss.loc[spec, "Psi"] == pytest.approx(-acc.loc[spec, "Psi"])
    # Settings: the default's value from `defaults`; the main column only (not m[k=2].L1).
    assert list(acc["set.k"]) == ["0", "2", "1"] and list(acc["default"]) == [True, False, False]
    assert len(t) == 6 and "set.value" not in t.columns


def test_runs_and_values_are_left_out_as_in_the_correlations():
    df = four_models()
    wild = {c: 1e6 for c in df.columns if c.startswith(("measure.", "gen."))}
    df = pd.concat([df, pd.DataFrame([{**wild, "hp.lr": 1, "hp.bs": 1, "hp.seed": 1, "status": "diverged"}])],
                   ignore_index=True)
    df.loc[3, "measure.m[k=1]"] = np.nan  # one value of one specification is missing
    t = sensitivity(df, "m", gaps=["gap_acc"], n_boot=0).set_index("spec")
    assert t.loc["m", "n"] == 4 and t.loc["m", "tau"] == 1  # the diverged run is out of every spec
    assert t.loc["m[k=1]", "n"] == 3 and t.loc["m[k=1]", "tau"] == -1  # the NaN is out of that spec only
    assert "diverged: 1" in " ".join(sensitivity(df, "m", gaps=["gap_acc"], n_boot=0).attrs["notes"]["gen.gap_acc"])


def seeded_grid(n_specs_keys=((0.05, 0.1, 0.5), ("mssa_in", "z_half", "ista_out"), ("token", "head"), (0, 1)),
                seeds=3) -> pd.DataFrame:
    """Synthetic runs over 2 axes x seeds; every SRR-like specification = gap x its own slope + noise,
    with the layer aggregates .mean (= main) and .last."""
    rng = np.random.default_rng(0)
    rows = [dict(**{"hp.lr": lr, "hp.width": w, "hp.seed": s, "status": "done"})
            for lr in (1e-3, 2e-3, 4e-3) for w in (48, 96) for s in range(seeds)]
    df = pd.DataFrame(rows)
    df["gen.gap_acc"] = rng.normal(size=len(df)) + df["hp.lr"] * 300
    df["gen.gap_loss"] = df["gen.gap_acc"] + rng.normal(size=len(df))
    cols = {}
    for eps, rep, norm, lam in itertools.product(*n_specs_keys):
        settings = {k: v for k, v in zip(("eps", "representation", "normalize", "lambda0"), (eps, rep, norm, lam))
                    if v not in (0.1, "ista_out", "token", 1)}
        name = "measure.srr" + ("[" + ",".join(f"{k}={v}" for k, v in sorted(settings.items())) + "]" if settings else "")
        slope = np.sin(len(name))  # a different strength and sign per specification
        main = slope * df["gen.gap_acc"] + rng.normal(size=len(df))
        cols[name], cols[name + ".mean"], cols[name + ".last"] = main, main, main + rng.normal(size=len(df))
    return pd.concat([df, pd.DataFrame(cols)], axis=1)


def test_every_spec_gets_mean_and_last_with_intervals_and_the_figure_is_written(tmp_path):
    df = seeded_grid()
    t = sensitivity(df, "srr", n_boot=50, seed=1, defaults={"eps": 0.1, "lambda0": 1.0, "normalize": "token",
                                                              "representation": "ista_out"})
    assert len(spec_columns(df, "srr")) == 36 and len(t) == 2 * 36 * 2
    assert set(t["set.value"]) == {"mean", "last"} and set(t["set.eps"]) == {"0.05", "0.1", "0.5"}
    assert t["default"].sum() == 2 and set(t[t["default"]]["spec"]) == {"srr"}
    ok = t["tau_lo"].notna()
    assert ok.all() and (t["tau_lo"] <= t["tau"] + 1e-12).all() and (t["tau"] <= t["tau_hi"] + 1e-12).all()
    paths = write_sensitivity(t, tmp_path)
    assert pd.read_csv(paths["csv"]).shape[0] == len(t) and "### gen.gap_loss" in paths["md"].read_text()
    fig = plot_spec_curve(t, "gen.gap_acc", tmp_path / "figures")
    assert fig.name == "spec_curve_srr_gen_gap_acc.png" and fig.stat().st_size > 20_000
    assert "τ interval above 0" in to_markdown(t)


def test_the_cli_writes_table_and_figures_from_a_csv(tmp_path, capsys):
    csv = tmp_path / "results.csv"
    seeded_grid(((0.05, 0.1), ("mssa_in", "ista_out"), ("token",), (1,))).to_csv(csv, index=False)
    col = "measure.srr[eps=0.05,representation=mssa_in].last"  # a name with a comma survives the CSV
    assert col in pd.read_csv(csv).columns
    assert parse_measure_column(col) == ("srr", {"eps": 0.05, "representation": "mssa_in"}, "last")
    out = tmp_path / "out"
    assert main(["sensitivity", str(csv), "--out", str(out), "--bootstrap", "20", "--gaps", "gap_acc"]) == 0
    assert "| * |" in capsys.readouterr().out
    assert (out / "sensitivity_srr.csv").exists() and (out / "figures" / "spec_curve_srr_gen_gap_acc.png").exists()
    assert main(["sensitivity", str(csv), "--out", str(out), "--measure", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "srr-analyze: error: no column of measure 'nope' (measure.nope or measure.nope[...]) in the table"
    assert main(["sensitivity", str(csv), "--out", str(out), "--values", "L9"]) == 2
    assert "--values 'L9' is not stored" in capsys.readouterr().err


def test_against_other_measures_counts_the_specifications_that_beat_them(tmp_path):
    # measure.other = 0 1 0 1 against gap_acc 1 2 3 4: pairs (1,2)+ (1,3)0 (1,4)+ (2,3)- (2,4)0
    # (3,4)+ -> sign tau = (3 - 1)/6 = 1/3; psi_lr = 1 (both bs groups concordant), psi_bs: other
    # is constant within each lr group -> 0; Psi = 1/2. The specs have tau 1, 2/3, -1 and Psi
    # 1, 1/2, -1: tau above 1/3 in 2 of 3, Psi above 1/2 in 1 (1/2 is not above itself).
    t = sensitivity(four_models(), "m", gaps=["gap_acc"], n_boot=0, defaults={"k": 0}, against=["other"])
    other = t.attrs["against"]["gen.gap_acc"]["other"]
    assert other["tau"] == pytest.approx(1 / 3) and other["Psi"] == pytest.approx(0.5) and other["n"] == 4
    assert len(t) == 3 and "other" not in set(t["spec"])  # the table holds the specifications only
    md = to_markdown(t)
    assert "against `other` at its defaults (τ = 0.333, Ψ = 0.500; flagged: 2 distinct values): " \
           "τ above it in 2 of 3 specifications, Ψ above it in 1" in md
    with pytest.raises(AnalysisError, match="--against: no column measure.nope"):
        sensitivity(four_models(), "m", against=["nope"])
    # With intervals: the same resamples for the specs and the other measure; drawn as a line.
    df = seeded_grid(((0.05, 0.1), ("mssa_in", "ista_out"), ("token",), (1,)))
    df["measure.path_norm"] = df["gen.gap_acc"] * 0.5 + np.random.default_rng(1).normal(size=len(df))
    t = sensitivity(df, "srr", gaps=["gap_acc"], n_boot=30, against=["path_norm"])
    other = t.attrs["against"]["gen.gap_acc"]["path_norm"]
    line = next(x for x in to_markdown(t).splitlines() if "against `path_norm`" in x)
    above = int((t["tau_lo"] > other["tau_hi"]).sum())
    assert other["tau_lo"] <= other["tau"] <= other["tau_hi"] and f"entirely above its τ interval in {above}," in line
    fig = plot_spec_curve(t, "gen.gap_acc", tmp_path)
    assert fig is not None and fig.stat().st_size > 20_000
    csv = tmp_path / "r.csv"
    df.to_csv(csv, index=False)
    assert main(["sensitivity", str(csv), "--out", str(tmp_path / "cli"), "--bootstrap", "10", "--gaps", "gap_acc",
                 "--against", "path_norm"]) == 0


def test_no_spec_of_the_measure_is_one_line_error():
    with pytest.raises(AnalysisError, match="no column of measure 'srr'"):
        sensitivity(four_models(), "srr")
