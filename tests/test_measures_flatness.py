"""PAC-Bayes σ search, sharpness and the Hessian estimators against closed forms."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import norm
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from measures import MEASURES, MeasureContext
from measures.context import trainable
from measures.hessian import hutchinson_trace, loss_hvp, power_iteration
from measures.pacbayes import accuracy_drop, sigma_search, standard_normal
from srr_bench.models import build_model

Z90 = norm.ppf(0.9)


def planted_linear(D=256, n=2000, margin=1.0, r=4.0, a=8.0, seed=0):
    """A 2-class linear classifier whose accuracy drop under weight noise is known.

    Logit difference = v·x with ‖v‖ = a; every x_i has norm r and margin m = 1. With
    noise N(0, s²) on every weight the logit difference moves by N(0, 2 s² r²), so the
    expected accuracy drop is Φ(−m / (√2 s r)); it reaches 0.1 at s* = m / (√2 r z₀.₉).
    The weights all have magnitude a/(2√D), so the magnitude-aware noise is isotropic too.
    """
    g = torch.Generator().manual_seed(seed)
    v = torch.where(torch.rand(D, generator=g) < 0.5, -1.0, 1.0) * a / math.sqrt(D)
    lin = nn.Linear(D, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([-v / 2, v / 2]))
    y = torch.randint(0, 2, (n,), generator=g)
    along = (2 * y - 1).float()[:, None] * (margin / a) * v / a  # component along v: margin m
    o = torch.randn(n, D, generator=g)
    o = o - (o @ v)[:, None] * v / a**2  # orthogonal to v
    o = o / o.norm(dim=1, keepdim=True) * math.sqrt(r**2 - (margin / a) ** 2)
    return lin, (along + o, y), margin / (math.sqrt(2) * r)


SEARCH = {"pacbayes.n_images": None, "pacbayes.mc_samples": 16, "pacbayes_mag.n_images": None,
          "pacbayes_mag.mc_samples": 16}


def test_pacbayes_search_recovers_a_planted_sigma():
    lin, data, scale = planted_linear()
    ctx = MeasureContext(lin, train=data, seed=0)
    r = MEASURES.get("pacbayes_flatness")(ctx, SEARCH)
    sigma = r.extra["sigma"]
    assert r.diagnostics["converged"] and r.diagnostics["clean_acc"] == 1.0
    true_drop = norm.cdf(-1 / (sigma / scale))  # closed-form drop at the found σ
    assert abs(true_drop - 0.1) <= 0.02
    assert sigma == pytest.approx(scale / Z90, rel=0.1)  # σ is the std (σ² as std would give √σ*)
    assert r.value == pytest.approx(1 / sigma**2)
    lo, hi = r.diagnostics["ci95"]
    assert lo <= r.diagnostics["drop"] <= hi and abs(r.diagnostics["drop"] - 0.1) <= 0.01


def test_magnitude_aware_noise_variance_is_sigma2_w2_plus_eps2():
    lin, data, scale = planted_linear()
    w = lin.weight.abs()[0, 0].item()
    ctx = MeasureContext(lin, train=data, seed=0)
    r = MEASURES.get("pacbayes_mag_flatness")(ctx, {**SEARCH, "pacbayes_mag.eps": 1e-3})
    s_eff = math.sqrt(r.extra["sigma"] ** 2 * w**2 + 1e-3**2)  # the noise std actually applied
    assert r.diagnostics["converged"]
    assert s_eff == pytest.approx(scale / Z90, rel=0.1)


def test_accuracy_drop_grows_with_sigma_and_uses_common_random_numbers():
    lin, data, scale = planted_linear(n=500)
    ctx = MeasureContext(lin, train=data, seed=3)
    s = {**MEASURES.get("pacbayes_flatness").settings({}), "n_images": None, "mc_samples": 4}
    f = accuracy_drop(ctx, s, None)
    drops = [f(k * scale / 4)["drop"] for k in range(1, 9)]
    assert all(b >= a for a, b in zip(drops, drops[1:])) and drops[-1] > drops[0]
    assert f(0.0)["drop"] == 0.0
    other = MeasureContext(copy.deepcopy(lin), train=data, seed=3)  # another model, same seed
    params = trainable(lin)
    a, b = standard_normal(ctx, params, 2), standard_normal(other, params, 2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = standard_normal(MeasureContext(lin, train=data, seed=4), params, 2)
    assert not torch.equal(a["weight"], c["weight"])


def test_sigma_search_doubles_past_rgms_cap_and_flags_non_convergence():
    target = 5.0  # the σ with drop 0.1: beyond RGM's fixed [0, 2] bracket
    f = lambda s: {"drop": 0.5 * norm.cdf(math.log(s / target) * 2 + norm.ppf(0.2))}
    r = sigma_search(f, sigma0=0.01)
    assert r["converged"] and abs(f(r["sigma"])["drop"] - 0.1) <= 0.01
    assert r["sigma"] == pytest.approx(target, rel=0.05)
    bisect = sigma_search(f, sigma0=0.01, split="bisect")
    assert bisect["converged"] and bisect["evals"] >= r["evals"]
    stuck = sigma_search(lambda s: {"drop": min(0.05, s)}, sigma0=0.01, max_evals=50)  # cannot lose 0.1
    assert not stuck["converged"]
    too_much = sigma_search(lambda s: {"drop": 0.5}, sigma0=1.0, max_evals=50)
    assert not too_much["converged"]


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
