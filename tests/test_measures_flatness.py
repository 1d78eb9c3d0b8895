"""Sharpness and the Hessian estimators against closed forms (PAC-Bayes: test_measures_pacbayes.py)."""
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from measures import MEASURES, MeasureContext
from measures.context import trainable
from measures.hessian import Lanczos, LossHVP, deflated_trace, top_eigenvalue
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


def quadratic_with_outliers(n=300, outliers=(60.0, 45.0, 30.0, 25.0, 20.0, -8.0), seed=0):
    """A symmetric A (the Hessian of ½xᵀAx) with a few outlying eigenvalues over a bulk in [−0.2, 1],
    random eigenvectors: the shape of a trained network's Hessian spectrum."""
    g = torch.Generator().manual_seed(seed)
    Qr, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    lam = torch.cat([torch.tensor(outliers, dtype=torch.float64),
                     torch.rand(n - len(outliers), generator=g, dtype=torch.float64) * 1.2 - 0.2])
    return (Qr * lam) @ Qr.T


def rademacher_variance(B):
    """Var(zᵀBz) for Rademacher z, in closed form: 2(‖B‖_F² − Σ B_ii²) for symmetric B."""
    return 2 * (B.square().sum() - B.diagonal().square().sum()).item()


def test_deflated_trace_is_unbiased_and_has_lower_variance_than_hutchinson_at_equal_cost():
    A = quadratic_with_outliers()
    hvp = lambda v: A @ v
    n, k, p = len(A), 8, 8  # 8 Lanczos + 8 probe products against 16 plain probes
    plain_var = rademacher_variance(A) / (k + p)  # exact, for Hutchinson with 16 probes
    estimates, conditional = [], []
    for seed in range(300):
        lz = Lanczos(hvp, torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
        r = deflated_trace(hvp, lz, torch.Generator().manual_seed(10_000 + seed), deflate=k, probes=p)
        Q = torch.stack(lz.Q[:k], 1)
        P = torch.eye(n, dtype=torch.float64) - Q @ Q.T
        # exact identities behind the unbiasedness: Σα = tr(QᵀAQ), and tr(QᵀAQ) + tr(PAP) = tr(A)
        assert r["deflated_trace"] == pytest.approx(torch.trace(Q.T @ A @ Q).item(), rel=1e-9)
        assert r["deflated_trace"] + torch.trace(P @ A @ P).item() == pytest.approx(torch.trace(A).item(), rel=1e-9)
        conditional.append(rademacher_variance(P @ A @ P) / p)
        estimates.append(r["trace"])
    est = torch.tensor(estimates, dtype=torch.float64)
    defl_var = sum(conditional) / len(conditional)  # exact variance given Q, averaged over the starts
    assert abs(est.mean().item() - torch.trace(A).item()) <= 4 * (defl_var / len(est)) ** 0.5  # unbiased
    assert est.var().item() == pytest.approx(defl_var, rel=0.25)  # the empirical spread is the formula's
    assert defl_var < plain_var / 5  # far lower variance at the same number of products
    # and the plain estimator (deflate = 0) is Hutchinson's, with the closed-form variance
    plain = torch.tensor([deflated_trace(hvp, Lanczos(hvp, torch.ones(n, dtype=torch.float64)),
                                         torch.Generator().manual_seed(s), deflate=0, probes=k + p)["trace"]
                          for s in range(300)], dtype=torch.float64)
    assert plain.var().item() == pytest.approx(plain_var, rel=0.25)


def test_deflated_trace_interval_covers_the_trace_of_a_quadratic():
    A = quadratic_with_outliers(n=120, seed=3)
    hvp = lambda v: A @ v
    lz = Lanczos(hvp, torch.randn(120, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    r = deflated_trace(hvp, lz, torch.Generator().manual_seed(2), deflate=10, probes=100)
    lo, hi = r["ci95"]
    assert lo <= torch.trace(A).item() <= hi and r["deflated"] == 10
    # a Krylov space that exhausts the whole space gives the exact trace and eigenvalues
    small = quadratic_with_outliers(n=12, outliers=(5.0, -3.0), seed=4)
    lz = Lanczos(lambda v: small @ v, torch.randn(12, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    r = deflated_trace(lambda v: small @ v, lz, torch.Generator().manual_seed(0), deflate=50, probes=3)
    assert r["trace"] == pytest.approx(torch.trace(small).item(), rel=1e-8, abs=1e-8)
    eig = torch.linalg.eigvalsh(small)
    top = top_eigenvalue(Lanczos(lambda v: small @ v, torch.ones(12, dtype=torch.float64)), iters=50, tol=0.0)
    assert top["converged"] and top["eigenvalue"] == pytest.approx(eig[eig.abs().argmax()].item(), rel=1e-8)


def test_lanczos_is_at_least_as_accurate_as_power_iteration_with_as_many_products():
    A = quadratic_with_outliers(outliers=(60.0, 58.0, 50.0, -20.0))  # close top eigenvalues: slow power iteration
    lam = torch.linalg.eigvalsh(A)[-1].item()
    start = torch.randn(len(A), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = start / start.norm()
    lz = Lanczos(lambda u: A @ u, start)
    for k in range(1, 21):
        rayleigh = (v @ A @ v).item()  # power iteration's estimate after k products
        v = A @ v
        v = v / v.norm()
        ritz = lz.extend(k).top(k)[0]
        assert abs(ritz - lam) <= abs(rayleigh - lam) + 1e-9
    assert abs(ritz - lam) < 1e-6 * lam < abs(rayleigh - lam)


def finite_difference_hessian(model, x, y):
    """The full Hessian of the mean loss by central differences of the float64 gradient: a path that
    shares nothing with the measure's double backward. (``torch.func.hessian`` is not used: in this
    torch it returns wrong, asymmetric entries for LayerNorm weights, by up to 0.13 here.)"""
    params = trainable(model)
    shapes, sizes = [p.shape for p in params.values()], [p.numel() for p in params.values()]

    def gradient(flat):
        flat = flat.detach().requires_grad_(True)
        p = {k: t.view(sh) for k, t, sh in zip(params, torch.split(flat, sizes), shapes)}
        with sdpa_kernel(SDPBackend.MATH):
            return torch.autograd.grad(F.cross_entropy(functional_call(model, p, (x,)), y), flat)[0]

    w = torch.cat([p.reshape(-1) for p in params.values()])
    eye = torch.eye(len(w), dtype=w.dtype)
    H = torch.stack([(gradient(w + 1e-5 * e) - gradient(w - 1e-5 * e)) / 2e-5 for e in eye], 1)
    return (H + H.T) / 2


@pytest.mark.parametrize("name", ["crate", "vit"])
def test_top_eigenvalue_and_trace_match_the_full_hessian(name):
    torch.manual_seed(0)
    model = build_model(dict(name=name, dim=8, depth=1, heads=2, image_size=4, patch_size=2, channels=1,
                             num_classes=3, mlp_ratio=1.0)).double().eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (6,), generator=g)
    ctx = MeasureContext(model, train=(x, y), seed=0)
    s = {**MEASURES.get("hessian_top_eig").settings({}), "n_images": None}
    H = finite_difference_hessian(model, x, y)
    v = torch.randn(len(H), generator=g, dtype=torch.float64)
    assert LossHVP(ctx, s)(v) == pytest.approx(H @ v, rel=1e-5, abs=1e-7)
    ctx.batch_size = 4  # two evaluation batches: the graph is rebuilt per batch, same product
    assert LossHVP(ctx, s)(v) == pytest.approx(H @ v, rel=1e-5, abs=1e-7)
    eig = torch.linalg.eigvalsh(H)
    top = eig[eig.abs().argmax()].item()
    r = MEASURES.get("hessian_top_eig")(ctx, {"hessian.n_images": None, "hessian.iters": 500, "hessian.tol": 1e-7})
    assert r.value == pytest.approx(top, rel=1e-3) and r.diagnostics["residual"] <= 1e-3 * abs(top)
    tr = MEASURES.get("hessian_trace")(ctx, {"hessian.n_images": None, "hessian.probes": 64})
    lo, hi = tr.diagnostics["ci95"]
    assert lo <= eig.sum().item() <= hi and tr.diagnostics["deflated"] == 16
