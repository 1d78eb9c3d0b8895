"""The raw form every loader returns, and the data error."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class DataError(RuntimeError):
    """Data that cannot be found, fetched or read; the message is one line saying what to do."""


@dataclass
class RawData:
    train_x: np.ndarray  # (n, C, H, W), uint8 or float
    train_y: np.ndarray  # (n,) int
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    scale: float = 255.0  # divide raw values by this to get [0, 1]
    augment_default: bool = False  # crop + flip by default (CIFAR-style natural images)
