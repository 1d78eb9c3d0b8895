"""Finished runs are dropped before dispatch, whatever the launcher.

A relaunched sweep used to hand every job of its grid to the launcher, and each finished
run then returned at once from ``sweeps.runner.run_job``. With the basic launcher that
costs a few seconds; under SLURM it is one array task per finished run (a 432-run grid
with 400 runs done submitted 400 jobs that only returned). ``SkipFinishedSweeper``
(``hydra_plugins/srr_sweeper/skip_finished.py``, selected in ``conf/config.yaml`` as
``hydra/sweeper: skip_finished``) is Hydra's basic sweeper (the grid of
``hydra.sweeper.params`` times the command line) less the jobs whose run is complete:

- complete = ``sweeps.state.complete``: ``metrics.json`` written (done or diverged) and,
  for a done run with measures on, every requested measure stored at the current settings,
  the same test ``run_job`` applies, so a dropped job is exactly one that would have
  returned at once;
- failed, interrupted and new runs are dispatched; so are runs locked by another process
  (``run_job`` skips them if they are still locked when their job starts);
- one line says how many jobs go to the launcher and how many finished runs do not.

Job numbers (``hydra.job.num``) count the dispatched jobs. ``hydra/sweeper=basic`` on the
command line dispatches every job again.
"""
from __future__ import annotations

import sys
from typing import Any, Optional

from .grid import Job, compose_job, jobs
from .state import complete


def unfinished(master: Any, loader: Any, overrides: list[list[str]]) -> tuple[list[list[str]], int]:
    """The jobs (their override lists, in order) whose run is not complete, and how many were."""
    known = {tuple(j.overrides): j for j in jobs(master, loader) or []}
    todo: list[list[str]] = []
    for num, ovr in enumerate(overrides):
        job: Optional[Job] = known.get(tuple(ovr))
        if job is None:  # not the grid the callback composed (no callback): compose it here
            job = compose_job(master, loader, num, list(ovr))
        if not complete(job.run_dir, dict(job.cfg.get("measure") or {})):
            todo.append(list(ovr))
    return todo, len(overrides) - len(todo)


def dispatch_line(n_todo: int, n_finished: int, launcher_target: str) -> str:
    """The one line a relaunch prints about what it sends to the launcher."""
    if n_todo == 0:
        return f"nothing to dispatch: all {n_finished} runs are finished"
    launcher = launcher_target.rsplit(".", 1)[-1] or "the launcher"
    if n_finished == 0:
        return f"dispatching {n_todo} job{'s' * (n_todo != 1)} to {launcher}"
    return (f"dispatching {n_todo} of {n_todo + n_finished} jobs to {launcher} "
            f"({n_finished} finished run{'s' * (n_finished != 1)} not dispatched)")


def drop_finished(master: Any, loader: Any, overrides: list[list[str]],
                  max_batch_size: Optional[int]) -> list[list[list[str]]]:
    """The batches of unfinished jobs that ``BasicSweeper.sweep`` hands to the launcher
    (none when every run is finished), after one line on stderr."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    todo, n_finished = unfinished(master, loader, overrides)
    print(dispatch_line(len(todo), n_finished, str(master.hydra.launcher.get("_target_", ""))), file=sys.stderr,
          flush=True)
    return list(BasicSweeper.split_overrides_to_chunks(todo, max_batch_size)) if todo else []
