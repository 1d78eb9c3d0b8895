"""``srr-measure``: compute complexity measures on saved runs, without retraining.

    srr-measure runs/crate-digits-1a2b3c                 # every default measure, one run
    srr-measure multirun/2025-01-01_12-00-00             # every run under a sweep directory
    srr-measure RUN --measures 'srr*,pacbayes*' --eps 0.05 --set pacbayes.mc_samples=16
    srr-measure --list                                   # measures and their settings

Results go into each run's measures.json after every measure. Measures already
computed with the same settings are skipped (``--recompute`` forces them); a failing
measure is recorded and the others go on. Exit status: 0 when everything ran, 1 when a
run was refused or a measure failed, 2 on a usage error (unknown measure or setting).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from . import MEASURES, SETTINGS, compute
from .api import select
from .registry import GLOBAL_SETTINGS, MeasureError, validate_overrides


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
    p.add_argument("--list", action="store_true", help="list the measures and settings, then exit")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    return p


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"none": None, "null": None}.get(text.lower(), text)


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq:
            raise MeasureError(f"--set needs KEY=VALUE, got {item!r}")
        out[key.strip()] = _value(value.strip())
    for flag, key in (("eps", "srr.eps"), ("lambda0", "srr.lambda0"), ("n_images", "srr.n_images")):
        if getattr(args, flag) is not None:
            out[key] = getattr(args, flag)
    if args.size_adjusted:
        out["size_adjusted"] = True
    return validate_overrides(out)


def list_measures() -> str:
    lines = []
    for name in MEASURES.names():
        m = MEASURES.get(name)
        needs = ",".join(sorted(m.needs)) or "-"
        lines.append(f"{name:34s} [{m.group}; needs {needs}] {m.summary}")
    lines.append("\nsettings (--set GROUP.KEY=VALUE):")
    for group, keys in sorted(SETTINGS.items()):
        if keys:
            lines.append(f"  {group}: " + ", ".join(f"{k}={v!r}" for k, v in keys.items()))
    return "\n".join(lines)


def find_run_dirs(paths: Sequence[str]) -> list[Path]:
    from srr_bench.runs import find_runs

    runs: list[Path] = []
    for p in map(Path, paths):
        if (p / "config.yaml").exists():
            found = [p]
        elif p.is_dir():
            found = find_runs(p)
        else:
            raise MeasureError(f"{p}: no such directory")
        if not found:
            raise MeasureError(f"{p}: no run directories found (a run has config.yaml)")
        runs += [r for r in found if r not in runs]
    return runs


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    if args.list:
        print(list_measures())
        return 0
    try:
        names = [n.strip() for n in args.measures.split(",") if n.strip()] if args.measures else None
        exclude = [n.strip() for n in args.exclude.split(",") if n.strip()]
        select(names, exclude)
        settings = settings_from(args)
        if not args.paths:
            raise MeasureError("give one or more run or sweep directories (or --list)")
        runs = find_run_dirs(args.paths)
    except MeasureError as e:
        print(f"srr-measure: {e}", file=sys.stderr)
        return 2
    return _measure_runs(runs, names, exclude, settings, args)


def _measure_runs(runs: list[Path], names: Any, exclude: list[str], settings: dict, args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from srr_bench.checkpoints import CheckpointError

    status = 0
    for run in tqdm(runs, desc="runs", unit="run", disable=args.quiet or len(runs) < 2, dynamic_ncols=True):
        metrics = run / "metrics.json"
        if not metrics.exists():
            print(f"srr-measure: {run}: skipped, not finished (no metrics.json)", file=sys.stderr)
            continue
        if json.loads(metrics.read_text()).get("status", "done") != "done":
            print(f"srr-measure: {run}: skipped, the run did not finish normally", file=sys.stderr)
            continue
        try:
            out = compute(run, names, exclude=exclude, settings=settings, seed=args.seed, device=args.device,
                          batch_size=args.batch_size, recompute=args.recompute, progress=not args.quiet)
        except CheckpointError as e:
            print(f"srr-measure: refused: {e}", file=sys.stderr)
            status = 1
            continue
        except (OSError, ValueError, MeasureError) as e:
            print(f"srr-measure: {run}: {' '.join(str(e).split())[:300]}", file=sys.stderr)
            status = 1
            continue
        for name, reason in sorted(out["failures"].items()):
            if name in {m.name for m in select(names, exclude)}:
                print(f"srr-measure: {run}: {name} failed: {reason}", file=sys.stderr)
                status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
