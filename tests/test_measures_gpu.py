"""Every measure on a CUDA device: finite, close to the CPU values where no noise is drawn, pure."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from measures import compute
from srr_bench.models import build_model

pytestmark = pytest.mark.gpu

SMALL = {"pacbayes.n_images": 64, "pacbayes.mc_samples": 3, "pacbayes_mag.n_images": 64, "pacbayes_mag.mc_samples": 3,
         "sharpness.n_images": 48, "sharpness_mag.n_images": 48, "sharpness_m.n_images": 48, "sharpness_m.m": 24,
         "hessian.n_images": 24, "hessian.probes": 3, "hessian.iters": 4, "srr.n_images": 12,
         "grad_noise.batch_size": 16, "grad_noise.n_batches": 3}
# Measures whose value does not depend on the device's random streams.
DETERMINISTIC = ["srr", "srr_ref", "l2", "l2_dist", "param_norm", "log_prod_of_spec", "fro_dist", "inverse_margin",
                 "path_norm", "path_norm_over_margin", "sharpness", "sharpness_mag", "sharpness_m"]


@pytest.mark.parametrize("name", ["crate", "crate_t", "vit"])
def test_measures_on_cuda(name):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 3, (96,), generator=g)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(99))[y] + 0.7 * torch.randn(96, 1, 8, 8, generator=g)
    m = build_model(dict(name=name, dim=16, depth=2, heads=2, image_size=8, patch_size=2, channels=1, num_classes=3))
    m0 = copy.deepcopy(m)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for _ in range(40):
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    metrics = {"steps_to_ce_0.1": 30, "steps_to_ce_0.01": 50, "steps": 60, "sum_train_loss": 1.0}
    kw = dict(init_model=m0, train=(x, y), test=(x, y), metrics=metrics, settings=SMALL)
    cuda_rng = torch.cuda.get_rng_state()
    gpu = compute(m, device="cuda", **kw)
    assert torch.equal(torch.cuda.get_rng_state(), cuda_rng)
    assert gpu["failures"] == {} and all(math.isfinite(v) for v in gpu["values"].values())
    assert next(m.parameters()).device.type == "cpu"  # the caller's model stays where it was
    assert compute(m, device="cuda", **kw)["values"] == gpu["values"]
    cpu = compute(m, DETERMINISTIC, device="cpu", **kw)
    for k, v in cpu["values"].items():
        assert gpu["values"][k] == pytest.approx(v, rel=2e-2, abs=1e-4), k
