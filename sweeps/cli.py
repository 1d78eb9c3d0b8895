"""``srr-train``: train one model (or a grid with ``-m``) into hash-named run directories.

    srr-train model=crate_n optim.lr=1e-3 train.epochs=5 seed=1
    srr-train -m experiment=demo
    python -m sweeps.cli -m experiment=demo          (the same, without the console script)

Each job is ``sweeps.runner.run_job``: a finished run is returned untouched, an
interrupted one resumes from its checkpoint, a run locked by another process is skipped,
and a failing run records ``failure.json``. In a sweep (``-m``) the sweep goes on with the
next run; alone, a failed or locked run exits with status 1. An operating-system error (a
full disk, a read-only run directory, a name too long) fails the run in one line naming the
file and the cause (``srr_bench.io.WriteError``), recorded in failure.json when the disk
still takes it; a closed stdout (``srr-train ... | head``) ends quietly with status 141, the
run resumable.

Before Hydra starts, the command line is checked against the config tree (``precheck``),
so that a misspelt key or group option gets one line with the nearest known name
(Hydra's own message has five and no suggestion), and an output directory that is a file
or cannot be written is refused in one line. Exit status 2 for these.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from srr_bench.config import CONF_DIR, compose, register_resolvers, to_plain
from srr_bench.settings import near

OUTPUT_DIRS = ("hydra.run.dir", "hydra.sweep.dir")


def _groups() -> dict[str, list[str]]:
    """Config groups of the tree (folders beside config.yaml) and their options."""
    root = Path(CONF_DIR)
    return {d.name: sorted(p.stem for p in d.glob("*.yaml")) for d in sorted(root.iterdir())
            if d.is_dir() and d.name != "hydra"}


def _values(override: Any) -> list[str]:
    if override.is_sweep_override():
        return [str(v) for v in override.sweep_string_iterator()]
    return [str(override.value())]


def _tree_keys(choice: dict[str, str]) -> set[str]:
    """Every dotted key (leaves and sections) of the tree composed with these group options."""
    def paths(node: dict[str, Any], prefix: str) -> Iterator[str]:
        for k, v in node.items():
            yield prefix + str(k)
            if isinstance(v, dict):
                yield from paths(v, f"{prefix}{k}.")

    return set(paths(compose([f"{g}={o}" for g, o in choice.items()], validate=False), ""))


def _unknown_keys(wanted: list[str], group_choices: dict[str, list[str]]) -> tuple[list[str], set[str]]:
    """(the wanted keys in no composition, the keys known): the tree is composed with each
    group's first choice, then, only while keys are missing, with each other option of a
    swept group (a key of one variant only is known)."""
    first = {g: opts[0] for g, opts in group_choices.items()}
    known = _tree_keys(first)
    for g, opts in group_choices.items():
        for o in opts[1:]:
            if all(k in known for k in wanted):
                break
            known |= _tree_keys({**first, g: o})
    return [k for k in wanted if k not in known], known


def output_dir_problem(key: str, value: str) -> Optional[str]:
    """A run or sweep directory that is a file, or under a file, or in a place that cannot be written."""
    path = Path(value).expanduser().absolute()
    if "${" in value:  # interpolated (a hash, a date): check the part before it
        path = Path(value.split("${")[0] or ".").expanduser().absolute()
    for p in [path, *path.parents]:
        if p.exists():
            if not p.is_dir():
                return f"{key}={value}: {p} is a file, not a directory"
            if not os.access(p, os.W_OK | os.X_OK):
                return f"{key}={value}: {p} cannot be written (read-only); choose another {key}"
            return None
    return None


def precheck(args: Sequence[str]) -> Optional[str]:
    """One line saying what is wrong with the overrides on a command line, or None.

    Checks every plain ``key=value`` override against the composed tree (keys added with
    ``+`` / ``++`` and Hydra's own ``hydra.*`` are left to Hydra and the schema), every group
    choice against the group's files, and the run / sweep directory. Anything it cannot
    judge (other Hydra flags, unparsable overrides) is left to Hydra.
    """
    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in args):
        return None  # --help, --cfg, -cn ...: Hydra's business
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        overrides = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    except HydraException as e:
        return f"cannot read the overrides: {str(e).splitlines()[0]}"
    if not any(o.key_or_group in OUTPUT_DIRS for o in overrides):
        problem = output_dir_problem("the output directory (the current directory)", ".")
        if problem:
            return problem
    groups = _groups()
    chosen: dict[str, list[str]] = {}
    keys: list[tuple[str, Any]] = []
    for o in overrides:
        key = o.key_or_group
        if key in OUTPUT_DIRS and not o.is_sweep_override():
            problem = output_dir_problem(key, str(o.value()))
            if problem:
                return problem
        if o.is_add() or o.is_force_add() or o.is_delete() or key.startswith("hydra") or "/" in key:
            continue
        if key in groups:
            for v in _values(o):
                if v not in groups[key] and not (key == "experiment" and v == "null"):
                    return f"unknown {key} option '{v}'{near(v, groups[key])}; {key} has: {', '.join(groups[key])}"
            chosen[key] = [v for v in _values(o) if v != "null"] or chosen.get(key, [])
        else:
            keys.append((key, o))
    if not keys:
        return None
    try:
        missing, known = _unknown_keys([k for k, _ in keys], {g: v for g, v in chosen.items() if v})
    except Exception:  # the tree does not compose: Hydra will say why
        return None
    for key, o in keys:
        if key in missing:
            hint = near(key, sorted(known | set(groups)))
            return (f"unknown key '{key}'{hint}; to add a new key write +{key}={_values(o)[0]}"
                    if "." in key else f"unknown key or group '{key}'{hint}")
    return None


def train_main(argv: Optional[Sequence[str]] = None) -> None:
    """``srr-train`` (see the module docstring)."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from srr_bench.io import closed_pipe_exit, os_error_line

    from .runner import run_job

    args = list(sys.argv[1:] if argv is None else argv)
    problem = precheck(args)
    if problem:
        print(f"srr-train: {problem}", file=sys.stderr)
        sys.exit(2)
    register_resolvers()

    @hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
    def _main(cfg: Any) -> Optional[float]:
        hc = HydraConfig.get()
        multirun = hc.mode == RunMode.MULTIRUN
        run_dir = Path(hc.runtime.output_dir)
        try:
            outcome = run_job(to_plain(cfg), run_dir, job_num=int(hc.job.get("num", 0) or 0))
        except BrokenPipeError:  # the reader of stdout went away (srr-train ... | head): end quietly
            sys.exit(closed_pipe_exit())
        except OSError as e:  # a run-directory file the runner could not write (its lock on a full disk):
            print(f"srr-train: FAILED: {os_error_line(e)} -> {run_dir}", file=sys.stderr, flush=True)
            if not multirun:  # one line, and in a sweep the next job
                sys.exit(1)
            return None
        if not multirun and outcome.state in ("failed", "running"):
            sys.exit(1)  # the runner has said why, in one line
        return outcome.value

    sys.argv = [sys.argv[0], *args]
    _main()


if __name__ == "__main__":
    train_main()
