"""srr-analyze (analysis.cli): the three commands, and one-line errors with exit code 2."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.cli import main

try:  # tests/ is a package
    from tests.conftest_analysis import make_sweep
except ImportError:  # tests/ on sys.path (no __init__.py)
    from conftest_analysis import make_sweep

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    make_sweep(tmp / "sweep")
    out = tmp / "results.csv"
    assert main(["collect", str(tmp / "sweep"), "-o", str(out), "--drop-diverged",
                 "--drop-nonconverged", "--min-train-acc", "0.9"]) == 0
    return out


def test_collect_writes_the_table(results, capsys):
    df = pd.read_csv(results)
    assert len(df) == 16 and "measure.srr" in df.columns


def test_correlate_writes_tables_and_prints_markdown(results, tmp_path, capsys):
    assert main(["correlate", str(results), "--gap", "gen.gap_acc", "--out", str(tmp_path / "c"),
                 "--bootstrap", "20"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| measure | n | ψ dropout | ψ lr | ψ variant | τ | Ψ | K |")
    for name in ("correlations.csv", "correlations.md", "correlations.tex"):
        assert (tmp_path / "c" / name).is_file()
    corr = pd.read_csv(tmp_path / "c" / "correlations.csv")
    assert corr.set_index("measure").loc["srr", "Psi"] == 1.0 and "tau_lo" in corr.columns


def run_error(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize("case", ["missing", "no_measure", "no_gap", "garbage", "empty"])
def test_bad_input_is_one_line_exit_2(case, tmp_path, capsys):
    path = tmp_path / "t.csv"
    if case == "no_measure":
        pd.DataFrame({"hp.lr": [0.1, 0.2], "gen.gap_acc": [0.1, 0.2]}).to_csv(path, index=False)
    elif case == "no_gap":
        pd.DataFrame({"hp.lr": [0.1, 0.2], "measure.m": [1, 2]}).to_csv(path, index=False)
    elif case == "garbage":
        path.write_bytes(b"\x00\xff\xfe binary \x00\n\x01\x02")
    elif case == "empty":
        path.write_text("")
    code, err = run_error(["correlate", str(path), "--out", str(tmp_path / "o")], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("srr-analyze: error: ")
    assert "Traceback" not in err


def test_report_and_collect_errors(tmp_path, capsys):
    code, err = run_error(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and err.count("\n") == 1 and "not found" in err
    code, err = run_error(["collect", str(tmp_path), "-o", str(tmp_path / "r.csv")], capsys)
    assert code == 2 and err.count("\n") == 1 and "no run directory" in err


def test_python_dash_m(results, tmp_path):
    cmd = [sys.executable, "-m", "analysis.cli", "correlate", str(results), "--gap", "gen.nope", "--out", str(tmp_path)]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip() == ("srr-analyze: error: gap column 'gen.nope' not found in the table "
                                "(gap columns present: gen.gap_acc, gen.gap_loss)")


def test_analysis_never_imports_torch():
    code = ("import sys, analysis.cli, analysis.report, analysis.correlate, analysis.collect, analysis.plots; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=120).returncode == 0
