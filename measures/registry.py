"""The measure registry: one small registered function per measure, with its settings.

A measure is registered with a decorator::

    @measure("pacbayes_flatness", group="pacbayes", needs=("train",), eq="Jiang et al. 2020, eq. (53)")
    def pacbayes_flatness(ctx: MeasureContext, s: Settings) -> Result: ...

- ``group`` names the settings it reads (``SETTINGS[group]``, overridable as
  ``group.key=value`` from Python or the CLI); ``fixed`` pins some of them for a
  registered variant (e.g. ``srr_ref`` fixes SRR's representation).
- ``needs`` says what the measure needs besides the model: ``train`` / ``test`` data,
  ``init`` (the initial weights), ``run`` (the training record), ``probe`` (the
  ``forward_intermediates`` / ``subspace_bases`` API of srr_bench models) and ``grad``
  (it differentiates through the model). The runner checks them before calling it.
- A measure returns a ``Result``: its main value (stored under the measure's name),
  optional extra values (stored as ``<name>.<suffix>``) and diagnostics.

A duplicate name, or a name that would shadow another's ``<name>.<suffix>`` values,
is an error at registration.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional

from srr_bench.registry import Registry, RegistryError
from srr_bench.settings import SettingError, coerce_setting, near, validate_section

NEEDS = ("train", "test", "init", "run", "probe", "grad")

# Settings every measure sees. ``seed`` seeds all of a measure's generators;
# ``size_adjusted`` adds Jiang/RGM's data-set-size adjustment for measures that have one.
GLOBAL_SETTINGS: dict[str, Any] = {"seed": 0}
# Settings of each group: {group: {key: default}}. Filled by the measure modules.
SETTINGS: dict[str, dict[str, Any]] = {}
# Groups whose settings have a schema with ranges (a pydantic model; e.g. srr: srr_bench.srr.SRRSettings).
SCHEMAS: dict[str, Any] = {}


class MeasureError(RuntimeError):
    """A measure that cannot run on this input (missing data, wrong model); one-line message."""


class MissingInput(MeasureError):
    """The measure needs something the context does not have (init weights, data, run record)."""


@dataclass
class Result:
    """What a measure returns: a main value, extra named values, diagnostics."""

    value: float
    extra: dict[str, float] = field(default_factory=dict)  # suffix -> value, stored as "<name>.<suffix>"
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def values(self, name: str) -> dict[str, float]:
        out = {name: float(self.value)}
        out.update({f"{name}.{k}": float(v) for k, v in self.extra.items()})
        return out


@dataclass(frozen=True)
class Measure:
    name: str
    fn: Callable[..., Result]
    group: str
    needs: frozenset
    eq: str  # the paper and equation it implements
    fixed: Mapping[str, Any]
    version: int
    default: bool  # in the default ("all") selection
    size_adjust: Optional[str]  # Jiang/RGM size adjustment: "log" -> ½(v − log m), "sqrt" -> √(v/m)

    @property
    def summary(self) -> str:
        doc = (self.fn.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    def settings(self, overrides: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
        """The effective settings: group defaults < user overrides (``group.key``) < fixed; plus globals."""
        overrides = dict(overrides or {})
        s = dict(SETTINGS.get(self.group, {}))
        for k in s:
            if f"{self.group}.{k}" in overrides:
                s[k] = overrides[f"{self.group}.{k}"]
        s.update(self.fixed)
        for k, v in GLOBAL_SETTINGS.items():
            s[k] = overrides.get(k, v)
        if self.size_adjust:
            s["size_adjusted"] = bool(overrides.get("size_adjusted", False))
        s["version"] = self.version
        return s

    def __call__(self, ctx: Any, settings: Optional[Mapping[str, Any]] = None) -> Result:
        """Run on a MeasureContext in evaluation mode (``settings``: overrides ``group.key``)."""
        from .context import evaluation

        with evaluation(ctx.model):
            return self.fn(ctx, self.settings({**(settings or {}), "seed": ctx.seed}))


MEASURES: Registry[Measure] = Registry("measure")


def settings_group(group: str, schema: Any = None, **defaults: Any) -> None:
    """Declare a settings group and its defaults (once per group).

    ``schema``: a pydantic model of the group (``srr_bench.settings.Section``) whose defaults
    are the group's and whose ranges and choices every override is checked against;
    without one, values are read as their default's type and numbers must be finite."""
    if group in SETTINGS:
        raise RegistryError(f"settings group {group!r} is already declared")
    if schema is not None:
        defaults = {**schema().model_dump(), **defaults}
        SCHEMAS[group] = schema
    SETTINGS[group] = defaults


