"""The check of a composed config, run as soon as a config is composed.

The typed sections and their check live with the package that reads them
(``srr_bench.config``: unknown keys with the nearest known key, missing keys, wrong types,
registered names of models, data sets and optimizers, values out of range). ``validate``
adds what needs the measures package, which sits above the core: the measure names and
settings of the ``measure`` section (checked when the package is installed). It raises one
``ConfigError`` listing every problem.

``srr-train -m`` runs it on every job of a sweep before the first one starts
(``sweeps.callbacks``); a single run runs it before any work.
"""
from __future__ import annotations

from typing import Any

from srr_bench.config import ConfigError, RunConfig

__all__ = ["ConfigError", "validate"]


def _check_measures(measure: dict[str, Any], problems: list[str]) -> None:
    """The measure names (registered, glob patterns, specifications) and settings (known keys,
    types, ranges: ``measures.registry.validate_overrides``) of a typed-checked ``measure`` section."""
    from .state import measure_names, measure_settings

    try:
        import measures
        from measures.registry import MeasureError, validate_overrides
    except ImportError:  # the measures package is optional here
        return
    try:
        measures.select(measure_names(measure), list(measure.get("exclude") or []))
        validate_overrides(measure_settings(measure))
    except (MeasureError, KeyError, ValueError) as e:
        problems.append(f"measure: {e}")


def validate(cfg: dict[str, Any], registries: bool = True, where: str = "") -> RunConfig:
    """Check a plain composed config (``srr_bench.config.compose`` output) and return it typed
    (``RunConfig``); raise ``ConfigError`` listing every problem.

    ``registries=False`` skips the look-ups of model, data set, optimizer and measure names.
    """
    run = RunConfig.read(cfg, where=where, registries=registries)
    measure = cfg.get("measure")
    if registries and isinstance(measure, dict) and measure.get("enabled", True):
        problems: list[str] = []
        _check_measures(measure, problems)
        if problems:
            raise ConfigError(problems, where)
    return run
