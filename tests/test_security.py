"""Hostile files: nothing a user hands us is unpickled as code or trusted without its checksum.

Each payload is live: a control shows that a plain ``pickle.loads`` / ``torch.load``
runs it (it creates a marker file); the loaders must refuse it in one line naming the
file, and the marker must never appear.
"""
import gzip
import os
import pickle

import numpy as np
import pytest
import torch

from srr_bench.checkpoints import CheckpointError, load_model
from srr_bench.data import DataError, archives, load_data
from tests.test_data import CIFAR10_FILES, cifar_batch, publish, py2_pickle, write_cifar10


pytestmark = pytest.mark.usefixtures("private_cache")  # checksums and decodes cached per test


class System:
    """Unpickling this runs a shell command (what a hostile file would hold)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "payload-ran"


def live_payload(marker) -> System:
    """A payload shown to act: unpickled naively, it creates ``marker`` (removed again here)."""
    payload = System(f"touch {marker}")
    pickle.loads(pickle.dumps(payload, protocol=2))
    assert marker.exists(), "the control payload did not act"
    marker.unlink()
    return payload


def hostile_cifar_blobs(marker) -> dict:
    """Real-format batches, but data_batch_1 also carries the payload."""
    blobs = {name: py2_pickle(cifar_batch(10, seed=i)) for i, name in enumerate(CIFAR10_FILES)}
    blobs["data_batch_1"] = py2_pickle(cifar_batch(10, evil=live_payload(marker)))
    return blobs


def one_line_error(exc_type, **cfg) -> str:
    with pytest.raises(exc_type) as e:
        load_data(dict(download=False, **cfg))
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("tarball", [True, False], ids=["tarball", "folder"])
def test_hostile_cifar_batch_is_refused_even_when_its_md5_matches(tmp_path, monkeypatch, marker, tarball):
    """The unpickler admits numpy's three globals only, so a batch colliding with the published MD5 still cannot act."""
    write_cifar10(tmp_path, hostile_cifar_blobs(marker), tarball, monkeypatch)
    msg = one_line_error(DataError, name="cifar10", root=str(tmp_path))
    assert "data_batch_1" in msg and "posix.system" in msg and "refusing to unpickle" in msg
    assert not marker.exists()


@pytest.mark.parametrize("tarball", [True, False], ids=["tarball", "folder"])
def test_cifar_file_that_is_not_the_published_one_is_refused_before_reading(tmp_path, marker, tarball):
    write_cifar10(tmp_path, hostile_cifar_blobs(marker), tarball)  # the real published MD5s apply
    msg = one_line_error(DataError, name="cifar10", root=str(tmp_path))
    bad = "cifar-10-python.tar.gz" if tarball else "data_batch_1"
    assert bad in msg and "is not the published" in msg and "delete" in msg
    assert not marker.exists()


def test_cifar_batch_of_the_wrong_shape_is_one_line(tmp_path, monkeypatch):
    blobs = {name: py2_pickle(cifar_batch(10)) for name in CIFAR10_FILES}
    blobs["test_batch"] = py2_pickle({"data": np.zeros((10, 100), np.uint8), "labels": [0] * 10})
    write_cifar10(tmp_path, blobs, tarball=False, monkeypatch=monkeypatch)
    msg = one_line_error(DataError, name="cifar10", root=str(tmp_path))
    assert "test_batch" in msg and "not a CIFAR batch" in msg


