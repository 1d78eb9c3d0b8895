"""The state of a run directory, read from its files without touching them (``srr_bench.rundir``).

    done         metrics.json says done (and no measures failure is pending); a light copy whose
                 measures an earlier version of a measure computed is done, "kept as measured"
    diverged     metrics.json says diverged (final: a relaunch does not retrain it)
    failed       failure.json (training or measuring raised); a relaunch retries
    damaged      a run file is missing or unreadable (the reason names the file and what a
                 relaunch does: retrain, rewrite, remove, measure again, or, for a copy kept
                 without weights, the fix by hand); a relaunch repairs it
    running      another process holds run_dir/.lock (or, for a holder on another host, the
                 run's files changed within ``fresh_s``)
    interrupted  started (config.yaml or a checkpoint) but nobody holds it, or trained with its
                 measures unfinished (``measure_cfg`` given); a relaunch resumes
    pending      in the sweep's grid, no directory yet

State, damage and repair are ``RunDir``'s: ``srr-status`` and a relaunch (``sweeps.runner``)
call the same code. This module adds what needs the measures package (whether measures.json
holds every requested measure). The reader imports neither torch nor Hydra, so
``srr-status`` stays fast.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Optional, Union

from srr_bench.io import RunFileError
from srr_bench.io import read_json as _read_json
from srr_bench.rundir import FAILURE, LIGHT_FILES, MEASURES, STATES, Damage, Measured, RunDir, RunState  # noqa: F401  (re-exported)

PathLike = Union[str, os.PathLike]


def read_json(path: PathLike) -> Optional[Any]:
    """A JSON file's content, or None when it is missing or unreadable (``RunDir`` names why)."""
    try:
        return _read_json(path)
    except RunFileError:
        return None


def damage(run_dir: PathLike) -> list[Damage]:
    return RunDir(run_dir).damage()


def light_copy(run_dir: PathLike) -> bool:
    return RunDir(run_dir).light_copy()


def run_state(run_dir: PathLike, fresh_s: float = 600.0, measure_cfg: Any = None) -> RunState:
    """The state of one run directory (``RunDir.state``, measures judged by ``measures_settled``)."""
    return RunDir(run_dir).state(fresh_s, measure_cfg, measures_settled)


def complete(run_dir: PathLike, measure_cfg: Optional[dict[str, Any]] = None) -> bool:
    """Finished for good (``RunDir.complete``): a complete run is returned as is, never touched."""
    return RunDir(run_dir).complete(measure_cfg, measures_settled)


def finished(run_dir: PathLike) -> bool:
    """Trained and measured as the run's own job asked (config.yaml's measure section): done,
    or diverged, or done with every measure stored where some were computed by an earlier
    version of the measure (a relaunch would compute those again from the weights; a study
    keeps the values its code computed). What a study's results folder keeps."""
    state = run_state(run_dir, measure_cfg="run")
    if state.state in ("done", "diverged"):
        return True
    measured = state.extra.get("measured") if state.state == "interrupted" else None
    return measured is not None and not measured.missing


def keep_light(run_dir: PathLike, dest: PathLike) -> Path:
    """Copy a run's small files (``LIGHT_FILES``, no weights) to ``dest/<run name>``: a light
    copy, which reads as finished and which a relaunch never touches."""
    src = Path(run_dir)
    out = Path(dest) / src.name
    out.mkdir(parents=True, exist_ok=True)
    for name in LIGHT_FILES:
        if (src / name).exists():
            shutil.copy2(src / name, out / name)
    return out


def measure_names(measure_cfg: dict[str, Any]) -> Optional[list[str]]:
    """``measure.names`` as ``measures.compute`` takes it: None for "all", else a list."""
    names = measure_cfg.get("names", "all")
    if names == "all":
        return None
    return [names] if isinstance(names, str) else list(names)


def measure_settings(measure_cfg: dict[str, Any]) -> dict[str, Any]:
    """``measure.settings`` flat (``{"srr.eps": 0.05}``), also when given nested
    (``measure.settings.srr.eps=0.05`` on the command line makes ``{"srr": {"eps": 0.05}}``)."""
    out: dict[str, Any] = {}

    def walk(d: dict[str, Any], prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                out[f"{prefix}{k}"] = v

    walk(dict(measure_cfg.get("settings") or {}), "")
    return out


def measures_settled(run_dir: Path, measure_cfg: dict[str, Any]) -> Optional[Measured]:
    """Which requested measures measures.json lacks (no value or failure at the requested
    settings) and which it holds from an earlier version of the measure's code (the same
    settings but the version); None when the measures package cannot tell (not installed,
    another API)."""
    try:
        from measures import select
        from measures.registry import validate_overrides
        from measures.store import Store, _plain
    except ImportError:
        return None
    try:
        chosen = select(measure_names(measure_cfg), list(measure_cfg.get("exclude") or []))
        settings = measure_settings(measure_cfg)
        overrides = validate_overrides({**settings, "seed": int(settings.get("seed", 0))})
        st = Store.load(RunDir(run_dir) / MEASURES)
        missing, outdated = [], []
        for m in chosen:
            want, stored = _plain(m.settings(overrides)), st.settings.get(m.name)
            if m.name not in st.values and m.name not in st.failures:
                missing.append(m.name)
            elif stored != want:
                same_but_version = isinstance(stored, dict) and _without_version(stored) == _without_version(want)
                (outdated if same_but_version else missing).append(m.name)
        return Measured(tuple(missing), tuple(outdated))
    except Exception:  # an API change in measures: let compute() decide
        return None


def _without_version(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k != "version"}
