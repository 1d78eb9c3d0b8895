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

Memory is bounded before anything is decoded: each image's width × height is read from
its header and refused above ``MAX_PIXELS`` (``data.options.max_pixels``), the whole set
above ``MAX_DECODED_BYTES`` (``data.options.max_decoded_bytes``), and a file larger than
any image within the pixel limit is refused unread. The data set is what lies in its
folder: a link that resolves outside it, a linked folder, a special file, and a tar
member that is a link, has an absolute or ``..`` path, or fails tarfile's ``data``
filter are refused in one line, never skipped or followed.
"""
from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import tempfile
import warnings
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

# Bounds on what a tree may cost before anything is decoded (data.options.max_pixels and
# data.options.max_decoded_bytes raise them). A PNG of one colour compresses about 1000:1,
# so the file sizes say nothing about the memory its pixels take.
MAX_PIXELS = 4096 * 4096  # width × height of one image, read from its header
MAX_DECODED_BYTES = 4 << 30  # the whole decoded set as uint8 (training then holds float32 copies of the subsets)


def _max_file_bytes(max_pixels: int) -> int:
    """The largest file an image within ``max_pixels`` can be: 16 bytes a pixel (4 channels
    of 32 bits, uncompressed TIFF) plus 1 MiB of metadata; a larger file is refused unread."""
    return 16 * max_pixels + (1 << 20)


def _refuse_link(path: Path, root: Path) -> None:
    """A link in the tree that resolves outside it is refused: the data set is what is in its folder."""
    target = path.resolve()
    if not target.is_relative_to(root.resolve()):
        raise DataError(f"imagefolder: {path} resolves to {target}, outside {root}; "
                        "copy the file into the folder instead of linking to it")


def _entries_dir(root: Path, max_file: int) -> Iterator[tuple[str, bytes]]:
    """(path under root, bytes) of every image file of a tree; links are followed only inside it.

    os.walk does not descend into a linked folder, so one is refused rather than skipped
    (its images would silently be missing); an unreadable folder is refused for the same reason.
    """
    def unreadable(e: OSError) -> None:
        raise DataError(f"imagefolder: cannot read {e.filename} ({e.strerror}); fix its permissions")

    for dirpath, dirs, files in os.walk(root, onerror=unreadable):
        for d in dirs:
            if (Path(dirpath) / d).is_symlink():
                _refuse_link(Path(dirpath) / d, root)
                raise DataError(f"imagefolder: {Path(dirpath) / d} is a link to a folder, which is not followed; "
                                "replace it by the folder itself")
        for f in files:
            p = Path(dirpath) / f
            if p.suffix.lower() not in _EXTS:
                continue
            if p.is_symlink():
                _refuse_link(p, root)
            try:
                st = p.stat()
                if not stat.S_ISREG(st.st_mode):
                    raise DataError(f"imagefolder: {p} is not a regular file; remove it from the folder")
                if st.st_size > max_file:
                    raise DataError(f"imagefolder: {p} is {st.st_size} bytes, more than an image within "
                                    "data.options.max_pixels can be; remove it or raise that limit")
                blob = p.read_bytes()
            except OSError as e:
                raise DataError(f"imagefolder: cannot read {p} ({e.strerror or e})") from None
            yield p.relative_to(root).as_posix(), blob


def _member_problem(m: tarfile.TarInfo, dest: str) -> str | None:
    """Why a tar member is refused, or None. Nothing is ever extracted to disk, but a member
    that could not be extracted safely (tarfile's ``data`` filter) or that only points at
    other bytes (a link) has no place in a data set: refused, not skipped."""
    parts = m.name.replace("\\", "/").split("/")
    if m.name.startswith(("/", "\\")) or (parts and parts[0].endswith(":")):
        return "has an absolute path"
    if ".." in parts:
        return "has a path that leaves the archive's folder (..)"
    if m.issym() or m.islnk():
        return "is a link; archive the files themselves (tar --dereference --hard-dereference)"
    if m.isfile() or m.isdir():
        return None  # with the checks above, the data filter would only tidy its mode bits (and cost a realpath)
    try:
        tarfile.data_filter(m, dest)  # devices, pipes, and whatever else it refuses
    except tarfile.FilterError as e:
        return f"is refused by tarfile's data filter ({type(e).__name__})"
    return f"is not a file or a folder (tar type {m.type!r})"


def _entries_tar(path: Path, max_file: int) -> Iterator[tuple[str, bytes]]:
    try:
        with tarfile.open(path) as tar, tempfile.TemporaryDirectory() as dest:
            for m in tar:
                problem = _member_problem(m, dest)
                if problem:
                    raise DataError(f"imagefolder: member {m.name!r} of {path} {problem}")
                if m.isfile() and Path(m.name).suffix.lower() in _EXTS:
                    if m.size > max_file:
                        raise DataError(f"imagefolder: {path}:{m.name} is {m.size} bytes, more than an image "
                                        "within data.options.max_pixels can be; remove it or raise that limit")
                    yield m.name, tar.extractfile(m).read()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"imagefolder: cannot read {path} as a tar archive ({e})") from None


def _split_of(parts: list[str]) -> tuple[str, str] | None:
    """(split, class) of a member path ``[top/]split/class/file``."""
    for i, part in enumerate(parts[:-2]):
        if part in ("train", "test", "val"):
            return ("test" if part == "val" else part), parts[i + 1]
    return None


def _decode(source: Path, channels: int, max_pixels: int, max_decoded_bytes: int) -> RawData:
    """Every image of the tree, each one's header checked before it is decoded (see ``_open``)."""
    max_file = _max_file_bytes(max_pixels)
    entries = _entries_tar(source, max_file) if source.is_file() else _entries_dir(source, max_file)
    items = []  # (split, class, where, bytes)
    for name, blob in sorted(entries):
        where = _split_of(name.split("/"))
        if where is not None:
            items.append((*where, f"{source}/{name}" if source.is_dir() else f"{source}:{name}", blob))
    if not any(s == "train" for s, *_ in items) or not any(s == "test" for s, *_ in items):
        raise DataError(f"imagefolder: {source} needs train/<class>/ and test/<class>/ (or val/) image folders")
    found: dict[str, list[tuple[str, np.ndarray]]] = {"train": [], "test": []}
    first = None  # (where, size) of the first image: every other must have its size
    for split, cls, where, blob in items:
        with _open(blob, where, max_pixels) as img:
            if first is None:
                first = (where, img.size)
                total = len(items) * img.size[0] * img.size[1] * (1 if channels == 1 else 3)
                if total > max_decoded_bytes:
                    raise DataError(
                        f"imagefolder: {source} holds {len(items)} images of {img.size[0]}x{img.size[1]}, "
                        f"{total / 2**30:.1f} GiB decoded, over data.options.max_decoded_bytes="
                        f"{max_decoded_bytes}; use fewer or smaller images, or raise that limit")
            elif img.size != first[1]:
                raise DataError(f"imagefolder: {where} is {img.size[0]}x{img.size[1]} but {first[0]} is "
                                f"{first[1][0]}x{first[1][1]}; images must share one size: resize them first")
            found[split].append((cls, _pixels(img, where, channels)))
    classes = sorted({c for c, _ in found["train"]})
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({c for c, _ in found["test"]} - set(index))
    if unknown:
        raise DataError(f"imagefolder: test classes {unknown} have no train folder in {source}")

    def stack(items: list[tuple[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        x = np.stack([a for _, a in items])
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x), np.array([index[c] for c, _ in items], dtype=np.int64)

    (xtr, ytr), (xte, yte) = stack(found["train"]), stack(found["test"])
    return RawData(xtr, ytr, xte, yte, num_classes=len(classes), augment_default=True)


def _open(blob: bytes, where: str, max_pixels: int):
    """The image of one file, opened as one of _FORMATS with its header read and nothing decoded.

    Width × height above ``max_pixels`` is refused here. Pillow's own decompression-bomb
    guard (``Image.MAX_IMAGE_PIXELS``) acts inside ``Image.open``, before this check: its
    warning is silenced (the check below is the one that decides) and its error is
    reported as the same refusal, so a limit raised beyond Pillow's is still refused there.
    """
    from PIL import Image, UnidentifiedImageError

    limit = f"over the limit of data.options.max_pixels={max_pixels}; resize the images first, or raise that limit"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(blob), formats=_FORMATS)
    except UnidentifiedImageError:
        raise DataError(f"imagefolder: {where} is not a {'/'.join(_FORMATS)} image") from None
    except Image.DecompressionBombError:
        raise DataError(f"imagefolder: {where} has more pixels than Pillow's decompression-bomb limit, {limit}") from None
    except (OSError, ValueError) as e:
        raise DataError(f"imagefolder: {where} is not a readable image ({' '.join(str(e).split())[:200]})") from None
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise DataError(f"imagefolder: {where} is {w}x{h} = {w * h} pixels, {limit}")
    return img


def _pixels(img, where: str, channels: int) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 pixels of an opened image: the decoding step."""
    try:
        return np.asarray(img.convert("L" if channels == 1 else "RGB"))
    except (OSError, ValueError) as e:
        raise DataError(f"imagefolder: {where} is not a readable image ({' '.join(str(e).split())[:200]})") from None


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
            p = Path(dirpath) / f
            try:
                st = p.stat()
            except OSError:  # a dangling link: its own stamp; reading it gives the error
                st = p.lstat()
            h.update(f"{Path(dirpath, f).relative_to(source)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


@DATASETS.register("imagefolder")
def imagefolder(root: str = "data", download: bool = False, path: str = "", channels: int = 3,
                cache_dir: str = "", max_pixels: int = MAX_PIXELS,
                max_decoded_bytes: int = MAX_DECODED_BYTES) -> RawData:
    """``path`` (a directory or .tar.gz; relative paths are under ``root``) -> RawData, cached.

    ``max_pixels`` (per image) and ``max_decoded_bytes`` (the whole set, uint8) bound the
    memory decoding may take; both are checked from headers before any pixel is decoded.
    """
    for key, value in (("max_pixels", max_pixels), ("max_decoded_bytes", max_decoded_bytes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"imagefolder: data.options.{key}={value!r} must be a positive whole number")
    source = Path(root) / path if path else Path(root)
    if not source.exists():
        raise DataError(f"imagefolder: {source} does not exist (set data.options.path to a folder or .tar.gz)")
    key = hashlib.sha1(f"{source.resolve()}|{_stamp(source)}|{channels}".encode()).hexdigest()[:16]
    cache = cache_root(cache_dir) / f"imagefolder-{key}.npz"
    raw = _read_cache(cache)
    if raw is None:
        raw = _decode(source, channels, max_pixels, max_decoded_bytes)
        _write_cache(cache, raw)
    return raw
