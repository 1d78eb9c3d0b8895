"""PAC-Bayes: the sequential σ search against a closed form, the weights it perturbs, the bound formulas."""
import copy
import math

import pytest
import torch
from scipy.optimize import minimize_scalar
from scipy.stats import norm
from torch import nn
from torch.distributions import Normal, kl_divergence

from measures import MEASURES, MeasureContext
from measures.pacbayes import (draw_images, drop_sampler, mag_half_kl, paired_estimate, sigma_search,
                               standard_normal)
from measures.weights import weights
from srr_bench.models import build_model

Z90 = norm.ppf(0.9)


def planted_linear(D=256, n=2000, margin=1.0, r=4.0, a=8.0, seed=0):
    """A 2-class linear classifier whose accuracy drop under weight noise is known in closed form.

    Logit difference = v·x with ‖v‖ = a; every x_i has norm r and margin m = 1. With
    noise N(0, s²) on every weight the logit difference moves by N(0, 2 s² r²), so every
    image is misclassified with probability Φ(−m / (√2 s r)) and the expected drop is
    that number: drop(s) = Φ(−scale/s), scale = m/(√2 r), reaching 0.1 at s* = scale/z₀.₉.
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


# 100 images a draw: a draw's drop has std ≈ 0.03, so deciding within ±0.01 takes tens of draws.
FEW = {"pacbayes.n_images": 100, "pacbayes_mag.n_images": 100}


def test_search_finds_sigma_within_tolerance_and_its_interval_covers_the_true_sigma():
    lin, data, scale = planted_linear()
    converged = 0
    for seed in range(8):  # 8 independent searches (the seed draws the noise and the image blocks)
        r = MEASURES.get("pacbayes_flatness")(MeasureContext(lin, train=data, seed=seed), FEW)
        d, sigma = r.diagnostics, r.extra["sigma"]
        lo, hi = d["sigma_interval"]
        assert lo < scale / Z90 < hi and lo < sigma < hi  # the final bracket holds σ*
        assert d["clean_acc"] == 1.0 and d["draws_total"] <= 512 and r.value == pytest.approx(1 / sigma**2)
        if d["converged"]:
            converged += 1
            assert abs(norm.cdf(-scale / sigma) - 0.1) <= 0.01  # the closed-form drop at the σ found
            assert 0.09 <= d["ci95"][0] <= d["drop"] <= d["ci95"][1] <= 0.11  # the whole interval in tolerance
            # draws were added where one batch could not decide, or the level borrowed an earlier one's
            assert d["draws"] > 16 or d["paired_with"][-1] is not None
    assert converged >= 6


def test_magnitude_aware_noise_variance_is_sigma2_w2_plus_eps2():
    lin, data, scale = planted_linear()
    w = lin.weight.abs()[0, 0].item()
    r = MEASURES.get("pacbayes_mag_flatness")(MeasureContext(lin, train=data, seed=0), FEW)
    s_eff = math.sqrt(r.extra["sigma"] ** 2 * w**2 + 1e-3**2)  # the noise std actually applied
    assert r.diagnostics["converged"]
    assert abs(norm.cdf(-scale / s_eff) - 0.1) <= 0.01


def test_converged_is_false_when_the_draw_cap_cannot_decide():
    lin, data, scale = planted_linear()
    ctx = MeasureContext(lin, train=data, seed=0)
    r = MEASURES.get("pacbayes_flatness")(ctx, {**FEW, "pacbayes.mc_samples": 8})
    d = r.diagnostics
    assert not d["converged"] and d["draws"] == 8
    assert d["ci95"][1] - d["ci95"][0] > 0.02  # 8 draws: an interval wider than the tolerance band
    assert d["trace"][-1][-1] == "undecided"  # it stopped at a level it could not tell from the target
    lo, hi = d["sigma_interval"]
    assert lo < scale / Z90 and (hi is None or scale / Z90 < hi)


def test_draws_are_common_random_numbers_on_disjoint_image_blocks():
    lin, data, scale = planted_linear(n=500)
    ctx = MeasureContext(lin, train=data, seed=3)
    other = MeasureContext(copy.deepcopy(lin), train=data, seed=3)  # another model, same seed
    params = weights(lin)
    a, b = standard_normal(ctx, params, 2), standard_normal(other, params, 2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = standard_normal(MeasureContext(lin, train=data, seed=4), params, 2)
    assert not torch.equal(a["weight"], c["weight"])
    blocks = [draw_images(ctx, 100, j)[0] for j in range(6)]
    assert torch.equal(blocks[1], draw_images(other, 100, 1)[0]) and torch.equal(blocks[5], blocks[0])  # 5 blocks
    rows = torch.cat(blocks[:5])
    assert len(torch.unique(rows, dim=0)) == 500  # one pass over the training set
    s = {**MEASURES.get("pacbayes_flatness").settings({}), "n_images": 100}
    f = drop_sampler(ctx, s, None)
    means = [f(k * scale / 4, 0, 8).mean().item() for k in range(1, 9)]
    assert all(q >= p for p, q in zip(means, means[1:])) and means[-1] > means[0]  # same draws: monotone in σ
    assert torch.equal(f(0.0, 0, 4), torch.zeros(4, dtype=torch.float64))


def test_paired_estimate_is_unbiased_with_the_stated_variance():
    """Draws at a reference level A_j = a + e_j and at σ B_j = b + e_j + δ_j (shared e_j: common random
    numbers): the paired estimate is unbiased for b, its variance is the closed form
    (Var B − Var(B − A))/n_a + Var(B − A)/n, its standard error estimates it, and it is far below Var B/n."""
    g = torch.Generator().manual_seed(0)
    a, b, se_e, se_d, n, n_a, reps = 0.05, 0.1, 0.07, 0.02, 16, 128, 4000
    e = se_e * torch.randn(reps, n_a, generator=g, dtype=torch.float64)
    A = a + e
    B = b + e[:, :n] + se_d * torch.randn(reps, n, generator=g, dtype=torch.float64)
    est = [paired_estimate(B[r], A[r]) for r in range(reps)]
    theta = torch.tensor([t for t, _ in est], dtype=torch.float64)
    exact = (se_e**2 + se_d**2 - se_d**2) / n_a + se_d**2 / n
    assert abs(theta.mean().item() - b) <= 4 * math.sqrt(exact / reps)
    assert theta.var().item() == pytest.approx(exact, rel=0.1)
    assert sum(s**2 for _, s in est) / reps == pytest.approx(exact, rel=0.15)
    assert exact < (se_e**2 + se_d**2) / n / 4  # the plain mean of the n draws at σ: 4× the variance


def test_pairing_levels_decides_at_least_as_often_with_fewer_draws():
    lin, data, scale = planted_linear()
    s = {**MEASURES.get("pacbayes_flatness").settings({}), "n_images": 100}
    keys = ("target", "tol", "max_evals", "split", "sigma_min", "sigma_max", "mc_batch", "mc_samples", "max_draws")
    runs = {True: [], False: []}
    for seed in range(8):
        f = drop_sampler(MeasureContext(lin, train=data, seed=seed), s, None)
        for pair in runs:
            runs[pair].append(sigma_search(f, s["sigma0"], pair=pair, **{k: s[k] for k in keys}))
    for r in runs[True]:
        if r["converged"]:
            assert abs(norm.cdf(-scale / r["sigma"]) - 0.1) <= 0.01
    assert sum(r["converged"] for r in runs[True]) >= sum(r["converged"] for r in runs[False])
    assert sum(r["draws_total"] for r in runs[True]) < sum(r["draws_total"] for r in runs[False])
    assert any(p is not None for r in runs[True] for p in r["paired_with"])
    assert all(p is None for r in runs[False] for p in r["paired_with"])


def synthetic_draws(curve, std=0.03):
    """Draws whose mean drop is ``curve(σ)``: draw j adds std·z_j, z_j fixed per j (common random numbers)."""
    z = torch.randn(100_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return lambda s, j0, j1: curve(s) + std * z[j0:j1]


def test_sigma_search_doubles_past_rgms_cap_and_flags_non_convergence():
    target = 5.0  # the σ with drop 0.1: beyond RGM's fixed [0, 2] bracket
    curve = lambda s: 0.5 * norm.cdf(math.log(s / target) * 2 + norm.ppf(0.2))
    for split in ("interpolate", "bisect"):
        r = sigma_search(synthetic_draws(curve), sigma0=0.01, split=split)
        assert r["converged"] and abs(curve(r["sigma"]) - 0.1) <= 0.01
        lo, hi = r["sigma_interval"]  # a side is None when the search converged before finding it
        assert (lo is not None or hi is not None) and (lo is None or lo < target) and (hi is None or target < hi)
    stuck = sigma_search(synthetic_draws(lambda s: min(0.05, s)), sigma0=0.01, max_evals=50)  # cannot lose 0.1
    assert not stuck["converged"] and stuck["sigma_interval"][1] is None
    too_much = sigma_search(synthetic_draws(lambda s: 0.5), sigma0=1.0, max_evals=50)
    assert not too_much["converged"] and too_much["sigma_interval"][0] is None
    with pytest.raises(ValueError, match="at least 2"):
        sigma_search(synthetic_draws(curve), sigma0=0.01, mc_batch=1)


@pytest.fixture(scope="module")
def trained():
    """A tiny CRATE briefly trained on a seeded synthetic task: (model, initial model, data)."""
    return tiny_trained()


def tiny_trained(name="crate", steps=40, seed=0):
    torch.manual_seed(seed)
    m = build_model(dict(name=name, dim=16, depth=2, heads=2, image_size=8, patch_size=2, channels=1, num_classes=3))
    m0 = copy.deepcopy(m)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (96,), generator=g)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(99))[y] + 0.7 * torch.randn(96, 1, 8, 8, generator=g)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval(), m0.eval(), (x, y)


QUICK = {"pacbayes.mc_batch": 4, "pacbayes.max_draws": 24, "pacbayes_mag.mc_batch": 4,
         "pacbayes_mag.max_draws": 24}


def hand_weights(model):
    """CRATE's weights, listed by hand: no biases, LayerNorm or token parameters."""
    return torch.cat([p.detach().double().reshape(-1) for n, p in model.named_parameters()
                      if p.dim() >= 2 and n not in ("embed.cls_token", "embed.pos_embedding")])


