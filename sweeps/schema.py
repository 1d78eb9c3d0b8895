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

from srr_bench.config import ConfigError, check

__all__ = ["ConfigError", "validate"]


def _check_measures(measure: dict[str, Any], problems: list[str]) -> None:
    from .state import measure_names, measure_settings

    names = measure.get("names", "all")
    if not (isinstance(names, str) or (isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names))):
        problems.append(f"measure.names: expected 'all' or a list of measure names, got {names!r}")
        return
    try:
        import measures
        from measures.registry import MeasureError, validate_overrides
    except ImportError:  # the measures package is optional here
        return
    try:
        measures.select(measure_names(measure), list(measure.get("exclude") or []))
        from measures.cli import check_ranges

        check_ranges(validate_overrides(measure_settings(measure)))
    except (MeasureError, KeyError, ValueError) as e:
        problems.append(f"measure: {e}")


def validate(cfg: dict[str, Any], registries: bool = True, where: str = "") -> None:
    """Check a plain composed config (``srr_bench.config.compose`` output); raise ``ConfigError``.

    ``registries=False`` skips the look-ups of model, data set, optimizer and measure names.
    """
    check(cfg, registries=registries, where=where)
    measure = cfg.get("measure")
    if registries and isinstance(measure, dict) and measure.get("enabled", True):
        problems: list[str] = []
        _check_measures(measure, problems)
        if problems:
            raise ConfigError(problems, where)
