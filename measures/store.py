"""A run's ``measures.json``: values, diagnostics, failures and the settings of each measure.

    {"values":      {"srr": 1.2, "srr.L1.R": 30.1, "pacbayes_flatness": 850.0, ...},
     "diagnostics": {"srr": {...}, "pacbayes_flatness": {"converged": true, ...}},
     "failures":    {"hessian_trace": "RuntimeError: ..."},
     "settings":    {"srr": {"eps": 0.1, ..., "seed": 0, "version": 1}, ...}}

A measure's values are its name and ``<name>.<suffix>``. A named specification
(``measures.specs``: ``srr[eps=0.05]``, values ``srr[eps=0.05].L1.R`` ...) is stored the
same way under its own name, beside the measure at its defaults, and is current or not
on its own stored settings. A measure is current when its
stored settings equal the settings it would run with now (a change of settings, seed
or measure version means recompute) and it has not failed. Every update is written
atomically (NaN as null, ±inf as "inf"/"-inf"), so an interrupted run loses nothing
that finished.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional, Union

from srr_bench.io import jsonable, read_json, write_json
from srr_bench.rundir import MEASURES_SECTIONS as SECTIONS, measures_shape

from .registry import Result

MOVE_ASIDE = "move it aside (e.g. to measures.json.corrupt) and measure again"


def _float(v: Any) -> float:
    if v is None:
        return math.nan
    if isinstance(v, str):
        return float(v)  # "inf" / "-inf"
    return float(v)


def _plain(obj: Any) -> Any:
    """What ``obj`` reads back as after ``write_json`` and ``read_json`` (to compare settings)."""
    return json.loads(json.dumps(jsonable(obj)))


class Store:
    def __init__(self, path: Union[str, os.PathLike, None] = None, data: Optional[dict] = None):
        self.path = Path(path) if path is not None else None
        data = data or {}
        self.values: dict[str, float] = {k: _float(v) for k, v in (data.get("values") or {}).items()}
        self.diagnostics: dict[str, Any] = dict(data.get("diagnostics") or {})
        self.failures: dict[str, str] = dict(data.get("failures") or {})
        self.settings: dict[str, Any] = dict(data.get("settings") or {})

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "Store":
        """The store at ``path`` (empty when there is no file); a file that is empty, truncated,
        garbage, of the wrong shape or a link is ``srr_bench.io.RunFileError`` (a ValueError)
        naming it and the fix."""
        path = Path(path)
        if not os.path.lexists(path):
            return cls(path)
        return cls(path, read_json(path, measures_shape, MOVE_ASIDE))

    def is_current(self, name: str, settings: dict[str, Any]) -> bool:
        return name in self.values and name not in self.failures and self.settings.get(name) == _plain(settings)

    def _drop(self, name: str) -> None:
        for k in [k for k in self.values if k == name or k.startswith(name + ".")]:
            del self.values[k]
        self.diagnostics.pop(name, None)
        self.failures.pop(name, None)

    def put(self, name: str, result: Result, settings: dict[str, Any], **diag: Any) -> None:
        self._drop(name)
        self.values.update(result.values(name))
        self.diagnostics[name] = _plain({**result.diagnostics, **diag})
        self.settings[name] = _plain(settings)

    def fail(self, name: str, reason: str, settings: dict[str, Any]) -> None:
        """Record a failure; the measure's old values go (they no longer match its settings)."""
        self._drop(name)
        self.failures[name] = reason
        self.settings[name] = _plain(settings)

    def to_dict(self) -> dict[str, Any]:
        return {"values": dict(self.values), "diagnostics": self.diagnostics, "failures": self.failures,
                "settings": self.settings}

    def save(self) -> None:
        if self.path is not None:
            write_json(self.path, self.to_dict())
