"""A sweep's grid: its jobs, their configs and run directories, and the sweep manifest.

Hydra's basic sweeper (and ours, ``sweeps.sweeper``, which is the basic one less the
finished runs) turns ``hydra.sweeper.params`` plus the command line into a list of jobs,
and each launcher composes a job's config with ``load_sweep_config``. ``jobs`` does the
same, so the parent process sees every job's config before the first one starts: it
validates them all, says how many are finished, drops the finished ones before dispatch,
and writes the sweep manifest

    <sweep dir>/.srr-sweep/grid-<hash>.json   {"created", "overrides", "runs": [{"job", "run_id", "dir", "overrides"}]}

from which ``srr-status`` counts the pending runs (in the grid, no directory yet)
without composing anything. Several grids launched into one directory each leave their
own manifest. A sweep launched without one (an older sweep, another entry point) is
enumerated from Hydra's ``multirun.yaml`` instead.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

MANIFEST_DIR = ".srr-sweep"
PathLike = Union[str, os.PathLike]
# Sweepers whose jobs are the cartesian grid of BasicSweeper.split_arguments.
GRID_SWEEPERS = ("hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                 "hydra_plugins.srr_sweeper.skip_finished.SkipFinishedSweeper")
# The last grid composed: (its primary config, its jobs). The sweep callback and the sweeper
# see the same primary config object; composing is Hydra's slow part (~0.1-0.5 s a job).
_last: Optional[tuple[Any, list["Job"]]] = None


@dataclass
class Job:
    num: int
    overrides: list[str]
    cfg: dict[str, Any]  # the plain task config
    run_dir: Path

    @property
    def run_id(self) -> str:
        from srr_bench.runs import run_id

        return run_id(self.cfg)


def job_overrides(master: Any, config_loader: Any) -> Optional[list[list[str]]]:
    """Every job's overrides, as Hydra's basic sweeper makes them; None for another sweeper."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    target = str(master.hydra.sweeper.get("_target_", ""))
    if target not in GRID_SWEEPERS:
        return None
    params = master.hydra.sweeper.get("params")
    params = OmegaConf.to_container(params, resolve=False) if params is not None else {}
    args = [f"{k}={v}" for k, v in params.items()] + list(master.hydra.overrides.task)
    parsed = OverridesParser.create(config_loader=config_loader).parse_overrides(args)
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def jobs(master: Any, config_loader: Any = None) -> Optional[list[Job]]:
    """The jobs of the multirun described by ``master`` (its primary config, hydra node
    included); composed once per primary config object, however often asked."""
    global _last
    from hydra.core.global_hydra import GlobalHydra

    if _last is not None and _last[0] is master:
        return _last[1]
    loader = config_loader or GlobalHydra.instance().config_loader()
    overrides = job_overrides(master, loader)
    if overrides is None:
        return None
    out = [compose_job(master, loader, num, ovr) for num, ovr in enumerate(overrides)]
    _last = (master, out)
    return out


def compose_job(master: Any, loader: Any, num: int, overrides: list[str]) -> Job:
    """One job's config and run directory, composed as the launcher will compose it."""
    from omegaconf import open_dict

    from srr_bench.config import to_plain

    cfg = loader.load_sweep_config(master, list(overrides))
    with open_dict(cfg):
        cfg.hydra.job.num = num
    run_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
    return Job(num, list(overrides), to_plain(cfg), run_dir)


def jobs_from_multirun_yaml(sweep_dir: PathLike) -> Optional[list[Job]]:
    """Re-enumerate a sweep from the ``multirun.yaml`` Hydra saved in its directory (composes every job)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from srr_bench.config import CONF_DIR, register_resolvers

    path = Path(sweep_dir) / "multirun.yaml"
    if not path.exists():
        return None
    master = OmegaConf.load(path)
    register_resolvers()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return jobs(master, GlobalHydra.instance().config_loader())
    finally:
        GlobalHydra.instance().clear()


def manifest_entries(sweep_dir: Path, jobs_: list[Job]) -> list[dict[str, Any]]:
    out = []
    for j in jobs_:
        try:
            where = str(j.run_dir.resolve().relative_to(sweep_dir.resolve()))
        except ValueError:
            where = str(j.run_dir.resolve())
        out.append(dict(job=j.num, run_id=j.run_id, dir=where, overrides=j.overrides))
    return out


def write_manifest(sweep_dir: PathLike, jobs_: list[Job], task_overrides: list[str]) -> Path:
    """Record the grid in the sweep directory (atomically; one file per distinct grid)."""
    from srr_bench.io import write_json

    sweep_dir = Path(sweep_dir)
    runs = manifest_entries(sweep_dir, jobs_)
    digest = hashlib.sha256(json.dumps(sorted(r["dir"] for r in runs)).encode()).hexdigest()[:12]
    path = sweep_dir / MANIFEST_DIR / f"grid-{digest}.json"
    write_json(path, dict(created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), overrides=list(task_overrides), runs=runs))
    return path


def read_manifests(sweep_dir: PathLike) -> dict[Path, dict[str, Any]]:
    """Run directory -> manifest entry, over every grid launched into ``sweep_dir``."""
    sweep_dir = Path(sweep_dir)
    out: dict[Path, dict[str, Any]] = {}
    for path in sorted((sweep_dir / MANIFEST_DIR).glob("grid-*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # never written half (atomic), but a foreign file must not stop status
        for r in data.get("runs", []):
            out[(sweep_dir / r["dir"]).resolve()] = r
    return out
