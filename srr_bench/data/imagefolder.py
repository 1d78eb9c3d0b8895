"""``imagefolder``: class-per-folder trees of image files, as a directory or a .tar.gz.

Layout: ``<root>/train/<class>/*.{png,jpg,...}`` and ``<root>/test/<class>/...`` (``val``
is accepted for ``test``), optionally under one top folder inside a tarball. Classes are
the sorted folder names of ``train``; images are decoded with Pillow to RGB (or L with
``channels=1``) and must share one size. Decoding a large tree is slow, so the decoded
arrays are cached in a .npz keyed by the source's path and the size and modification
time of the tarball or of every file in the tree.

Only raster formats are decoded (Pillow is told which, so a file whose bytes are, say,
PostScript is refused, not handed to Ghostscript), and the cache is read back with
``allow_pickle=False``: a cache that is unreadable or holds anything but the five
arrays is ignored and rebuilt.
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from . import DATASETS
from .archives import cache_root
from .core import DataError, RawData

_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".webp", ".tif", ".tiff"}
_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "PPM", "WEBP", "TIFF")  # Pillow's names for _EXTS
_CACHED = ("train_x", "train_y", "test_x", "test_y", "num_classes")


def _entries_dir(root: Path) -> Iterator[tuple[str, bytes]]:
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            if p.suffix.lower() in _EXTS:
                yield p.relative_to(root).as_posix(), p.read_bytes()


def _entries_tar(path: Path) -> Iterator[tuple[str, bytes]]:
    try:
        with tarfile.open(path) as tar:
            for m in tar:
                if m.isfile() and Path(m.name).suffix.lower() in _EXTS:
                    yield m.name, tar.extractfile(m).read()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"imagefolder: cannot read {path} as a tar archive ({e})") from None


def _split_of(parts: list[str]) -> tuple[str, str] | None:
    """(split, class) of a member path ``[top/]split/class/file``."""
    for i, part in enumerate(parts[:-2]):
        if part in ("train", "test", "val"):
            return ("test" if part == "val" else part), parts[i + 1]
    return None


def _decode(source: Path, channels: int) -> RawData:
    from PIL import Image

    entries = _entries_tar(source) if source.is_file() else _entries_dir(source)
    found: dict[str, list[tuple[str, np.ndarray]]] = {"train": [], "test": []}
    for name, blob in sorted(entries):
        where = _split_of(name.split("/"))
        if where is None:
            continue
        member = f"{source}/{name}" if source.is_dir() else f"{source}:{name}"
        found[where[0]].append((where[1], _image(blob, member, channels)))
    if not found["train"] or not found["test"]:
        raise DataError(f"imagefolder: {source} needs train/<class>/ and test/<class>/ (or val/) image folders")
    classes = sorted({c for c, _ in found["train"]})
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({c for c, _ in found["test"]} - set(index))
    if unknown:
        raise DataError(f"imagefolder: test classes {unknown} have no train folder in {source}")

    def stack(items: list[tuple[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        shapes = {a.shape for _, a in items}
        if len(shapes) > 1:
            raise DataError(f"imagefolder: images in {source} differ in size {sorted(shapes)[:3]}; resize them first")
        x = np.stack([a for _, a in items])
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x), np.array([index[c] for c, _ in items], dtype=np.int64)

    (xtr, ytr), (xte, yte) = stack(found["train"]), stack(found["test"])
    return RawData(xtr, ytr, xte, yte, num_classes=len(classes), augment_default=True)


def _image(blob: bytes, where: str, channels: int) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 pixels of one image file, decoded by Pillow as one of _FORMATS only."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(blob), formats=_FORMATS) as img:
            return np.asarray(img.convert("L" if channels == 1 else "RGB"))
    except UnidentifiedImageError:
        raise DataError(f"imagefolder: {where} is not a {'/'.join(_FORMATS)} image") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        reason = " ".join(str(e).split())[:200]
        raise DataError(f"imagefolder: {where} is not a readable image ({reason})") from None


def _read_cache(cache: Path) -> RawData | None:
    """The decoded arrays from a cache file, or None if it is missing or not exactly what ``_write_cache`` wrote."""
    try:
        with np.load(cache, allow_pickle=False) as z:
            if sorted(z.files) != sorted(_CACHED):
                return None
            a = {k: z[k] for k in _CACHED}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    return RawData(a["train_x"], a["train_y"], a["test_x"], a["test_y"], int(a["num_classes"]), augment_default=True)


def _write_cache(cache: Path, raw: RawData) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp.npz")
        np.savez(tmp, train_x=raw.train_x, train_y=raw.train_y, test_x=raw.test_x, test_y=raw.test_y,
                 num_classes=raw.num_classes)
        os.replace(tmp, cache)
    except OSError:
        pass  # an unwritable cache only costs time


def _stamp(source: Path) -> str:
    """Size and mtime of a tarball, or of every file under a directory (a directory's own mtime
    does not change when an image inside a class folder is replaced)."""
    if source.is_file():
        st = source.stat()
        return f"{st.st_size}|{st.st_mtime_ns}"
    h = hashlib.sha1()
    for dirpath, dirs, files in os.walk(source):
        dirs.sort()
        for f in sorted(files):
            st = (Path(dirpath) / f).stat()
            h.update(f"{Path(dirpath, f).relative_to(source)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


@DATASETS.register("imagefolder")
def imagefolder(root: str = "data", download: bool = False, path: str = "", channels: int = 3,
                cache_dir: str = "") -> RawData:
    """``path`` (a directory or .tar.gz; relative paths are under ``root``) -> RawData, cached."""
    source = Path(root) / path if path else Path(root)
    if not source.exists():
        raise DataError(f"imagefolder: {source} does not exist (set data.options.path to a folder or .tar.gz)")
    key = hashlib.sha1(f"{source.resolve()}|{_stamp(source)}|{channels}".encode()).hexdigest()[:16]
    cache = cache_root(cache_dir) / f"imagefolder-{key}.npz"
    raw = _read_cache(cache)
    if raw is None:
        raw = _decode(source, channels)
        _write_cache(cache, raw)
    return raw
