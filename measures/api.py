"""``compute``: run a set of measures on a run directory, a model, or a context.

    from measures import compute
    compute("runs/crate-cifar10-1a2b3c", names=["srr", "pacbayes*"], settings={"srr.eps": 0.05})
    compute(model, train=(x, y), init_model=model0, names=["l2", "srr"], write=False)
    compute(run, names=["srr"], grid={"srr.eps": [0.05, 0.1], "srr.representation": ["mssa_in", "z_half"]})
    compute(run, names=["srr", "srr[eps=0.05,representation=z_half]"])

A name may be a specification ``measure[key=value,...]`` and ``grid`` ({"group.key":
values}) runs each selected measure of a group it names once per point of the grid's
cartesian product; each specification is stored under its own name beside the default
(``measures.specs``).

On a run directory the results go into ``<run>/measures.json`` after every measure;
measures that are already current (same settings, seed and version) are skipped
unless ``recompute``; a measure that raises is recorded under "failures" and the
others go on. Nothing is loaded (weights, data) unless a pending measure needs it.
"""
from __future__ import annotations

import fnmatch
import os
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import torch
from torch import nn

from srr_bench.device import resolve_device
from srr_bench.rundir import HISTORY
from srr_bench.rundir import MEASURES as MEASURES_FILE
from srr_bench.settings import near

from .context import MeasureContext, evaluation
from .registry import MEASURES, Measure, MeasureError, validate_overrides
from .specs import STUDY, expand, is_spec, resolve, study
from .store import Store

Target = Union[str, os.PathLike, nn.Module, MeasureContext]


def select(names: Optional[Iterable[str]] = None, exclude: Iterable[str] = ()) -> list[Measure]:
    """Measures by name, glob pattern (``pacbayes*``), specification (``srr[eps=0.05]``) or study
    grid (``study:srr``; see ``measures.specs``); None = every default measure. ``exclude``
    drops names and patterns."""
    known = MEASURES.names()
    if names is None:
        chosen = [MEASURES.get(n) for n in known if MEASURES.get(n).default]
    else:
        chosen = []
        for pat in names:
            if is_spec(pat):
                hits = [resolve(pat)]
            elif pat.startswith(STUDY):
                hits = study(pat[len(STUDY):])
            else:
                hits = [MEASURES.get(h) for h in (fnmatch.filter(known, pat) if any(c in pat for c in "*?[")
                                                  else [pat] if pat in known else [])]
            if not hits:
                raise MeasureError(f"unknown measure {pat!r}{near(pat, known)}; known: {', '.join(known)}")
            chosen += [h for h in hits if h.name not in {c.name for c in chosen}]
    dropped = {h for pat in exclude for h in fnmatch.filter([m.name for m in chosen], pat)}
    return [m for m in chosen if m.name not in dropped]


def run_context(run_dir: Union[str, os.PathLike], *, seed: int = 0, device: Any = "cpu",
                batch_size: int = 256) -> MeasureContext:
    """A context on a run directory: final model now, init weights and data when first needed."""
    from srr_bench.runs import load_run

    run = load_run(run_dir)
    data: dict[str, Any] = {}

    def dataset() -> Any:
        if "ds" not in data:
            data["ds"] = run.data()
        return data["ds"]

    metrics = run.metrics or {}
    history = None
    if (run.path / HISTORY).exists():
        history = run.history
    return MeasureContext(
        run.model("final"), lambda: run.model("init"),
        lambda: (dataset().train.x, dataset().train.y), lambda: (dataset().test.x, dataset().test.y),
        seed=seed, device=device, metrics=metrics, history=history, batch_size=batch_size,
        run_config=run.config, train_size=metrics.get("n_train"),
    )


