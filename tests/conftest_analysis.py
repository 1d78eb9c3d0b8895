"""Helpers for the analysis tests: fabricate sweep directories as the runner writes them.

Imported by ``tests/test_analysis_*.py`` (as ``tests.conftest_analysis`` or ``conftest_analysis``); it
defines no fixtures, so pytest does not need to load it as a conftest.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd


def make_run_dir(root: Path, name: str, hparams: dict, metrics: dict, measures: dict | None = None,
                 history: pd.DataFrame | None = None) -> Path:
    """One run directory: hparams.json, metrics.json, optional measures.json / history.csv."""
    d = Path(root) / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "hparams.json").write_text(json.dumps(hparams))
    (d / "metrics.json").write_text(json.dumps(metrics))
    if measures is not None:
        (d / "measures.json").write_text(json.dumps(measures))
    if history is not None:
        history.to_csv(d / "history.csv", index=False)
    return d


def make_sweep(root: Path, seeds=(0, 1), n_layers: int = 3, rng_seed: int = 0) -> dict:
    """A small CRATE-like sweep: variant × lr × dropout × seeds, nested two levels deep.

    Gap = f(lr, dropout, variant) + noise; measures: ``srr`` (tracks the gap), ``params``
    (constant within a variant), per-layer ``srr.L<i>.<comp>``. Adds one diverged run, one
    non-converged run and one low-train-accuracy run, and returns their run ids.
    """
    rng = np.random.default_rng(rng_seed)
    grid = itertools.product(["crate", "crate_n"], [1e-3, 1e-2], [0.0, 0.1], seeds)
    for k, (variant, lr, dropout, seed) in enumerate(grid):
        gap = 0.05 + 0.03 * (lr == 1e-2) + 0.2 * dropout + 0.02 * (variant == "crate_n") + rng.normal(0, 0.005)
        train = 1.0 - rng.uniform(0, 0.005)
        values = {"srr": gap * 10 + rng.normal(0, 0.01), "params": 1000.0 + 10 * (variant == "crate_n")}
        for layer in range(n_layers):
            values[f"srr.L{layer}.R"] = 5.0 - 0.5 * layer + rng.normal(0, 0.05)
            values[f"srr.L{layer}.Rc"] = 3.0 - 0.3 * layer + (0.4 if variant == "crate" else -0.4) * layer
            values[f"srr.L{layer}.l0"] = 0.5 + 0.05 * layer
            values[f"srr.L{layer}.srr"] = values[f"srr.L{layer}.Rc"] - values[f"srr.L{layer}.R"]
        hist = pd.DataFrame({"epoch": np.arange(4), "train_loss": np.linspace(2, 0.1, 4)})
        for layer in range(n_layers):
            hist[f"layer.{layer}.R"] = 5 - 0.5 * layer + 0.1 * hist["epoch"]
            hist[f"layer.{layer}.sparsity"] = 0.5 + 0.05 * layer - 0.02 * hist["epoch"]
        run_id = f"r{k:03d}"
        make_run_dir(Path(root) / variant / f"lr{lr}", run_id,
                     {"variant": variant, "lr": lr, "dropout": dropout, "seed": seed, "dim": 64,
                      "depth": n_layers, "dataset": "digits"},
                     {"status": "done", "converged": True, "train_acc": train, "test_acc": train - gap,
                      "train_loss": 0.01, "test_loss": 0.3, "gap_acc": gap, "gap_loss": 0.29,
                      "epochs": 4, "steps": 100, "steps_to_ce_0.1": 50, "steps_to_ce_0.01": None,
                      "n_train": 1437, "n_test": 360, "run_id": run_id, "wall_s": 1.5},
                     {"values": values, "diagnostics": {}, "failures": {}}, hist)
    bad = {"diverged": ("diverged", False, 0.1), "nonconv": ("done", False, 0.95), "lowacc": ("done", True, 0.5)}
    for run_id, (status, conv, train) in bad.items():
        make_run_dir(Path(root) / "extra", run_id,
                     {"variant": "crate", "lr": 1e-3, "dropout": 0.0, "seed": 9, "dim": 64,
                      "depth": n_layers, "dataset": "digits"},
                     {"status": status, "converged": conv, "train_acc": train, "test_acc": 0.1,
                      "gap_acc": train - 0.1, "n_test": 360, "run_id": run_id},
                     {"values": {"srr": 1.0, "params": 1000.0}})
    return {"n_good": 16 if len(seeds) == 2 else 8 * len(seeds), "bad": list(bad)}
