"""A name -> object registry that refuses duplicates (as big_vision's does), open to plugins.

Models, data sets and measures are registered by name with a decorator, so that a
config names a thing and never an import path, and so that tests can be parametrized
over everything that is registered.

Plugins: an installed package adds entries through an entry-point group (``pyproject.toml``:
``[project.entry-points."srr_bench.measures"] my_measures = "my_pkg.measures"``). The
entry point names a module, whose import registers with the ordinary decorators, or a
callable, which is called once without arguments and registers. A registry whose owner
called ``open_to(group)`` (after its built-in entries are in) loads the group's entry
points once, lazily, when it is first consulted (``get``, ``names``, ``in``, iteration,
``len``), never when a module is imported. A plugin that fails to load (an import error,
a duplicate name, anything it raises) is rolled back: whatever it registered here and in
the registry's ``companions`` (dicts or registries that its registrations also fill) is
removed, one line naming its package and the error is logged (``srr_bench.plugins``
logger, also kept in ``plugin_errors``), and the built-in entries are untouched.
``origin`` maps each entry a plugin registered to its package.
"""
from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any, Callable, Generic, Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")
log = logging.getLogger("srr_bench.plugins")


class RegistryError(KeyError):
    """An unknown or duplicate name. Its message is one readable line."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self.group: Optional[str] = None  # the entry-point group plugins register through (``open_to``)
        self.companions: tuple[Any, ...] = ()
        self.origin: dict[str, str] = {}  # entry name -> package of the plugin that registered it
        self.plugin_errors: dict[str, str] = {}  # "package:entry point" -> one-line reason it was not loaded
        self._seen: set[tuple[str, str]] = set()  # entry points already loaded (or refused)
        self._pending = False  # open_to was called and the group was not read yet
        self._loading: Optional[str] = None  # the package whose plugin is being loaded

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise RegistryError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            if self._loading:
                self.origin[name] = self._loading
            return obj

        return deco

    def get(self, name: str) -> T:
        self._load_once()
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise RegistryError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        self._load_once()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load_once()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load_once()
        return len(self._items)

    # --- plugins ---------------------------------------------------------------------------

    def open_to(self, group: str, companions: Iterable[Any] = ()) -> None:
        """Let installed packages register through entry-point ``group``, read at the first look-up.

        Call it once the built-in entries are registered (so a plugin can never take a
        built-in's name); ``companions`` are rolled back with this registry when a plugin fails.
        """
        self.group, self.companions, self._pending = group, tuple(companions), True

    def load_plugins(self) -> list[str]:
        """Load the group's entry points not loaded yet; returns the names they registered.

        Called by the first look-up; call it again after installing a package at run time.
        """
        self._pending = False
        if self.group is None:
            return []
        added: list[str] = []
        for ep in entry_points(group=self.group):
            package = ep.dist.name if ep.dist is not None else ep.value.split(":")[0].split(".")[0]
            if (package, ep.name) in self._seen:
                continue
            self._seen.add((package, ep.name))
            added += self._load_one(ep, package)
        return added

    def _load_once(self) -> None:
        if self._pending:
            self.load_plugins()

    def _load_one(self, ep: EntryPoint, package: str) -> list[str]:
        tracked = (self, *self.companions)
        before = [set(_keys(t)) for t in tracked]
        self._loading = package
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, ModuleType):
                obj()
        except Exception as e:  # a broken plugin must not take the built-in entries down
            for t, keys in zip(tracked, before):
                _drop(t, set(_keys(t)) - keys)
            reason = f"{type(e).__name__}: {' '.join(str(e).split())}"[:300]
            self.plugin_errors[f"{package}:{ep.name}"] = reason
            log.warning("srr-bench: %s plugin %r of package %r not loaded: %s", self.kind, ep.value, package, reason)
            return []
        finally:
            self._loading = None
        return sorted(set(self._items) - before[0])


def _keys(tracked: Any) -> Iterable[str]:
    return tracked._items if isinstance(tracked, Registry) else tracked


def _drop(tracked: Any, names: set[str]) -> None:
    for name in names:
        if isinstance(tracked, Registry):
            del tracked._items[name]
            tracked.origin.pop(name, None)
        else:
            del tracked[name]
