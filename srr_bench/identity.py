"""A run's identity: the one hash of everything that changes what a run computes.

``run_id(cfg)`` names the run directory (``runs/<model>-<data>-<run_id>``), is written
into its weights and metrics.json, and is how a relaunch finds a finished run. It is the
sha256 of the flat composed config less the keys listed here as not changing results:

- ``NON_RESULT_KEYS``: paths, devices, verbosity, checkpoint cadence, threads, recording,
  and the ``measure`` section (measures are stored per specification in measures.json,
  keyed by their own settings, ``measures.store``); each with the reason it is safe.
- ``CONDITIONAL_KEYS``: sections that change results only in some configs. ``reg.*``
  counts only when the regulariser is on (α ≠ 0); ``srr.*`` (the SRR conventions the
  regulariser reads) only when it is on, and then only where a setting differs from
  ``SRR_BASELINE``; ``model.dropout_placement`` only where it changes the function.

Identities do not move when a config does not change. Keys that entered the hash after
runs existed (``srr.*``, ``model.dropout_placement``) enter only where they differ from
the value every earlier run had, which is pinned here (not read from today's defaults,
so that changing a default later cannot make two different runs collide).

``tests/test_identity.py`` walks every leaf of every shipped experiment's config and checks
that changing it changes the id or is covered here, and that the committed runs under
``results/`` keep their ids.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping, Optional

# Keys (dotted prefixes) that never change what a run computes, and why.
NON_RESULT_KEYS: dict[str, str] = {
    "data.root": "where the archives are read from (their content is checksummed)",
    "data.download": "whether a missing archive may be downloaded",
    "data.options.cache_dir": "where decoded images are cached (imagefolder)",
    "data.options.max_pixels": "a bound on hostile input: a run it lets through computes the same",
    "data.options.max_decoded_bytes": "a bound on hostile input: a run it lets through computes the same",
    "train.device": "CPU and GPU runs of one config are the same run (bit-identity holds per machine only)",
    "train.progress": "progress bars",
    "train.checkpoint_every": "resumable-state cadence (a resumed run ends as an uninterrupted one)",
    "train.threads": "CPU threads (float-level effects only, like the device)",
    "train.record_layers": "per-layer SRR recorded into history.csv, without touching training",
    "measure": "measures are stored per specification in measures.json, keyed by their settings",
    "hydra": "Hydra's own node (paths, launcher, sweep grid)",
}

# The SRR conventions every run before the ``srr`` section had (the regulariser read these).
SRR_BASELINE: dict[str, Any] = dict(
    representation="ista_out", l0_representation=None, eps=0.1, lambda0=1.0, l0="fraction", l0_tol=0.0,
    normalize="token", cls=True, split="train", n_images=256, source="qkv", u_norm="none", chunk=32,
)
# Keys of the srr section that cannot change the regularised loss (memory / the measure's subset only).
SRR_NON_RESULT = ("chunk", "split", "n_images")

CONDITIONAL_KEYS: dict[str, str] = {
    "reg": "only with the regulariser on (reg.alpha != 0)",
    "srr": "only with the regulariser on, and only settings that differ from SRR_BASELINE "
           f"(never {', '.join(SRR_NON_RESULT)}: they do not enter the regularised loss)",
    "model.dropout_placement": "only where it changes the function (dropout > 0 on a tied/identity operator)",
}

# Short names for the hyperparameters people sweep; other keys keep their dotted name.
HP_ALIASES = {
    "model.name": "variant", "model.dim": "width", "model.depth": "depth", "model.heads": "heads",
    "model.dropout": "dropout", "optim.name": "optimizer", "optim.lr": "lr", "optim.weight_decay": "weight_decay",
    "train.batch_size": "batch_size", "train.epochs": "epochs", "data.name": "dataset", "data.n_train": "n_train",
    "seed": "seed", "reg.alpha": "srr_alpha", "reg.layers": "srr_layers",
}


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (an empty mapping leaves no key)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _under(key: str, prefixes: Any) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def regularised(cfg: Mapping[str, Any]) -> bool:
    reg = cfg.get("reg") or {}
    return bool(isinstance(reg, Mapping) and reg.get("alpha"))


def srr_identity(srr: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """The SRR settings of a regularised run that enter its id: those that differ from the baseline."""
    out = {}
    for k, v in flatten(dict(srr or {})).items():
        if k in SRR_NON_RESULT:
            continue
        if k not in SRR_BASELINE or v != SRR_BASELINE[k]:
            out[f"srr.{k}"] = v
    return out


def _settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The flat config less the non-result keys, the regulariser's sections when it is off,
    and the SRR settings it does not change (as configured: the same keys for every run of a sweep)."""
    skip = tuple(NON_RESULT_KEYS) + ("srr",) + (() if regularised(cfg) else ("reg",))
    flat = {k: v for k, v in flatten(cfg).items() if not _under(k, skip)}
    if regularised(cfg):
        flat.update(srr_identity(cfg.get("srr")))
    return flat


def result_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The flat result-affecting part of a composed config (see the module docstring)."""
    flat = {k: v for k, v in _settings(cfg).items() if k != "model.dropout_placement"}
    model = cfg.get("model")
    if isinstance(model, Mapping) and model.get("dropout_placement", "reference") != "every_output":
        from .models import placement_changes_function  # torch: only where a model config is hashed

        if placement_changes_function(dict(model)):
            flat["model.dropout_placement"] = model.get("dropout_placement", "reference")
    return flat


def run_id(cfg: Mapping[str, Any], length: int = 12) -> str:
    """Hash of the result-affecting config (stable across key order and Python runs)."""
    blob = json.dumps(result_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def hparams(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Flat hyperparameters with short names (``HP_ALIASES``); lists become strings.

    The settings as configured (``_settings``), so every run of a sweep has the same columns.
    """
    out = {}
    for k, v in _settings(cfg).items():
        if isinstance(v, (list, tuple)):
            v = json.dumps(list(v))
        out[HP_ALIASES.get(k, k)] = v
    return out
