"""Built-in data sets that need no file and no network: ``digits`` and ``subspaces``."""
from __future__ import annotations

import numpy as np

from . import DATASETS
from .core import RawData


@DATASETS.register("digits")
def digits(root: str = "", download: bool = False, n_test: int = 500, split_seed: int = 0) -> RawData:
    """scikit-learn's 8×8 handwritten digits (1,797 real images, 10 classes, values 0..16).

    Split once, stratified and seeded (``split_seed``), into 1,297 training and 500 test
    images; the split does not move with the run's seed.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.images.astype(np.float32)[:, None]  # (1797, 1, 8, 8)
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=n_test, stratify=d.target, random_state=split_seed)
    return RawData(xtr, ytr, xte, yte, num_classes=10, scale=16.0)


@DATASETS.register("subspaces")
def subspaces(
    root: str = "", download: bool = False, num_classes: int = 4, image_size: int = 16, channels: int = 1,
    patch_size: int = 4, subspace_dim: int = 3, noise: float = 0.1, n_train: int = 2000, n_test: int = 1000,
    seed: int = 0,
) -> RawData:
    """Tokens on a union of low-dimensional subspaces: the data model of the CRATE theory.

    Class c owns a subspace of dimension ``subspace_dim`` of the patch space
    R^{channels·patch_size²} with orthonormal basis U_c; the bases are mutually orthogonal
    (maximally incoherent) when they fit, else independent uniformly random. Every patch
    (token) of an image of class c is U_c a + noise·n with a, n standard Gaussian, so the
    class can be read from any token's subspace. Seeded by ``seed``; patches are laid out
    as the models' patch embedding reads them (p1, p2, c order), so use the same
    ``patch_size`` in the model for the token model to hold exactly.
    """
    rng = np.random.default_rng(seed)
    dim = channels * patch_size**2
    if num_classes * subspace_dim <= dim:
        q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        bases = [q[:, c * subspace_dim : (c + 1) * subspace_dim] for c in range(num_classes)]
    else:
        bases = [np.linalg.qr(rng.standard_normal((dim, subspace_dim)))[0] for _ in range(num_classes)]
    g = image_size // patch_size

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % num_classes
        rng.shuffle(y)
        coef = rng.standard_normal((n, g * g, subspace_dim))
        U = np.stack(bases)[y]  # (n, dim, r)
        tokens = np.einsum("ndr,ntr->ntd", U, coef) + noise * rng.standard_normal((n, g * g, dim))
        # (n, gh, gw, p1, p2, c) -> (n, c, gh, p1, gw, p2) -> image
        img = tokens.reshape(n, g, g, patch_size, patch_size, channels).transpose(0, 5, 1, 3, 2, 4)
        return img.reshape(n, channels, image_size, image_size).astype(np.float32), y

    xtr, ytr = draw(n_train)
    xte, yte = draw(n_test)
    return RawData(xtr, ytr, xte, yte, num_classes=num_classes, scale=1.0)
