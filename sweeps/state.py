"""The state of a run directory, read from its files without touching them.

    done         metrics.json says done (and no measures failure is pending)
    diverged     metrics.json says diverged (final: a relaunch does not retrain it)
    failed       failure.json and no metrics.json, or the measures stage failed, or a file is
                 damaged (``damage``: the reason names the file and what a relaunch does); a
                 relaunch retries
    running      another process holds run_dir/.lock (or, for a holder on another host, the
                 run's files changed within ``fresh_s``)
    interrupted  started (config.yaml or checkpoint.pt) but nobody holds it, or trained with its
                 measures unfinished (``measure_cfg`` given); a relaunch resumes
    pending      in the sweep's grid, no directory yet

The reader imports neither torch nor Hydra, so ``srr-status`` stays fast.
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional, Union

from srr_bench.locking import LOCK_NAME, holder, is_locked

STATES = ("done", "diverged", "failed", "running", "interrupted", "pending")
FAILURE = "failure.json"
PathLike = Union[str, os.PathLike]


def read_json(path: Path) -> Optional[Any]:
    """A JSON file's content, or None when it is missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


@dataclass
class Damage:
    """A run directory file that is missing or unreadable, and what a relaunch does about it."""

    file: str
    problem: str
    fix: str  # retrain | rewrite | remove | remeasure

    FIXES: ClassVar[dict[str, str]] = {"retrain": "trains the run again", "rewrite": "rewrites it from the config",
                                       "remove": "removes it", "remeasure": "keeps it as measures.json.corrupt and measures again"}

    def __str__(self) -> str:
        return f"{self.file} {self.problem}; a relaunch {self.FIXES[self.fix]}"


def damage(run_dir: PathLike) -> list[Damage]:
    """What is wrong with a run directory's files (reads only), one ``Damage`` per file:

    - metrics.json unreadable: what it recorded (steps, sums, wall time) cannot be rebuilt,
      so the run is retrained;
    - training outputs (metrics.json, checkpoint.pt, final.pt) without init.pt: the directory
      was deleted while training and recreated by a later write; retrained. Not so a
      :func:`light_copy` (a finished run kept without its weights, on purpose);
    - config.yaml or hparams.json missing beside training outputs: derived from the config,
      rewritten;
    - checkpoint.pt beside a valid metrics.json: a kill between the two; removed;
    - measures.json unreadable: derived from the saved models; measured again.
    """
    run_dir = Path(run_dir)
    found: list[Damage] = []
    has = lambda name: (run_dir / name).exists()  # noqa: E731
    metrics = read_json(run_dir / "metrics.json") if has("metrics.json") else None
    if has("metrics.json") and not isinstance(metrics, dict):
        found.append(Damage("metrics.json", "is unreadable", "retrain"))
    trained = isinstance(metrics, dict) or has("checkpoint.pt") or has("final.pt")
    if trained and not has("init.pt") and not light_copy(run_dir):
        found.append(Damage("init.pt", "is missing beside training outputs (directory deleted while training?)",
                            "retrain"))
    if trained:
        found += [Damage(name, "is missing", "rewrite") for name in ("config.yaml", "hparams.json") if not has(name)]
    if isinstance(metrics, dict) and has("checkpoint.pt"):
        found.append(Damage("checkpoint.pt", "is left over from a finished run", "remove"))
    if has("measures.json") and not isinstance(read_json(run_dir / "measures.json"), dict):
        found.append(Damage("measures.json", "is unreadable", "remeasure"))
    return found


def light_copy(run_dir: PathLike) -> bool:
    """A finished run kept without its weights: a readable metrics.json with its config.yaml,
    hparams.json and history.csv, and no ``*.pt`` file. This is how a long study is carried
    to another machine or session (the small files committed, the weights left behind): such
    a run is finished, never retrained; measures it lacks cannot be computed without final.pt."""
    run_dir = Path(run_dir)
    return (isinstance(read_json(run_dir / "metrics.json"), dict)
            and all((run_dir / n).exists() for n in ("config.yaml", "hparams.json", "history.csv"))
            and not any(run_dir.glob("*.pt")))


@dataclass
class RunState:
    path: Path
    state: str
    reason: str = ""  # failure message, lock holder, ...
    metrics: Optional[dict[str, Any]] = None
    extra: dict[str, Any] = field(default_factory=dict)


