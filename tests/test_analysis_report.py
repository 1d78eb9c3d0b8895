"""Tables, figures and report.md (analysis.tables, analysis.plots, analysis.report)."""

import re

import numpy as np
import pandas as pd
import pytest

from analysis import plots
from analysis.correlate import correlate
from analysis.report import report
from analysis.synthetic import synthetic_table
from analysis.tables import fmt, to_csv_table, to_latex, to_markdown

try:  # tests/ is a package
    from tests.conftest_analysis import make_sweep
except ImportError:  # tests/ on sys.path (no __init__.py)
    from conftest_analysis import make_sweep


@pytest.fixture(scope="module")
def corr():
    df = synthetic_table({"lr": 3, "dropout": 2}, n_seeds=2, n_measures=5, seed=0).assign(**{"measure.const": 3.0})
    return df, correlate(df, n_boot=30)


def test_markdown_layout(corr):
    _, c = corr
    md = to_markdown(c)
    lines = md.splitlines()
    assert lines[0] == ("| measure | n | ψ lr | ψ dropout | τ | Ψ | K | SE mean | SE p90 | SE max | SE lr | SE dropout "
                        "| flags |")
    body = [ln for ln in lines[2:] if ln.startswith("|")]
    assert len(body) == len(c)
    flags = [ln.split("|")[-2].strip() for ln in body]
    ranked = body[:flags.count("")]
    assert flags[len(ranked):] and all(flags[len(ranked):])  # flagged rows come last
    assert [ln.split("|")[1].strip() for ln in body[len(ranked):]] == ["const"]
    assert flags[-1] == "constant"
    assert all(ln.split("|")[2].strip() == str(len(corr[0])) for ln in ranked)  # n: every model
    psi = [float(ln.split("|")[6].split()[0]) for ln in ranked]
    assert psi == sorted(psi, reverse=True)  # best Ψ first
    assert re.search(r"\| -?\d\.\d{3} \[-?\d\.\d{3}, -?\d\.\d{3}\] \|", md)  # τ with its CI, 3 decimals
    assert "groups per axis: lr 2, dropout 3" in md


def test_latex_and_csv(corr):
    _, c = corr
    tex = to_latex(c)
    assert r"\begin{tabular}" in tex and r"$\psi_{\mathrm{lr}}$" in tex and r"signal\_00" in tex
    t = to_csv_table(c)
    assert list(t.columns[:4]) == ["measure", "n", "psi.lr", "psi.dropout"] and t.columns[-1] == "flags"
    assert (t["tau"].dropna() == t["tau"].dropna().round(3)).all()
    assert fmt(-0.0001) == "0.000" and fmt(np.nan) == "–"


def test_plots_write_pngs(corr, tmp_path):
    df, c = corr
    for fn, args in [(plots.plot_bars, (c,)), (plots.plot_heatmap, (c,)),
                     (plots.plot_scatter, (df, c, "gen.gap_acc"))]:
        p = fn(*args, tmp_path / f"{fn.__name__}.png")
        assert p.is_file() and p.read_bytes()[:4] == b"\x89PNG"
    assert plots.plot_layer_profile(df, tmp_path / "none.png") is None  # no per-layer columns
    assert plots.plot_layer_history({}, df, tmp_path / "none.png") is None


def test_report_from_sweep(tmp_path):
    make_sweep(tmp_path / "sweep")
    path = report(tmp_path / "sweep", tmp_path / "out", n_boot=20, drop_diverged=True,
                  drop_nonconverged=True, min_train_acc=0.9, log=lambda m: None)
    out = tmp_path / "out"
    for name in ["report.md", "results.csv", "correlations.csv", "correlations.md", "correlations.tex",
                 "correlations_table.csv", "figures/tau_psi_bars.png", "figures/psi_heatmap.png",
                 "figures/scatter_1.png", "figures/srr_layers.png", "figures/layer_history.png"]:
        assert (out / name).is_file(), name
    md = path.read_text()
    figs = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md)
    assert figs and all((out / f).is_file() and not f.startswith("/") for f in figs)
    assert ("Runs left out of every correlation: 3 of 19 (16 used):\n\n- diverged: 1\n- not converged: 1\n"
            "- train accuracy below 0.9 (or missing): 1\n") in md
    assert len(pd.read_csv(out / "results.csv")) == 19  # the whole table; is.* and status say what was left out


