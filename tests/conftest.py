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


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """Checksums and decoded images of every test go to a folder of this session, not ~/.cache
    (subprocesses inherit it)."""
    old = os.environ.get("SRR_BENCH_CACHE")
    os.environ["SRR_BENCH_CACHE"] = str(tmp_path_factory.mktemp("srr-cache"))
    yield
    if old is None:
        os.environ.pop("SRR_BENCH_CACHE", None)
    else:
        os.environ["SRR_BENCH_CACHE"] = old


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """A cache of this test's own, for tests that count what is cached."""
    monkeypatch.setenv("SRR_BENCH_CACHE", str(tmp_path / "srr-cache"))


@pytest.fixture
def small_cfg():
    """The shipped config with a tiny digits model, CPU, short training."""

    def make(*overrides: str) -> dict:
        return compose(["train.epochs=2", "train.device=cpu", "train.progress=false", *overrides])

    return make
