"""Measures from installed packages: the ``srr_bench.measures`` entry-point group.

A package registers measures exactly as the built-in modules do, with the public
decorators of ``measures.registry``, and names the registering module in its
``pyproject.toml``::

    [project.entry-points."srr_bench.measures"]
    my_measures = "my_pkg.measures"          # a module whose import registers, or
    # my_measures = "my_pkg.measures:register" a callable, called once without arguments

    # my_pkg/measures.py
    from measures.registry import Result, measure, settings_group
    settings_group("my_norm", p=2.0)

    @measure("my_norm", needs=(), eq="paper, equation")
    def my_norm(ctx, s):
        '''One line that srr-measure --list shows.'''
        ...
        return Result(value)

The registry reads the group once, lazily, at its first look-up (``srr-measure``,
``measures.compute`` / ``select``, a sweep's check of ``measure.names``), never when
``measures`` is imported; the built-in measures are registered first, so a plugin can
never replace one. A plugin that fails to import, raises, or registers a name or settings
group that exists is rolled back (its measures and settings groups removed) and named in
one logged line; the built-in measures work as before. A plugin's measures are then
listed (``srr-measure --list`` names the package), computed, stored in measures.json and
collected into the tidy table (``measure.<name>``) like the built-in ones: the analysis
reads the table only and never imports this package.
"""
from __future__ import annotations

from typing import Optional

from .registry import MEASURES, SETTINGS

GROUP = "srr_bench.measures"


def open_registry() -> None:
    """Open ``MEASURES`` to the entry-point group (called by ``measures/__init__`` after the
    built-in modules registered); ``SETTINGS`` is rolled back with it when a plugin fails."""
    MEASURES.open_to(GROUP, companions=(SETTINGS,))


def package_of(name: str) -> Optional[str]:
    """The installed package that registered measure ``name`` (None for a built-in one)."""
    return MEASURES.origin.get(name)
