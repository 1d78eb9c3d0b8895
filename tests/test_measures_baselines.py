"""Norm, margin and path-norm baselines pinned by closed forms (measures.norms, output, pathnorm)."""
import copy
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from measures import MEASURES, MeasureContext, layer_matrices, path_norm
from measures.output import margins
from srr_bench.models import build_model

TINY = dict(dim=16, depth=2, heads=2, image_size=8, patch_size=2, channels=1, num_classes=3)


def hand_mlp() -> nn.Sequential:
    """2 -> 3 -> 2 ReLU MLP with hand-set weights and biases."""
    mlp = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        mlp[0].weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.0]]))
        mlp[0].bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
        mlp[2].weight.copy_(torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.5, -3.0]]))
        mlp[2].bias.copy_(torch.tensor([1.0, -0.25]))
    return mlp


def brute_force_path_norm(mlp: nn.Sequential, p: float) -> float:
    """Σ over every path (from an input or a bias to an output) of Π |w|^p, then ^(1/p)."""
    W1, b1, W2, b2 = (t.detach().double() for t in (mlp[0].weight, mlp[0].bias, mlp[2].weight, mlp[2].bias))
    total = 0.0
    for out, hid in itertools.product(range(W2.shape[0]), range(W2.shape[1])):
        for inp in range(W1.shape[1]):
            total += (abs(W1[hid, inp]) * abs(W2[out, hid])) ** p  # input -> hidden -> output
        total += (abs(b1[hid]) * abs(W2[out, hid])) ** p  # bias of the hidden neuron -> output
    total += sum(abs(b) ** p for b in b2)  # output biases
    return float(total) ** (1 / p)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_exact_path_norm_of_a_hand_set_mlp(p):
    mlp = hand_mlp()
    assert path_norm(mlp, p).item() == pytest.approx(brute_force_path_norm(mlp, p), rel=1e-12)


def test_path_norm_is_invariant_under_neuron_rescaling_as_the_function_is():
    mlp = hand_mlp()
    scaled = copy.deepcopy(mlp)
    c = torch.tensor([4.0, 0.1, 2.5])  # one positive factor per hidden neuron
    with torch.no_grad():
        scaled[0].weight.mul_(c[:, None])
        scaled[0].bias.mul_(c)
        scaled[2].weight.div_(c[None, :])
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(scaled(x), mlp(x))
    for p in (1.0, 2.0):
        assert path_norm(scaled, p).item() == pytest.approx(path_norm(mlp, p).item(), rel=1e-6)  # float32 weights
    # ...while the parameter norm is not invariant.
    norm = lambda m: sum(q.square().sum() for q in m.parameters()).item()
    assert norm(scaled) != pytest.approx(norm(mlp), rel=1e-3)


def test_path_norm_refuses_non_relu_networks():
    with pytest.raises(TypeError, match="only for ReLU networks"):
        path_norm(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)))


@pytest.mark.parametrize("q", [1.0, 2.0])
def test_path_norm_measure_is_the_q_th_power_of_the_exact_path_norm_on_a_relu_mlp(q):
    mlp = hand_mlp()
    ctx = MeasureContext(mlp, train=(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)))
    v = MEASURES.get("path_norm")(ctx, {"path_norm.q": q}).value
    assert v == pytest.approx(brute_force_path_norm(mlp, q) ** q, rel=1e-12)


def model(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model({**TINY, "name": name}).eval()


@pytest.mark.parametrize("name, out_ops", [
    ("crate", 1), ("crate_fix", 1), ("crate_c", 1), ("crate_n", 1), ("crate_t", 1), ("crate_identity", 0)])
def test_layer_matrices_of_crate_are_heads_output_operator_dictionary_embedding_head(name, out_ops):
    mats = layer_matrices(model(name))
    L, K, d, p = TINY["depth"], TINY["heads"], TINY["dim"], TINY["dim"] // TINY["heads"]
    assert len(mats) == L * (K + out_ops + 1) + 2
    assert mats["layers.0.mssa.U1"].shape == (p, d) and mats["layers.1.ista.D"].shape == (d, d)
    assert {"embed.proj", "head.fc"} <= set(mats)
    tied = [k for k in mats if "tied" in k]
    assert bool(tied) == (name in ("crate_c", "crate_n", "crate_t"))


def test_layer_matrices_of_the_vit_and_of_a_plain_module():
    mats = layer_matrices(model("vit"))
    assert {"layers.0.attn.q0", "layers.0.attn.v1", "layers.0.attn.proj", "layers.0.mlp.0", "layers.0.mlp.3"} <= set(mats)
    conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))
    mats = layer_matrices(conv)
    assert mats["0"].shape == (4, 9) and mats["3"].shape == (3, 144)