def test_bounds_use_the_weights_only_by_default(trained):
    m, m0, data = trained
    ctx = MeasureContext(m, init_model=m0, train=data, seed=0)
    w, w0 = hand_weights(m), hand_weights(m0)
    r = MEASURES.get("pacbayes_init")(ctx, QUICK)
    sigma, mm = r.diagnostics["sigma"], len(data[1])
    assert r.diagnostics["perturbed"] == len(w) < sum(p.numel() for p in m.parameters())
    assert r.value == pytest.approx((w - w0).square().sum().item() / (4 * sigma**2) + math.log(mm / sigma) + 10,
                                    rel=1e-10)
    orig = MEASURES.get("pacbayes_orig")(ctx, QUICK).value
    assert orig == pytest.approx(w.square().sum().item() / (4 * sigma**2) + math.log(mm / sigma) + 10, rel=1e-10)
    every = MEASURES.get("pacbayes_orig")(ctx, {**QUICK, "pacbayes.perturb": "trainable"})
    assert every.diagnostics["perturbed"] == sum(p.numel() for p in m.parameters())


def half_kl_by_hand(w, w0, sigma, eps):
    """½ KL(N(w, σ²w² + ε²) ‖ N(w0, τ²)) minimised over τ² numerically, with torch.distributions."""
    q = Normal(w, torch.sqrt(sigma**2 * w**2 + eps**2))
    kl = lambda log_tau: kl_divergence(q, Normal(w0, math.exp(log_tau) * torch.ones_like(w))).sum().item()
    return 0.5 * minimize_scalar(kl, bounds=(-12, 5), method="bounded", options={"xatol": 1e-10}).fun


