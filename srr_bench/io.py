"""Crash-safe file writing (a reader sees the old file or the new one, never half of one),
and the one JSON reader, with one failure mode (``RunFileError``)."""
from __future__ import annotations

import csv
import errno
import functools
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, IO, Iterable, Mapping, Optional, Union

PathLike = Union[str, os.PathLike]


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write through ``write(f)`` into a temporary file beside ``path``, fsync, then rename.

    A reader sees the old file or the new one, never half of one: whatever fails, the
    temporary file is removed and ``path`` is untouched. An operating-system error (a full
    disk, a read-only directory, a name too long, ...) is raised as a :class:`WriteError`
    naming ``path``, also when the writer turned it into another exception (torch.save
    reports a full disk as ``RuntimeError: [enforce fail at inline_container.cc] unexpected
    pos``, with the OSError as its context). A name the directory cannot hold is refused
    before anything is written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _check_name(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:TMP_NAME_KEEP]}.", suffix=".tmp")
    except OSError as e:
        raise write_error(e, path) from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            Path(tmp).unlink(missing_ok=True)
        except OSError:
            pass  # the directory went away or became read-only meanwhile: nothing left to clean
        cause = _os_cause(e) if isinstance(e, Exception) and not isinstance(e, WriteError) else None
        if cause is not None:
            raise write_error(cause, path) from e
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- operating-system errors in one line -----------------------------------------------------

TMP_NAME_KEEP = 200  # a temporary file's name keeps this much of the target's name (".<name>.<random>.tmp" fits 255)
NAME_MAX = 255  # the usual limit on one file name, where the file system does not say (os.pathconf)

# What a user can do about an operating-system error, by errno (one short clause each).
FIXES = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some space (disk quota) or write elsewhere",
    errno.EROFS: "the file system is read-only; write elsewhere",
    errno.EACCES: "choose another path or change its permissions",
    errno.EPERM: "choose another path or change its permissions",
    errno.ENAMETOOLONG: "choose a shorter name",
    errno.ENOTDIR: "a file is in the way of a directory; move it or write elsewhere",
    errno.EISDIR: "a directory is in the way; move it or choose another name",
    errno.EPIPE: "the reader of this output has gone",
}


class WriteError(OSError):
    """An operating-system error while writing ``filename`` (errno, strerror and filename as
    OSError's); ``str()`` is one line naming the file, the cause and the fix. An OSError, so
    that code catching OSError catches it."""

    def __str__(self) -> str:
        return os_error_line(self, doing="write")


def write_error(e: OSError, path: PathLike) -> WriteError:
    """``e`` (raised while writing ``path``, maybe about a temporary sibling) as a WriteError naming ``path``."""
    return WriteError(e.errno, e.strerror or (os.strerror(e.errno) if e.errno else str(e)), str(path))


def os_error_line(e: OSError, path: Optional[PathLike] = None, doing: str = "") -> str:
    """One line for an operating-system error: ``[cannot DOING ]PATH: CAUSE (FIX)``.

    CAUSE is errno's strerror ("No space left on device"), PATH ``path`` or the error's own
    file name, FIX a clause from ``FIXES`` when the errno has one. Never the traceback, never
    Python's ``[Errno 28]`` form."""
    path = path if path is not None else (e.filename if e.filename is not None else None)
    cause = e.strerror or (os.strerror(e.errno) if e.errno else " ".join(str(e).split()) or type(e).__name__)
    fix = FIXES.get(e.errno or 0, "")
    if e.errno == errno.ENAMETOOLONG and path is not None:
        fix += f"; it has {len(os.fsencode(Path(path).name))} bytes, the limit is usually {NAME_MAX}"
    where = "" if path is None else f"{os.fsdecode(path)}: "
    return f"{f'cannot {doing} ' if doing else ''}{where}{cause}" + (f" ({fix})" if fix else "")


def _check_name(path: Path) -> None:
    """ENAMETOOLONG before anything is written, when the name does not fit its directory."""
    try:
        limit = os.pathconf(path.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = NAME_MAX
    if len(os.fsencode(path.name)) > limit:
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), str(path))


def _os_cause(e: BaseException) -> Optional[OSError]:
    """``e`` or the OSError it was raised from or during (a writer may wrap one), or None."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, OSError):
            return e
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


def closed_pipe_exit() -> int:
    """The exit status after the reader of stdout went away (``srr-analyze ... | head``): 141,
    the shell's 128 + SIGPIPE, as a program killed by the signal. stdout is pointed at
    /dev/null first, so that Python's final flush does not print 'Exception ignored'."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real stdout (captured, closed): nothing to flush into the pipe
        pass
    return 141


def one_line_os_errors(prog: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorate a command's ``main`` (returning its exit status): a closed pipe ends quietly
    with :func:`closed_pipe_exit`; any other OSError is one line ``PROG: error: ...`` on
    stderr (:func:`os_error_line`) and exit status 1, never a traceback."""
    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(*args: Any, **kwargs: Any) -> int:
            try:
                return main(*args, **kwargs)
            except BrokenPipeError:
                return closed_pipe_exit()
            except OSError as e:
                print(f"{prog}: error: {os_error_line(e)}", file=sys.stderr)
                return 1
        return run
    return wrap


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
