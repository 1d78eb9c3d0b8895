"""Named specifications: one measure under several settings, stored side by side.

A *specification* is a registered measure with some of its settings fixed. It is named

    <measure>[<key>=<value>,<key>=<value>,...]        e.g.  srr[eps=0.05,representation=z_half]

with only the settings that differ from the measure's defaults (its group's defaults with
its own ``fixed`` settings applied), keys sorted, values in canonical form
(``format_value``): the same settings always give the same name, and a specification
whose settings are all the defaults is the measure itself (``srr[eps=0.1]`` is ``srr``).
Keys are the measure's group keys without the group (``eps``, not ``srr.eps``).

A specification is stored in measures.json like any measure: ``values`` under its name
and ``<name>.<suffix>`` (``srr[eps=0.05].L1.R``), its ``diagnostics``, ``failures`` and
``settings`` under its name, beside the default ``srr``. It is a ``Measure`` (the
registered one with the specification's settings added to ``fixed``, so they win over
overrides), with the measure's version: the store recomputes it only when its own
settings, the seed or the measure's version change (``Store.is_current``).

A settings *grid* ``{"srr.eps": [0.05, 0.1], "srr.representation": ["mssa_in", "z_half"]}``
gives, for every selected measure whose group it names, one specification per point of
the cartesian product (``expand``); ``srr-measure --grid srr.eps=0.05,0.1`` and
``measures.compute(..., grid=...)`` use it.

``STUDY_GRIDS``: the grids of the convention-sensitivity study (issue 11), written down
once (a measure's specifications are the union of its grids); ``srr-measure --study``,
``study_specs`` and the name ``study:<measure>`` (every specification of the measure's
study grids, e.g. in an experiment's ``measure.names``) use them. SRR's layer aggregation (mean
over layers, last layer) is **not** a setting: every SRR specification already stores
both (``<spec>`` = ``<spec>.mean`` and ``<spec>.last``), so it is a choice of column made
by the analysis (``analysis.sensitivity``), free of cost.
"""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import replace
from typing import Any, Iterable, Mapping, Optional, Sequence

from srr_bench.settings import near
from srr_bench.settings import read_setting as read_value  # the one reader of a setting's text

from .registry import GLOBAL_SETTINGS, MEASURES, SETTINGS, Measure, MeasureError, default_of, validate_overrides  # noqa: F401

# The settings grids of the sensitivity study: {measure: [grid, ...]}, each grid {key: values}
# (keys of the measure's group); a measure's specifications are the union of its grids'
# cartesian products, each once. SRR: ε, representation, token/head/no normalisation, λ₀ (0:
# the rate terms alone), with ‖Z‖₀ on the representation itself as a fraction of its entries;
# then the ‖Z‖₀ conventions (λ₀ = 1, ε = 0.1): counted on the ISTA output (the reference code's
# choice, and the only representation with exact zeros) as a fraction or as the raw count of
# nonzeros, which then dominates the rate terms. Path-norm: ℓ_q with q = 1 (Gonon's L1) and 2
# (Jiang's eq. (44)); sharpness: the box radius ρ and the ascent's steps. Checked against the
# registry when used (``study_grids``).
STUDY_GRIDS: dict[str, list[dict[str, list[Any]]]] = {
    "srr": [
        {"eps": [0.05, 0.1, 0.5], "representation": ["mssa_in", "z_half", "ista_out"],
         "normalize": ["token", "head", "none"], "lambda0": [0.0, 1.0]},
        {"representation": ["mssa_in", "z_half"], "l0_representation": ["ista_out"],
         "l0": ["fraction", "count"], "normalize": ["token", "head", "none"]},
        {"representation": ["ista_out"], "l0": ["count"], "normalize": ["token", "head", "none"]},
    ],
    "path_norm": [{"q": [1.0, 2.0]}],
    "path_norm_over_margin": [{"q": [1.0, 2.0]}],
    "sharpness": [{"radius": [5e-4, 2e-3], "steps": [10, 20]}],
}

STUDY = "study:"  # "study:srr" selects every specification of STUDY_GRIDS["srr"]
SPEC = re.compile(r"(?P<measure>[^\[\]=,\s]+)\[(?P<body>[^\[\]]*)\]")
RESERVED = set("[]=,") | {" ", "\t", "\n"}
NOT_SETTINGS = (*GLOBAL_SETTINGS, "size_adjusted", "version")


def is_spec(name: str) -> bool:
    """``name`` is written as a specification (``m[k=v,...]``), not a measure or a glob pattern."""
    m = SPEC.fullmatch(name)
    return bool(m) and ("=" in m["body"] or m["measure"] in MEASURES)


