"""The one reader of a device name: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``."""
from __future__ import annotations

import re
from typing import Any

DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


class DeviceError(ValueError):
    """A device name that is not one, or a device this machine does not have; one-line message."""


def check_name(name: str) -> str:
    """``name`` if it is a device name (``DEVICE_NAME``), else ``DeviceError`` (no torch needed)."""
    if not isinstance(name, str) or not DEVICE_NAME.fullmatch(name):
        raise DeviceError(f"device {name!r}: not a device name (use auto, cpu, cuda, cuda:N or mps)")
    return name


def resolve_device(name: Any = "auto") -> Any:
    """The ``torch.device`` for ``name`` on this machine (``auto``: a GPU when there is one);
    ``DeviceError`` in one line when the name is not a device or the machine lacks it."""
    import torch

    if isinstance(name, torch.device):
        name = str(name)
    if check_name(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise DeviceError(f"device {name!r}: this machine has no CUDA device (use auto or cpu)")
        if device.index is not None and device.index >= n:
            raise DeviceError(f"device {name!r}: this machine has {n} CUDA device(s), cuda:0..cuda:{n - 1}")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise DeviceError(f"device {name!r}: MPS is not available on this machine")
    return device