def test_checksums_are_verified_on_every_load_and_cached_by_size_and_times(tmp_path, monkeypatch):
    blobs = {name: py2_pickle(cifar_batch(10, seed=i)) for i, name in enumerate(CIFAR10_FILES)}
    write_cifar10(tmp_path, blobs, tarball=True, monkeypatch=monkeypatch)
    hashed = []
    real_md5 = archives._md5
    monkeypatch.setattr(archives, "_md5", lambda path: hashed.append(path) or real_md5(path))
    cfg = dict(name="cifar10", root=str(tmp_path), download=False)
    load_data(cfg)
    assert len(hashed) == 1  # the archive, once
    load_data(cfg)
    assert len(hashed) == 1  # cached: same size, mtime and ctime
    archive = tmp_path / "cifar-10-python.tar.gz"
    st = archive.stat()
    blob = bytearray(archive.read_bytes())
    blob[-1] ^= 0xFF  # same size, then the old mtime put back by hand
    archive.write_bytes(bytes(blob))
    os.utime(archive, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(DataError, match="is not the published cifar-10-python.tar.gz"):
        load_data(cfg)
    assert len(hashed) == 2  # the ctime changed, so it was hashed again


def test_svhn_mat_file_is_data_only(tmp_path, monkeypatch):
    """scipy's MAT reader runs nothing; what is not X: uint8 (32, 32, 3, n) and y: labels is one line."""
    from scipy.io import savemat

    savemat(tmp_path / "train_32x32.mat", {"X": {"cmd": "touch x"}, "y": np.ones((1, 1))})  # a struct, not images
    (tmp_path / "test_32x32.mat").write_bytes(b"MATLAB 7.3 MAT-file, not really")
    publish(monkeypatch, tmp_path, "train_32x32.mat", "test_32x32.mat")
    msg = one_line_error(DataError, name="svhn", root=str(tmp_path))
    assert "train_32x32.mat is not an SVHN file" in msg
    (tmp_path / "train_32x32.mat").unlink()
    savemat(tmp_path / "train_32x32.mat", {"X": np.zeros((32, 32, 3, 1), np.uint8), "y": np.ones((1, 1))})
    publish(monkeypatch, tmp_path, "train_32x32.mat")
    msg = one_line_error(DataError, name="svhn", root=str(tmp_path))
    assert "test_32x32.mat is not a readable MATLAB file" in msg


def test_mnist_idx_file_whose_header_lies_is_one_line(tmp_path, monkeypatch):
    header = b"\x00\x00\x08\x03" + np.array([1000, 28, 28], ">i4").tobytes()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / f"{stem}.gz").write_bytes(gzip.compress(header + bytes(28 * 28)))  # 1 image, not 1000
        publish(monkeypatch, tmp_path, f"{stem}.gz")
    msg = one_line_error(DataError, name="mnist", root=str(tmp_path))
    assert "train-images-idx3-ubyte.gz holds 784 bytes" in msg


def _image_tree(root):
    from PIL import Image

    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            Image.new("RGB", (4, 4), (10, 20, 30)).save(root / split / c / "0.png")


def test_imagefolder_decodes_raster_formats_only(tmp_path):
    """A PostScript file named .png is refused, not handed to Ghostscript."""
    _image_tree(tmp_path / "tree")
    (tmp_path / "tree" / "train" / "a" / "1.png").write_bytes(
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 4 4\nnewpath 0 0 moveto showpage\n")
    msg = one_line_error(DataError, name="imagefolder", root=str(tmp_path / "tree"))
    assert "tree/train/a/1.png is not a PNG/JPEG" in msg


def test_imagefolder_cache_is_never_unpickled(tmp_path, marker):
    """A cache file replaced by a pickle is ignored and rebuilt, never loaded as objects."""
    _image_tree(tmp_path / "tree")
    cfg = dict(name="imagefolder", root=str(tmp_path / "tree"), augment=False)
    first = load_data(cfg)
    (cache,) = (tmp_path / "srr-cache").glob("imagefolder-*.npz")
    cache.write_bytes(pickle.dumps(np.array([live_payload(marker)], dtype=object), protocol=2))
    again = load_data(cfg)
    assert not marker.exists() and again.train.x.equal(first.train.x)
    np.load(cache, allow_pickle=False)  # rebuilt as plain arrays


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_checkpoint_with_a_pickled_call_is_refused_as_code(tmp_path, marker, protocol, zipped):
    """Named pickled code whatever torch's wording, the pickle protocol or the file format."""
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "evil": live_payload(marker)}, path,
               pickle_protocol=protocol, _use_new_zipfile_serialization=zipped)
    with pytest.raises(CheckpointError) as e:
        load_model(path)
    msg = str(e.value)
    assert "pickled Python code (posix.system)" in msg and str(path) in msg and "\n" not in msg
    assert not marker.exists()


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_protocol_4_payload_the_scan_missed_is_still_refused(tmp_path, marker, monkeypatch, zipped):
    """Protocol-4 pickles are never rewritten or run: with the scan blind, the file is still refused in one line."""
    import srr_bench.checkpoints as ckpt

    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "evil": live_payload(marker)}, path,
               pickle_protocol=4, _use_new_zipfile_serialization=zipped)
    monkeypatch.setattr(ckpt, "refused_globals", lambda *a, **k: [])  # the scan sees nothing
    with pytest.raises(CheckpointError) as e:
        load_model(path)
    assert str(e.value).startswith(str(path)) and "pickle protocol 4" in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()