def format_value(v: Any) -> str:
    """Canonical text of a setting value: true/false, none, integers as is, floats as the
    shortest text that reads back exactly (``0.05``, ``1e-05``) without a trailing ``.0``."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        text = repr(v)
        return text[:-2] if text.endswith(".0") else text
    text = str(v)
    if not text or RESERVED & set(text):
        raise MeasureError(f"setting value {text!r} cannot be named: it is empty or holds one of [ ] = , or a space")
    return text


def defaults(m: Measure) -> dict[str, Any]:
    """The settings ``m`` runs with when nothing is overridden (its ``fixed`` applied), less globals."""
    return {k: v for k, v in m.settings({}).items() if k not in NOT_SETTINGS}


def specify(m: Measure, settings: Mapping[str, Any]) -> Measure:
    """``m`` with ``settings`` ({key: value}, keys of its group) fixed, under its canonical name."""
    base = MEASURES.get(m.name.partition("[")[0])  # the registered measure (m may be a specification)
    own = defaults(base)
    wanted = dict(m.fixed)  # the registered measure's fixed settings and m's own
    for k, v in settings.items():
        if k not in own:
            raise MeasureError(f"{base.name}: no setting {k!r}{near(k, own)}; {base.group} has: {', '.join(sorted(own))}")
        wanted[k] = validate_overrides({f"{base.group}.{k}": v})[f"{base.group}.{k}"]
    differ = {k: v for k, v in wanted.items() if v != own[k]}
    name = base.name + ("[" + ",".join(f"{k}={format_value(v)}" for k, v in sorted(differ.items())) + "]"
                        if differ else "")
    return replace(base, name=name, fixed={**base.fixed, **differ})


def split(name: str) -> tuple[str, dict[str, str]]:
    """(measure, {key: value text}) of a specification name; one-line MeasureError if malformed."""
    m = SPEC.fullmatch(name.strip())
    if not m:
        raise MeasureError(f"{name!r} is not a specification (measure[key=value,...])")
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in m["body"].split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise MeasureError(f"{name!r}: {item!r} is not key=value")
        if key.strip() in out:
            raise MeasureError(f"{name!r}: {key.strip()!r} given twice")
        out[key.strip()] = value.strip()
    return m["measure"], out


def resolve(name: str) -> Measure:
    """The specification named ``name`` (any key order or value spelling), canonically named."""
    base, texts = split(name)
    if base not in MEASURES:
        raise MeasureError(f"unknown measure {base!r} in {name!r}{near(base, MEASURES.names())}; "
                           f"known: {', '.join(MEASURES.names())}")
    m = MEASURES.get(base)
    return specify(m, {k: read_value(v, default_of(f"{m.group}.{k}") if k in SETTINGS.get(m.group, {}) else None)
                       for k, v in texts.items()})


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every point of the cartesian product of ``grid`` ({key: values}), keys in sorted order."""
    keys = sorted(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def check_grid(grid: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """``grid`` ({"group.key": values}) with every value read as its setting's type, duplicates
    dropped; one-line MeasureError for an unknown key or an unreadable or missing value."""
    out: dict[str, list[Any]] = {}
    for key, values in grid.items():
        if key in NOT_SETTINGS:
            raise MeasureError(f"grid: {key!r} is not a measure setting (a grid varies group.key settings)")
        values = [values] if isinstance(values, (str, int, float, bool)) or values is None else list(values)
        if not values:
            raise MeasureError(f"grid: {key!r} has no values")
        d = default_of(key)
        read = [validate_overrides({key: read_value(v, d) if isinstance(v, str) else v})[key] for v in values]
        out[key] = list(dict.fromkeys(read))
    return out


def expand(measures: Iterable[Measure], grid: Optional[Mapping[str, Sequence[Any]]]) -> list[Measure]:
    """Each measure of a group the grid names, once per grid point (a specification); the
    others as they are. The grid must name at least one selected measure's group."""
    measures = list(measures)
    if not grid:
        return measures
    grid = check_grid(grid)
    groups = {m.group for m in measures}
    unused = sorted({k.partition(".")[0] for k in grid} - groups)
    if unused:
        raise MeasureError(f"grid: no selected measure reads the settings group(s) {', '.join(unused)}")
    out: dict[str, Measure] = {}
    for m in measures:
        mine = {k.partition(".")[2]: v for k, v in grid.items() if k.partition(".")[0] == m.group}
        for point in grid_points(mine) if mine else [{}]:
            spec = specify(m, point) if mine else m
            out.setdefault(spec.name, spec)
    return list(out.values())


def study_grids(measure: str) -> list[dict[str, list[Any]]]:
    """``STUDY_GRIDS[measure]`` as checked grids {"group.key": values} of the measure's group."""
    if measure not in STUDY_GRIDS:
        raise MeasureError(f"no study grid for {measure!r}; there are: {', '.join(sorted(STUDY_GRIDS))}")
    group = MEASURES.get(measure).group
    return [check_grid({f"{group}.{k}": v for k, v in grid.items()}) for grid in STUDY_GRIDS[measure]]


def study(measure: str) -> list[Measure]:
    """Every specification of ``measure``'s study grids, each once, the default (the measure itself) included."""
    out: dict[str, Measure] = {}
    for grid in study_grids(measure):
        for spec in expand([MEASURES.get(measure)], grid):
            out.setdefault(spec.name, spec)
    return list(out.values())


def study_specs(measures: Optional[Iterable[str]] = None) -> list[str]:
    """The names of every specification of the study grids (default: of every measure in
    ``STUDY_GRIDS``), the defaults included."""
    return [s.name for n in (STUDY_GRIDS if measures is None else measures) for s in study(n)]