def measure(
    name: str, *, group: Optional[str] = None, needs: Iterable[str] = (), eq: str = "", fixed: Optional[dict] = None,
    version: int = 1, default: bool = True, size_adjust: Optional[str] = None,
) -> Callable[[Callable[..., Result]], Callable[..., Result]]:
    """Register ``fn(ctx, settings) -> Result`` as measure ``name`` (see module docstring)."""
    bad = set(needs) - set(NEEDS)
    if bad:
        raise ValueError(f"measure {name!r}: unknown needs {sorted(bad)}; known: {', '.join(NEEDS)}")
    group = group or name
    if group not in SETTINGS:
        SETTINGS[group] = {}
    unknown = set(fixed or {}) - set(SETTINGS[group])
    if unknown:
        raise ValueError(f"measure {name!r}: fixed settings {sorted(unknown)} are not in group {group!r}")

    def deco(fn: Callable[..., Result]) -> Callable[..., Result]:
        for other in MEASURES.names():
            if name.startswith(other + ".") or other.startswith(name + "."):
                raise RegistryError(f"measure {name!r} would shadow the values of measure {other!r}")
        m = Measure(name, fn, group, frozenset(needs), eq, dict(fixed or {}), version, default, size_adjust)
        MEASURES.register(name)(m)
        return fn

    return deco


def size_adjusted(kind: str, value: float, m: int) -> float:
    """RGM's final data-set-size adjustment: ``log`` measures ½(v − log m), others √(v/m)."""
    if kind == "log":
        return 0.5 * (value - math.log(m))
    return math.sqrt(value / m) if value >= 0 else float("nan")


def known_setting_keys() -> list[str]:
    keys = [f"{g}.{k}" for g, d in SETTINGS.items() for k in d]
    return sorted(keys + list(GLOBAL_SETTINGS) + ["size_adjusted"])


def default_of(key: str) -> Any:
    """The default of setting ``group.key`` (or a global one); one-line MeasureError if unknown."""
    if key in GLOBAL_SETTINGS:
        return GLOBAL_SETTINGS[key]
    if key == "size_adjusted":  # a switch every size-adjustable measure reads (Measure.settings)
        return False
    group, _, k = key.partition(".")
    if group not in SETTINGS or k not in SETTINGS[group]:
        close = [c for c in known_setting_keys() if c.startswith(group + ".")]
        hint = (f"{near(key, close)}; {group} has: {', '.join(close)}" if close
                else f"{near(group, SETTINGS)}; groups: {', '.join(sorted(SETTINGS))}")
        raise MeasureError(f"unknown setting {key!r}{hint}")
    return SETTINGS[group][k]


def validate_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Check that every key is a known setting, read values as the default's type, and check
    each group's values against its schema's ranges (``SCHEMAS``); one-line MeasureError."""
    out = {key: _coerce(key, value, default_of(key)) for key, value in overrides.items()}
    for group in {k.partition(".")[0] for k in out} & set(SCHEMAS):
        mine = {k.partition(".")[2]: v for k, v in out.items() if k.partition(".")[0] == group}
        try:
            validate_section(SCHEMAS[group], {**SETTINGS[group], **mine}, group)
        except SettingError as e:
            raise MeasureError(str(e)) from None
    return out


def _coerce(key: str, value: Any, default: Any) -> Any:
    """``value`` read as the type of ``default`` (the core's rule, shared with the regulariser)."""
    try:
        return coerce_setting(key, value, default)
    except SettingError as e:
        raise MeasureError(str(e)) from None
