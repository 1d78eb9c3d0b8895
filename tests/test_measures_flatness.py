"""Sharpness and the Hessian estimators against closed forms (PAC-Bayes: test_measures_pacbayes.py)."""
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from measures import MEASURES, MeasureContext
from measures.context import trainable
from measures.hessian import hutchinson_trace, loss_hvp, power_iteration
from srr_bench.models import build_model


def tiny_trained(name="crate", steps=40, seed=0):
    torch.manual_seed(seed)
    m = build_model(dict(name=name, dim=16, depth=2, heads=2, image_size=8, patch_size=2, channels=1, num_classes=3))
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (96,), generator=g)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(99))[y] + 0.7 * torch.randn(96, 1, 8, 8, generator=g)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(steps):
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval(), (x, y)


@pytest.mark.parametrize("name, key", [("sharpness", "sharpness.radius"), ("sharpness_mag", "sharpness_mag.radius"),
                                       ("sharpness_m", "sharpness_m.radius")])
def test_sharpness_is_zero_at_radius_zero_and_grows_with_radius(name, key):
    model, data = tiny_trained()
    ctx = MeasureContext(model, train=data, seed=0)
    base = {"sharpness.n_images": 64, "sharpness_mag.n_images": 64, "sharpness_m.n_images": 64, "sharpness_m.m": 32}
    first = MEASURES.get("sharpness_m").settings({})["radius"] if name == "sharpness_m" else 1e-3
    radii = [0.0, first / 4, first, first * 4]
    values = [MEASURES.get(name)(ctx, {**base, key: r}).value for r in radii]
    assert values[0] == 0.0
    assert all(b > a for a, b in zip(values, values[1:])), values


def test_sharpness_m_in_linf_and_worst_case_beats_random_perturbations():
    model, (x, y) = tiny_trained()
    ctx = MeasureContext(model, train=(x, y), seed=0)
    rho = 2e-3
    r = MEASURES.get("sharpness")(ctx, {"sharpness.radius": rho, "sharpness.n_images": None})
    params = trainable(model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y).item()
        rand = max(F.cross_entropy(functional_call(model, {k: p + rho * (2 * torch.randint(0, 2, p.shape, generator=g) - 1)
                                                           for k, p in params.items()}, (x,)), y).item()
                   for _ in range(5))
    assert r.diagnostics["clean_loss"] == pytest.approx(clean, rel=1e-5)
    assert r.value > rand - clean  # the ascent finds worse corners of the box than random ones
    linf = MEASURES.get("sharpness_m")(ctx, {"sharpness_m.norm": "linf", "sharpness_m.radius": 0.01,
                                             "sharpness_m.n_images": 64, "sharpness_m.m": 32})
    assert linf.value > 0 and linf.diagnostics["batches"] == 2


def test_hutchinson_trace_of_a_quadratic_is_within_its_interval():
    g = torch.Generator().manual_seed(0)
    B = torch.randn(40, 40, generator=g, dtype=torch.float64)
    A = B @ B.T / 40 + torch.diag(torch.linspace(0, 3, 40, dtype=torch.float64))  # H of ½xᵀAx is A
    x = torch.randn(40, dtype=torch.float64, generator=g, requires_grad=True)

    def hvp(v):
        (grad,) = torch.autograd.grad(0.5 * x @ A @ x, x, create_graph=True)
        return list(torch.autograd.grad(grad @ v[0], x))

    r = hutchinson_trace(hvp, [x.detach()], torch.Generator().manual_seed(1), probes=200)
    lo, hi = r["ci95"]
    assert lo <= torch.trace(A).item() <= hi
    assert hi - lo < 0.3 * torch.trace(A).item()


@pytest.mark.parametrize("name", ["crate", "vit"])
def test_power_iteration_matches_eigvalsh_of_the_full_hessian(name):
    torch.manual_seed(0)
    model = build_model(dict(name=name, dim=8, depth=1, heads=2, image_size=4, patch_size=2, channels=1,
                             num_classes=3, mlp_ratio=1.0)).eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 1, 4, 4, generator=g), torch.randint(0, 3, (6,), generator=g)
    ctx = MeasureContext(model, train=(x, y), seed=0)
    s = {**MEASURES.get("hessian_top_eig").settings({}), "n_images": None}
    hvp, like = loss_hvp(ctx, s)
    # The full Hessian by torch.func.hessian of the flattened loss: a path independent of loss_hvp.
    params = trainable(model)
    shapes = [p.shape for p in params.values()]
    sizes = [p.numel() for p in params.values()]

    def loss(flat):
        p = {k: t.view(sh) for k, t, sh in zip(params, torch.split(flat, sizes), shapes)}
        return F.cross_entropy(functional_call(model, p, (x,)), y)

    with sdpa_kernel(SDPBackend.MATH):
        H = torch.func.hessian(loss)(torch.cat([p.reshape(-1) for p in params.values()])).double()
    eig = torch.linalg.eigvalsh((H + H.T) / 2)
    top = eig[eig.abs().argmax()].item()
    r = power_iteration(hvp, like, ctx.generator("hessian-power"), iters=500, tol=1e-7)
    assert r["eigenvalue"] == pytest.approx(top, rel=1e-3)
    tr = MEASURES.get("hessian_trace")(ctx, {"hessian.n_images": None, "hessian.probes": 64})
    lo, hi = tr.diagnostics["ci95"]
    assert lo <= eig.sum().item() <= hi
