"""Stable seeds and fixed seeded subsets, the same across models, Python runs and machines.

Two models measured with the same seed see the same images (common random numbers):
``measures.MeasureContext.subset`` and the layer-wise SRR recording during training
(``srr_bench.regularizer.layer_record``) both draw their subsets here.
"""
from __future__ import annotations

import hashlib
from typing import Any, Optional

import numpy as np


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from a stable hash of ``parts`` (same across Python runs and machines)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def subset_indices(size: int, n: Optional[int], seed: int, split: str) -> Optional[np.ndarray]:
    """Sorted indices of the first n of a seeded permutation of ``range(size)``; None for all of it.

    The permutation depends only on (seed, split, size), so subsets are nested (a smaller
    n is a prefix of a larger one before sorting) and identical across models.
    """
    if n is None or n >= size:
        return None
    rng = np.random.default_rng(stable_seed(seed, "subset", split, size))
    return np.sort(rng.permutation(size)[:n])
