import os

import pytest
import torch

from srr_bench.config import compose

SHARED_CIFAR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10-jpeg.tar.gz")


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture
def small_cfg():
    """The shipped config with a tiny digits model, CPU, short training."""

    def make(*overrides: str) -> dict:
        return compose(["train.epochs=2", "train.device=cpu", "train.progress=false", *overrides])

    return make