def test_spectral_and_frobenius_measures_match_numpy():
    m = model("crate")
    ctx = MeasureContext(m, init_model=model("crate", seed=1), train=(torch.randn(20, 1, 8, 8), torch.randint(0, 3, (20,))))
    mats = [w.double().numpy() for w in layer_matrices(m).values()]
    spec2 = np.array([np.linalg.svd(w, compute_uv=False)[0] ** 2 for w in mats])
    fro2 = np.array([(w**2).sum() for w in mats])
    get = lambda n: MEASURES.get(n)(ctx).value
    assert get("log_prod_of_spec") == pytest.approx(np.log(spec2).sum(), rel=1e-10)
    assert get("log_prod_of_fro") == pytest.approx(np.log(fro2).sum(), rel=1e-10)
    assert get("param_norm") == pytest.approx(fro2.sum(), rel=1e-10)
    assert get("fro_over_spec") == pytest.approx((fro2 / spec2).sum(), rel=1e-10)
    d = len(mats)
    assert get("log_sum_of_spec") == pytest.approx(math.log(d) + np.log(spec2).sum() / d, rel=1e-10)
    gamma = MEASURES.get("inverse_margin")(ctx).diagnostics["gamma"]
    assert get("log_prod_of_spec_over_margin") == pytest.approx(np.log(spec2).sum() - 2 * math.log(gamma), rel=1e-10)
    assert get("inverse_margin") == pytest.approx(1 / gamma**2)


def test_distances_to_init_vanish_at_init_and_count_tied_weights_once():
    m = model("crate_c")
    ctx = MeasureContext(m, init_model=copy.deepcopy(m))
    for name in ("l2_dist", "fro_dist", "dist_spec_init"):
        assert MEASURES.get(name)(ctx).value == 0.0
    additive = ("embed.cls_token", "embed.pos_embedding")  # added to the tokens: not weights
    n_weights = sum(p.numel() for n, p in m.named_parameters()
                    if not n.endswith("bias") and "norm" not in n and n not in additive)
    assert MEASURES.get("params")(ctx).value == n_weights  # the tied qkv counted once


def test_frozen_parameters_are_not_counted_as_learned_weights():
    m = model("crate_fix")
    ctx = MeasureContext(m)
    r = MEASURES.get("params")(ctx)
    frozen = sum(p.numel() for p in m.parameters() if not p.requires_grad)
    assert frozen > 0 and r.diagnostics["frozen_parameters"] == frozen
    assert "layers.0.mssa.out_op.proj" in layer_matrices(m)  # still a layer of the function


def test_margin_is_the_tenth_percentile_of_true_minus_best_other_logit():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.5], [1.0, 1.0, 4.0], [0.0, 5.0, 0.0]])
    y = torch.tensor([0, 1, 0, 1])
    torch.testing.assert_close(margins(logits, y), torch.tensor([2.0, 0.5, -3.0, 5.0]))
    x = torch.arange(20.0)[:, None]  # a "model" whose logits are [0, x]: margins −x (class 0) or x (class 1)
    lin = nn.Linear(1, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0], [1.0]]))
        lin.bias.zero_()
    ctx = MeasureContext(lin, train=(x + 1, torch.ones(20, dtype=torch.long)))
    r = MEASURES.get("inverse_margin")(ctx)
    assert r.diagnostics["gamma"] == 2.0 and r.value == 0.25  # k = 2nd smallest of 1..20


def test_size_adjustment_is_added_only_when_asked():
    ctx = MeasureContext(model("crate"), train=(torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))))
    plain = MEASURES.get("log_prod_of_spec")(ctx)
    adj = MEASURES.get("log_prod_of_spec")(ctx, {"size_adjusted": True})
    assert plain.extra == {} and adj.value == plain.value
    assert adj.extra["size_adjusted"] == pytest.approx(0.5 * (plain.value - math.log(16)))
    p = MEASURES.get("param_norm")(ctx, {"size_adjusted": True})
    assert p.extra["size_adjusted"] == pytest.approx(math.sqrt(p.value / 16))
