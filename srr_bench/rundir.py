"""The run directory's one owner: its file names, finding runs, reading them, their state and repair.

One trained model = one directory::

    config.yaml             the resolved config (what rebuilds the run)
    hparams.json            flat hyperparameters, short names (the analysis' hp.* columns)
    init.safetensors        weights at initialisation, model config in the metadata (srr_bench.checkpoints)
    checkpoint.safetensors  resumable training state, rewritten atomically after every epoch
    history.csv             one row per epoch (epoch 0: the initial evaluation)
    final.safetensors       weights at the end of training
    metrics.json            final metrics; written last, so a readable one means "finished"
    measures.json           complexity measures (written by srr-measure and the sweeps)
    failure.json            the last failure of a sweep job (a relaunch retries the run)
    .lock                   the advisory lock of whoever trains or measures the run

Runs written before the weights moved to safetensors hold ``init.pt``, ``final.pt`` and
``checkpoint.pt`` (read through torch's weights-only reader); ``RunDir.weights`` and
``RunDir.checkpoint`` find either. A *light copy* is a finished run kept without any weights
(the committed ``results/*/runs``): finished, never retrained; measures it lacks cannot be
computed from it.

Every JSON file is read by ``srr_bench.io.read_json`` with the file's shape, so a file that
is missing, empty, truncated, garbage, of the wrong shape or a symbolic link is one
``RunFileError`` naming the file and the fix. ``RunDir.damage`` lists what is wrong with a
directory (reads only, no torch); ``RunDir.state`` is what ``srr-status`` prints and
``RunDir.repair`` is what a relaunch does about it, so the two agree by construction (the
README's damage table lists every case).
"""
from __future__ import annotations

import csv
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, Union

from .io import RunFileError, read_json
from .locking import LOCK_NAME, holder, is_locked

PathLike = Union[str, os.PathLike]

CONFIG, HPARAMS, HISTORY = "config.yaml", "hparams.json", "history.csv"
INIT, FINAL, CHECKPOINT = "init.safetensors", "final.safetensors", "checkpoint.safetensors"
METRICS, MEASURES, FAILURE, LOCK = "metrics.json", "measures.json", "failure.json", LOCK_NAME
LEGACY = {INIT: "init.pt", FINAL: "final.pt", CHECKPOINT: "checkpoint.pt"}  # written before safetensors
WEIGHTS = {"init": INIT, "final": FINAL}
FILES = (CONFIG, HPARAMS, INIT, CHECKPOINT, HISTORY, FINAL, METRICS, MEASURES, FAILURE, *LEGACY.values())
TRAINING_OUTPUTS = (CHECKPOINT, HISTORY, FINAL, METRICS, MEASURES, LEGACY[CHECKPOINT], LEGACY[FINAL])
# config.yaml opens with CONFIG_HEAD and closes with CONFIG_END (YAML comments): a file that
# opens with the head but lacks the end was cut short, wherever the cut fell (a cut that
# leaves valid YAML with every section would otherwise read as sound). Files written before
# the markers are checked for their sections only.
CONFIG_HEAD = "# srr-bench run config (resolved); the file ends with the line below\n"
CONFIG_END = "# end of config.yaml\n"
LIGHT_FILES = (CONFIG, HPARAMS, METRICS, HISTORY, MEASURES)  # a finished run kept without its weights
MARKERS = (CONFIG, HPARAMS, METRICS, FAILURE, CHECKPOINT, LEGACY[CHECKPOINT], LOCK)  # any of them: a run
CONFIG_SECTIONS = ("model", "data", "optim", "train")  # what every run's config.yaml holds
MEASURES_SECTIONS = ("values", "diagnostics", "failures", "settings")
STATES = ("done", "diverged", "failed", "damaged", "running", "interrupted", "pending")
METRICS_STATUSES = ("done", "diverged", "failed")

MODEL_FORMAT = "srr-bench/model/2"  # safetensors metadata "format" of weights (srr_bench.checkpoints writes them)
STATE_FORMAT = "srr-bench/train-state/1"  # ... of the resumable training state

