"""The path-norm (measures.pathnorm): exact on ReLU networks, a real path-norm on CRATE and the ViT.

Exactness is checked against paths enumerated one by one (a residual MLP, the ISTA block,
a LayerNorm); on the transformers the properties a path-norm must have are checked on
every registered model: positive, zero at zero weights, invariant under the neuron
rescalings that leave the function unchanged, moved by every weight matrix, and counting
the paths that start at the inputs (the old all-ones surrogate did not: its value was the
same for a zero, an all-ones and a 7.3×ones input, and never saw the patch embedding).
"""
import copy
import math

import pytest
import torch
from torch import nn

from measures import MEASURES, MeasureContext, MeasureError, compute, path_norm
from measures.output import margin
from measures.pathnorm import _ista, _layer_norm, _Side, frozen_path_norms
from srr_bench.models import MODELS, build_model

TINY = dict(dim=16, depth=2, heads=2, image_size=8, patch_size=2, channels=1, num_classes=3)
X = torch.randn(12, 1, 8, 8, generator=torch.Generator().manual_seed(0))
Y = torch.randint(0, 3, (12,), generator=torch.Generator().manual_seed(1))


class ResMLP(nn.Module):
    """x -> h = ReLU(A x + a) -> r = ReLU(h + C ReLU(B h + b) + c) -> E r + e (a ReLU net with a skip)."""

    def __init__(self, bias: bool):
        super().__init__()
        self.A, self.B, self.C, self.E = (nn.Linear(i, o, bias=bias) for i, o in ((3, 4), (4, 4), (4, 4), (4, 2)))
        self.relu = nn.ReLU()

    def forward(self, x):
        h = self.relu(self.A(x))
        return self.E(self.relu(h + self.C(self.relu(self.B(h)))))


def brute_force(net: ResMLP, q: float) -> float:
    """Σ over every path (from an input or a bias to an output) of Π|w|^q, paths listed one by one."""
    W = {k: getattr(net, k).weight.detach().double() for k in "ABCE"}
    b = {k: getattr(net, k).bias for k in "ABCE"}
    # incoming edges of each neuron: (predecessor, weight); neurons x_j, h_i, g_i (= ReLU(Bh+b)), r_i, o_i
    incoming = {("h", i): [(("x", j), W["A"][i, j]) for j in range(3)] for i in range(4)}
    incoming |= {("g", i): [(("h", j), W["B"][i, j]) for j in range(4)] for i in range(4)}
    incoming |= {("r", i): [(("h", i), 1.0)] + [(("g", j), W["C"][i, j]) for j in range(4)] for i in range(4)}
    incoming |= {("o", i): [(("r", j), W["E"][i, j]) for j in range(4)] for i in range(2)}
    bias_of = {"h": "A", "g": "B", "r": "C", "o": "E"}

    def paths(node):  # every path ending at node, as its list of weights
        if node[0] == "x":
            return [[]]
        out = [[b[bias_of[node[0]]][node[1]].item()]] if b[bias_of[node[0]]] is not None else []
        return out + [p + [w] for pred, w in incoming[node] for p in paths(pred)]

    all_paths = [p for i in range(2) for p in paths(("o", i))]
    return sum(math.prod(abs(float(w)) ** q for w in p) for p in all_paths)


def res_mlp(bias: bool, seed: int = 0) -> ResMLP:
    torch.manual_seed(seed)
    return ResMLP(bias)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("q", [1.0, 2.0, 3.0])
def test_equals_the_path_norm_enumerated_path_by_path_on_a_residual_relu_mlp(bias, q):
    net = res_mlp(bias)
    exact = brute_force(net, q)
    assert path_norm(net, q, root=False).item() == pytest.approx(exact, rel=1e-12)
    ctx = MeasureContext(net, train=(torch.zeros(5, 3), torch.zeros(5, dtype=torch.long)))
    r = MEASURES.get("path_norm")(ctx, {"path_norm.q": q})
    assert r.value == pytest.approx(exact, rel=1e-12) and r.diagnostics["frozen"] == "none (exact)"


def test_invariant_under_relu_neuron_rescaling_inside_the_residual_block():
    net = res_mlp(True)
    scaled = copy.deepcopy(net)
    c = torch.tensor([3.0, 0.2, 1.7, 5.0])
    with torch.no_grad():
        scaled.B.weight.mul_(c[:, None])
        scaled.B.bias.mul_(c)
        scaled.C.weight.div_(c[None, :])
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(scaled(x), net(x))
    for q in (1.0, 2.0):
        assert path_norm(scaled, q).item() == pytest.approx(path_norm(net, q).item(), rel=1e-6)


