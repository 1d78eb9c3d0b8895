import os
import shutil

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


@pytest.fixture(scope="session")
def digits_run_dir(tmp_path_factory):
    """One finished digits run (the mini CRATE, 3 epochs, 256 images), trained once per session."""
    from srr_bench.train import train

    d = tmp_path_factory.mktemp("sweep") / "run-a"
    train(compose(["train.epochs=3", "train.device=cpu", "train.progress=false", "data.n_train=256",
                   "data.n_test=64"]), d)
    return d


@pytest.fixture
def run(digits_run_dir, tmp_path):
    """A fresh copy of that run (tests write measures.json into it)."""
    return shutil.copytree(digits_run_dir, tmp_path / "sweep" / "run-a")
