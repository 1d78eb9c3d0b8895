"""The regularization study (analysis.regularization, ``srr-analyze regularization``), against
numbers worked out by hand."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.cli import main
from analysis.regularization import (difference_ci, format_table, layer_label, layer_order,
                                     regularization_table)
from analysis.schema import AnalysisError

try:  # tests/ is a package
    from tests.conftest_analysis import make_run_dir
except ImportError:  # tests/ on sys.path (no __init__.py)
    from conftest_analysis import make_run_dir

T_975_2 = 4.302652729911275  # t quantile 0.975 with 2 degrees of freedom (tables: 4.303)
REG = {"hp.srr_alpha": 0.1, "hp.srr_layers": "all", "hp.reg.dtype": "float32", "hp.reg.detach_u": False}


def run(variant, seed, acc, reg=None, status="done", **hp):
    """One row of the tidy table; a CE run has no srr/reg keys at all."""
    row = {"run_id": f"{variant}-{seed}-{reg}", "status": status, "hp.dataset": "digits",
           "hp.variant": variant, "hp.lr": 1e-3, "hp.n_train": np.nan, "hp.seed": seed, "gen.test_acc": acc}
    row.update(hp)
    if reg is not None:
        row.update({**REG, **reg})
    return row


def two_variants() -> pd.DataFrame:
    """crate: CE 80/81/82, SRR 81/83/85 (per-seed differences 1, 2, 3);
    crate_n: CE 70/72/74, SRR 70/70/70 (differences 0, -2, -4)."""
    rows = []
    for seed, (ce, srr) in enumerate(zip([0.80, 0.81, 0.82], [0.81, 0.83, 0.85])):
        rows += [run("crate", seed, ce), run("crate", seed, srr, reg={})]
    for seed, (ce, srr) in enumerate(zip([0.70, 0.72, 0.74], [0.70, 0.70, 0.70])):
        rows += [run("crate_n", seed, ce), run("crate_n", seed, srr, reg={})]
    return pd.DataFrame(rows)


def test_means_stds_and_paired_interval_by_hand():
    t = regularization_table(two_variants())
    assert list(t["variant"]) == ["crate", "crate_n"] and list(t["dataset"]) == ["digits"] * 2
    assert "lr" not in t.columns and "n_train" not in t.columns  # constant over the table
    crate, crate_n = t.iloc[0], t.iloc[1]
    assert (crate["n_ce"], crate["n_srr"], crate["ci_kind"]) == (3, 3, "paired")
    assert crate["ce_mean"] == pytest.approx(81.0) and crate["ce_std"] == pytest.approx(1.0)
    assert crate["srr_mean"] == pytest.approx(83.0) and crate["srr_std"] == pytest.approx(2.0)
    half = T_975_2 * 1.0 / math.sqrt(3)  # sd of (1, 2, 3) is 1
    assert crate["diff"] == pytest.approx(2.0)
    assert (crate["diff_lo"], crate["diff_hi"]) == pytest.approx((2 - half, 2 + half))
    half = T_975_2 * 2.0 / math.sqrt(3)  # sd of (0, -2, -4) is 2
    assert crate_n["srr_std"] == pytest.approx(0.0, abs=1e-12)
    assert crate_n["diff"] == pytest.approx(-2.0)
    assert (crate_n["diff_lo"], crate_n["diff_hi"]) == pytest.approx((-2 - half, -2 + half))
    assert (crate["alpha"], crate["layers"], crate["reg.dtype"]) == (0.1, "all", "float32")


def test_welch_interval_with_unmatched_seeds():
    # CE seeds 0-2: 80, 81, 82 (s² = 1); SRR seeds 3-6: 82, 84, 86, 88 (s² = 20/3)
    rows = [run("crate", s, a) for s, a in zip(range(3), [0.80, 0.81, 0.82])]
    rows += [run("crate", s, a, reg={}) for s, a in zip(range(3, 7), [0.82, 0.84, 0.86, 0.88])]
    r = regularization_table(pd.DataFrame(rows)).iloc[0]
    a, b = (20 / 3) / 4, 1 / 3           # s²/n of each arm
    se = math.sqrt(a + b)                # = sqrt(2)
    nu = (a + b) ** 2 / (a ** 2 / 3 + b ** 2 / 2)
    assert se == pytest.approx(math.sqrt(2)) and nu == pytest.approx(4.0755, abs=1e-4)
    half = stats.t.ppf(0.975, nu) * se
    assert r["ci_kind"] == "welch" and r["diff"] == pytest.approx(4.0)
    assert (r["diff_lo"], r["diff_hi"]) == pytest.approx((4 - half, 4 + half))


def test_difference_ci_edge_cases():
    d, lo, hi, kind = difference_ci(np.array([80.0]), np.array([81.0, 83.0]))
    assert (d, kind) == (2.0, "none") and math.isnan(lo) and math.isnan(hi)
    # a repeated seed makes pairing ambiguous: Welch
    kind = difference_ci(np.array([1.0, 2, 3]), np.array([2.0, 3, 4]),
                         np.array([0.0, 0, 1]), np.array([0.0, 0, 1]))[3]
    assert kind == "welch"


def test_layers_natural_order():
    labels = [layer_label(v) for v in (2, 2.0, "2", "all", np.nan, "random")]
    assert labels == ["2", "2", "2", "all", "all", "random"]
    rows = [run("crate", s, 0.80 + 0.01 * s) for s in range(2)]
    for layers in ["random", "10", "2", "all", "1"]:  # as text, as a CSV with "all" reads them
        rows += [run("crate", s, 0.81 + 0.01 * s, reg={"hp.srr_layers": layers}) for s in range(2)]
    t = regularization_table(pd.DataFrame(rows))
    assert list(t["layers"]) == ["all", "1", "2", "10", "random"]
    assert sorted(["random", "10", "all", "2"], key=layer_order) == ["all", "2", "10", "random"]


def test_settings_and_reg_configs_are_compared_with_their_own_baseline():
    rows = [run("crate", s, 0.80, **{"hp.lr": 1e-3}) for s in range(2)]
    rows += [run("crate", s, 0.60, **{"hp.lr": 1e-2}) for s in range(2)]
    rows += [run("crate", s, 0.81, reg={}, **{"hp.lr": 1e-3}) for s in range(2)]
    rows += [run("crate", s, 0.62, reg={}, **{"hp.lr": 1e-2}) for s in range(2)]
    rows += [run("crate", s, 0.83, reg={"hp.reg.detach_u": True}, **{"hp.lr": 1e-3}) for s in range(2)]
    t = regularization_table(pd.DataFrame(rows))
    configs = list(zip(t["lr"], t["reg.detach_u"].astype(str)))
    assert configs == [(1e-3, "False"), (1e-3, "True"), (1e-2, "False")]
    assert list(t["diff"]) == pytest.approx([1.0, 3.0, 2.0])
    assert list(t["ce_mean"]) == pytest.approx([80.0, 80.0, 60.0])
    md = format_table(t, "md")
    assert md.splitlines()[0].startswith("| dataset | variant | lr | α | layers | reg.detach_u | CE (%) |")


def test_diverged_runs_are_counted_not_averaged():
    df = two_variants()
    df = pd.concat([df, pd.DataFrame([run("crate", 3, 0.10, reg={}, status="diverged"),
                                      run("crate", 4, np.nan),  # finished without a test accuracy
                                      run("crate", 5, 0.50, reg={}, status="failed")])])
    r = regularization_table(df).iloc[0]
    assert (r["n_srr"], r["n_diverged"], r["n_ce"], r["n_ce_diverged"]) == (3, 2, 3, 1)
    assert r["srr_mean"] == pytest.approx(83.0) and r["ce_mean"] == pytest.approx(81.0)
    assert "| diverged CE / SRR |" in format_table(regularization_table(df), "md")


def test_formats_md_and_tex():
    t = regularization_table(two_variants())
    md = format_table(t, "md").splitlines()
    assert md[0] == "| dataset | variant | α | layers | CE (%) | CE+SRR (%) | Δ [95% CI] | n CE / SRR | CI |"
    assert md[2] == "| digits | crate | 0.1 | all | 81.0 ± 1.0 | 83.0 ± 2.0 | +2.0 [−0.5, +4.5] | 3 / 3 | paired |"
    assert "72.0 ± 2.0 | 70.0 ± 0.0 | −2.0 [−7.0, +3.0]" in md[3]
    tex = format_table(t, "tex")
    assert r"\toprule" in tex and r"\bottomrule" in tex
    assert r"crate\_n & 0.1 & all & $72.0 \pm 2.0$ & $70.0 \pm 0.0$ & $-2.0$ {\scriptsize $[-7.0, +3.0]$}" in tex
    with pytest.raises(AnalysisError, match="unknown table format"):
        format_table(t, "html")


@pytest.mark.parametrize("case, message", [
    ("no_reg_columns", "no regularized runs"), ("alpha_zero", "no regularized runs"),
    ("no_ce", "no CE baseline"), ("apart", "no CE baseline.*differ in: lr"),
    ("no_acc", "no gen.test_acc column"), ("empty", "no runs")])
def test_bad_input(case, message):
    df = two_variants()
    if case == "no_reg_columns":
        df = df[df["hp.srr_alpha"].isna()].drop(columns=[c for c in df.columns if c in REG])
    elif case == "alpha_zero":
        df["hp.srr_alpha"] = 0.0
    elif case == "no_ce":
        df = df[df["hp.srr_alpha"].notna()]
    elif case == "apart":
        df.loc[df["hp.srr_alpha"].notna(), "hp.lr"] = 1e-2
    elif case == "no_acc":
        df = df.drop(columns="gen.test_acc")
    else:
        df = df.iloc[:0]
    with pytest.raises(AnalysisError, match=message):
        regularization_table(df)


def layer_study() -> pd.DataFrame:
    rows = list(two_variants().to_dict("records"))
    for layers in [1, 2, "random"]:
        rows += [run("crate", s, 0.80 + 0.01 * s + 0.005 * (layers == 2), reg={"hp.srr_layers": layers})
                 for s in range(3)]
    return pd.DataFrame(rows)


def test_cli_end_to_end_on_a_csv(tmp_path, capsys):
    csv = tmp_path / "results.csv"
    layer_study().to_csv(csv, index=False)
    assert main(["regularization", str(csv), "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("| dataset | variant | α | layers |")
    assert "| digits | crate | 0.1 | random |" in captured.out
    for name in ("regularization.csv", "regularization.md", "regularization.tex"):
        assert (tmp_path / "out" / name).is_file() and name in captured.err
    for name in ("regularization_bars.png", "regularization_layers.png"):
        png = (tmp_path / "out" / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000
    back = pd.read_csv(tmp_path / "out" / "regularization.csv")
    assert list(back["layers"].astype(str)) == ["all", "1", "2", "random", "all"]


def test_cli_on_a_sweep_dir_and_errors(tmp_path, capsys):
    # as the runner writes them: CE runs have no srr/reg keys in hparams.json
    for seed in range(2):
        hp = {"variant": "crate", "dataset": "digits", "lr": 1e-3, "seed": seed}
        make_run_dir(tmp_path / "sweep", f"ce{seed}", hp, {"status": "done", "test_acc": 0.8 + 0.01 * seed})
        make_run_dir(tmp_path / "sweep", f"srr{seed}", {**hp, "srr_alpha": 0.1, "srr_layers": 2,
                                                         "reg": {"dtype": "float32", "detach_u": False}},
                     {"status": "done", "test_acc": 0.82 + 0.01 * seed})
    assert main(["regularization", str(tmp_path / "sweep"), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "| digits | crate | 0.1 | 2 | 80.5 ± 0.7 | 82.5 ± 0.7 | +2.0 [+2.0, +2.0] | 2 / 2 | paired |" in out
    assert (tmp_path / "o" / "regularization_bars.png").stat().st_size > 5000
    assert not (tmp_path / "o" / "regularization_layers.png").exists()  # one layer choice only

    csv = tmp_path / "ce.csv"
    pd.DataFrame([run("crate", s, 0.8) for s in range(2)]).to_csv(csv, index=False)
    assert main(["regularization", str(csv), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("srr-analyze: error: no regularized runs")