def test_ista_block_equals_its_paths_enumerated():
    """ReLU(x + η Dᵀ(x − Dx) − ηλ): identity, η·Dᵀ, −η·DᵀD (through (Dx)_k) and the bias −ηλ."""
    ista = build_model({**TINY, "dim": 3, "heads": 1, "name": "crate"}).layers[0].ista.double()
    D, eta, lam = ista.weight.detach(), ista.step, ista.lambd
    for q in (1.0, 2.0):
        exact = 0.0
        for i in range(3):
            exact += abs(eta * lam) ** q  # the bias path
            for j in range(3):
                exact += float(i == j) + abs(eta * D[j, i]) ** q  # identity, η D_ji (column form Dᵀ)
                exact += sum(abs(eta * D[k, i] * D[k, j]) ** q for k in range(3))  # x_j -> (Dx)_k -> u_i
        got = _ista(_Side(q), torch.ones(1, 3, dtype=torch.float64), ista).sum().item()
        assert got == pytest.approx(float(exact), rel=1e-12)


def test_layer_norm_equals_its_paths_with_frozen_scale():
    ln = nn.LayerNorm(4).double()
    with torch.no_grad():
        ln.weight.copy_(torch.tensor([1.5, -0.5, 2.0, 0.0]))
        ln.bias.copy_(torch.tensor([0.1, -0.3, 0.0, 2.0]))
    z = torch.tensor([[1.0, 2.0, -1.0, 0.5]], dtype=torch.float64)
    inv_sigma = 1 / math.sqrt(z.var(unbiased=False).item() + ln.eps)
    for q in (1.0, 2.0):
        g, b = ln.weight.detach(), ln.bias.detach()
        exact = sum(abs(g[i] * ((i == j) - 0.25) * inv_sigma) ** q for i in range(4) for j in range(4))
        exact += sum(abs(b) ** q)
        (y, a) = _layer_norm((_Side(), _Side(q)), (z, torch.ones_like(z)), ln)
        torch.testing.assert_close(y, ln(z))  # the model's side is the LayerNorm itself
        assert a.sum().item() == pytest.approx(float(exact), rel=1e-12)


