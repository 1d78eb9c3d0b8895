"""Data sets as in-memory tensors, seeded class-balanced subsets, batched augmentation.

Every data set is a registered loader returning raw images (uint8 or float, (n, C, H, W))
and labels for its fixed train and test splits. ``load_data`` then takes the seeded,
class-balanced ``n_train`` / ``n_test`` subsets, normalises each channel with the
statistics of the training subset, and returns float32 tensors. Batches and their
augmentation (random crop with padding, horizontal flip) are made on whatever device
the tensors live on, so on a GPU the whole pipeline stays there.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from torch import Tensor

from ..registry import Registry
from .core import DataError, RawData

DATASETS: Registry[Callable[..., RawData]] = Registry("data set")


def _import_loaders() -> None:
    """Import every module of this package: each registers its loaders with ``@DATASETS.register``.

    So a new data set is one module here (plus its ``sweeps/conf/data/<name>.yaml``), with no
    list to edit; modules are imported in name order.
    """
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")


_import_loaders()
# Installed packages add data sets through this entry-point group (``srr_bench.registry``), with
# ``@DATASETS.register(name)``; read at the first look-up.
DATASETS.open_to("srr_bench.datasets")


@dataclass
class DataConfig:
    name: str = "digits"
    root: str = "data"  # where the standard archives are looked for (and downloaded to)
    n_train: Optional[int] = None  # None = the whole training split
    n_test: Optional[int] = None
    subset_seed: int = 0  # which subset: fixed across runs unless swept
    augment: Optional[bool] = None  # None = the data set's default (on for CIFAR-style sets)
    crop_padding: int = 4
    flip: bool = True
    download: bool = True
    options: dict[str, Any] = field(default_factory=dict)  # loader-specific (e.g. subspaces' geometry)


@dataclass
class Split:
    x: Tensor  # (n, C, H, W) float32, normalised per channel
    y: Tensor  # (n,) int64

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: Any) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    num_classes: int
    mean: Tensor  # (C,) of the raw training subset, used for normalisation
    std: Tensor
    augment: bool
    crop_padding: int
    flip: bool

    @property
    def channels(self) -> int:
        return self.train.x.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.x.shape[-1]

    def to(self, device: Any) -> "Dataset":
        return Dataset(
            self.name, self.train.to(device), self.test.to(device), self.num_classes, self.mean, self.std,
            self.augment, self.crop_padding, self.flip,
        )

    def batches(
        self, split: str = "train", batch_size: int = 128, *, generator: Optional[torch.Generator] = None,
        shuffle: bool = False, augment: bool = False, drop_last: bool = False,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """(x, y) batches of a split; shuffling and augmentation draw from ``generator`` only."""
        data: Split = getattr(self, split)
        n = len(data)
        order = torch.randperm(n, generator=generator, device=_device(generator)).to(data.x.device) if shuffle else None
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size] if order is not None else slice(start, start + batch_size)
            x, y = data.x[idx], data.y[idx]
            if augment and self.augment:
                x = augment_batch(x, self.crop_padding, self.flip, self._pad_value(x), generator)
            yield x, y

    def _pad_value(self, x: Tensor) -> Tensor:
        """The normalised value of a black pixel, per channel: padding is black, as in torchvision."""
        return (-self.mean / self.std).to(x.device, x.dtype)


def _device(generator: Optional[torch.Generator]) -> torch.device:
    """Random draws happen where their generator lives (a CUDA generator keeps the GPU busy, no sync)."""
    return generator.device if generator is not None else torch.device("cpu")


def augment_batch(
    x: Tensor, padding: int, flip: bool, pad_value: Tensor, generator: Optional[torch.Generator]
) -> Tensor:
    """Random crop with ``padding`` pixels of ``pad_value`` on each side, then a random horizontal flip."""
    b, c, h, w = x.shape
    if padding > 0:
        padded = pad_value.view(1, c, 1, 1).expand(b, c, h + 2 * padding, w + 2 * padding).clone()
        padded[:, :, padding : padding + h, padding : padding + w] = x
        dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=_device(generator)).to(x.device)
        dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=_device(generator)).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
        bi = torch.arange(b, device=x.device)[:, None, None, None]
        ci = torch.arange(c, device=x.device)[None, :, None, None]
        x = padded[bi, ci, rows, cols]
    if flip:
        mask = (torch.rand(b, generator=generator, device=_device(generator)) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    return x


def balanced_subset(y: np.ndarray, n: Optional[int], seed: int) -> np.ndarray:
    """Indices of a seeded class-balanced subset of size n (all indices, in order, if n is None).

    Classes are taken round-robin, each in a seeded random order, so every class gets
    ⌊n/C⌋ or ⌈n/C⌉ images while it has them, and a smaller subset is contained in a
    larger one with the same seed. ``n`` must be a whole number in [1, len(y)]
    (``load_data`` checks it against the split first, naming the setting).
    """
    problem = _subset_problem(n, len(y), len(np.unique(y)), "n", "split")
    if problem:
        raise DataError(problem)
    if n is None or n == len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]
    depth = max(len(p) for p in per_class)
    table = np.full((depth, len(per_class)), -1)
    for j, p in enumerate(per_class):
        table[: len(p), j] = p
    order = table[table >= 0]  # row-major: round-robin over classes
    return np.sort(order[:n])


def _subset_problem(n: Any, size: int, classes: int, setting: str, split: str) -> Optional[str]:
    """Why ``n`` images cannot be drawn class-balanced from a split of ``size`` images in
    ``classes`` classes (None if they can): n must be a whole number, at most the split
    (a larger n is refused, not silently cut to the split), and at least one image a class
    (a smaller n would leave classes out of a split that is meant to be balanced)."""
    if n is None:
        return None
    fix = f"set {setting} to a whole number from {min(classes, size)} to {size}, or null for the whole split"
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        return f"{setting}={n!r} is not a whole number of images; {fix}"
    if n > size:
        return f"{setting}={n} but the {split} has only {size} images; {fix}"
    if n < min(classes, size) or n < 1:
        return f"{setting}={n} is fewer than the {classes} classes of the {split} (every class needs an image); {fix}"
    return None


def load_data(cfg: DataConfig | dict[str, Any]) -> Dataset:
    """Load a registered data set with its subsets and normalisation (see module docstring)."""
    if not isinstance(cfg, DataConfig):
        cfg = DataConfig(**cfg)
    raw = DATASETS.get(cfg.name)(root=cfg.root, download=cfg.download, **dict(cfg.options))
    for n, y, split in ((cfg.n_train, raw.train_y, "train"), (cfg.n_test, raw.test_y, "test")):
        problem = _subset_problem(n, len(y), len(np.unique(y)), f"data.n_{split}", f"{cfg.name} {split} split")
        if problem:
            raise DataError(problem)
    tr = balanced_subset(raw.train_y, cfg.n_train, cfg.subset_seed)
    te = balanced_subset(raw.test_y, cfg.n_test, cfg.subset_seed + 1)
    xtr = torch.as_tensor(raw.train_x[tr]).float() / raw.scale
    xte = torch.as_tensor(raw.test_x[te]).float() / raw.scale
    mean = xtr.mean(dim=(0, 2, 3))
    std = xtr.std(dim=(0, 2, 3)).clamp_min(1e-6)
    norm = lambda x: (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    return Dataset(
        name=cfg.name,
        train=Split(norm(xtr).contiguous(), torch.as_tensor(raw.train_y[tr]).long()),
        test=Split(norm(xte).contiguous(), torch.as_tensor(raw.test_y[te]).long()),
        num_classes=raw.num_classes, mean=mean, std=std,
        augment=raw.augment_default if cfg.augment is None else bool(cfg.augment),
        crop_padding=cfg.crop_padding, flip=cfg.flip,
    )


__all__ = ["DATASETS", "DataConfig", "DataError", "Dataset", "Split", "load_data", "balanced_subset", "augment_batch"]
