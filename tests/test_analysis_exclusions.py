"""What the correlations leave out, and say: diverged / failed / unfinished runs, NaN and ±inf
values per measure, lost axes, flagged measures (analysis.exclusions, analysis.flags)."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main
from analysis.collect import collect
from analysis.correlate import correlate
from analysis.flags import measure_flags
from analysis.report import report
from analysis.tables import notes, sort_rows, to_csv_table, to_latex, to_markdown

try:  # tests/ is a package
    from tests.conftest_analysis import make_run_dir, make_sweep
except ImportError:  # tests/ on sys.path (no __init__.py)
    from conftest_analysis import make_run_dir, make_sweep

INF = np.inf


def hand_table() -> pd.DataFrame:
    """Six runs over lr ∈ {1, 2, 3} × 2 seeds, plus a diverged run at lr = 4.

    ``m`` is NaN on row 3 and +inf on row 4, so it is scored on rows 0, 1, 2, 5:
    x = (1, 3, 2, 5), g = (.10, .12, .20, .35): 6 pairs, one discordant (rows 1, 2), so
    τ = (5 − 1)/6 = 2/3. lr is the only axis: one group, ψ_lr = Ψ = τ. Sign-error
    (unweighted), environments lr 1↔2: pairs (0,2) right, (1,2) wrong -> 1/2; lr 1↔3:
    (0,5), (1,5) right -> 0; lr 2↔3: (2,5) right -> 0; mean 1/6, max 1/2.
    """
    return pd.DataFrame({
        "hp.lr": [1, 1, 2, 2, 3, 3, 4], "hp.seed": [0, 1, 0, 1, 0, 1, 0],
        "status": ["done"] * 6 + ["diverged"],
        "gen.gap_acc": [0.10, 0.12, 0.20, 0.25, 0.30, 0.35, 0.90],
        "measure.m": [1.0, 3.0, 2.0, np.nan, INF, 5.0, 0.0],
        "measure.m2": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0],
        "measure.m4": [1.0, 2.0, 3.0, 4.0, np.nan, np.nan, 1.0],
    })


def row(corr, name):
    return corr.set_index("measure").loc[name]


def test_missing_and_infinite_values_are_dropped_per_measure_hand_checked():
    corr = correlate(hand_table(), hoeffding=False)
    m = row(corr, "m")
    assert (m["n"], m["n_nan"], m["n_inf"]) == (4, 1, 1)
    assert m["tau"] == pytest.approx(2 / 3) and m["psi.lr"] == pytest.approx(2 / 3) and m["Psi"] == pytest.approx(2 / 3)
    assert m["sign_error_mean"] == pytest.approx(1 / 6) and m["sign_error_max"] == 0.5
    m2 = row(corr, "m2")  # the diverged run (gap .90, value 0) is out: a perfect measure stays perfect
    assert (m2["n"], m2["tau"], m2["Psi"]) == (6, 1.0, 1.0)
    assert corr.attrs["n_models"] == 6 and corr.attrs["n_runs"] == 7 and corr.attrs["left_out"] == {"diverged": 1}
    # every statistic of m equals the one on the table without the rows m cannot use
    alone = correlate(hand_table().iloc[[0, 1, 2, 5]][["hp.lr", "hp.seed", "gen.gap_acc", "measure.m"]],
                      hoeffding=False)
    for k in ("tau", "tau_b", "Psi", "cmi", "sign_error_mean", "sign_error_max"):
        assert m[k] == pytest.approx(alone[k].iloc[0]), k


def test_n_is_in_every_table_format():
    corr = correlate(hand_table(), hoeffding=False)
    md = to_markdown(corr)
    assert md.splitlines()[0] == "| measure | n | ψ lr | τ | Ψ | K | SE mean | SE p90 | SE max | SE lr | flags |"
    row = md.splitlines()[2].split(" | ")
    assert row[6] == row[9]  # one axis: every coupled environment differs in lr, so SE lr is SE mean
    assert "| m | 4 | 0.667 | 0.667 | 0.667 |" in md
    tex = to_latex(corr)
    assert r"Measure & $n$ & $\psi_{\mathrm{lr}}$" in tex and r"m & 4 & 0.667" in tex
    assert r"$\pm$inf on 1/6 runs" in tex
    t = to_csv_table(corr).set_index("measure")
    assert (t.loc["m", "n"], t.loc["m2", "n"]) == (4, 6)


def test_notes_count_every_run_and_value_left_out_and_lost_axis_values():
    lines = notes(correlate(hand_table(), hoeffding=False))
    assert lines[:2] == ["Runs left out of every correlation: 1 of 7 (6 used):", "- diverged: 1"]
    assert ("warning: axis `lr` lost lr = 4: all its runs were left out, 1 diverged; "
            "the correlations cover lr = 1, 2, 3 only") in lines
    assert ("warning: `m4` lost lr = 3: it is NaN or ±inf on all those runs; "
            "its statistics cover lr = 1, 2 only") in lines
    assert "- `m`: 4 of 6 runs; 1 missing (NaN), 1 infinite (±inf)" in lines
    assert "- `m4`: 4 of 6 runs; 2 missing (NaN)" in lines
    assert not any("`m2`" in ln for ln in lines)


def test_reasons_in_rule_order_and_an_axis_that_collapses():
    df = pd.DataFrame({"hp.lr": [1, 1, 1, 2, 2, 2, 3], "hp.wd": [0, 1, 0, 1, 0, 1, 0],
                       "status": ["done", "done", "done", "diverged", "failed", "interrupted", "done"],
                       "is.converged": [True, True, None, True, True, True, False],
                       "gen.train_acc": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.2],
                       "gen.gap_acc": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, np.inf],
                       "measure.m": [1.0, 3.0, 2.0, 4.0, 5.0, 6.0, 7.0]})
    corr = correlate(df, hoeffding=False, converged_only=True, min_train_acc=0.9)
    assert corr.attrs["left_out"] == {"diverged": 1, "failed": 1, "unfinished": 1,
                                      "not converged": 1, "convergence unknown (no stopping target)": 1}
    assert row(corr, "m")["n"] == 2
    lines = corr.attrs["notes"]
    assert lines[0] == "Runs left out of every correlation: 5 of 7 (2 used):"
    assert ("warning: axis `lr` lost lr = 2, 3: all its runs were left out, 1 diverged, 1 failed, 1 unfinished, "
            "1 not converged; the correlations cover lr = 1 only, so lr is no longer an axis") in lines
    # without the convergence filter the low-accuracy, infinite-gap run is left out for its gap
    corr = correlate(df, hoeffding=False)
    assert corr.attrs["left_out"] == {"diverged": 1, "failed": 1, "unfinished": 1, "non-finite gen.gap_acc": 1}
    assert correlate(df, hoeffding=False, include_diverged=True).attrs["left_out"].get("diverged") is None


def test_too_few_runs_left_says_why():
    df = hand_table().assign(status=["done"] + ["diverged"] * 6)
    with pytest.raises(ValueError, match=r"fewer than 2 of the 7 runs .*\(6 diverged\)"):
        correlate(df)


@pytest.mark.parametrize("values, expected", [
    ([1.0, 2.0, 3.0, 4.0], ""),
    ([5.0, 5.0, 5.0, 5.0], "constant"),
    ([1.0, 2.0, 1.0, 2.0], "2 distinct values"),
    ([1000.0, 1000.0 + 1e-6, 1000.0 + 2e-6, 1000.0 + 3e-6], "nearly constant (relative spread 3.0e-09)"),
    ([1.0, np.nan, 3.0, 4.0], "NaN on 1/4 runs"),
    ([1.0, INF, 3.0, -INF, 5.0], "±inf on 2/5 runs"),
    ([np.nan, np.nan], "undefined (NaN on every run)"),
    ([1.0, np.nan, 1.0], "NaN on 1/3 runs; constant"),
])
def test_measure_flags(values, expected):
    assert measure_flags(values) == expected


def test_flagged_measures_are_listed_last_not_ranked():
    df = hand_table().assign(**{"measure.const": 2.0, "measure.anti": -hand_table()["gen.gap_acc"]})
    corr = correlate(df, hoeffding=False)
    order = list(sort_rows(corr)["measure"])
    assert order == ["m2", "anti", "m4", "m", "const"]  # anti (Ψ = −1) ranks above the flagged m4 (Ψ = 1)
    assert row(corr, "const")["flags"] == "constant" and row(corr, "m")["flags"] == "NaN on 1/6 runs; ±inf on 1/6 runs"
    assert any(ln.startswith("Flagged measures are listed last and not ranked") for ln in notes(corr))


def test_collect_reads_infinities_reasons_and_unfinished_runs(tmp_path):
    hp = {"lr": 0.1, "seed": 0}
    make_run_dir(tmp_path, "ok", hp, {"status": "done", "converged": None, "gap_acc": 0.1},
                 {"values": {"pathnorm": "inf", "neg": "-inf", "srr": None, "l2": 2.0}})
    make_run_dir(tmp_path, "div", {**hp, "lr": 10.0},
                 {"status": "diverged", "diverged_reason": "train loss 150 > 10 x initial", "converged": False,
                  "gap_acc": 0.0})
    (tmp_path / "unf").mkdir()
    (tmp_path / "unf" / "hparams.json").write_text(json.dumps({**hp, "seed": 1}))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.yaml").write_text("seed: 2\n")
    (tmp_path / "bad" / "failure.json").write_text(json.dumps({"error": "boom"}))
    (tmp_path / "ok" / ".hydra").mkdir()
    (tmp_path / "ok" / ".hydra" / "config.yaml").write_text("x: 1\n")  # Hydra's copy is not a run
    lines = []
    df = collect(tmp_path, log=lines.append, unfinished=True).set_index("run_id")
    assert "collect: 2 run directories without metrics.json (1 failed (failure.json), 1 unfinished), " \
           "kept as rows without results" in lines
    assert df.loc["ok", "measure.pathnorm"] == INF and df.loc["ok", "measure.neg"] == -INF
    assert np.isnan(df.loc["ok", "measure.srr"])
    assert pd.isna(df.loc["ok", "is.converged"])  # no stopping target: unknown, not False
    assert df.loc["div", "is.diverged"] and df.loc["div", "diverged_reason"] == "train loss 150 > 10 x initial"
    assert (df.loc["unf", "status"], df.loc["unf", "hp.seed"], df.loc["bad", "status"]) == ("unfinished", 1, "failed")
    assert len(collect(tmp_path, log=lambda m: None)) == 2  # by default only finished runs are rows


def undecided_table() -> pd.DataFrame:
    """Six runs, lr ∈ {1, 2, 3} × 2 seeds, gap increasing with the row. ``p`` (a PAC-Bayes-like
    measure with a σ search) is x = (1, 3, 2, 4, 6, 5): 15 pairs, two discordant (rows 1-2 and
    4-5), τ = 11/15. Its search left rows 1 and 4 undecided; without them x = (1, 2, 4, 5) is in
    the gap's order, τ = 1. ``p.sigma`` is the same measure's diagnostic value; ``p2`` has no search."""
    return pd.DataFrame({
        "hp.lr": [1, 1, 2, 2, 3, 3], "hp.seed": [0, 1, 0, 1, 0, 1], "status": ["done"] * 6,
        "gen.gap_acc": [0.10, 0.12, 0.20, 0.25, 0.30, 0.35],
        "measure.p": [1.0, 3.0, 2.0, 4.0, 6.0, 5.0], "measure.p.sigma": [1.0, 3.0, 2.0, 4.0, 6.0, 5.0],
        "measure.p2": [1.0, 3.0, 2.0, 4.0, 6.0, 5.0],
        "undecided.p": [False, True, False, False, True, False],
    })


def test_undecided_values_are_counted_and_left_out_only_when_asked_hand_checked():
    kept = correlate(undecided_table(), hoeffding=False)
    for name in ("p", "p.sigma", "p2"):
        assert (row(kept, name)["n"], row(kept, name)["tau"], row(kept, name)["flags"]) == (6, pytest.approx(11 / 15), "")
    assert (row(kept, "p")["n_undecided"], row(kept, "p.sigma")["n_undecided"], row(kept, "p2")["n_undecided"]) == (2, 2, 0)
    assert notes(kept) == ["All 6 runs of the table are used.",
                           "Values their measure's search left undecided (diagnostics `converged: false`), "
                           "used as they are (`--drop-undecided` leaves them out):", "- `p`: 2 of 6", "- `p.sigma`: 2 of 6"]
    dropped = correlate(undecided_table(), hoeffding=False, drop_undecided=True)
    for name in ("p", "p.sigma"):
        r = row(dropped, name)
        assert (r["n"], r["n_nan"], r["n_undecided"], r["tau"]) == (4, 0, 2, 1.0)
        assert r["flags"] == "undecided on 2/6 runs (left out)"
    assert (row(dropped, "p2")["n"], row(dropped, "p2")["tau"]) == (6, pytest.approx(11 / 15))
    assert "- `p`: 4 of 6 runs; 2 undecided by its search" in notes(dropped)
    alone = correlate(undecided_table().iloc[[0, 2, 3, 5]], hoeffding=False, measures=["p"])
    for k in ("tau", "Psi", "cmi", "sign_error_mean"):
        assert row(dropped, "p")[k] == pytest.approx(alone[k].iloc[0]), k


def test_undecided_values_are_collected_from_diagnostics_and_dropped_from_the_cli(tmp_path, capsys):
    for i, (lr, seed) in enumerate([(1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1)]):
        diag = {"p": {"converged": i not in (1, 4), "sigma": 0.1}, "p2": {"n_images": 64}, "p[q=1]": {"converged": True}}
        make_run_dir(tmp_path / "sweep", f"r{i}", {"lr": lr, "seed": seed},
                     {"status": "done", "converged": True, "gap_acc": 0.1 + 0.05 * i},
                     {"values": {"p": [1, 3, 2, 4, 6, 5][i], "p[q=1]": i, "p2": i}, "diagnostics": diag})
    df = collect(tmp_path / "sweep", log=lambda m: None)
    assert df["undecided.p"].tolist() == [False, True, False, False, True, False]
    assert not df["undecided.p[q=1]"].any() and "undecided.p2" not in df.columns
    df.to_csv(tmp_path / "t.csv", index=False)  # the flag survives a CSV round trip
    assert main(["correlate", str(tmp_path / "t.csv"), "--out", str(tmp_path / "c"), "--drop-undecided"]) == 0
    assert "- `p`: 4 of 6 runs; 2 undecided by its search" in capsys.readouterr().err
    md = (tmp_path / "c" / "correlations.md").read_text()
    assert "| p[q=1] | 6 |" in md and "| p | 4 |" in md and "undecided on 2/6 runs (left out)" in md


@pytest.fixture()
def hostile_csv(tmp_path):
    """A synthetic grid with a diverged run (finite blow-up), a failed one, NaN and ±inf values."""
    df = hand_table()
    df["gen.n_test"] = 10_000
    df = pd.concat([df, df.iloc[[0]].assign(status="failed", **{"gen.gap_acc": np.nan})], ignore_index=True)
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    return path


def test_correlate_cli_prints_what_it_left_out(hostile_csv, tmp_path, capsys):
    assert main(["correlate", str(hostile_csv), "--out", str(tmp_path / "c")]) == 0
    cap = capsys.readouterr()
    assert cap.out.startswith("| measure | n |")
    err = cap.err.splitlines()
    assert err[:3] == ["Runs left out of every correlation: 2 of 8 (6 used):", "- diverged: 1", "- failed: 1"]
    assert "- `m`: 4 of 6 runs; 1 missing (NaN), 1 infinite (±inf)" in err
    md = (tmp_path / "c" / "correlations.md").read_text()
    assert "- diverged: 1" in md and "| m | 4 |" in md
    assert main(["correlate", str(hostile_csv), "--out", str(tmp_path / "d"), "--include-diverged"]) == 0
    assert "- diverged" not in capsys.readouterr().err


def test_report_on_nan_inf_diverged_table(hostile_csv, tmp_path):
    path = report(hostile_csv, tmp_path / "r", n_boot=0, log=lambda m: None)
    md = path.read_text()
    assert "6 of the 8 runs in the table are correlated with `gen.gap_acc`" in md and "## Runs and values left out" in md
    assert "**Warning**: axis `lr` lost lr = 4" in md
    assert "| m | 4 |" in md and "NaN on 1/6 runs; ±inf on 1/6 runs |" in md
    for f in ("tau_psi_bars.png", "psi_heatmap.png", "scatter_1.png"):
        assert (tmp_path / "r" / "figures" / f).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_report_from_a_sweep_counts_unfinished_runs(tmp_path):
    make_sweep(tmp_path / "sweep")
    d = tmp_path / "sweep" / "extra" / "unfinished"
    d.mkdir()
    (d / "hparams.json").write_text(json.dumps({"variant": "crate", "lr": 1e-3, "dropout": 0.0, "seed": 7}))
    md = report(tmp_path / "sweep", tmp_path / "out", n_boot=0, log=lambda m: None).read_text()
    assert "Runs left out of every correlation: 2 of 20 (18 used):\n\n- diverged: 1\n- unfinished: 1\n" in md
    assert len(pd.read_csv(tmp_path / "out" / "results.csv")) == 20
