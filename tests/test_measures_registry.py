"""Every registered measure on every registered model: finite, pure, deterministic.

Parametrized over both registries, so a new measure or a new model is tested without
touching this file. Models are tiny (8×8×1 images, patch 2) and briefly trained on a
seeded synthetic task so that the accuracy-based searches have something to lose.
"""
import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from measures import MEASURES, SETTINGS, MeasureContext, MeasureError, compute, measure, select
from measures.registry import RegistryError, validate_overrides
from srr_bench.models import MODELS, build_model

# Small enough for a unit test; every measure still runs its real algorithm.
SMALL = {
    "pacbayes.n_images": 64, "pacbayes.mc_samples": 3, "pacbayes_mag.n_images": 64, "pacbayes_mag.mc_samples": 3,
    "sharpness.n_images": 48, "sharpness_mag.n_images": 48, "sharpness_m.n_images": 48, "sharpness_m.m": 24,
    "sharpness.steps": 3, "sharpness_mag.steps": 3, "sharpness_m.steps": 3,
    "hessian.n_images": 24, "hessian.probes": 3, "hessian.iters": 4, "srr.n_images": 12,
    "grad_noise.batch_size": 16, "grad_noise.n_batches": 3,
}
RUN = {"steps_to_ce_0.1": 30, "steps_to_ce_0.01": 50, "steps": 60, "sum_train_loss": 12.5, "n_train": 96}


def synthetic(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(99))[y] + 0.7 * torch.randn(n, 1, 8, 8, generator=g)
    return x, y


TRAIN, TEST = synthetic(96, 1), synthetic(48, 2)


@pytest.fixture(scope="module")
def trained():
    """{model name: (initial model, trained model)}, trained 40 AdamW steps on TRAIN."""
    rng = torch.get_rng_state()
    out = {}
    for name in MODELS.names():
        torch.manual_seed(0)
        m = build_model(dict(name=name, dim=16, depth=2, heads=2, image_size=8, patch_size=2, channels=1,
                             num_classes=3, dropout=0.1))
        m0 = copy.deepcopy(m)
        opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=3e-3)
        for _ in range(40):
            loss = F.cross_entropy(m(TRAIN[0]), TRAIN[1])
            opt.zero_grad()
            loss.backward()
            opt.step()
        out[name] = (m0, m)
    torch.set_rng_state(rng)
    return out


def context(pair, seed=0):
    m0, m = pair
    return MeasureContext(m, init_model=m0, train=TRAIN, test=TEST, seed=seed, metrics=dict(RUN), batch_size=32,
                          run_config={"train": {"batch_size": 16}})


@pytest.mark.parametrize("measure_name", MEASURES.names())
@pytest.mark.parametrize("model_name", MODELS.names())
def test_measure_is_finite_pure_and_deterministic(trained, model_name, measure_name):
    m0, model = trained[model_name]
    model.train()  # the measure must restore it
    model.layers[0].eval()  # ... submodule by submodule
    modes = {n: mod.training for n, mod in model.named_modules()}
    weights = copy.deepcopy(model.state_dict())
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    rng, np_rng = torch.get_rng_state(), np.random.get_state()
    meas = MEASURES.get(measure_name)
    r = meas(context(trained[model_name]), SMALL)
    values = r.values(measure_name)
    assert values and all(math.isfinite(v) for v in values.values()), values
    assert all(k == measure_name or k.startswith(measure_name + ".") for k in values)
    assert torch.equal(torch.get_rng_state(), rng), "touched the global torch RNG"
    st = np.random.get_state()
    assert st[0] == np_rng[0] and np.array_equal(st[1], np_rng[1]) and st[2:] == np_rng[2:], "touched numpy's RNG"
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items()), "changed the weights"
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    assert {n: mod.training for n, mod in model.named_modules()} == modes, "did not restore train/eval modes"
    again = meas(context(trained[model_name]), SMALL).values(measure_name)
    assert again == values, "not deterministic for a fixed seed"


