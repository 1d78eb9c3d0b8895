"""Data sets from their standard formats, subsets, augmentation, clear errors."""
import gzip
import hashlib
import io
import pickle
import struct
import tarfile

import numpy as np
import pytest
import torch

from srr_bench.data import DataError, archives, augment_batch, balanced_subset, load_data
from tests.conftest import SHARED_CIFAR


pytestmark = pytest.mark.usefixtures("private_cache")  # checksums and decodes cached per test


class Py2Pickler(pickle._Pickler):
    """Pickles as the CIFAR batches were written: Python 2's cPickle, protocol 2, numpy 1.x.

    Strings go out as Python 2 ``str`` (SHORT_BINSTRING / BINSTRING, not Python 3's
    ``_codecs.encode`` calls) and numpy's reconstructor under its numpy-1 name. Checked
    against batches written by Python 2.7.18 + numpy 1.16.6: the same globals and
    opcodes, except that numpy 2 writes dtype's two flags as booleans, not ints.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = dispatch[str] = save_py2_str

    def save_global(self, obj, name=None):
        if getattr(obj, "__name__", "") == "_reconstruct":
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def cifar_batch(n: int, seed: int = 0, **extra) -> dict:
    rng = np.random.default_rng(seed)
    return {"batch_label": "training batch", "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "labels": [int(v) for v in np.arange(n) % 10], "filenames": [f"{i}.png" for i in range(n)], **extra}


def publish(monkeypatch, root, *names):
    """Make these files' own MD5s the published ones: the fakes stand for the real files."""
    for name in names:
        monkeypatch.setitem(archives.PUBLISHED_MD5, name, hashlib.md5((root / name).read_bytes()).hexdigest())


CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def write_cifar10(root, blobs: dict, tarball: bool, monkeypatch=None) -> None:
    """CIFAR-10 in its python-version layout, as the tarball or its extracted folder; ``blobs``: file -> bytes.

    With ``monkeypatch``, the files written are also made the published ones.
    """
    if tarball:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name, blob in blobs.items():
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
        (root / "cifar-10-python.tar.gz").write_bytes(buf.getvalue())
        names = ["cifar-10-python.tar.gz"]
    else:
        (root / "cifar-10-batches-py").mkdir()
        for name, blob in blobs.items():
            (root / "cifar-10-batches-py" / name).write_bytes(blob)
        names = [f"cifar-10-batches-py/{name}" for name in blobs]
    if monkeypatch is not None:
        publish(monkeypatch, root, *names)


def test_digits_is_real_and_split_fixed():
    d = load_data(dict(name="digits"))
    assert d.train.x.shape == (1297, 1, 8, 8) and d.test.x.shape == (500, 1, 8, 8)
    assert torch.bincount(d.test.y).min() >= 48  # stratified: ~50 per class
    torch.testing.assert_close(d.train.x.mean(dim=(0, 2, 3)), torch.zeros(1), atol=1e-5, rtol=0)
    assert load_data(dict(name="digits")).train.x.equal(d.train.x)


def test_balanced_subset_is_balanced_seeded_and_nested():
    y = np.repeat(np.arange(4), [50, 30, 20, 10])
    a = balanced_subset(y, 40, seed=3)
    assert np.bincount(y[a]).tolist() == [10, 10, 10, 10]
    b = balanced_subset(y, 80, seed=3)
    assert set(a) <= set(b)  # nested
    assert np.bincount(y[b]).tolist() == [25, 25, 20, 10]  # round-robin until a class runs out
    assert balanced_subset(y, 40, seed=3).tolist() == a.tolist()
    assert balanced_subset(y, 40, seed=4).tolist() != a.tolist()
    with pytest.raises(DataError):
        balanced_subset(y, 500, seed=0)


def test_subspaces_tokens_lie_on_their_class_subspace():
    d = load_data(dict(name="subspaces", augment=False, options=dict(noise=0.0, n_train=200, n_test=50)))
    raw_std, raw_mean = d.std.view(1, -1, 1, 1), d.mean.view(1, -1, 1, 1)
    x = d.train.x * raw_std + raw_mean  # undo normalisation
    tokens = x.reshape(200, 1, 4, 4, 4, 4).permute(0, 2, 4, 3, 5, 1).reshape(200, 16, 16)  # (n, N, p1 p2 c)
    for c in range(4):
        t = tokens[d.train.y == c].reshape(-1, 16)
        s = torch.linalg.svdvals(t.double())
        assert (s[3:] < 1e-4 * s[0]).all()  # rank 3 = subspace_dim


@pytest.mark.parametrize("tarball", [True, False], ids=["tarball", "folder"])
def test_cifar10_reads_python2_batches(tmp_path, monkeypatch, tarball):
    batches = {name: cifar_batch(20, seed=i) for i, name in enumerate(CIFAR10_FILES)}
    write_cifar10(tmp_path, {k: py2_pickle(b) for k, b in batches.items()}, tarball, monkeypatch)
    d = load_data(dict(name="cifar10", root=str(tmp_path), download=False, augment=False))
    assert d.train.x.shape == (100, 3, 32, 32) and d.test.x.shape == (20, 3, 32, 32) and d.num_classes == 10
    first = batches["data_batch_1"]["data"][0].reshape(3, 32, 32)  # channel-major rows, as published
    torch.testing.assert_close(d.train.x[0] * d.std.view(3, 1, 1) + d.mean.view(3, 1, 1),
                               torch.as_tensor(first).float() / 255, atol=1e-5, rtol=0)
    assert d.test.y.tolist() == batches["test_batch"]["labels"]