def tiny(name: str, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return build_model({**TINY, "name": name, **kw}).eval()


def value(model: nn.Module, **settings) -> float:
    return MEASURES.get("path_norm")(MeasureContext(model, train=(X, Y)), settings).value


@pytest.mark.parametrize("name", MODELS.names())
def test_walk_reproduces_the_model_and_counts_the_input_paths(name):
    """The signed side is the model; the |w| side is affine in its input constant c with slope
    Σ(input paths) > 0, so zeros, ones and 7.3×ones give three different values."""
    for pool in ("cls", "mean"):
        m64 = copy.deepcopy(tiny(name, pool=pool)).double()
        x = X.double()
        f0, f1, f7 = (frozen_path_norms(m64, x, 2.0, c) for c in (0.0, 1.0, 7.3))
        torch.testing.assert_close(f1[1], m64(x), rtol=1e-10, atol=1e-10)
        assert (f1[0] - f0[0] > 1e-3 * f1[0]).all()
        torch.testing.assert_close(f7[0] - f0[0], 7.3 * (f1[0] - f0[0]), rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", MODELS.names())
def test_positive_and_zero_exactly_at_zero_weights(name):
    m = tiny(name)
    assert value(m) > 0 and value(m, **{"path_norm.q": 1.0}) > 0
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
    assert value(m) == 0.0


@pytest.mark.parametrize("name", MODELS.names())
def test_every_weight_matrix_moves_the_value(name):
    m = tiny(name)
    base = value(m)
    g = torch.Generator().manual_seed(3)
    for pname, p in m.named_parameters():
        if p.dim() < 2:
            continue
        moved = copy.deepcopy(m)
        with torch.no_grad():
            dict(moved.named_parameters())[pname].add_(0.1 * torch.randn(p.shape, generator=g))
        assert value(moved) != pytest.approx(base, rel=1e-6), pname


def rescaled_head(m: nn.Module, c: torch.Tensor) -> nn.Module:
    """Head LayerNorm output neuron i: gain and shift × c_i, classifier column i / c_i."""
    out = copy.deepcopy(m)
    with torch.no_grad():
        out.head.norm.weight.mul_(c)
        out.head.norm.bias.mul_(c)
        out.head.fc.weight.div_(c[None, :])
    return out


def rescaled_embedding(m: nn.Module, c: float) -> nn.Module:
    """The patch projection × c: the LayerNorm after it (and the frozen 1/σ) absorb c."""
    out = copy.deepcopy(m)
    with torch.no_grad():
        out.embed.proj.weight.mul_(c)
        out.embed.proj.bias.mul_(c)
    return out


def rescaled_values(m: nn.Module, c: torch.Tensor) -> nn.Module:
    """ViT value channel i of every layer × c_i, output-projection column i / c_i (A is unchanged)."""
    out = copy.deepcopy(m)
    with torch.no_grad():
        for layer in out.layers:
            layer.attn.v.weight.mul_(c[:, None])
            layer.attn.v.bias.mul_(c)
            layer.attn.proj.weight.div_(c[None, :])
    return out


@pytest.mark.parametrize("name", MODELS.names())
def test_invariant_under_the_rescalings_that_leave_the_function_unchanged(name):
    m = tiny(name)
    c = torch.linspace(0.3, 4.0, 16)
    variants = [rescaled_head(m, c), rescaled_embedding(m, 6.5)] + ([rescaled_values(m, c)] if name == "vit" else [])
    for q in (1.0, 2.0):
        base = value(m, **{"path_norm.q": q})
        for other in variants:
            torch.testing.assert_close(other(X), m(X), rtol=1e-4, atol=1e-5)
            assert value(other, **{"path_norm.q": q}) == pytest.approx(base, rel=1e-5)
    # ...while the parameter norm is not invariant
    sq = lambda mod: sum(p.square().sum() for p in mod.parameters()).item()
    assert sq(variants[0]) != pytest.approx(sq(m), rel=1e-3)


def test_measure_is_the_mean_over_a_seeded_subset_and_over_margin_divides_by_gamma_to_the_q():
    m = tiny("crate")
    ctx = MeasureContext(m, train=(X, Y), seed=4, train_size=1000)
    s = {"path_norm.n_images": 5, "path_norm.q": 1.5, "size_adjusted": True}
    r = MEASURES.get("path_norm")(ctx, s)
    xs, _ = ctx.subset("train", 5)
    per_image = frozen_path_norms(copy.deepcopy(m).double(), xs.double(), 1.5)[0]
    assert r.value == pytest.approx(per_image.mean().item(), rel=1e-12) and r.diagnostics["n_images"] == 5
    assert r.extra["size_adjusted"] == pytest.approx(math.sqrt(r.value / 1000))
    o = MEASURES.get("path_norm_over_margin")(ctx, s)
    assert o.value == pytest.approx(r.value / margin(ctx)["gamma"] ** 1.5, rel=1e-12)
    other_seed = MEASURES.get("path_norm")(MeasureContext(m, train=(X, Y), seed=5), s).value
    assert other_seed != pytest.approx(r.value, rel=1e-9)  # another subset, other frozen maps


def test_bad_settings_and_non_relu_modules_are_clear_errors():
    with pytest.raises(MeasureError, match="q must be > 0"):
        value(tiny("crate"), **{"path_norm.q": 0.0})
    tanh = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    out = compute(tanh, ["path_norm"], train=(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)))
    assert "only for ReLU networks" in out["failures"]["path_norm"] and "Tanh" in out["failures"]["path_norm"]


def test_blank_patches_are_counted_in_the_diagnostics():
    x = X.clone()
    x[0, :, :2, :2] = 0.7  # one constant 2×2 patch out of 12 images × 16 patches
    r = MEASURES.get("path_norm")(MeasureContext(tiny("crate"), train=(x, Y)))
    assert r.diagnostics["blank_patches"] == pytest.approx(1 / (12 * 16))
    assert MEASURES.get("path_norm")(MeasureContext(tiny("crate"), train=(X, Y))).diagnostics["blank_patches"] == 0


def test_layernorm_scales_in_the_diagnostics():
    """Σ log10(1/σ) over the frozen LayerNorms: 2·depth + 3 of them in CRATE (patch, embedding,
    two per layer, head); scaling the images by c moves only the patch LayerNorm's σ, by c."""
    model = tiny("crate")
    d = MEASURES.get("path_norm")(MeasureContext(model, train=(X, Y))).diagnostics
    assert d["n_layernorms"] == 2 * TINY["depth"] + 3
    x = X.clone()
    x[:, :, :2, :2] = X[:, :, :2, :2] + torch.linspace(0, 1, 4).view(2, 2)  # no blank patch
    base = MEASURES.get("path_norm")(MeasureContext(model, train=(x, Y))).diagnostics["ln_log10_inv_sigma"]
    scaled = MEASURES.get("path_norm")(MeasureContext(model, train=(100 * x, Y))).diagnostics["ln_log10_inv_sigma"]
    assert scaled - base == pytest.approx(-2.0, abs=1e-3)
