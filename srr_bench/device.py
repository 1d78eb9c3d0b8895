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


ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni",
             "amx_tile", "amx_bf16", "neon", "asimd", "sve")
KERNEL_ENV = ("MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS",
              "MKL_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG")


def _cpu() -> tuple[str, list[str]]:
    """(CPU model name, the vector instruction sets it has among ``ISA_FLAGS``) from /proc/cpuinfo."""
    import platform
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and value.strip():
                    name = value.strip()
                elif key in ("flags", "Features"):
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return name, [f for f in ISA_FLAGS if f in flags]


def kernel_facts(device: Any = "cpu") -> dict[str, Any]:
    """What decides the floating-point kernels a run used, for ``metrics.json``: two runs of
    one config agree bit for bit only when these agree (torch version, the CPU capability
    ATen dispatches to, the BLAS, the thread count, the environment variables that steer
    them, and on a GPU its name, CUDA, cuDNN and the TF32 switches)."""
    import os
    import re

    import torch

    cpu, isa = _cpu()
    blas = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    mkl = re.search(r"Math Kernel Library Version ([^\s]+)", torch.__config__.show())
    facts: dict[str, Any] = {
        "torch": torch.__version__, "cpu": cpu, "cpu_isa": isa,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "blas": blas.group(1) if blas else None, "mkl": mkl.group(1) if mkl else None,
        "threads": torch.get_num_threads(),
        "env": {k: os.environ[k] for k in KERNEL_ENV if k in os.environ},
    }
    device = torch.device(str(device))
    if device.type == "cuda":
        facts.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                     cudnn=torch.backends.cudnn.version(), tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                     tf32_cudnn=torch.backends.cudnn.allow_tf32, cudnn_benchmark=torch.backends.cudnn.benchmark)
    return facts
