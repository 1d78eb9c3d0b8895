"""Worst-case sharpness against exact maxima, and m-sharpness batches that do not follow the stored order."""
import functools
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from measures import MEASURES, MeasureContext
from measures.registry import MeasureError
from measures.sharpness import checkpoints, m_batches


@functools.lru_cache(maxsize=None)
def convex_softmax(n: int, wd: float, scale: float, seed: int) -> tuple[nn.Module, tuple]:
    """Linear softmax (3 features + bias → 3 classes: 12 parameters) on n Gaussian points, float64.

    Trained to the minimum of CE + wd/2·‖w‖² (L-BFGS), so the CE gradient is −wd·w, small
    but not zero, as after training with weight decay. CE is convex in the weights, so its
    maximum over a box is at one of the 2^12 vertices.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, 3, (n,), generator=g)
    lin = nn.Linear(3, 3).double()
    with torch.no_grad():
        lin.weight.copy_(torch.randn(3, 3, generator=g, dtype=torch.float64))
        lin.bias.copy_(torch.randn(3, generator=g, dtype=torch.float64) * 0.1)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15,
                            history_size=50)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(x), y) + wd / 2 * sum(p.square().sum() for p in lin.parameters())
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    return lin.eval(), (x, y)


def vertex_maximum(lin: nn.Linear, data: tuple, radius: float, eps=None) -> float:
    """max over all 2^12 vertices w + ρ·s·scale (s ∈ {±1}^12) of CE, minus the clean CE: the exact worst case."""
    x, y = data
    w = torch.cat([lin.weight.detach().reshape(-1), lin.bias.detach()])
    scale = torch.ones_like(w) if eps is None else w.abs() + eps
    signs = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=len(w))), dtype=w.dtype)
    v = w + radius * signs * scale  # (4096, 12)
    logits = torch.einsum("vkd,nd->vnk", v[:, :9].reshape(-1, 3, 3), x) + v[:, None, 9:]
    losses = F.cross_entropy(logits.permute(0, 2, 1), y.expand(len(v), -1), reduction="none").mean(1)
    with torch.no_grad():
        return losses.max().item() - F.cross_entropy(lin(x), y).item()


MODELS = [dict(n=6, wd=1e-2, scale=5.0, seed=1), dict(n=8, wd=1e-3, scale=5.0, seed=0)]


@pytest.mark.parametrize("model", MODELS, ids=["n6", "n8"])
@pytest.mark.parametrize("name, radius", [("sharpness", None), ("sharpness", 0.5),
                                          ("sharpness_mag", None), ("sharpness_mag", 0.5)])
def test_default_ascent_reaches_the_exact_vertex_maximum(model, name, radius):
    lin, data = convex_softmax(**model)  # (cached: the measures never change the model)
    m = MEASURES.get(name)
    radius = radius or m.settings({})["radius"]
    exact = vertex_maximum(lin, data, radius, m.settings({})["eps"] if name == "sharpness_mag" else None)
    r = m(MeasureContext(lin, train=data, seed=0), {f"{name}.radius": radius, f"{name}.n_images": None})
    assert exact > 0 and r.value <= exact * (1 + 1e-9)  # never above the true maximum: every point is in the box
    assert r.value >= 0.98 * exact, (r.value / exact, r.diagnostics)
    d = r.diagnostics
    assert len(d["run_increases"]) == d["runs"] and max(d["run_increases"]) == pytest.approx(r.value)


def test_restarts_and_steps_are_settings_and_more_budget_never_hurts():
    lin, data = convex_softmax(**MODELS[0])
    ctx = MeasureContext(lin, train=data, seed=0)
    base = {"sharpness.radius": 0.5, "sharpness.n_images": None}
    one = MEASURES.get("sharpness")(ctx, {**base, "sharpness.restarts": 1})
    many = MEASURES.get("sharpness")(ctx, {**base, "sharpness.steps": 200, "sharpness.restarts": 50})
    assert one.diagnostics["runs"] == 1 and many.diagnostics["runs"] > 10
    assert many.value >= one.value
    assert many.value == pytest.approx(vertex_maximum(lin, data, 0.5), rel=1e-9)
    with pytest.raises(MeasureError, match="schedule"):
        MEASURES.get("sharpness")(ctx, {**base, "sharpness.schedule": "cosine"})


def test_apgd_checkpoints_follow_the_anchor():
    # Andriushchenko et al.'s eval_APGD_sharpness, n_iters = 20: p = .22, .41, .57, .70, .80, .87, .93, .99,
    # w = ⌈20p⌉ in floating point as there (0.22 + 0.19 + 0.16 + 0.13 lands just above 0.7: 15, not 14)
    assert sorted(checkpoints(20)) == [5, 9, 12, 15, 16, 18, 19, 20]


def class_sorted(n_per=32, classes=4, seed=0):
    """Linear softmax on well-separated classes, the data stored class by class (as imagefolder stores them)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, 8, generator=g) * 3
    y = torch.arange(classes).repeat_interleave(n_per)
    x = centres[y] + torch.randn(len(y), 8, generator=g)
    lin = nn.Linear(8, classes)
    with torch.no_grad():
        lin.weight.copy_(0.1 * torch.randn(classes, 8, generator=g))
        lin.bias.zero_()
    opt = torch.optim.Adam(lin.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(lin(x), y).backward()
        opt.step()
    return lin.eval(), (x, y)


def test_m_batches_are_a_seeded_partition_that_mixes_classes():
    lin, (x, y) = class_sorted()
    ctx = MeasureContext(lin, train=(x, y), seed=0)
    batches = m_batches(ctx, len(y), 32)
    assert torch.equal(torch.sort(torch.cat(batches)).values, torch.arange(len(y)))  # each image exactly once
    assert all(len(torch.unique(y[b])) >= 3 for b in batches)  # stored order would give one class per batch
    again = m_batches(MeasureContext(lin, train=(x, y), seed=0), len(y), 32)
    other = m_batches(MeasureContext(lin, train=(x, y), seed=1), len(y), 32)
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    assert not all(torch.equal(a, b) for a, b in zip(batches, other))


def test_m_sharpness_does_not_depend_on_the_stored_order():
    """Over seeds, the class-sorted data and a shuffled copy give the same mean value.

    Per seed the two differ (different mixed batches of the same images); batched in stored
    order, the sorted copy's one-class batches gave a value 1.5 times the shuffled copy's.
    """
    lin, (x, y) = class_sorted(n_per=64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(5))
    m, s = MEASURES.get("sharpness_m"), {"sharpness_m.n_images": None, "sharpness_m.m": 32}
    mean = lambda data: sum(m(MeasureContext(lin, train=data, seed=k), s).value for k in range(16)) / 16
    assert mean((x, y)) == pytest.approx(mean((x[perm], y[perm])), rel=0.15)
