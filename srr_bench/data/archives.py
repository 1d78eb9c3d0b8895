"""Standard data sets read from their standard archive formats under a data root.

``cifar10`` / ``cifar100``: the "python version" tarballs (``cifar-10-python.tar.gz``,
``cifar-100-python.tar.gz``) or their extracted folders; ``svhn``: ``train_32x32.mat``
and ``test_32x32.mat`` (label 10 means digit 0); ``mnist``: the four IDX files
(gzipped or not); ``imagefolder``: a class-per-folder tree with ``train/`` and ``test/``
(or ``val/``) sub-trees, as a directory or a .tar.gz of one. Missing files are
downloaded when ``download`` is on and the machine is online; otherwise a one-line
``DataError`` says which file to put where.

Nothing found under the root is trusted: every standard file is checked against its
published MD5 on every load (digests cached by size and times in ``cache_root()``), and
the CIFAR batches, which are pickles, are read by an unpickler that admits only the
numpy globals a real batch names, so a hostile batch is refused even if it collides
with the published MD5.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import re
import tarfile
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..io import read_json, write_json
from . import DATASETS
from .core import DataError, RawData

_CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
_SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"

# MD5 of each standard archive, and of the CIFAR batches for an extracted folder, as
# published with the data sets (torchvision checks the same sums). Keys are paths under
# the data root. MNIST's uncompressed IDX files have no published sum: they are read as
# plain bytes, never unpickled.
PUBLISHED_MD5 = {
    "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
    "cifar-10-batches-py/data_batch_1": "c99cafc152244af753f735de768cd75f",
    "cifar-10-batches-py/data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "cifar-10-batches-py/data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "cifar-10-batches-py/data_batch_4": "634d18415352ddfa80567beed471001a",
    "cifar-10-batches-py/data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "cifar-10-batches-py/test_batch": "40351d587109b95175f43aff81a1287e",
    "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
    "cifar-100-python/train": "16019d7e3df5f24257cddd939b257f8d",
    "cifar-100-python/test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def cache_root(override: str = "") -> Path:
    """Where srr-bench caches what it derives from data: ``override``, else $SRR_BENCH_CACHE, else ~/.cache/srr-bench."""
    return Path(override or os.environ.get("SRR_BENCH_CACHE") or Path.home() / ".cache" / "srr-bench")


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_HEX32 = re.compile(r"[0-9a-f]{32}")


def file_md5(path: Path) -> str:
    """MD5 of ``path``, remembered in ``cache_root()/md5.json`` so a 170 MB archive is hashed once.

    An entry is keyed by the resolved path and stamped with (size, mtime, ctime): a file
    replaced, edited or touched since gets a new stamp and is hashed again (ctime is in
    the stamp because, unlike mtime, it cannot be set back by hand). The table holds
    digests, not verdicts, and an unreadable or unwritable table only costs time.
    """
    st = path.stat()
    key, stamp = str(path.resolve()), [st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    table_path = cache_root() / "md5.json"
    table = _read_md5_table(table_path)
    entry = table.get(key)
    if isinstance(entry, dict) and entry.get("stamp") == stamp and _HEX32.fullmatch(str(entry.get("md5"))):
        return entry["md5"]
    table[key] = {"stamp": stamp, "md5": _md5(path)}
    try:
        write_json(table_path, table)
    except OSError:
        pass
    return table[key]["md5"]


def _read_md5_table(path: Path) -> dict:
    try:
        table = read_json(path)
    except (OSError, ValueError):
        return {}
    return table if isinstance(table, dict) else {}


def verify(path: Path, name: str, dataset: str, fix: str) -> None:
    """Refuse ``path`` in one line unless its MD5 is the published one for ``name`` (a key of PUBLISHED_MD5)."""
    expected, got = PUBLISHED_MD5[name], file_md5(path)
    if got != expected:
        raise DataError(f"{dataset}: {path} is not the published {name} (MD5 {got}, expected {expected}); {fix}")


def fetch(root: Path, filename: str, url: str, download: bool, dataset: str) -> Path:
    """``root/filename``, downloaded if it is missing and allowed; its published MD5 is checked on every call."""
    path = root / filename
    if not path.exists():
        _download(path, url, download, dataset)
    elif filename in PUBLISHED_MD5:
        fix = f"delete it so that it is downloaded again, or put the original (from {url}) there"
        verify(path, filename, dataset, fix)
    return path


def _download(path: Path, url: str, download: bool, dataset: str) -> None:
    """Fetch ``url`` to ``path`` through a ``.part`` file, moved in place only once its MD5 is right."""
    filename = path.name
    if not download:
        raise DataError(f"{dataset}: {path} not found and download is off; put {filename} (from {url}) there")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as r, open(tmp, "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise DataError(
            f"{dataset}: {path} not found and download failed ({reason}); put {filename} (from {url}) there"
        ) from None
    if filename in PUBLISHED_MD5 and _md5(tmp) != PUBLISHED_MD5[filename]:
        tmp.unlink(missing_ok=True)
        raise DataError(
            f"{dataset}: downloaded {filename} has the wrong MD5; retry, or put the original (from {url}) at {path}"
        )
    os.replace(tmp, path)


def _numpy_reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _Refused(pickle.UnpicklingError):
    """A pickle names a global that no CIFAR batch contains."""


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR "python version" batch and nothing else.

    The batches were written by Python 2's cPickle with numpy 1.x: a dict of strings to
    a uint8 array, lists of ints and strings. The only globals such a pickle names are
    numpy's array reconstructor, ``numpy.ndarray`` and ``numpy.dtype`` (checked on
    batches written that way by Python 2.7 + numpy 1.16, protocols 0 and 2); numpy 2
    renamed the reconstructor's module to ``numpy._core.multiarray``, accepted too. Any
    other global (``posix.system``, ``builtins.eval``, ...) is refused before it is looked up.
    """

    def find_class(self, module: str, name: str) -> Any:
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
            ("numpy", "ndarray"): lambda: np.ndarray,
            ("numpy", "dtype"): lambda: np.dtype,
        }
        if (module, name) not in allowed:
            raise _Refused(f"{module}.{name}")
        return allowed[(module, name)]()


