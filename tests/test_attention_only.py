"""Hu et al. 2024 §3: the tied MSSA step with skip connection raises R^c; the negated one lowers it."""
import torch

from srr_bench.attention_only import main, run


def test_plus_mssa_decompresses_and_minus_mssa_compresses():
    rates = run(dim=32, heads=4, tokens=40, layers=5, seeds=range(3))
    plus, minus = rates["Z + MSSA (crate_c)"], rates["Z − MSSA (crate_n)"]
    assert torch.equal(plus[:, 0], minus[:, 0])  # same start
    assert (plus.diff(dim=1) > 0).all()  # R^c rises at every layer, for every seed
    assert (minus[:, -1] < minus[:, 0]).all()  # and falls overall with the sign flipped
    assert (plus[:, -1] - plus[:, 0]).min() > 1.0


def test_command_writes_csv_and_plot(tmp_path):
    assert main(["--out", str(tmp_path), "--layers", "2", "--seeds", "2", "--dim", "16"]) == 0
    assert (tmp_path / "attention_only.png").stat().st_size > 10_000
    assert len((tmp_path / "attention_only.csv").read_text().splitlines()) == 4
