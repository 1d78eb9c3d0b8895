"""Data sets from their standard formats, subsets, augmentation, clear errors."""
import gzip
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch

from srr_bench.data import DataError, augment_batch, balanced_subset, load_data
from tests.conftest import SHARED_CIFAR


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


def _fake_cifar(tmp_path, n_per_batch=20):
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            blob = pickle.dumps({"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                                 "labels": list(np.arange(n_per_batch) % 10)}, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(buf.getvalue())


def test_cifar10_reads_the_python_tarball(tmp_path):
    _fake_cifar(tmp_path)
    d = load_data(dict(name="cifar10", root=str(tmp_path), download=False))
    assert d.train.x.shape == (100, 3, 32, 32) and d.test.x.shape == (20, 3, 32, 32)
    assert d.augment and d.num_classes == 10


def test_mnist_reads_idx_files(tmp_path):
    def idx(arr, name):
        header = b"\x00\x00\x08" + bytes([arr.ndim]) + np.array(arr.shape, dtype=">i4").tobytes()
        (tmp_path / name).write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))

    idx(np.arange(6 * 28 * 28).reshape(6, 28, 28) % 256, "train-images-idx3-ubyte.gz")
    idx(np.arange(6) % 10, "train-labels-idx1-ubyte.gz")
    idx(np.zeros((3, 28, 28)), "t10k-images-idx3-ubyte.gz")
    idx(np.arange(3), "t10k-labels-idx1-ubyte.gz")
    d = load_data(dict(name="mnist", root=str(tmp_path), download=False))
    assert d.train.x.shape == (6, 1, 28, 28) and d.test.y.tolist() == [0, 1, 2]


def test_svhn_reads_mat_files_and_maps_label_10_to_0(tmp_path):
    from scipy.io import savemat

    for split, n in (("train", 5), ("test", 3)):
        savemat(tmp_path / f"{split}_32x32.mat", {"X": np.zeros((32, 32, 3, n), np.uint8),
                                                  "y": np.array([[10], [1], [2], [3], [4]][:n])})
    d = load_data(dict(name="svhn", root=str(tmp_path), download=False))
    assert d.train.y.tolist() == [0, 1, 2, 3, 4] and d.train.x.shape == (5, 3, 32, 32)


def test_imagefolder_directory(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for c, colour in (("cat", 10), ("dog", 200)):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (colour, i, 0)).save(tmp_path / split / c / f"{i}.png")
    d = load_data(dict(name="imagefolder", root=str(tmp_path), options=dict(cache_dir=str(tmp_path / "cache"))))
    assert d.train.x.shape == (6, 3, 8, 8) and d.train.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert list((tmp_path / "cache").glob("*.npz"))  # decoded once, cached


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