def test_measures_on_a_plain_module_classifier():
    """The model-agnostic measures work on any classifier; the probe ones say what they need."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))
    net0 = copy.deepcopy(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(20):
        loss = F.cross_entropy(net(TRAIN[0]), TRAIN[1])
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = compute(net, init_model=net0, train=TRAIN, test=TEST, metrics=dict(RUN), settings=SMALL)
    probe = {n for n in MEASURES.names() if "probe" in MEASURES.get(n).needs}
    assert set(out["failures"]) == probe and all("needs a model with" in out["failures"][n] for n in probe)
    assert all(math.isfinite(v) for v in out["values"].values())
    assert {"pacbayes_flatness", "sharpness", "hessian_trace", "l2", "log_prod_of_spec"} <= set(out["values"])


def test_seed_changes_the_random_measures_only():
    pair = build_pair()
    a = compute(pair[1], ["pacbayes_flatness", "l2", "srr"], seed=0, settings=SMALL, **inputs(pair))
    b = compute(pair[1], ["pacbayes_flatness", "l2", "srr"], seed=1, settings=SMALL, **inputs(pair))
    assert a["values"]["l2"] == b["values"]["l2"]
    assert a["values"]["srr"] != b["values"]["srr"]  # another image subset
    assert a["settings"]["l2"]["seed"] == 0 and b["settings"]["l2"]["seed"] == 1


def build_pair():
    torch.manual_seed(0)
    m = build_model(dict(name="crate", dim=16, depth=2, heads=2, image_size=8, patch_size=2, channels=1, num_classes=3))
    return copy.deepcopy(m), m


def inputs(pair):
    return dict(init_model=pair[0], train=TRAIN, test=TEST)


def test_duplicate_or_shadowing_names_are_errors():
    fn = lambda ctx, s: None
    with pytest.raises(RegistryError, match="already registered"):
        measure("l2")(fn)
    with pytest.raises(RegistryError, match="shadow"):
        measure("srr.L1")(fn)


def test_selection_by_name_and_pattern_and_unknown_names():
    assert [m.name for m in select(["pacbayes_mag*"])] == ["pacbayes_mag_flatness", "pacbayes_mag_init",
                                                            "pacbayes_mag_orig"]
    assert "srr" not in [m.name for m in select(None, exclude=["srr*"])]
    with pytest.raises(MeasureError, match="unknown measure 'nope'; known: "):
        select(["nope"])


def test_settings_are_validated_and_coerced():
    assert validate_overrides({"srr.n_images": "64", "srr.cls": "false", "srr.eps": "0.2"}) == {
        "srr.n_images": 64, "srr.cls": False, "srr.eps": 0.2}
    with pytest.raises(MeasureError, match="unknown setting 'srr.nope'.*; srr has: "):
        validate_overrides({"srr.nope": 1})
    with pytest.raises(MeasureError, match="cannot read"):
        validate_overrides({"srr.n_images": "many"})
    for bad in ({"srr.eps": "inf"}, {"srr.eps": -1}, {"srr.normalize": "tokens"}, {"sharpness.radius": "nan"}):
        with pytest.raises(MeasureError, match=next(iter(bad))):  # ranges: the group's schema; numbers finite
            validate_overrides(bad)
    m = MEASURES.get("srr_ref")
    s = m.settings({"srr.representation": "z_half", "srr.eps": 0.3})
    assert s["representation"] == "mssa_in" and s["eps"] == 0.3  # a variant's fixed settings win
    assert set(SETTINGS["srr"]) <= set(s) and s["version"] == m.version


def test_a_failing_measure_is_recorded_and_the_others_go_on(monkeypatch):
    from measures import registry

    def boom(ctx, s):
        raise RuntimeError("exploded\nwith a second line")

    broken = dataclasses.replace(MEASURES.get("l2"), fn=boom)
    monkeypatch.setitem(registry.MEASURES._items, "l2", broken)
    pair = build_pair()
    out = compute(pair[1], ["l2", "params"], **inputs(pair))
    assert out["failures"] == {"l2": "RuntimeError: exploded with a second line"}
    assert "params" in out["values"] and "l2" not in out["values"]
