"""GPU checks (skipped without CUDA): bf16 training on the device, on-device data, compile."""
import math

import pytest
import torch

from srr_bench.models import build_model
from srr_bench.train import train

pytestmark = pytest.mark.gpu


def test_training_on_gpu_keeps_data_and_augmentation_there(small_cfg, tmp_path):
    cfg = small_cfg("train.device=cuda", "train.epochs=3", "data=subspaces", "model.patch_size=4")
    m = train(cfg, tmp_path)
    assert m["status"] == "done" and m["device"].startswith("cuda") and m["train_acc"] > 0.5


def test_gpu_and_cpu_forward_agree_in_fp32():
    torch.manual_seed(0)
    m = build_model(dict(name="crate_n", image_size=32, patch_size=4, dim=96, depth=4, heads=4)).eval()
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        cpu = m(x)
        torch.backends.cuda.matmul.allow_tf32 = False
        gpu = m.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)


def test_compiled_bf16_training_step_runs(small_cfg, tmp_path):
    m = train(small_cfg("train.device=cuda", "train.compile=true", "train.epochs=2"), tmp_path)
    assert m["status"] == "done" and m["train_loss"] < 2.3


def test_regularised_training_on_gpu_in_bf16_records_a_finite_srr(small_cfg, tmp_path):
    import pandas as pd

    m = train(small_cfg("train.device=cuda", "reg.alpha=0.01", "reg.layers=random", "train.record_layers.every=1"),
              tmp_path)
    hist = pd.read_csv(tmp_path / "history.csv")
    assert m["status"] == "done" and hist["batch_srr"].iloc[1:].map(math.isfinite).all()
    assert hist["layer.1.srr"].notna().all()