def test_magnitude_aware_bounds_are_half_the_kl_of_the_applied_noise(trained):
    w = torch.tensor([0.5, -1.2, 0.03, 2.0, -0.7, 0.0], dtype=torch.float64)
    w0 = torch.tensor([0.4, -0.2, 0.3, 1.0, 0.1, -0.5], dtype=torch.float64)
    for sigma in (0.05, 0.3):
        assert mag_half_kl(w, w - w0, sigma, 1e-3) == pytest.approx(half_kl_by_hand(w, w0, sigma, 1e-3), rel=1e-7)
        # orig (prior mean 0) is Jiang et al.'s eq. (57) as printed
        eq57 = 0.25 * torch.log((1e-6 + (sigma**2 + 1) * w.square().sum() / 6) / (1e-6 + sigma**2 * w**2)).sum()
        assert mag_half_kl(w, w, sigma, 1e-3) == pytest.approx(eq57.item(), rel=1e-12)
    m, m0, data = trained
    ctx = MeasureContext(m, init_model=m0, train=data, seed=0)
    r = MEASURES.get("pacbayes_mag_init")(ctx, QUICK)
    sigma, mm = r.diagnostics["sigma"], len(data[1])
    hand = half_kl_by_hand(hand_weights(m), hand_weights(m0), sigma, 1e-3) + math.log(mm / sigma) + 10
    assert r.value == pytest.approx(hand, rel=1e-6)