def compute(
    target: Target, names: Optional[Iterable[str]] = None, *, exclude: Iterable[str] = (),
    settings: Optional[dict[str, Any]] = None, seed: Optional[int] = None, device: Any = "cpu", batch_size: int = 256,
    recompute: bool = False, write: Optional[bool] = None, store: Union[str, os.PathLike, None] = None,
    progress: bool = False, grid: Optional[dict[str, Any]] = None, **context: Any,
) -> dict[str, Any]:
    """Compute measures on ``target``; returns the measures.json content (see ``store.Store``).

    Args:
        target: a run directory, a model (then pass ``init_model``, ``train``, ``test``,
            ``metrics``... as keyword arguments, see ``MeasureContext``) or a context.
        names: measure names, glob patterns or specifications; None = every default measure.
        settings: overrides ``{"group.key": value}`` (see ``measures.SETTINGS``).
        grid: ``{"group.key": [values]}``: every selected measure of such a group once per point
            of the cartesian product, stored as its specification (``measures.specs.expand``);
            a key may not also be in ``settings``.
        seed: seeds every subset and noise draw (default: settings' "seed", else 0; a
            context brings its own).
        write: write ``measures.json`` (default: True for a run directory or when
            ``store`` names a file); ``store`` overrides its path.
    """
    settings = dict(settings or {})
    both = sorted(set(grid or {}) & set(settings))
    if both:
        raise MeasureError(f"{', '.join(both)}: set and varied by the grid at once; give it in one of them")
    measures = expand(select(names, exclude), grid)
    if isinstance(target, MeasureContext):
        if seed is not None and seed != target.seed:
            raise MeasureError(f"seed={seed} differs from the context's seed {target.seed}")
        seed = target.seed
    seed = int(seed if seed is not None else settings.get("seed", 0))
    overrides = validate_overrides({**settings, "seed": seed})
    device = resolve_device(device)
    is_run = isinstance(target, (str, os.PathLike))
    path = Path(store) if store else (Path(target) / MEASURES_FILE if is_run else None)
    st = Store.load(path) if path is not None else Store()
    write = (is_run or store is not None) if write is None else write
    if context and not isinstance(target, nn.Module):
        raise TypeError(f"{', '.join(sorted(context))}: only a model target takes context arguments")
    pending = [m for m in measures if recompute or not st.is_current(m.name, m.settings(overrides))]
    if not pending:
        return st.to_dict()
    if isinstance(target, MeasureContext):
        ctx = target
    elif isinstance(target, nn.Module):
        ctx = MeasureContext(target, seed=seed, device=device, batch_size=batch_size, **context)
    else:
        ctx = run_context(target, seed=seed, device=device, batch_size=batch_size)
    bar = _bar(pending, progress, Path(target).name if is_run else "model")
    for m in pending:
        bar.set_postfix_str(m.name)
        run_one(ctx, m, overrides, st)
        if write:
            st.save()
        bar.update(1)
    bar.close()
    return st.to_dict()


def run_one(ctx: MeasureContext, m: Measure, overrides: dict[str, Any], st: Store) -> None:
    """Run one measure into the store, recording a failure instead of raising."""
    s = m.settings(overrides)
    missing = [n for n in sorted(m.needs) if not ctx.has(n)]
    if missing:
        what = {"train": "training data", "test": "test data", "init": "initial weights", "run": "a run record",
                "probe": "a model with forward_intermediates/subspace_bases"}
        st.fail(m.name, "needs " + ", ".join(what.get(n, n) for n in missing), s)
        return
    t0 = time.perf_counter()
    try:
        with evaluation(ctx.model):
            result = m.fn(ctx, s)
    except (KeyboardInterrupt, SystemExit):
        raise
    except MeasureError as e:
        st.fail(m.name, str(e), s)
    except Exception as e:  # one measure's failure must not stop the others
        msg = " ".join(str(e).split())[:300]
        st.fail(m.name, f"{type(e).__name__}: {msg}", s)
    else:
        st.put(m.name, result, s, wall_s=time.perf_counter() - t0)


def _bar(items: list, enabled: bool, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=len(items), desc=desc, unit="measure", disable=not enabled, dynamic_ncols=True, leave=False)