RETRAIN = "a relaunch of the sweep trains the run again"
REWRITE = "a relaunch of the sweep rewrites it from the config"
REMEASURE = ("a relaunch of the sweep keeps it as measures.json.corrupt and measures again "
             "(by hand: move it aside and run srr-measure)")
RESTORE = "restore it from where this copy of the run came from (e.g. git checkout -- the run directory)"


def find_runs(*roots: PathLike, finished: Optional[bool] = None) -> list[Path]:
    """Every run directory under the roots (themselves included), sorted: a directory holding one of
    ``MARKERS``; hidden directories (``.hydra``, ``.submitit``, a sweep's ``.srr-sweep``) are never
    runs and symbolic links to directories are not followed. ``finished``: only those with (True)
    or without (False) metrics.json."""
    found: dict[Path, None] = {}
    for root in map(Path, roots):
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such directory")
        for d, subdirs, files in os.walk(root):
            subdirs[:] = sorted(s for s in subdirs if not s.startswith("."))
            if any(m in files for m in MARKERS) and (finished is None or (METRICS in files) == finished):
                found.setdefault(Path(d), None)
    return sorted(found)


def weights_problem(path: Path, model_cfg: Any = None, kind: str = "weights") -> Optional[str]:
    """What is wrong with a weights or checkpoint file, read without torch (None if it looks sound):
    a link, empty, not a complete safetensors file (its header must cover the whole file, so a
    truncated one is caught) or of another format, or a model config that is not the run's
    (``model_cfg``, config.yaml's model section: a file out of range for this run is not its own).
    An older run's ``.pt`` must be a zip archive holding a pickle (torch reads it at load)."""
    if path.is_symlink():
        return "is a symbolic link (a run file is read only as a regular file)"
    try:
        if path.stat().st_size == 0:
            return "is empty"
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if path.suffix == ".pt":
        import zipfile

        try:
            with zipfile.ZipFile(path) as z:
                ok = any(n.endswith("data.pkl") for n in z.namelist())
        except (OSError, zipfile.BadZipFile, ValueError):
            ok = False
        return None if ok else "is not a readable PyTorch file (truncated or garbage)"
    meta, problem = safetensors_metadata(path)
    if problem:
        return problem
    want = STATE_FORMAT if kind == "checkpoint" else MODEL_FORMAT
    if meta.get("format") != want:
        return f"is not an srr-bench {kind} file (format {meta.get('format')!r}, not {want!r})"
    try:
        saved = json.loads(meta.get("model_config", ""))
    except ValueError:
        saved = None
    if not isinstance(saved, dict):
        return "has no readable model config in its metadata"
    if isinstance(model_cfg, dict):
        differ = [k for k, v in model_cfg.items() if v is not None and k in saved and saved[k] != v]
        if differ:
            k = differ[0]
            return f"holds a model with {k}={saved[k]!r}, not this run's {k}={model_cfg[k]!r} (config.yaml)"
    return None