def test_report_from_csv(corr, tmp_path):
    df, _ = corr
    df.to_csv(tmp_path / "t.csv", index=False)
    path = report(tmp_path / "t.csv", tmp_path / "o", n_boot=0, log=lambda m: None)
    assert "![" in path.read_text() and not (tmp_path / "o" / "results.csv").exists()


def test_figures_show_measures_not_their_sub_values():
    import pandas as pd

    from analysis.report import headline

    corr = pd.DataFrame({"measure": ["srr", "srr.L2.Rc", "srr.l0.last", "pacbayes_flatness", "pacbayes_flatness.sigma",
                                     "steps_to_ce_0.1", "steps_ce_0.1_to_0.01"]})
    assert list(headline(corr)["measure"]) == ["srr", "pacbayes_flatness", "steps_to_ce_0.1", "steps_ce_0.1_to_0.01"]


def test_scatter_marks_the_data_size_axis_with_one_marker_per_value_in_numeric_order(corr, tmp_path):
    df, c = corr
    df = df.assign(**{"hp.n_train": [(250, 1000, 4000)[i % 3] for i in range(len(df))]})
    shapes = plots._shapes(df, "n_train")
    assert [label for label, _, _ in shapes] == ["250", "1000", "4000"]  # numbers ascending, not as text
    assert len({mk for _, _, mk in shapes}) == 3
    masks = np.array([mask for _, mask, _ in shapes])
    assert (masks.sum(axis=0) == 1).all()  # every run drawn once
    assert len(plots._shapes(df, None)) == 1 and len(plots._shapes(df, "no_such_axis")) == 1
    many = df.assign(**{"hp.n_train": range(len(df))})
    assert len(df) > len(plots.MARKERS) and len(plots._shapes(many, "n_train")) == 1  # too many values to mark
    p = plots.plot_scatter(df, c, "gen.gap_acc", tmp_path / "s.png", shape="n_train")
    assert p.read_bytes()[:4] == b"\x89PNG"


def test_report_gives_the_training_set_size_alone_as_the_line_to_beat_when_it_is_an_axis(tmp_path):
    from analysis.kendall import kendall_tau

    df = synthetic_table({"n_train": 3, "width": 2}, n_seeds=2, n_measures=2)
    df["hp.n_train"] = df["hp.n_train"].map({0.0: 4000, 1.0: 1000, 2.0: 250})  # the gap grows as n falls
    csv = tmp_path / "t.csv"
    df.to_csv(csv, index=False)
    md = report(csv, tmp_path / "out", n_boot=0, log=lambda m: None).read_text()
    tau = kendall_tau(1.0 / df["hp.n_train"].to_numpy(float), df["gen.gap_acc"].to_numpy(float))
    assert tau > 0.5
    assert "## The training-set size alone" in md
    assert f"τ = {tau:.3f}, ψ n_train = " in md and "it is constant within width, so it has no ψ there" in md
    assert "inherits this much correlation" in md and "grows with the training-set size" not in md
    df.assign(**{"hp.n_train": df["hp.n_train"].map({4000: 250, 1000: 1000, 250: 4000})}).to_csv(csv, index=False)
    grows = report(csv, tmp_path / "grows", n_boot=0, log=lambda m: None).read_text()  # the gap grows with n
    assert f"τ = {-tau:.3f}, ψ n_train = -" in grows and "n_train itself is the line" in grows
    df2 = synthetic_table({"lr": 2, "width": 2}, n_seeds=2, n_measures=2)
    df2.to_csv(csv, index=False)
    assert "training-set size alone" not in report(csv, tmp_path / "out2", n_boot=0, log=lambda m: None).read_text()


def test_the_size_reference_adds_its_column_without_fragmenting_a_wide_table(tmp_path):
    """pandas reads a table with one block per column; a real study has thousands of columns, and
    adding 1/n_train one column at a time made pandas warn in the user's report log."""
    import warnings

    from analysis.collect import read_table
    from analysis.report import size_reference

    df = synthetic_table({"n_train": 3, "width": 2}, n_seeds=2, n_measures=150)
    df["hp.n_train"] = df["hp.n_train"].map({0.0: 4000, 1.0: 1000, 2.0: 250})
    df.to_csv(tmp_path / "t.csv", index=False)
    wide = read_table(tmp_path / "t.csv")
    corr = correlate(wide, n_boot=0, measures=["measure.signal_00"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lines = size_reference(wide, corr, "gen.gap_acc")
    assert lines[0] == "## The training-set size alone"
