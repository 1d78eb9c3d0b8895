"""Coding rates and the SRR measure pinned by closed forms (measures.rates, measures.srr)."""
import math

import pytest
import torch

from measures import MEASURES, MeasureContext, coding_rate, compression_rate, srr_terms
from measures.rates import logdet_eye_plus
from srr_bench.models import build_model

TINY = dict(dim=16, depth=3, heads=2, image_size=8, patch_size=2, channels=1, num_classes=3)


def orthonormal_rows(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """n ≤ d tokens (rows) that are orthonormal: Z Zᵀ = I_n (in column form ZᵀZ = I_N)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, n, generator=g, dtype=torch.float64))
    return q.T  # (n, d)


@pytest.mark.parametrize("n, d, eps", [(8, 32, 0.1), (16, 16, 0.5), (5, 64, 0.01)])
def test_coding_rate_of_orthonormal_tokens_is_closed_form(n, d, eps):
    Z = orthonormal_rows(n, d)
    expected = n / 2 * math.log(1 + d / (n * eps**2))
    assert coding_rate(Z, eps).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("n, d", [(10, 40), (40, 10), (12, 12)])
def test_nxn_and_dxd_gram_forms_agree(n, d):
    Z = torch.randn(3, n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    c = d / (n * 0.1**2)
    small = logdet_eye_plus(Z @ Z.mT, c)  # N×N
    big = logdet_eye_plus(Z.mT @ Z, c)  # d×d
    torch.testing.assert_close(small, big, rtol=1e-10, atol=1e-9)
    direct = 0.5 * torch.logdet(torch.eye(n, dtype=torch.float64) + c * Z @ Z.mT)
    torch.testing.assert_close(coding_rate(Z), direct, rtol=1e-10, atol=1e-9)


def test_compression_rate_with_one_head_spanning_the_space_equals_coding_rate():
    d, n = 12, 20
    Z = torch.randn(4, n, d, generator=torch.Generator().manual_seed(2))
    U = torch.eye(d).reshape(1, d, d)  # K = 1, p = d, U = I
    torch.testing.assert_close(compression_rate(Z, U), coding_rate(Z), rtol=1e-12, atol=1e-10)
    t = srr_terms(Z, U, normalize="token")
    torch.testing.assert_close(t["dR"], torch.zeros(4, dtype=torch.float64), atol=1e-10, rtol=0)


def test_compression_rate_is_the_sum_of_per_head_coding_rates():
    """R^c(Z|U) = Σ_k R(U_kᵀZ) with the head width p in place of d."""
    d, n, k, p = 12, 9, 3, 4
    g = torch.Generator().manual_seed(3)
    Z = torch.randn(n, d, generator=g, dtype=torch.float64)
    U = torch.randn(k, d, p, generator=g, dtype=torch.float64)
    expected = sum(coding_rate(Z @ U[j], 0.2) for j in range(k))  # coding_rate uses its own width p
    assert compression_rate(Z, U, 0.2).item() == pytest.approx(expected.item(), rel=1e-12)


def test_head_normalisation_makes_compression_rate_scale_free_per_head():
    g = torch.Generator().manual_seed(4)
    Z = torch.randn(10, 8, generator=g, dtype=torch.float64)
    U = torch.randn(2, 8, 4, generator=g, dtype=torch.float64)
    a = compression_rate(Z, U, normalize_heads=True)
    b = compression_rate(3.0 * Z, torch.stack([U[0] * 5, U[1] * 0.1]), normalize_heads=True)
    assert a.item() == pytest.approx(b.item(), rel=1e-12)


def test_rates_are_differentiable_in_float64():
    g = torch.Generator().manual_seed(5)
    Z = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    U = torch.randn(2, 4, 2, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: coding_rate(z, 0.5), (Z,))
    assert torch.autograd.gradcheck(lambda z: compression_rate(z, U, 0.5), (Z,))
    assert torch.autograd.gradcheck(lambda z: srr_terms(z, U, 0.5, 0.3, sparsity_kind="l1")["srr"], (Z,))


def test_srr_terms_combine_the_components():
    g = torch.Generator().manual_seed(6)
    Z = torch.relu(torch.randn(2, 5, 8, 6, generator=g))  # (L, B, N, d) with exact zeros
    U = torch.randn(2, 1, 3, 6, 2, generator=g)
    t = srr_terms(Z, U, 0.1, 2.0, sparsity_kind="l0", fraction=True)
    nonzero = (Z != 0).double().mean((-2, -1))
    torch.testing.assert_close(t["sparsity"], nonzero)
    torch.testing.assert_close(t["srr"], 2.0 * nonzero + t["Rc"] - t["R"])
    count = srr_terms(Z, U, sparsity_kind="l0", fraction=False)["sparsity"]
    torch.testing.assert_close(count, nonzero * 8 * 6)


def crate(name="crate", **kw):
    torch.manual_seed(0)
    return build_model({**TINY, "name": name, **kw}).eval()


def images(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_srr_measure_is_the_per_image_mean_of_srr_terms():
    model = crate()
    x, y = images()
    ctx = MeasureContext(model, train=(x, y), seed=0)
    r = MEASURES.get("srr")(ctx, {"srr.n_images": None})
    vals = r.values("srr")
    with torch.no_grad():
        Z = torch.stack(model.forward_intermediates(x).ista_out)  # (L, B, N, d)
    t = srr_terms(Z, model.subspace_bases().unsqueeze(1), 0.1, 1.0, normalize="token", sparsity_kind="l0")
    for layer in range(TINY["depth"]):
        for comp, key in (("R", "R"), ("Rc", "Rc"), ("dR", "dR"), ("l0", "sparsity"), ("srr", "srr")):
            assert vals[f"srr.L{layer + 1}.{comp}"] == pytest.approx(t[key][layer].mean().item(), rel=1e-10)
    per_layer = [vals[f"srr.L{i + 1}.srr"] for i in range(TINY["depth"])]
    assert vals["srr"] == vals["srr.mean"] == pytest.approx(sum(per_layer) / len(per_layer))
    assert vals["srr.last"] == per_layer[-1]
    assert vals["srr.Rc.last"] == vals[f"srr.L{TINY['depth']}.Rc"]
    assert 0 <= vals["srr.l0.mean"] <= 1
    assert r.diagnostics["n_images"] == len(y) and r.diagnostics["tokens"] == 17
    lo, hi = r.diagnostics["ci95"]["mean"]
    assert lo <= vals["srr.mean"] <= hi


def test_srr_settings_change_what_is_measured():
    model = crate()
    ctx = MeasureContext(model, train=images(), seed=0)
    m = MEASURES.get("srr")
    base = m(ctx, {}).diagnostics
    assert m(ctx, {"srr.cls": False}).diagnostics["tokens"] == base["tokens"] - 1
    a = m(ctx, {"srr.eps": 0.1}).values("srr")
    b = m(ctx, {"srr.eps": 0.5}).values("srr")
    assert b["srr.R.mean"] < a["srr.R.mean"]  # coarser quantisation, fewer bits
    count = m(ctx, {"srr.l0": "count"}).values("srr")
    assert count["srr.l0.mean"] == pytest.approx(a["srr.l0.mean"] * 17 * TINY["dim"])
    ref = MEASURES.get("srr_ref")(ctx, {}).values("srr_ref")
    assert ref["srr_ref.l0.mean"] == pytest.approx(a["srr.l0.mean"])  # same sparsity source (ISTA output)
    assert ref["srr_ref.R.mean"] != pytest.approx(a["srr.R.mean"])  # different representation


def test_srr_runs_on_the_vit_with_u_from_a_chosen_projection():
    model = crate("vit")
    ctx = MeasureContext(model, train=images(), seed=0)
    m = MEASURES.get("srr")
    rc = {src: m(ctx, {"srr.source": src}).values("srr")["srr.Rc.mean"] for src in ("q", "k", "v")}
    assert len(set(rc.values())) == 3 and all(math.isfinite(v) for v in rc.values())


def test_srr_measure_agrees_for_every_token_layout_of_the_gram():
    """A wide model (N < d) and a narrow one (N > d) both match the direct N×N logdet."""
    for dim in (32, 8):
        model = crate(dim=dim, heads=2)
        x, y = images(4)
        ctx = MeasureContext(model, train=(x, y), seed=0)
        v = MEASURES.get("srr")(ctx, {"srr.normalize": "none"}).values("srr")
        with torch.no_grad():
            Z = model.forward_intermediates(x).ista_out[0].double()  # (B, N, d)
        n = Z.shape[1]
        direct = 0.5 * torch.logdet(torch.eye(n, dtype=torch.float64) + dim / (n * 0.01) * Z @ Z.mT)
        assert v["srr.L1.R"] == pytest.approx(direct.mean().item(), rel=1e-9)


def test_the_measured_quantity_is_differentiable_through_the_model():
    """The regulariser's loss is srr_terms on forward_intermediates: gradients reach U and the layers."""
    model = crate()
    x, _ = images(4)
    inter = model.forward_intermediates(x)
    Z = torch.stack(inter.ista_out)  # (L, B, N, d), keeps the graph
    t = srr_terms(Z, model.subspace_bases().unsqueeze(1), sparsity_kind="l1")
    t["srr"].mean().backward()
    qkv = model.layers[0].mssa.qkv.weight.grad
    assert qkv is not None and torch.isfinite(qkv).all() and qkv.abs().sum() > 0
    assert model.layers[-1].ista.weight.grad.abs().sum() > 0