def safetensors_metadata(path: Path) -> tuple[dict[str, str], Optional[str]]:
    """(metadata, None) of a complete safetensors file, else ({}, what is wrong); no torch needed."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return dict(f.metadata() or {}), None
    except (SafetensorError, OSError, ValueError) as e:
        return {}, f"is not a complete safetensors file, truncated or garbage ({' '.join(str(e).split())[:120]})"


# --- the shapes of the JSON files: what is wrong, or None --------------------------------

def _object(data: Any) -> Optional[str]:
    return None if isinstance(data, dict) else f"a JSON {type(data).__name__}, not an object"


def metrics_shape(data: Any) -> Optional[str]:
    if _object(data):
        return _object(data)
    status = data.get("status", "done")  # records made elsewhere may lack it: done, as srr-measure reads them
    return None if status in METRICS_STATUSES else f"status {status!r} is not one of {'/'.join(METRICS_STATUSES)}"


def measures_shape(data: Any) -> Optional[str]:
    if _object(data):
        return _object(data)
    extra = sorted(set(data) - set(MEASURES_SECTIONS))
    if extra:
        return f"unknown section {extra[0]!r}; the sections are {', '.join(MEASURES_SECTIONS)}"
    for section in MEASURES_SECTIONS:
        if data.get(section) is not None and not isinstance(data[section], dict):
            return f"{section!r} is a JSON {type(data[section]).__name__}, not an object"
    bad = [k for k, v in (data.get("values") or {}).items() if not (v is None or isinstance(v, (int, float, str)))]
    return f"value {bad[0]!r} is not a number" if bad else None


@dataclass
class Damage:
    """A run file that is missing or unreadable, and what a relaunch does about it."""

    file: str
    problem: str
    fix: str  # retrain | rewrite | remove | remeasure | restore (by hand: a light copy's lost file)

    FIXES: ClassVar[dict[str, str]] = {
        "retrain": "trains the run again", "rewrite": "rewrites it from the config", "remove": "removes it",
        "remeasure": "keeps it as measures.json.corrupt and measures again",
        "restore": f"cannot rebuild it (a copy without weights): {RESTORE}"}

    def __str__(self) -> str:
        return f"{self.file} {self.problem}; a relaunch {self.FIXES[self.fix]}"


@dataclass
class RunState:
    path: Path
    state: str
    reason: str = ""  # failure message, lock holder, damage, ...
    metrics: Optional[dict[str, Any]] = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Measured:
    """What measures.json holds of the requested measures: ``missing`` (not stored, or stored at
    other settings) and ``outdated`` (stored at the requested settings by an earlier version of
    the measure's code). A run with weights has both computed again by a relaunch; a light copy
    cannot compute anything, and keeps outdated values as measured (they are the record)."""

    missing: tuple[str, ...] = ()
    outdated: tuple[str, ...] = ()

    @property
    def current(self) -> bool:
        return not self.missing and not self.outdated


# What measures.json holds of the requested measures (None: cannot tell); the measures package
# answers it (sweeps.state.measures_settled), the core cannot import it.
Settled = Callable[[Path, dict[str, Any]], Optional[Measured]]


class RunDir:
    """One run directory: ``rd / METRICS`` is a path, ``rd.read_metrics()`` its checked content."""

    def __init__(self, path: PathLike):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def has(self, name: str) -> bool:
        return os.path.lexists(self.path / name)

    def is_run(self) -> bool:
        return self.path.is_dir() and any(self.has(m) for m in MARKERS)

    def weights(self, which: str) -> Path:
        """The file holding the ``init`` or ``final`` weights: the safetensors one, else an older
        run's ``.pt``; the safetensors name when there is neither (where they are written)."""
        return self._either(WEIGHTS[which])

    @property
    def checkpoint(self) -> Path:
        return self._either(CHECKPOINT)

    def _either(self, name: str) -> Path:
        return self.path / (LEGACY[name] if not self.has(name) and self.has(LEGACY[name]) else name)

    # --- reading: one failure mode (RunFileError naming the file and the fix) -------------

    def read_metrics(self) -> dict[str, Any]:
        return read_json(self / METRICS, metrics_shape, RETRAIN)

    def read_measures(self) -> dict[str, Any]:
        return read_json(self / MEASURES, measures_shape, REMEASURE)

    def read_hparams(self) -> dict[str, Any]:
        return read_json(self / HPARAMS, _object, REWRITE)

    def read_failure(self) -> dict[str, Any]:
        return read_json(self / FAILURE, _object, "a relaunch of the sweep removes it and retries the run")

    def read_config(self) -> dict[str, Any]:
        """config.yaml as plain data (PyYAML's safe loader: no Hydra, no torch, no objects)."""
        import yaml

        path = self / CONFIG
        if path.is_symlink():
            raise RunFileError(path, "is a symbolic link (a run file is read only as a regular file)", REWRITE)
        try:
            text = path.read_text()
            data = yaml.safe_load(text)
        except FileNotFoundError:
            raise RunFileError(path, "is missing", REWRITE) from None
        except (OSError, ValueError, yaml.YAMLError) as e:  # UnicodeDecodeError is a ValueError
            raise RunFileError(path, f"is not readable YAML ({type(e).__name__})", REWRITE) from None
        if text.startswith(CONFIG_HEAD) and not text.endswith(CONFIG_END):
            raise RunFileError(path, "is cut short (its last line is not the end marker)", REWRITE)
        if not isinstance(data, dict) or not data:
            raise RunFileError(path, "is empty or not a mapping of settings", REWRITE)
        lost = [k for k in CONFIG_SECTIONS if not isinstance(data.get(k), dict)]
        if lost:  # a file cut short loses its later sections
            raise RunFileError(path, f"has no {lost[0]!r} section (truncated?)", REWRITE)
        return data

    def metrics_or_none(self) -> Optional[dict[str, Any]]:
        return _quiet(self.read_metrics)

    def history_problem(self, metrics: dict[str, Any]) -> Optional[str]:
        """What is wrong with history.csv beside these metrics: missing, a link, no epoch column,
        a row cut short, or fewer rows than the epochs trained (a truncated file); None if sound."""
        path = self / HISTORY
        if path.is_symlink():
            return "is a symbolic link (a run file is read only as a regular file)"
        try:
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
        except FileNotFoundError:
            return "is missing"
        except (OSError, ValueError, csv.Error) as e:
            return f"is not readable CSV ({type(e).__name__})"
        if not rows or "epoch" not in rows[0]:
            return "is empty or has no epoch column"
        if any(len(r) != len(rows[0]) for r in rows[1:]):
            return "has a row cut short (truncated)"
        epochs = metrics.get("epochs")
        try:
            last = int(float(rows[-1][rows[0].index("epoch")])) if len(rows) > 1 else -1
        except ValueError:
            return "has an epoch that is not a number"
        if isinstance(epochs, int) and last < epochs:
            return f"ends at epoch {last}, before the {epochs} epochs metrics.json records (truncated)"
        return None

    # --- what is wrong, the state, and the repair -----------------------------------------

    def light_copy(self) -> bool:
        """A finished run kept without its weights on purpose: a readable metrics.json beside
        config.yaml and hparams.json, and no weights or checkpoint file of either format."""
        return (self.metrics_or_none() is not None and self.has(CONFIG) and self.has(HPARAMS)
                and not any(self.has(n) for n in (INIT, FINAL, CHECKPOINT, *LEGACY.values())))

    def damage(self) -> list[Damage]:
        """What is wrong with the directory's files (reads only), one ``Damage`` per file; the
        module docstring and README's damage table say why each fix is the right one."""
        found: list[Damage] = []
        metrics = None
        if self.has(METRICS):
            try:
                metrics = self.read_metrics()
            except RunFileError as e:  # what it recorded (steps, sums, times) cannot be rebuilt
                found.append(Damage(METRICS, e.problem, "retrain"))
        light = metrics is not None and self.light_copy()
        model_cfg = (_quiet(self.read_config) or {}).get("model")
        trained = self.has(METRICS) or self.has(CHECKPOINT) or self.has(LEGACY[CHECKPOINT]) \
            or self.has(FINAL) or self.has(LEGACY[FINAL])
        if trained and not light:
            found += self._weights_damage(metrics, model_cfg)
        if trained:
            for name, read in ((CONFIG, self.read_config), (HPARAMS, self.read_hparams)):
                try:
                    read()
                except RunFileError as e:  # derived from the config alone
                    found.append(Damage(name, e.problem, "rewrite"))
        ckpt = self.checkpoint
        if os.path.lexists(ckpt) and metrics is not None:
            found.append(Damage(ckpt.name, "is left over from a finished run", "remove"))
        elif os.path.lexists(ckpt) and (problem := weights_problem(ckpt, model_cfg, kind="checkpoint")):
            found.append(Damage(ckpt.name, problem, "retrain"))  # removed; trained from scratch
        if metrics is not None and (problem := self.history_problem(metrics)):
            found.append(Damage(HISTORY, problem, "restore" if light else "retrain"))
        if self.has(MEASURES):
            try:
                self.read_measures()
            except RunFileError as e:  # derived from the saved weights: measured again
                found.append(Damage(MEASURES, e.problem, "remeasure"))
        return found

    def _weights_damage(self, metrics: Optional[dict[str, Any]], model_cfg: Any) -> list[Damage]:
        found = []
        init = self.weights("init")
        if not os.path.lexists(init):
            found.append(Damage(INIT, "is missing beside training outputs (directory deleted while training?)",
                                "retrain"))
        elif problem := weights_problem(init, model_cfg):
            found.append(Damage(init.name, problem, "retrain"))
        final = self.weights("final")
        if metrics is not None and metrics.get("status") == "done" and not os.path.lexists(final):
            found.append(Damage(FINAL, "is missing from a finished run (measures need it)", "retrain"))
        elif os.path.lexists(final) and (problem := weights_problem(final, model_cfg)):
            found.append(Damage(final.name, problem, "retrain"))
        return found

    def state(self, fresh_s: float = 600.0, measure_cfg: Any = None, settled: Optional[Settled] = None) -> RunState:
        """The state of the run (``STATES``); see ``sweeps.state``. With ``measure_cfg`` (the sweep's
        ``measure`` section, or ``"run"`` for config.yaml's), a trained run whose measures are not
        all stored (``settled``) is interrupted."""
        if not self.path.is_dir():
            return RunState(self.path, "pending")
        metrics = self.metrics_or_none()
        failure = _quiet(self.read_failure) if self.has(FAILURE) else None
        reason = str(failure.get("error", "")) if failure else ""
        lock = self / LOCK
        if is_locked(lock):
            h = holder(lock) or {}
            where = f"pid {h.get('pid')} on {h.get('host')}" if h else "another process"
            return RunState(self.path, "running", where, metrics, dict(holder=h))
        serious = [d for d in self.damage() if d.fix != "remove"]
        if serious:
            return RunState(self.path, "damaged", "; ".join(map(str, serious)), metrics)
        if metrics is not None:
            if metrics.get("status") == "diverged":
                return RunState(self.path, "diverged", _diverged_reason(metrics), metrics)
            if self.has(FAILURE):  # trained, but the measures stage failed
                return RunState(self.path, "failed", reason or "measures failed", metrics)
            unmeasured, note, measured = self._unmeasured(metrics, measure_cfg, settled)
            if unmeasured:
                return RunState(self.path, "interrupted", unmeasured, metrics, dict(measures_left=True, measured=measured))
            return RunState(self.path, "done", note, metrics)
        if self.has(FAILURE):
            return RunState(self.path, "failed", reason or "failed (no message)")
        h = holder(lock) or {}
        if h.get("host") not in (None, socket.gethostname()) and self._age() < fresh_s:
            # A lock held on another node may not be visible here (some NFS set-ups): trust fresh files.
            return RunState(self.path, "running", f"pid {h.get('pid')} on {h.get('host')} (files fresh)", None,
                            dict(holder=h))
        return RunState(self.path, "interrupted", "checkpoint saved; a relaunch resumes it"
                        if self.has(CHECKPOINT) or self.has(LEGACY[CHECKPOINT]) else "started, no checkpoint yet")

    def complete(self, measure_cfg: Optional[dict[str, Any]] = None, settled: Optional[Settled] = None) -> bool:
        """Finished for good: metrics.json readable, no failure, no damage and, for a done run with
        measures on, every requested measure settled (a light copy: stored, by whichever version
        of the measure; it cannot compute them again). A complete run is never touched."""
        metrics = self.metrics_or_none()
        if metrics is None or self.has(FAILURE) or self.damage():
            return False
        if metrics.get("status") != "done" or not (measure_cfg or {}).get("enabled", False):
            return True
        measured = settled(self.path, measure_cfg) if settled is not None and self.has(MEASURES) else None
        return measured is not None and (measured.current or (not measured.missing and self.light_copy()))

    def repair(self, cfg: dict[str, Any], say: Callable[[str], None] = print) -> list[str]:
        """Under the lock: repair what ``damage`` finds, one line said per file. A run whose record
        cannot be trusted loses its training outputs and is retrained (an unreadable metrics.json
        is kept as metrics.json.corrupt); config.yaml / hparams.json are rewritten from ``cfg``
        when the record's run id is this config's (else retrained); a finished run's leftover
        checkpoint is removed; an unreadable measures.json is kept as measures.json.corrupt and
        measured again; a light copy's lost history.csv is named with the fix, nothing removed."""
        from .runs import run_id  # re-exported there from wherever the run identity lives
        from .train import write_run_config

        found = self.damage()
        metrics = self.metrics_or_none()
        foreign = metrics is not None and metrics.get("run_id") not in (None, run_id(cfg))
        retrain = any(d.fix == "retrain" or (d.fix == "rewrite" and foreign) for d in found)
        for d in found:
            say(f"{'damaged' if d.fix == 'restore' else 'repairing'}: {d} -> {self.path}")
        if retrain:
            if any(d.file == METRICS for d in found):
                self._set_aside(METRICS)
            for name in (*TRAINING_OUTPUTS, *(d.file for d in found if d.file in (INIT, LEGACY[INIT]))):
                (self / name).unlink(missing_ok=True)
        else:
            for d in found:
                if d.fix == "rewrite":
                    write_run_config(cfg, self.path)
                elif d.fix == "remove":
                    (self / d.file).unlink(missing_ok=True)
                elif d.fix == "remeasure":
                    self._set_aside(d.file)
        return [str(d) for d in found]

    def _set_aside(self, name: str) -> None:
        os.replace(self / name, self / f"{name}.corrupt")

    def _age(self) -> float:
        times = [p.lstat().st_mtime for p in (self.checkpoint, self / LOCK) if os.path.lexists(p)]
        return time.time() - max(times) if times else float("inf")

    def _unmeasured(self, metrics: dict[str, Any], measure_cfg: Any,
                    settled: Optional[Settled]) -> tuple[str, str, Optional[Measured]]:
        """Why a done run's measures are unfinished ("" when finished or not asked for), a note
        for a finished one (a light copy's values from an earlier version of a measure), and what
        ``settled`` found (None when it was not asked)."""
        if measure_cfg == "run":  # as the run's job measures it (the srr section included)
            from .config import measure_section

            cfg = _quiet(self.read_config) or {}
            measure_cfg = measure_section(cfg) if isinstance(cfg.get("measure"), dict) else None
        if metrics.get("status") != "done" or not (measure_cfg or {}).get("enabled", False):
            return "", "", None
        if not self.has(MEASURES):
            return ("trained, measures not started; a relaunch measures it" if not self.light_copy() else
                    f"trained, measures not started, and {FINAL} was not kept: they cannot be computed from this copy"), "", None
        measured = settled(self.path, measure_cfg) if settled is not None else None
        if measured is None or measured.current:
            return "", "", measured
        light = self.light_copy()
        if light and measured.missing:
            return (f"trained, measures unfinished ({_names(measured.missing)}), and {FINAL} was not kept: "
                    "they cannot be computed from this copy"), "", measured
        if light:
            return "", (f"kept as measured: {_names(measured.outdated)} by an earlier version of the measure "
                        f"({FINAL} was not kept)"), measured
        if measured.missing:
            return f"trained, measures unfinished ({_names(measured.missing)}); a relaunch completes them", "", measured
        return (f"trained, {_names(measured.outdated)} computed by an earlier version of the measure; "
                "a relaunch computes them again"), "", measured


def _names(names: tuple[str, ...], shown: int = 3) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _quiet(read: Callable[[], Any]) -> Any:
    """``read()``, or None where the file is missing or unreadable (``damage`` names it)."""
    try:
        return read()
    except RunFileError:
        return None


def _diverged_reason(metrics: dict[str, Any]) -> str:
    if metrics.get("diverged_reason"):
        return str(metrics["diverged_reason"])
    return f"non-finite training loss in epoch {int(metrics.get('epochs') or 0) + 1}"  # records before the reason
