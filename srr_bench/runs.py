"""Loading a run: its config, metrics, history, weights and data (``Run``).

The directory's layout, finding runs and reading their files belong to ``srr_bench.rundir``;
a run's identity to ``srr_bench.identity``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator, Optional, Union

PathLike = Union[str, os.PathLike]

# Run identity and hyperparameters: srr_bench.identity (imported here for older callers).
from .identity import HP_ALIASES, NON_RESULT_KEYS, flatten, hparams, result_config, run_id  # noqa: F401


from .rundir import CONFIG, METRICS, RunDir, find_runs  # noqa: F401  (find_runs: older callers)


@dataclass
class Run:
    """A run directory, read lazily (through ``RunDir``: one failure mode, ``RunFileError``)."""

    path: Path

    @property
    def dir(self) -> RunDir:
        return RunDir(self.path)

    @cached_property
    def config(self) -> dict[str, Any]:
        """config.yaml as ``RunDir.read_config`` reads and checks it (written resolved: no interpolation)."""
        return self.dir.read_config()

    @property
    def metrics(self) -> Optional[dict[str, Any]]:
        return self.dir.read_metrics() if self.dir.has(METRICS) else None

    @property
    def done(self) -> bool:
        return self.metrics is not None

    @property
    def history(self):  # pandas.DataFrame
        import pandas as pd

        from .rundir import HISTORY

        return pd.read_csv(self.path / HISTORY)

    def model(self, which: str = "final"):
        """The ``init`` or ``final`` model (safetensors, or an older run's ``.pt``)."""
        from .checkpoints import load_model

        return load_model(self.dir.weights(which))

    def data(self, root: Optional[str] = None):
        """The run's data set (same subsets); ``root`` overrides the recorded data root."""
        from .data import load_data

        return load_data({**self.config["data"], **({"root": root} if root else {})})


def load_run(path: PathLike) -> Run:
    path = Path(path)
    if not (path / CONFIG).exists():
        raise FileNotFoundError(f"{path}: not a run directory (no {CONFIG})")
    return Run(path)