def read_cifar_batch(blob: bytes, where: str, dataset: str, label_key: str,
                     num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 3, 32, 32) uint8 and labels (n,) int64 of one CIFAR batch, read with ``_BatchUnpickler``."""
    try:
        batch = _BatchUnpickler(io.BytesIO(blob), encoding="latin1").load()  # Python-2 strings -> str
    except _Refused as e:
        raise DataError(f"{dataset}: {where} names {e}, which no CIFAR batch contains; refusing to unpickle it "
                        "(a real batch holds only numpy arrays, lists, strings and ints)") from None
    except Exception as e:  # a malformed pickle fails with almost any error type
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        raise DataError(f"{dataset}: {where} is not a readable CIFAR batch ({reason})") from None
    data = batch.get("data") if isinstance(batch, dict) else None
    labels = batch.get(label_key) if isinstance(batch, dict) else None
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072
            and isinstance(labels, list) and len(labels) == len(data)
            and all(type(v) is int and 0 <= v < num_classes for v in labels)):
        raise DataError(f"{dataset}: {where} is not a CIFAR batch "
                        f"(expected 'data': uint8 (n, 3072) and '{label_key}': n ints in [0, {num_classes}))")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def _cifar_files(base: Path, download: bool, dataset: str, folder: str, url: str,
                 files: list[str]) -> dict[str, tuple[str, bytes]]:
    """file -> (where, bytes) of each batch, from the extracted folder or the tarball, checked against its MD5."""
    archive = url.rsplit("/", 1)[1]
    fix = f"delete {base / folder} and put the original {archive} (from {url}) in {base}"
    if (base / folder).is_dir():
        out = {}
        for f in files:
            path = base / folder / f
            if not path.is_file():
                raise DataError(f"{dataset}: {path} is missing; {fix}")
            verify(path, f"{folder}/{f}", dataset, fix)
            out[f] = (str(path), path.read_bytes())
        return out
    tar_path = fetch(base, archive, url, download, dataset)
    try:
        with tarfile.open(tar_path) as tar:
            return {f: (f"{tar_path}:{folder}/{f}", _member_bytes(tar, f"{folder}/{f}")) for f in files}
    except (KeyError, tarfile.TarError, OSError, EOFError) as e:
        raise DataError(
            f"{dataset}: {tar_path} is incomplete or corrupt ({e}); delete it and put the original (from {url}) there"
        ) from None


def _member_bytes(tar: tarfile.TarFile, name: str) -> bytes:
    f = tar.extractfile(name)
    if f is None:
        raise KeyError(f"{name} is not a regular file")
    return f.read()


def _cifar(root: str, download: bool, name: str, folder: str, url: str,
           train_files: list[str], test_files: list[str], label_key: str, num_classes: int) -> RawData:
    """Read the CIFAR "python version", from its extracted folder or straight from the tarball."""
    found = _cifar_files(Path(root), download, name, folder, url, train_files + test_files)

    def load(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        batches = [read_cifar_batch(found[f][1], found[f][0], name, label_key, num_classes) for f in files]
        return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])

    (xtr, ytr), (xte, yte) = load(train_files), load(test_files)
    return RawData(xtr, ytr, xte, yte, num_classes=num_classes, augment_default=True)


@DATASETS.register("cifar10")
def cifar10(root: str = "data", download: bool = True) -> RawData:
    files = [f"data_batch_{i}" for i in range(1, 6)]
    return _cifar(root, download, "cifar10", "cifar-10-batches-py", _CIFAR10_URL, files, ["test_batch"], "labels", 10)


@DATASETS.register("cifar100")
def cifar100(root: str = "data", download: bool = True, label: str = "fine") -> RawData:
    """CIFAR-100 with its 100 fine labels (``label="coarse"`` for the 20 superclasses)."""
    n = {"fine": 100, "coarse": 20}[label]
    return _cifar(root, download, "cifar100", "cifar-100-python", _CIFAR100_URL, ["train"], ["test"], f"{label}_labels", n)


@DATASETS.register("svhn")
def svhn(root: str = "data", download: bool = True) -> RawData:
    """SVHN cropped digits (train 73,257 / test 26,032); no flip augmentation by default."""

    def load(split: str) -> tuple[np.ndarray, np.ndarray]:
        filename = f"{split}_32x32.mat"
        return _read_svhn(fetch(Path(root), filename, _SVHN_URL + filename, download, "svhn"))

    (xtr, ytr), (xte, yte) = load("train"), load("test")
    return RawData(xtr, ytr, xte, yte, num_classes=10)


def _read_svhn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 3, 32, 32) and labels of an SVHN .mat file; label 10 is the digit 0.

    scipy's MAT reader parses data only (MATLAB objects and function handles come back
    as arrays of their fields; nothing is imported, unpickled or run) and refuses v7.3
    (HDF5) files.
    """
    from scipy.io import loadmat

    try:
        m = loadmat(path, variable_names=["X", "y"])
    except Exception as e:  # a malformed file fails with almost any error type
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        raise DataError(f"svhn: {path} is not a readable MATLAB file ({reason})") from None
    x, y = m.get("X"), m.get("y")
    if not (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 4 and x.shape[:3] == (32, 32, 3)
            and isinstance(y, np.ndarray) and y.size == x.shape[3] and np.isin(y, np.arange(11)).all()):
        raise DataError(f"svhn: {path} is not an SVHN file (expected X: uint8 (32, 32, 3, n) and y: n labels 1..10)")
    x = np.ascontiguousarray(x.transpose(3, 2, 0, 1))  # (H, W, C, n) -> (n, C, H, W)
    return x, y.reshape(-1).astype(np.int64) % 10


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format): magic 0x0000 08 nd, nd big-endian int32 dims, uint8 payload."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"mnist: cannot read {path} ({e})") from None
    nd = data[3] if len(data) >= 4 and data[:3] == b"\x00\x00\x08" else 0
    if nd == 0 or len(data) < 4 + 4 * nd:
        raise DataError(f"mnist: {path} is not an unsigned-byte IDX file")
    dims = np.frombuffer(data, dtype=">i4", count=nd, offset=4).astype(np.int64)
    if (dims < 0).any() or len(data) != 4 + 4 * nd + int(np.prod(dims)):
        raise DataError(f"mnist: {path} holds {len(data) - 4 - 4 * nd} bytes of images, not the {dims.tolist()} its header says")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * nd).reshape(dims)


@DATASETS.register("mnist")
def mnist(root: str = "data", download: bool = True) -> RawData:
    base = Path(root)

    def find(stem: str) -> Path:
        if (base / stem).exists():
            return base / stem  # uncompressed: no published MD5; plain bytes, never unpickled
        return fetch(base, stem + ".gz", _MNIST_URL + stem + ".gz", download, "mnist")

    xtr, ytr = _read_idx(find("train-images-idx3-ubyte")), _read_idx(find("train-labels-idx1-ubyte"))
    xte, yte = _read_idx(find("t10k-images-idx3-ubyte")), _read_idx(find("t10k-labels-idx1-ubyte"))
    return RawData(xtr[:, None], ytr.astype(np.int64), xte[:, None], yte.astype(np.int64), num_classes=10)
