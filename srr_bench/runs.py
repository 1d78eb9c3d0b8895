"""Loading a run: its config, metrics, history, weights and data (``Run``).

The directory's layout, finding runs and reading their files belong to ``srr_bench.rundir``;
a run's identity to ``srr_bench.identity``.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator, Optional, Union

PathLike = Union[str, os.PathLike]

# Dotted keys that do not change a run's results.
NON_RESULT_KEYS = (
    "data.root", "data.download", "data.options.cache_dir", "train.device", "train.progress",
    "train.checkpoint_every", "train.log_every", "train.threads", "train.record_layers", "out_dir", "measure", "hydra",
)

# Short names for the hyperparameters people sweep; other keys keep their dotted name.
HP_ALIASES = {
    "model.name": "variant", "model.dim": "width", "model.depth": "depth", "model.heads": "heads",
    "model.dropout": "dropout", "optim.name": "optimizer", "optim.lr": "lr", "optim.weight_decay": "weight_decay",
    "train.batch_size": "batch_size", "train.epochs": "epochs", "data.name": "dataset", "data.n_train": "n_train",
    "seed": "seed", "reg.alpha": "srr_alpha", "reg.layers": "srr_layers",
}


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def result_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The flat result-affecting part of a config.

    The SRR regulariser's keys (``reg.*``) count only when it is on (``reg.alpha`` ≠ 0), so
    a cross-entropy run keeps the identity it had before the regulariser existed.
    """
    return _with_dropout_placement(_settings(cfg), cfg.get("model"))


def _settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """The flat config without the keys that never change results (``NON_RESULT_KEYS``)."""
    flat = flatten(cfg)
    skip = NON_RESULT_KEYS if flat.get("reg.alpha") else NON_RESULT_KEYS + ("reg",)
    return {k: v for k, v in flat.items() if not any(k == n or k.startswith(n + ".") for n in skip)}


def _with_dropout_placement(flat: dict[str, Any], model: Optional[dict[str, Any]]) -> dict[str, Any]:
    """``model.dropout_placement`` counts only where it changes the training.

    The MSSA dropout moved to the reference code's placement (issue 10): the tied, transposed
    and identity operators lost their output dropout. Runs hashed before had no such key and
    were trained with ``every_output``. So the key enters the identity only where the
    placement is ``reference`` and changes the function (dropout > 0 on those variants): a
    relaunch retrains such runs instead of taking their old results for new ones, while
    ``+model.dropout_placement=every_output`` finds the old runs, and every run that trains
    the same either way keeps the identity it had.
    """
    key = "model.dropout_placement"
    flat.pop(key, None)
    if not isinstance(model, dict) or model.get("dropout_placement", "reference") == "every_output":
        return flat
    from .models import placement_changes_function  # torch: only where a model config is hashed

    if placement_changes_function(model):
        flat[key] = model.get("dropout_placement", "reference")
    return flat


def run_id(cfg: dict[str, Any], length: int = 12) -> str:
    """Hash of the result-affecting config (stable across key order and Python runs)."""
    blob = json.dumps(result_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def hparams(cfg: dict[str, Any]) -> dict[str, Any]:
    """Flat hyperparameters with short names (see HP_ALIASES); lists become strings."""
    out = {}
    for k, v in _settings(cfg).items():  # as configured: the same columns for every run of a sweep
        if isinstance(v, (list, tuple)):
            v = json.dumps(list(v))
        out[HP_ALIASES.get(k, k)] = v
    return out


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
        from omegaconf import OmegaConf

        self.dir.read_config()  # a missing or unreadable file is one line naming it
        return OmegaConf.to_container(OmegaConf.load(self.path / CONFIG), resolve=True)

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
