"""``srr-measure``: compute complexity measures on saved runs, without retraining.

    srr-measure runs/crate-digits-1a2b3c                 # every default measure, one run
    srr-measure multirun/2025-01-01_12-00-00             # every run under a sweep directory
    srr-measure RUN --measures 'srr*,pacbayes*' --eps 0.05 --set pacbayes.mc_samples=16
    srr-measure RUNS --measures srr --grid srr.eps=0.05,0.1,0.5 --grid srr.representation=mssa_in,z_half
    srr-measure RUNS --measures srr,path_norm,sharpness --study   # the study grids (measures.specs)
    srr-measure --list                                   # measures and their settings

Results go into each run's measures.json after every measure. Measures already
computed with the same settings are skipped (``--recompute`` forces them); a failing
measure is recorded and the others go on. Each run is measured under its run lock
(``run_dir/.lock``, which ``srr-train`` holds while it trains and measures the run), so
measuring a sweep that is still training is safe: a run held by another process is
skipped with one line, to be measured by a later call. Exit status: 0 when everything
ran, 1 when a run was refused or a measure failed, 2 on a usage error (unknown measure or
setting).
"""
from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from srr_bench.io import one_line_os_errors
from srr_bench.settings import split_list

from . import MEASURES, SETTINGS, compute
from .api import select
from .registry import GLOBAL_SETTINGS, MeasureError, validate_overrides
from .specs import STUDY, STUDY_GRIDS, check_grid, default_of, expand, read_value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="srr-measure", description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="*", help="run directories or sweep directories (searched for runs)")
    p.add_argument("--measures", "-m", default=None,
                   help="comma-separated measure names or glob patterns (default: all)")
    p.add_argument("--exclude", default="", help="comma-separated names or patterns to leave out")
    p.add_argument("--recompute", action="store_true", help="recompute measures that are already current")
    p.add_argument("--seed", type=int, default=None,
                   help=f"seed of every subset and noise draw (default {GLOBAL_SETTINGS['seed']})")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    p.add_argument("--batch-size", type=int, default=256, help="evaluation batch size (memory only)")
    p.add_argument("--eps", type=float, help="SRR quantisation ε (sets srr.eps)")
    p.add_argument("--lambda0", type=float, help="SRR sparsity weight λ₀ (sets srr.lambda0)")
    p.add_argument("--n-images", type=int, help="SRR images per run (sets srr.n_images)")
    p.add_argument("--size-adjusted", action="store_true",
                   help="also store RGM's data-set-size adjusted values as <name>.size_adjusted")
    p.add_argument("--set", action="append", default=[], metavar="GROUP.KEY=VALUE",
                   help="any setting, e.g. pacbayes.mc_samples=16 (repeatable; see --list)")
    p.add_argument("--grid", action="append", default=[], metavar="GROUP.KEY=V1,V2,...",
                   help="compute every selected measure of GROUP once per point of the grid (the cartesian "
                        "product of the --grid options), each stored as its specification, e.g. srr[eps=0.05]")
    p.add_argument("--study", action="store_true",
                   help="the grids of the sensitivity study (measures.specs.STUDY_GRIDS) for the selected measures")
    p.add_argument("--list", action="store_true", help="list the measures and settings, then exit")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    return p


def _value(key: str, text: str) -> Any:
    """``text`` read as setting ``key``'s type (a string setting keeps "none"); see ``specs.read_value``."""
    return read_value(text, default_of(key))


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq:
            raise MeasureError(f"--set needs KEY=VALUE, got {item!r}")
        out[key.strip()] = _value(key.strip(), value)
    for flag, key in (("eps", "srr.eps"), ("lambda0", "srr.lambda0"), ("n_images", "srr.n_images")):
        if getattr(args, flag) is not None:
            out[key] = getattr(args, flag)
    if args.size_adjusted:
        out["size_adjusted"] = True
    return validate_overrides(out)


def grid_from(args: argparse.Namespace) -> dict[str, list[Any]]:
    """The ``--grid GROUP.KEY=V1,V2`` options as {key: values}, read and checked (``specs.check_grid``)."""
    grid: dict[str, list[str]] = {}
    for item in args.grid:
        key, eq, values = item.partition("=")
        if not eq or not values.strip():
            raise MeasureError(f"--grid needs GROUP.KEY=V1,V2,..., got {item!r}")
        if key.strip() in grid:
            raise MeasureError(f"--grid {key.strip()} given twice")
        grid[key.strip()] = [v for v in values.split(",") if v.strip()]
    return check_grid(grid)


def list_measures() -> str:
    lines = []
    for name in MEASURES.names():
        m = MEASURES.get(name)
        needs = ",".join(sorted(m.needs)) or "-"
        package = f"; from package {MEASURES.origin[name]}" if name in MEASURES.origin else ""  # a plugin's
        lines.append(f"{name:34s} [{m.group}; needs {needs}{package}] {m.summary}")
    lines.append("\nsettings (--set GROUP.KEY=VALUE, --grid GROUP.KEY=V1,V2; a specification is MEASURE[KEY=VALUE,...]):")
    for group, keys in sorted(SETTINGS.items()):
        if keys:
            lines.append(f"  {group}: " + ", ".join(f"{k}={v!r}" for k, v in keys.items()))
    lines.append("\nstudy grids (--study):")
    lines += [f"  {name}: " + " + ".join("; ".join(f"{k}={','.join(map(str, v))}" for k, v in grid.items())
                                      for grid in grids)
              for name, grids in STUDY_GRIDS.items()]
    return "\n".join(lines)


