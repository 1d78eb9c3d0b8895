"""Standard data sets read from their standard archive formats under a data root.

``cifar10`` / ``cifar100``: the "python version" tarballs (``cifar-10-python.tar.gz``,
``cifar-100-python.tar.gz``) or their extracted folders; ``svhn``: ``train_32x32.mat``
and ``test_32x32.mat`` (label 10 means digit 0); ``mnist``: the four IDX files
(gzipped or not); ``imagefolder``: a class-per-folder tree with ``train/`` and ``test/``
(or ``val/``) sub-trees, as a directory or a .tar.gz of one. Missing files are
downloaded when ``download`` is on and the machine is online; otherwise a one-line
``DataError`` says which file to put where.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
import urllib.request
from pathlib import Path
from typing import Optional

import numpy as np

from . import DATASETS
from .core import DataError, RawData

_CIFAR10 = ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")
_CIFAR100 = ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85")
_SVHN = {
    "train_32x32.mat": ("http://ufldl.stanford.edu/housenumbers/train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
    "test_32x32.mat": ("http://ufldl.stanford.edu/housenumbers/test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
}
_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_MNIST = {
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(root: Path, filename: str, url: str, md5: Optional[str], download: bool, dataset: str) -> Path:
    """``root/filename``, downloading it (and checking its MD5) if it is missing and allowed."""
    path = root / filename
    if path.exists():
        return path
    if not download:
        raise DataError(f"{dataset}: {path} not found and download is off; put {filename} (from {url}) there")
    root.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as r, open(tmp, "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise DataError(f"{dataset}: {path} not found and download failed ({reason}); put {filename} (from {url}) there") from None
    if md5 and _md5(tmp) != md5:
        tmp.unlink(missing_ok=True)
        raise DataError(f"{dataset}: downloaded {filename} has the wrong MD5; delete it and retry")
    os.replace(tmp, path)
    return path


def _unpickle(blob: bytes) -> dict:
    return pickle.loads(blob, encoding="latin1")  # the CIFAR batches are Python-2 pickles of arrays


def _cifar(root: str, download: bool, name: str, folder: str, archive: tuple[str, str],
           train_files: list[str], test_files: list[str], label_key: str, num_classes: int) -> RawData:
    """Read the CIFAR "python version", from its extracted folder or straight from the tarball."""
    base = Path(root)
    if (base / folder).is_dir():
        read = lambda f: (base / folder / f).read_bytes()
    else:
        url, md5 = archive
        tar = tarfile.open(fetch(base, url.rsplit("/", 1)[1], url, md5, download, name))
        read = lambda f: tar.extractfile(f"{folder}/{f}").read()

    def load(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        try:
            batches = [_unpickle(read(f)) for f in files]
        except (KeyError, OSError, pickle.UnpicklingError, EOFError) as e:
            raise DataError(f"{name}: the archive under {base} is incomplete or corrupt ({e})") from None
        x = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32)
        y = np.concatenate([np.asarray(b[label_key]) for b in batches])
        return x.astype(np.uint8), y.astype(np.int64)

    (xtr, ytr), (xte, yte) = load(train_files), load(test_files)
    return RawData(xtr, ytr, xte, yte, num_classes=num_classes, augment_default=True)


@DATASETS.register("cifar10")
def cifar10(root: str = "data", download: bool = True) -> RawData:
    files = [f"data_batch_{i}" for i in range(1, 6)]
    return _cifar(root, download, "cifar10", "cifar-10-batches-py", _CIFAR10, files, ["test_batch"], "labels", 10)


@DATASETS.register("cifar100")
def cifar100(root: str = "data", download: bool = True, label: str = "fine") -> RawData:
    """CIFAR-100 with its 100 fine labels (``label="coarse"`` for the 20 superclasses)."""
    n = {"fine": 100, "coarse": 20}[label]
    return _cifar(root, download, "cifar100", "cifar-100-python", _CIFAR100, ["train"], ["test"], f"{label}_labels", n)


@DATASETS.register("svhn")
def svhn(root: str = "data", download: bool = True) -> RawData:
    """SVHN cropped digits (train 73,257 / test 26,032); no flip augmentation by default."""
    from scipy.io import loadmat

    def load(split: str) -> tuple[np.ndarray, np.ndarray]:
        url, md5 = _SVHN[f"{split}_32x32.mat"]
        m = loadmat(fetch(Path(root), f"{split}_32x32.mat", url, md5, download, "svhn"))
        x = np.ascontiguousarray(m["X"].transpose(3, 2, 0, 1))  # (H, W, C, n) -> (n, C, H, W)
        y = m["y"].reshape(-1).astype(np.int64) % 10  # label 10 is the digit 0
        return x, y

    (xtr, ytr), (xte, yte) = load("train"), load("test")
    return RawData(xtr, ytr, xte, yte, num_classes=10)


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format): magic 0x0000 08 nd, big-endian dims, uint8 payload."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DataError(f"mnist: {path} is not an unsigned-byte IDX file")
    nd = data[3]
    dims = np.frombuffer(data, dtype=">i4", count=nd, offset=4)
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * nd).reshape(dims)


@DATASETS.register("mnist")
def mnist(root: str = "data", download: bool = True) -> RawData:
    base = Path(root)

    def find(stem: str) -> Path:
        for name in (stem, stem + ".gz"):
            if (base / name).exists():
                return base / name
        return fetch(base, stem + ".gz", _MNIST_URL + stem + ".gz", None, download, "mnist")

    xtr, ytr = _read_idx(find("train-images-idx3-ubyte")), _read_idx(find("train-labels-idx1-ubyte"))
    xte, yte = _read_idx(find("t10k-images-idx3-ubyte")), _read_idx(find("t10k-labels-idx1-ubyte"))
    return RawData(xtr[:, None], ytr.astype(np.int64), xte[:, None], yte.astype(np.int64), num_classes=10)
