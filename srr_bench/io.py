"""Crash-safe file writing: a reader sees the old file or the new one, never half of one."""
from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, IO, Iterable, Mapping, Union

PathLike = Union[str, os.PathLike]


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write through ``write(f)`` into a temporary file beside ``path``, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def jsonable(x: Any) -> Any:
    """``x`` with NaN as None, ±inf as "inf"/"-inf" and numpy/torch scalars as Python numbers."""
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "item") and callable(x.item):  # numpy / torch scalars
        return jsonable(x.item())
    return x


def write_json(path: PathLike, obj: Any) -> None:
    """Atomic JSON; NaN becomes null and ±inf the strings "inf"/"-inf" (valid JSON)."""
    text = json.dumps(jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def read_json(path: PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def write_csv(path: PathLike, rows: Iterable[Mapping[str, Any]]) -> None:
    rows = list(rows)
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]

    def write(f: IO[bytes]) -> None:
        import io as _io

        buf = _io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
        f.write(buf.getvalue().encode())

    atomic_write(path, write)
