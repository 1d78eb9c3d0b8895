"""Input built to take the machine down is refused in one line, before it costs memory.

The reproductions of issue 17: small PNGs that decode to gigabytes, links that lead out
of a data set's folder, tar members that are links or escape the archive, subset sizes
the data set cannot give, and a checkpoint whose config asks for a model of terabytes.
"""
import functools
import io
import json
import os
import resource
import struct
import tarfile
import time
import zlib

import numpy as np
import pytest
import torch

from srr_bench.checkpoints import CheckpointError, load_model, save_model
from srr_bench.data import DataError, balanced_subset, load_data
from srr_bench.data.imagefolder import MAX_PIXELS
from srr_bench.models import build_model

pytestmark = pytest.mark.usefixtures("private_cache")  # decodes cached per test

SMALL = dict(image_size=16, patch_size=4, channels=3, num_classes=5, dim=32, depth=2, heads=4)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.lru_cache(maxsize=None)
def constant_png(width: int, height: int, idat: bool = True) -> bytes:
    """An RGB PNG of one colour, compressed row by row (never width × height bytes in memory).

    With ``idat=False`` the pixel data is a few bytes only: a header that lies about its size.
    """
    head = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    if not idat:
        return head + _chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + _chunk(b"IEND", b"")
    z, parts, row = zlib.compressobj(9), [], b"\x00" * (1 + 3 * width)  # filter byte 0, then black pixels
    for _ in range(height):
        parts.append(z.compress(row))
    parts.append(z.flush())
    return head + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def image_tree(root, size=(8, 8), per_class=2, classes=("a", "b")):
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                (root / split / c / f"{i}.png").write_bytes(constant_png(*size))
    return root