def find_run_dirs(paths: Sequence[str]) -> list[Path]:
    """The run directories the paths name: a run itself, or every run under a sweep (``srr_bench.rundir``)."""
    from srr_bench.rundir import RunDir, find_runs

    runs: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise MeasureError(f"{p}: no such directory")
        found = [p] if RunDir(p).is_run() else find_runs(p)
        if not found:
            raise MeasureError(f"{p}: no run directories found (a run holds config.yaml or metrics.json)")
        runs += [r for r in found if r not in runs]
    return runs


def check_device(name: str) -> None:
    """A device this machine has (``srr_bench.device.resolve_device``), else a usage error."""
    from srr_bench.device import DeviceError, resolve_device

    try:
        resolve_device(name)
    except DeviceError as e:
        raise MeasureError(f"--device: {e}") from None


@one_line_os_errors("srr-measure")  # a full disk, a read-only run: one line; a closed pipe: quiet (141)
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    if args.list:
        print(list_measures())
        return 0
    try:
        names = split_list(args.measures) if args.measures else None  # commas inside [...] are a spec's
        exclude = split_list(args.exclude)
        select(names, exclude)
        settings = settings_from(args)
        if not args.paths:
            raise MeasureError("give one or more run or sweep directories (or --list)")
        grid = grid_from(args)
        if grid and args.study:
            raise MeasureError("--grid and --study: give one of them")
        if set(grid) & set(settings):
            raise MeasureError(f"{', '.join(sorted(set(grid) & set(settings)))}: set and varied by --grid at once")
        if args.study:
            names = [STUDY + m.name if m.name in STUDY_GRIDS else m.name for m in select(names, exclude)]
        expand(select(names, exclude), grid)  # every specification's settings checked (ranges: the registry's)
        runs = find_run_dirs(args.paths)
        check_device(args.device)
    except MeasureError as e:
        print(f"srr-measure: {e}", file=sys.stderr)
        return 2
    return _measure_runs(runs, names, exclude, settings, args, grid)


def _measure_runs(runs: list[Path], names: Any, exclude: list[str], settings: dict, args: argparse.Namespace,
                  grid: Optional[dict] = None) -> int:
    from tqdm.auto import tqdm

    from srr_bench.checkpoints import CheckpointError
    from srr_bench.io import RunFileError
    from srr_bench.rundir import METRICS, RunDir

    status = 0
    chosen = {m.name for m in expand(select(names, exclude), grid)}
    for run in tqdm(runs, desc="runs", unit="run", disable=args.quiet or len(runs) < 2, dynamic_ncols=True):
        with run_locked(run) as held:
            if not held:
                continue
            rd = RunDir(run)
            if not rd.has(METRICS):
                print(f"srr-measure: {run}: skipped, not finished (no {METRICS})", file=sys.stderr)
                continue
            try:
                finished = rd.read_metrics().get("status") == "done"
            except RunFileError as e:
                print(f"srr-measure: {e}", file=sys.stderr)
                status = 1
                continue
            if not finished:
                print(f"srr-measure: {run}: skipped, the run did not finish normally", file=sys.stderr)
                continue
            try:
                out = compute(run, names, exclude=exclude, settings=settings, seed=args.seed, device=args.device,
                              batch_size=args.batch_size, recompute=args.recompute, progress=not args.quiet,
                              grid=grid)
            except CheckpointError as e:
                print(f"srr-measure: refused: {e}", file=sys.stderr)
                status = 1
                continue
            except RunFileError as e:  # names the file and the fix itself
                print(f"srr-measure: {' '.join(str(e).split())}", file=sys.stderr)
                status = 1
                continue
            except (OSError, ValueError, MeasureError) as e:
                print(f"srr-measure: {run}: {' '.join(str(e).split())[:300]}", file=sys.stderr)
                status = 1
                continue
            for name, reason in sorted(out["failures"].items()):
                if name in chosen:
                    print(f"srr-measure: {run}: {name} failed: {reason}", file=sys.stderr)
                    status = 1
    return status


@contextmanager
def run_locked(run: Path) -> Iterator[bool]:
    """Hold ``run/.lock`` (``srr_bench.locking``: the lock ``srr-train`` takes, without waiting)
    while the run is measured. Yields False after one line on stderr when another process
    (training or measuring the run) holds it. A lock that cannot be created (a read-only
    run directory) is not needed there: the run is measured, or refused, as before."""
    from srr_bench.locking import holder, run_lock

    lock = run_lock(run)
    try:
        held = lock.acquire(tries=5)  # tries: ride out a momentary probe by srr-status
    except OSError:
        yield True
        return
    if not held:
        h = holder(lock.path) or {}
        who = f"pid {h.get('pid')} on {h.get('host')}" if h.get("pid") else "another process"
        print(f"srr-measure: {run}: skipped, in use by {who} (training or measuring); measure it when that ends",
              file=sys.stderr)
        yield False
        return
    try:
        lock.write_holder(stage="srr-measure")
        yield True
    finally:
        lock.release()


if __name__ == "__main__":
    sys.exit(main())
