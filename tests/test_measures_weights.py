"""One definition of "the weights": the norm family counts every weight exactly once, on any model.

The expected sets are built here from the parameters themselves (every parameter with
two or more dimensions, tied ones once by storage) minus the exclusions documented in
``measures.weights``, written out by name, not by calling the rule under test.
"""
import math

import pytest
import torch
from torch import nn

from measures import MEASURES, MeasureContext, layer_matrices
from measures.weights import weights
from srr_bench.models import MODELS, build_model

TINY = dict(dim=16, depth=2, heads=2, image_size=8, patch_size=2, channels=1, num_classes=3)
TOKENS = {"embed.cls_token", "embed.pos_embedding"}  # added to the token sequence: documented exclusion


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).relu().flatten(1))


class TiedEmbedding(nn.Module):
    """An embedding table tied to the output layer, a 2-D LayerNorm and a custom matrix."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 6)
        self.norm = nn.LayerNorm((4, 6))  # a 2-D gain and shift: normalisation, not weights
        self.mix = nn.Parameter(torch.randn(6, 6))
        self.out = nn.Linear(6, 10, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, t):
        return self.out(self.norm(self.emb(t)) @ self.mix)


def torch_models() -> dict[str, tuple[nn.Module, set[str]]]:
    """{name: (model, the names of its ≥ 2-D parameters that are documented exclusions)}."""
    torch.manual_seed(0)
    return {
        "mha_bias_kv": (nn.MultiheadAttention(8, 2, add_bias_kv=True), {"bias_k", "bias_v"}),
        "mha_kdim": (nn.MultiheadAttention(8, 2, kdim=4, vdim=6), set()),
        "encoder_layer": (nn.TransformerEncoderLayer(8, 2, 16), set()),
        "conv_net": (ConvNet(), set()),
        "tied_embedding": (TiedEmbedding(), {"norm.weight", "norm.bias"}),
    }


def registered(name: str) -> tuple[nn.Module, set[str]]:
    torch.manual_seed(0)
    return build_model({**TINY, "name": name}), TOKENS


CASES = [(n, lambda n=n: registered(n)) for n in MODELS.names()] + [
    (n, lambda n=n: torch_models()[n]) for n in ("mha_bias_kv", "mha_kdim", "encoder_layer", "conv_net",
                                                 "tied_embedding")]


def expected_weights(model: nn.Module, excluded: set[str]) -> dict[int, nn.Parameter]:
    """{storage pointer: parameter} of every ≥ 2-D parameter (tied ones once) minus ``excluded``."""
    out = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if p.dim() >= 2 and name not in excluded:
            out.setdefault(p.untyped_storage().data_ptr(), p)
    return out


@pytest.mark.parametrize("name, build", CASES, ids=[c[0] for c in CASES])
def test_layer_matrices_count_every_weight_exactly_once(name, build):
    model, excluded = build()
    want = expected_weights(model, excluded)
    mats = layer_matrices(model)
    by_storage: dict[int, list[tuple[int, int]]] = {}
    for key, m in mats.items():
        if key.endswith("(tied)"):  # the documented re-use: W applied a second time as the output operator
            continue
        by_storage.setdefault(m.untyped_storage().data_ptr(), []).append((m.storage_offset(), m.numel()))
    assert set(by_storage) == set(want)  # nothing missed, nothing else
    for ptr, ranges in by_storage.items():  # the blocks of each weight tile it exactly once
        p = want[ptr]
        ranges.sort()
        assert ranges[0][0] == p.storage_offset()
        assert all(a + n == b for (a, n), (b, _) in zip(ranges, ranges[1:]))
        assert sum(n for _, n in ranges) == p.numel()
    tied = [k for k in mats if k.endswith("(tied)")]
    assert bool(tied) == (name in ("crate_c", "crate_n", "crate_t"))


def test_multihead_attention_in_proj_is_counted_per_projection_and_head():
    mha = nn.MultiheadAttention(8, 2)
    mats = layer_matrices(mha)
    assert set(mats) == {"q0", "q1", "k0", "k1", "v0", "v1", "out_proj"}
    assert torch.equal(mats["k1"], mha.in_proj_weight[12:16])  # rows E..2E are W_k; head 1 is its second half
    ctx = MeasureContext(mha)
    fro = mha.in_proj_weight.double().square().sum() + mha.out_proj.weight.double().square().sum()
    assert MEASURES.get("param_norm")(ctx).value == pytest.approx(fro.item(), rel=1e-12)
    assert MEASURES.get("l2")(ctx).value == pytest.approx(math.sqrt(fro.item()), rel=1e-12)


@pytest.mark.parametrize("name, build", CASES, ids=[c[0] for c in CASES])
def test_the_vector_measures_use_the_same_weights_learned_only(name, build):
    model, excluded = build()
    want = expected_weights(model, excluded)
    learned = [p for p in want.values() if p.requires_grad]
    assert {t.untyped_storage().data_ptr() for t in weights(model).values()} == {
        p.untyped_storage().data_ptr() for p in learned}
    ctx = MeasureContext(model)
    assert MEASURES.get("params")(ctx).value == sum(p.numel() for p in learned)
    l2 = math.sqrt(sum(p.double().square().sum().item() for p in learned))
    assert MEASURES.get("l2")(ctx).value == pytest.approx(l2, rel=1e-12)


def test_frozen_weights_are_layers_of_the_function_but_not_learned():
    model, _ = registered("crate_fix")
    frozen = {p.untyped_storage().data_ptr() for p in model.parameters() if not p.requires_grad and p.dim() >= 2}
    in_layers = {m.untyped_storage().data_ptr() for m in layer_matrices(model).values()}
    learned = {t.untyped_storage().data_ptr() for t in weights(model).values()}
    assert frozen and frozen <= in_layers and not frozen & learned