def test_cifar_fixture_names_exactly_the_globals_of_a_real_batch():
    """A Python-2.7 + numpy-1.16 batch names these three globals and no other (see Py2Pickler)."""
    import pickletools

    named = {arg for op, arg, _ in pickletools.genops(py2_pickle(cifar_batch(2))) if op.name == "GLOBAL"}
    assert named == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}


def test_mnist_reads_idx_files(tmp_path, monkeypatch):
    def idx(arr, name):
        header = b"\x00\x00\x08" + bytes([arr.ndim]) + np.array(arr.shape, dtype=">i4").tobytes()
        (tmp_path / name).write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))
        publish(monkeypatch, tmp_path, name)

    idx(np.arange(6 * 28 * 28).reshape(6, 28, 28) % 256, "train-images-idx3-ubyte.gz")
    idx(np.arange(6) % 10, "train-labels-idx1-ubyte.gz")
    idx(np.zeros((3, 28, 28)), "t10k-images-idx3-ubyte.gz")
    idx(np.arange(3), "t10k-labels-idx1-ubyte.gz")
    d = load_data(dict(name="mnist", root=str(tmp_path), download=False))
    assert d.train.x.shape == (6, 1, 28, 28) and d.test.y.tolist() == [0, 1, 2]


def test_svhn_reads_mat_files_and_maps_label_10_to_0(tmp_path, monkeypatch):
    from scipy.io import savemat

    for split, n in (("train", 5), ("test", 3)):
        savemat(tmp_path / f"{split}_32x32.mat", {"X": np.zeros((32, 32, 3, n), np.uint8),
                                                  "y": np.array([[10], [1], [2], [3], [4]][:n])})
        publish(monkeypatch, tmp_path, f"{split}_32x32.mat")
    d = load_data(dict(name="svhn", root=str(tmp_path), download=False))
    assert d.train.y.tolist() == [0, 1, 2, 3, 4] and d.train.x.shape == (5, 3, 32, 32)


def test_imagefolder_directory(tmp_path):
    from PIL import Image

    tree = tmp_path / "tree"
    for split in ("train", "test"):
        for c, colour in (("cat", 10), ("dog", 200)):
            (tree / split / c).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (colour, i, 0)).save(tree / split / c / f"{i}.png")
    cfg = dict(name="imagefolder", root=str(tree), options=dict(cache_dir=str(tmp_path / "cache")))
    d = load_data(cfg)
    assert d.train.x.shape == (6, 3, 8, 8) and d.train.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert list((tmp_path / "cache").glob("*.npz"))  # decoded once, cached
    Image.new("RGB", (8, 8), (99, 0, 0)).save(tree / "train" / "cat" / "0.png")  # same folders, new pixels
    assert not load_data(cfg).train.x.equal(d.train.x)  # the cache follows the files, not the top folder


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "mnist"])
def test_missing_archive_offline_is_one_clear_line(tmp_path, name):
    with pytest.raises(DataError) as e:
        load_data(dict(name=name, root=str(tmp_path / "nowhere"), download=False))
    msg = str(e.value)
    assert "\n" not in msg and "not found" in msg and "put " in msg


def test_unknown_dataset():
    with pytest.raises(KeyError, match="unknown data set 'cifar11'"):
        load_data(dict(name="cifar11"))


def test_augmentation_crops_and_flips_and_is_seeded():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    pad = torch.tensor([-1.0])
    g = lambda: torch.Generator().manual_seed(0)
    a, b = augment_batch(x, 2, True, pad, g()), augment_batch(x, 2, True, pad, g())
    assert a.equal(b) and a.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)
    for i in range(2):  # every output is a 4x4 window of the padded image, maybe mirrored
        windows = padded[i, 0].unfold(0, 4, 1).unfold(1, 4, 1).reshape(-1, 4, 4)
        assert any(w.equal(a[i, 0]) or w.flip(-1).equal(a[i, 0]) for w in windows)
    assert augment_batch(x, 0, False, pad, g()).equal(x)


@pytest.mark.cifar
@pytest.mark.slow
def test_real_cifar10_jpeg_archive():
    import os

    if not os.path.exists(SHARED_CIFAR):
        pytest.skip("shared CIFAR-10 archive not present")
    d = load_data(dict(name="imagefolder", root=os.path.dirname(SHARED_CIFAR), n_train=1000, n_test=500,
                       options=dict(path="cifar10-jpeg.tar.gz")))
    assert d.train.x.shape == (1000, 3, 32, 32) and d.num_classes == 10
    assert torch.bincount(d.train.y).tolist() == [100] * 10
    torch.testing.assert_close(d.mean, torch.tensor([0.491, 0.482, 0.447]), atol=0.02, rtol=0)
