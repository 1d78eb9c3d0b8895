"""Crash-safe file writing (a reader sees the old file or the new one, never half of one),
and the one JSON reader, with one failure mode (``RunFileError``)."""
from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, IO, Iterable, Mapping, Optional, Union

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


class RunFileError(ValueError):
    """A file that cannot be read as what it should be: one line naming the file, what is
    wrong with it and the fix. ``problem`` alone (without the path) is kept for repair notes."""

    def __init__(self, path: PathLike, problem: str, fix: str = ""):
        self.path, self.problem, self.fix = Path(path), problem, fix
        super().__init__(f"{path}: {problem}" + (f"; {fix}" if fix else ""))


def read_json(path: PathLike, shape: Optional[Callable[[Any], Optional[str]]] = None, fix: str = "") -> Any:
    """A JSON file's content, or a ``RunFileError`` naming the file and ``fix``: the one failure
    mode for a file that is missing, empty, truncated, not JSON, a symbolic link (never followed:
    a run file is the file itself), or of the wrong shape (``shape(data)`` returns what is wrong,
    None when it fits)."""
    path = Path(path)
    if path.is_symlink():
        raise RunFileError(path, "is a symbolic link (a run file is read only as a regular file)", fix)
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise RunFileError(path, "is missing", fix) from None
    except OSError as e:
        raise RunFileError(path, f"cannot be read ({e.strerror or type(e).__name__})", fix) from None
    if not blob.strip():
        raise RunFileError(path, "is empty", fix)
    try:
        data = json.loads(blob)
    except json.JSONDecodeError as e:
        raise RunFileError(path, f"is not valid JSON, truncated or garbage ({e.msg} at line {e.lineno})", fix) from None
    except UnicodeDecodeError:
        raise RunFileError(path, "is not valid JSON (not UTF-8 text)", fix) from None
    problem = shape(data) if shape is not None else None
    if problem:
        raise RunFileError(path, f"is valid JSON of the wrong shape ({problem})", fix)
    return data


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