def run_state(run_dir: PathLike, fresh_s: float = 600.0, measure_cfg: Any = None) -> RunState:
    """The state of one run directory. With ``measure_cfg`` (the sweep's ``measure`` section, or
    ``"run"`` for the one in the run's config.yaml), a trained run whose measures are not all
    stored counts as interrupted."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return RunState(run_dir, "pending")
    metrics = read_json(run_dir / "metrics.json")
    failure = read_json(run_dir / FAILURE) if (run_dir / FAILURE).exists() else None
    reason = (failure or {}).get("error", "") if isinstance(failure, dict) else ""
    lock = run_dir / LOCK_NAME
    if is_locked(lock):
        h = holder(lock) or {}
        where = f"pid {h.get('pid')} on {h.get('host')}" if h else "another process"
        return RunState(run_dir, "running", where, metrics, dict(holder=h))
    serious = [d for d in damage(run_dir) if d.fix != "remove"]
    if serious:
        return RunState(run_dir, "failed", "; ".join(map(str, serious)), metrics if isinstance(metrics, dict) else None)
    if isinstance(metrics, dict):
        if metrics.get("status") == "diverged":
            return RunState(run_dir, "diverged", _diverged_reason(metrics), metrics)
        if failure is not None:  # trained, but the measures stage failed
            return RunState(run_dir, "failed", reason or "measures failed", metrics)
        unmeasured = _unmeasured(run_dir, metrics, measure_cfg)
        if unmeasured:
            return RunState(run_dir, "interrupted", unmeasured, metrics, dict(measures_left=True))
        return RunState(run_dir, "done", "", metrics)
    if failure is not None:
        return RunState(run_dir, "failed", reason or "failed (no message)")
    h = holder(lock) or {}
    if h.get("host") not in (None, socket.gethostname()) and _age(run_dir) < fresh_s:
        # A lock held on another node may not be visible here (some NFS set-ups): trust fresh files.
        return RunState(run_dir, "running", f"pid {h.get('pid')} on {h.get('host')} (files fresh)", None, dict(holder=h))
    return RunState(run_dir, "interrupted", _progress(run_dir))


def _age(run_dir: Path) -> float:
    times = [p.stat().st_mtime for p in (run_dir / "checkpoint.pt", run_dir / LOCK_NAME) if p.exists()]
    return time.time() - max(times) if times else float("inf")


def _diverged_reason(metrics: dict[str, Any]) -> str:
    if metrics.get("diverged_reason"):
        return str(metrics["diverged_reason"])
    return f"non-finite training loss in epoch {int(metrics.get('epochs') or 0) + 1}"  # records before the reason was kept


def _run_measure_cfg(run_dir: Path) -> Optional[dict[str, Any]]:
    """The ``measure`` section of the run's config.yaml (PyYAML only: no Hydra, no torch)."""
    try:
        import yaml

        with open(run_dir / "config.yaml") as f:
            section = (yaml.safe_load(f) or {}).get("measure")
    except (OSError, ValueError, AttributeError, ImportError):
        return None
    return section if isinstance(section, dict) else None


def _unmeasured(run_dir: Path, metrics: dict[str, Any], measure_cfg: Any) -> str:
    """Why a done run's measures are unfinished ("" when they are finished or not asked for)."""
    if measure_cfg == "run":
        measure_cfg = _run_measure_cfg(run_dir)
    if metrics.get("status") != "done" or not (measure_cfg or {}).get("enabled", False):
        return ""
    if (run_dir / "measures.json").exists() and measures_settled(run_dir, measure_cfg) is not False:
        return ""
    if light_copy(run_dir):
        return "trained, measures unfinished, and final.pt was not kept: they cannot be computed from this copy"
    if not (run_dir / "measures.json").exists():
        return "trained, measures not started; a relaunch measures it"
    return "trained, measures unfinished; a relaunch completes them"


def _progress(run_dir: Path) -> str:
    if (run_dir / "checkpoint.pt").exists():
        return "checkpoint saved; a relaunch resumes it"
    return "started, no checkpoint yet"


def complete(run_dir: PathLike, measure_cfg: Optional[dict[str, Any]] = None) -> bool:
    """Finished for good: metrics.json written and, for a done run with measures on, every
    requested measure stored or recorded as failed with the current settings. A complete
    run is returned as is; nothing in its directory is touched."""
    run_dir = Path(run_dir)
    metrics = read_json(run_dir / "metrics.json")
    if not isinstance(metrics, dict) or (run_dir / FAILURE).exists() or damage(run_dir):
        return False
    if metrics.get("status") != "done" or not (measure_cfg or {}).get("enabled", False):
        return True
    return measures_settled(run_dir, measure_cfg) is True


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


def measures_settled(run_dir: Path, measure_cfg: dict[str, Any]) -> Optional[bool]:
    """Whether measures.json holds every requested measure (value or failure) at the current
    settings; None when the measures package cannot tell (not installed, another API)."""
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
        path = run_dir / "measures.json"
        st = Store.load(path)
        for m in chosen:
            stored = st.settings.get(m.name)
            if stored != _plain(m.settings(overrides)) or (m.name not in st.values and m.name not in st.failures):
                return False
        return True
    except Exception:  # an API change in measures: let compute() decide
        return None