def refusal(exc_type, call, *args, **kwargs) -> str:
    with pytest.raises(exc_type) as e:
        call(*args, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def folder_cfg(root, **options) -> dict:
    return dict(name="imagefolder", root=str(root), augment=False, options=options)


@pytest.fixture
def decoded(monkeypatch):
    """The (width, height) of every image Pillow decodes in this test."""
    from PIL import ImageFile

    sizes, load = [], ImageFile.ImageFile.load

    def spy(self):
        sizes.append(self.size)
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return sizes


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# --- images over the pixel limit ---------------------------------------------------------


def test_four_9000px_pngs_are_refused_from_their_headers(tmp_path, decoded):
    """The reproduction: 4 PNGs of 9000x9000 (about 1 MB in all) would decode to ~1 GB as RGB."""
    tree = image_tree(tmp_path / "tree")
    for i in range(4):
        (tree / "train" / "a" / f"big{i}.png").write_bytes(constant_png(9000, 9000))
    assert sum(f.stat().st_size for f in tree.rglob("big*.png")) < 2_000_000
    before = max_rss_mib()
    msg = refusal(DataError, load_data, folder_cfg(tree))
    assert "tree/train/a/big0.png" in msg and "9000x9000" in msg and "max_pixels" in msg
    assert all(w * h <= MAX_PIXELS for w, h in decoded)  # the big ones were never decoded
    assert max_rss_mib() - before < 150  # one of them alone would take 243 MiB


def test_a_9000px_png_in_a_tarball_is_refused_from_its_header(tmp_path, decoded):
    with tarfile.open(tmp_path / "t.tar.gz", "w:gz") as tar:
        for name, png in (("big", constant_png(9000, 9000)), ("small", constant_png(8, 8))):
            for split in ("train", "test"):
                info = tarfile.TarInfo(f"tree/{split}/a/{name}.png")
                info.size = len(png)
                tar.addfile(info, io.BytesIO(png))
    msg = refusal(DataError, load_data, folder_cfg(tmp_path, path="t.tar.gz"))
    assert "t.tar.gz:tree/test/a/big.png is 9000x9000" in msg and decoded == []  # members in sorted order


def test_a_header_beyond_pillows_bomb_limit_is_the_same_refusal(tmp_path, decoded):
    """Pillow refuses such a header inside Image.open; that is reported as our one line, even
    when our own limit is raised above Pillow's."""
    from PIL import Image

    tree = image_tree(tmp_path / "tree")
    side = int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 100
    (tree / "train" / "a" / "bomb.png").write_bytes(constant_png(side, side, idat=False))
    for limit in (MAX_PIXELS, 4 * Image.MAX_IMAGE_PIXELS):
        msg = refusal(DataError, load_data, folder_cfg(tree, max_pixels=limit))
        assert "tree/train/a/bomb.png" in msg and "max_pixels" in msg
    assert decoded == [] or max(w * h for w, h in decoded) <= 64


def test_the_pixel_limit_is_a_setting(tmp_path):
    tree = image_tree(tmp_path / "tree", size=(16, 16))
    msg = refusal(DataError, load_data, folder_cfg(tree, max_pixels=255))
    assert "16x16" in msg and "max_pixels=255" in msg
    assert load_data(folder_cfg(tree, max_pixels=256)).train.x.shape == (4, 3, 16, 16)
    for bad in (0, -1, 2.5, "many"):
        assert "data.options.max_pixels" in refusal(DataError, load_data, folder_cfg(tree, max_pixels=bad))


def test_the_whole_decoded_set_is_bounded_before_decoding(tmp_path, decoded):
    tree = image_tree(tmp_path / "tree", size=(8, 8))  # 8 images of 8x8x3 = 1536 bytes
    msg = refusal(DataError, load_data, folder_cfg(tree, max_decoded_bytes=1535))
    assert "8 images of 8x8" in msg and "max_decoded_bytes=1535" in msg and str(tree) in msg
    assert decoded == []
    assert len(load_data(folder_cfg(tree, max_decoded_bytes=1536)).train) == 4
    assert len(decoded) >= 8 and set(decoded) == {(8, 8)}  # the spy sees every decode


def test_an_image_of_another_size_is_refused_before_it_is_decoded(tmp_path, decoded):
    tree = image_tree(tmp_path / "tree")
    (tree / "train" / "b" / "odd.png").write_bytes(constant_png(64, 8))
    msg = refusal(DataError, load_data, folder_cfg(tree))
    assert "tree/train/b/odd.png is 64x8" in msg and "8x8" in msg
    assert (64, 8) not in decoded


def test_a_file_larger_than_any_image_within_the_limit_is_refused_unread(tmp_path):
    tree = image_tree(tmp_path / "tree")
    with open(tree / "train" / "a" / "huge.png", "wb") as f:  # sparse: no disk, no memory
        f.truncate(16 * 64 + (1 << 20) + 1)
    msg = refusal(DataError, load_data, folder_cfg(tree, max_pixels=64))
    assert "tree/train/a/huge.png" in msg and "max_pixels" in msg


# --- files that resolve outside the data set ------------------------------------------------


def test_a_link_to_an_image_outside_the_folder_is_refused(tmp_path):
    tree = image_tree(tmp_path / "tree")
    (tmp_path / "elsewhere.png").write_bytes(constant_png(8, 8))
    (tree / "train" / "b" / "x.png").symlink_to(tmp_path / "elsewhere.png")
    msg = refusal(DataError, load_data, folder_cfg(tree))
    assert "tree/train/b/x.png" in msg and "outside" in msg


def test_a_link_inside_the_folder_is_read(tmp_path):
    tree = image_tree(tmp_path / "tree")
    (tree / "train" / "b" / "x.png").symlink_to(tree / "test" / "a" / "0.png")
    assert len(load_data(folder_cfg(tree)).train) == 5


@pytest.mark.parametrize("inside", [False, True], ids=["outside", "inside"])
def test_a_linked_class_folder_is_refused_not_skipped(tmp_path, inside):
    tree = image_tree(tmp_path / "tree")
    target = tree / "test" / "a" if inside else image_tree(tmp_path / "other") / "train" / "a"
    (tree / "train" / "c").symlink_to(target, target_is_directory=True)
    msg = refusal(DataError, load_data, folder_cfg(tree))
    assert "tree/train/c" in msg and ("link to a folder" if inside else "outside") in msg


def test_a_pipe_named_like_an_image_is_refused_without_blocking(tmp_path):
    tree = image_tree(tmp_path / "tree")
    os.mkfifo(tree / "train" / "a" / "fifo.png")
    msg = refusal(DataError, load_data, folder_cfg(tree))
    assert "tree/train/a/fifo.png is not a regular file" in msg


# --- tar members --------------------------------------------------------------------------


def write_tarball(path, extra: list[tarfile.TarInfo] = ()) -> None:
    """A valid imagefolder tarball (top folder ``tree/``), plus ``extra`` members."""
    png = constant_png(8, 8)
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test"):
            for c in ("a", "b"):
                info = tarfile.TarInfo(f"tree/{split}/{c}/0.png")
                info.size = len(png)
                tar.addfile(info, io.BytesIO(png))
        for info in extra:
            tar.addfile(info, io.BytesIO(png) if info.isfile() else None)


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(constant_png(8, 8)) if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize("bad, words", [
    (member("tree/train/a/x.png", tarfile.SYMTYPE, "/etc/passwd"), "is a link"),
    (member("tree/train/a/y.png", tarfile.SYMTYPE, "0.png"), "is a link"),
    (member("tree/train/a/z.png", tarfile.LNKTYPE, "tree/test/a/0.png"), "is a link"),
    (member("/tree/train/a/abs.png"), "absolute path"),
    (member("../tree/train/a/up.png"), "(..)"),
    (member("tree/train/a/dev.png", tarfile.CHRTYPE), "data filter"),
], ids=["symlink-out", "symlink-in", "hardlink", "absolute", "dotdot", "device"])
def test_tar_members_that_are_links_or_escape_are_refused(tmp_path, bad, words):
    write_tarball(tmp_path / "good.tar.gz")
    assert len(load_data(folder_cfg(tmp_path, path="good.tar.gz")).train) == 2  # the control
    write_tarball(tmp_path / "bad.tar.gz", [bad])
    msg = refusal(DataError, load_data, folder_cfg(tmp_path, path="bad.tar.gz"))
    assert repr(bad.name) in msg and "bad.tar.gz" in msg and words in msg


def test_a_tar_member_too_large_for_an_image_is_refused_unread(tmp_path):
    big = member("tree/train/a/big.png")
    big.size = 2 << 20  # zeros: 2 MiB that gzip makes a few kB
    with tarfile.open(tmp_path / "t.tar.gz", "w:gz") as tar:
        tar.addfile(big, io.BytesIO(bytes(big.size)))
    msg = refusal(DataError, load_data, folder_cfg(tmp_path, path="t.tar.gz", max_pixels=64))
    assert "t.tar.gz:tree/train/a/big.png" in msg and "max_pixels" in msg


# --- subset sizes -------------------------------------------------------------------------


@pytest.mark.parametrize("setting, value, words", [
    ("n_train", 5000, "data.n_train=5000 but the digits train split has only 1297 images"),
    ("n_test", 501, "data.n_test=501 but the digits test split has only 500 images"),
    ("n_train", 3, "data.n_train=3 is fewer than the 10 classes"),
    ("n_test", 0, "data.n_test=0 is fewer than the 10 classes"),
    ("n_train", -5, "data.n_train=-5 is fewer than the 10 classes"),
    ("n_train", 2.5, "data.n_train=2.5 is not a whole number"),
    ("n_train", True, "data.n_train=True is not a whole number"),
])
def test_subset_sizes_are_checked_against_the_data_set(setting, value, words):
    msg = refusal(DataError, load_data, {"name": "digits", setting: value})
    assert words in msg and "or null for the whole split" in msg


def test_subset_sizes_within_the_data_set_are_drawn_balanced():
    d = load_data(dict(name="digits", n_train=1297, n_test=10))
    assert len(d.train) == 1297 and torch.bincount(d.test.y).tolist() == [1] * 10
    y = np.repeat(np.arange(3), 4)
    assert "not a whole number" in refusal(DataError, balanced_subset, y, 5.0, seed=0)
    assert sorted(balanced_subset(y, np.int64(6), seed=0)) == sorted(balanced_subset(y, 6, seed=0))


# --- checkpoints whose config asks for a huge model ----------------------------------------


def edited_copy(src, dst, **changes) -> None:
    """``src`` with its stored model config changed: safetensors metadata or a ``.pt`` dict."""
    if src.read_bytes()[8:9] == b"{":  # safetensors: a header length, then its JSON
        from safetensors import safe_open
        from safetensors.torch import save_file

        with safe_open(str(src), "pt") as f:
            meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
        meta["model_config"] = json.dumps({**json.loads(meta["model_config"]), **changes})
        save_file(tensors, str(dst), metadata=meta)
    else:
        obj = torch.load(src, weights_only=True)
        obj["model_config"].update(changes)
        torch.save(obj, dst)


@pytest.fixture
def saved(tmp_path):
    model = build_model(dict(SMALL, name="crate"))
    path = tmp_path / "weights"  # no suffix: the reader goes by the bytes (safetensors or a torch file)
    save_model(model, path)
    return path


@pytest.mark.parametrize("changes, words", [
    (dict(dim=1_000_000), "does not fit its tensors"),
    (dict(image_size=400_000), "does not fit its tensors"),
    (dict(num_classes=10**9), "does not fit its tensors"),
    (dict(depth=10**9), "depth=1000000000"),
])
def test_a_config_edited_to_a_huge_model_is_refused_before_allocation(saved, changes, words):
    edited_copy(saved, saved.with_name("edited"), **changes)
    before, start = max_rss_mib(), time.perf_counter()
    msg = refusal(CheckpointError, load_model, saved.with_name("edited"))
    assert "edited" in msg and words in msg
    assert time.perf_counter() - start < 10 and max_rss_mib() - before < 200


def test_a_pt_file_of_an_older_run_is_checked_the_same_way(tmp_path):
    model = build_model(dict(SMALL, name="crate_t"))
    obj = {"format": "srr-bench/model/1", "model_config": {**model.config.to_dict(), "dim": 1_000_000, "dim_head": None},
           "state_dict": model.state_dict(), "meta": {}}
    torch.save(obj, tmp_path / "final.pt")
    assert "does not fit its tensors" in refusal(CheckpointError, load_model, tmp_path / "final.pt")
    obj["model_config"].update(dim=32, dim_head=8)
    obj["state_dict"] = {**obj["state_dict"], "stray": torch.zeros(1)}
    torch.save(obj, tmp_path / "extra.pt")
    assert "tensors the model lacks: ['stray']" in refusal(CheckpointError, load_model, tmp_path / "extra.pt")
    obj["state_dict"] = {"embed.cls_token": "not a tensor"}
    torch.save(obj, tmp_path / "junk.pt")
    assert "not a mapping of names to tensors" in refusal(CheckpointError, load_model, tmp_path / "junk.pt")


def test_an_unedited_checkpoint_still_loads(saved):
    model = load_model(saved)
    assert model.config.dim == 32 and all(p.device.type == "cpu" for p in model.parameters())
