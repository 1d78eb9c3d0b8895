"""The SRR regulariser and the layer-wise recording: the regularised quantity is the measured one."""
import json

import pandas as pd
import pytest
import torch

from measures import MEASURES, MeasureContext
from measures.rates import logdet_eye_plus
from srr_bench.models import ModelConfig, build_model
from measures.registry import validate_overrides
from srr_bench.regularizer import RegularizerError, SRRRegularizer, layer_record, parse_layers
from srr_bench.srr import SettingError, srr_settings
from srr_bench.runs import hparams, run_id
from srr_bench.train import train
from sweeps.schema import ConfigError, validate


@pytest.fixture(scope="module")
def model_and_batch():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="crate", image_size=16, patch_size=4, dim=32, depth=3, heads=4,
                                    channels=3, num_classes=5)).eval()
    x = torch.randn(12, 3, 16, 16)
    return model, x, torch.randint(0, 5, (12,))


def _reg(layers, dtype="float64", depth=3, **settings):
    return SRRRegularizer.from_config(dict(alpha=0.5, layers=layers, dtype=dtype), settings, depth, seed=7)


@pytest.mark.parametrize("settings", [{}, {"srr.normalize": "none", "srr.cls": False, "srr.eps": 0.3},
                                      {"srr.normalize": "head", "srr.l0": "count", "srr.lambda0": 0.01}])
def test_regularised_term_is_the_measure_with_l1_for_l0(model_and_batch, settings):
    model, x, y = model_and_batch
    ctx = MeasureContext(model, train=(x, y))
    measured = MEASURES.get("srr")(ctx, {**settings, "srr.n_images": None}).extra
    inter = model.forward_intermediates(x)
    s = _reg("all", **settings).settings
    first = 0 if s["cls"] else 1
    for layer in (1, 2, 3):
        Z = inter.ista_out[layer - 1][:, first:].double()
        l1 = Z.abs().sum((1, 2))
        if s["l0"] == "fraction":
            l1 = l1 / (Z.shape[1] * Z.shape[2])
        expected = measured[f"L{layer}.srr"] + s["lambda0"] * (l1.mean().item() - measured[f"L{layer}.l0"])
        got = _reg(layer, **settings).terms(model, inter, step=0).item()
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)
    total = _reg("all", **settings).terms(model, inter, step=0).item()
    assert total == pytest.approx(sum(_reg(i, **settings).terms(model, inter, 0).item() for i in (1, 2, 3)), rel=1e-12)


def test_float32_arithmetic_agrees_with_float64(model_and_batch):
    model, x, _ = model_and_batch
    inter = model.forward_intermediates(x)
    a, b = (_reg("all", dt).terms(model, inter, 0).item() for dt in ("float32", "float64"))
    assert a == pytest.approx(b, rel=1e-5)


def test_logdet_gradient_is_the_inverse_and_nan_does_not_raise():
    torch.manual_seed(1)
    X = torch.randn(3, 6, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda X: logdet_eye_plus(X @ X.mT, 2.5), (X,))
    G = torch.full((2, 3, 3), float("nan"), dtype=torch.float64)
    assert logdet_eye_plus(G, 1.0).isnan().all()


def test_an_exactly_singular_matrix_is_nan_forward_and_linalg_error_backward():
    """The zero-pivot path of the regulariser, forced: a matrix singular by construction (all
    zeros; LAPACK's factor has an exact zero pivot on every CPU) gives NaN, not an exception,
    and its gradient raises LinAlgError, which training records as divergence
    (tests/test_reliability.py)."""
    from srr_bench.rates import _LogdetSPD

    A = torch.zeros(2, 4, 4, dtype=torch.float64, requires_grad=True)
    out = _LogdetSPD.apply(A)
    assert out.isnan().all()
    with pytest.raises(torch.linalg.LinAlgError):
        out.sum().backward()


def test_gradient_reaches_the_layers_below_and_u_unless_detached(model_and_batch):
    model, x, _ = model_and_batch
    grads = {}
    for detach in (False, True):
        model.zero_grad()
        reg = SRRRegularizer.from_config(dict(alpha=1.0, layers=2, detach_u=detach), None, 3, seed=0)
        reg.terms(model, model.forward_intermediates(x), 0).backward()
        grads[detach] = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    g = grads[False]
    assert all(g[n].abs().sum() > 0 for n in ("embed.proj.weight", "layers.0.ista.weight", "layers.1.ista.weight"))
    assert all(v is None or v.abs().sum() == 0 for n, v in g.items() if n.startswith(("layers.2.", "head.")))
    # U^2 is layer 2's qkv weight: it moves Z^2 (attention) and, unless detached, enters R^c directly
    assert not torch.allclose(g["layers.1.mssa.qkv.weight"], grads[True]["layers.1.mssa.qkv.weight"])
    assert torch.equal(g["layers.0.mssa.qkv.weight"], grads[True]["layers.0.mssa.qkv.weight"])


@pytest.mark.parametrize("overrides", [{}, {"srr.eps": "0.2", "srr.cls": "false", "srr.n_images": "64.0"},
                                       {"srr.normalize": "head", "srr.l0_representation": "mssa_in", "seed": 3}])
def test_core_srr_settings_are_the_measures_settings(overrides):
    """The core reads ``srr.*`` overrides as the measure does (types from the defaults), without the measures."""
    measure = MEASURES.get("srr").settings(validate_overrides(overrides))
    core = srr_settings({**overrides, "sharpness.radius": 0.5})  # other groups: the measures' business
    assert core == {k: v for k, v in measure.items() if k not in ("seed", "version")}
    assert srr_settings({"srr": {"eps": 0.3, "cls": False}}) == srr_settings({"srr.eps": 0.3, "srr.cls": False})
    with pytest.raises(SettingError, match="srr.nope: unknown key"):
        srr_settings({"srr.nope": 1})
    with pytest.raises(SettingError, match="setting 'srr.n_images': cannot read 'many' as int"):
        srr_settings({"srr.n_images": "many"})


def test_layer_record_is_the_measure_on_its_seeded_subset(model_and_batch):
    """The record draws the measure's subset (its seed: measure.settings' seed) and returns its per-layer values."""
    model, x, y = model_and_batch
    model.train()
    settings = {"normalize": "none"}  # the run's srr section
    record = layer_record(model, (x, y), settings, n_images=7, seed=3)
    assert model.training and all(m.training for m in model.modules())  # the caller's mode is restored
    ctx = MeasureContext(model, train=(x, y), seed=3)
    measured = MEASURES.get("srr")(ctx, {"srr.normalize": "none", "srr.n_images": 7}).extra
    assert record == {f"layer.{k[1:]}": v for k, v in measured.items() if k.startswith("L")}
    other_subset = layer_record(model, (x, y), settings, n_images=7, seed=4)
    assert other_subset["layer.1.R"] != record["layer.1.R"]


def test_layer_choice_random_is_seeded_by_step_and_covers_all_layers():
    reg = _reg("random", depth=4)
    draws = [reg.layer_set(step) for step in range(200)]
    assert draws == [reg.layer_set(step) for step in range(200)]  # a resumed run draws the same layers
    assert {d[0] for d in draws} == {0, 1, 2, 3} and all(len(d) == 1 for d in draws)
    assert _reg("all", depth=4).layer_set(5) == [0, 1, 2, 3] and _reg(2, depth=4).layer_set(5) == [1]


def test_bad_layer_choice_is_one_line(small_cfg):
    assert parse_layers("3", 4) == 3 and parse_layers("random", 4) == "random"
    with pytest.raises(RegularizerError, match="layers 1..4"):
        parse_layers(5, 4)
    with pytest.raises(RegularizerError, match="all, random or a layer number"):
        parse_layers("first", 4)
    with pytest.raises(ConfigError, match=r"reg.layers: the model has layers 1..3, got 9"):
        validate(small_cfg("reg.alpha=0.1", "reg.layers=9"))
    with pytest.raises(ConfigError, match="reg.dtype"):
        validate(small_cfg("reg.alpha=0.1", "reg.dtype=float16"))


def test_run_identity_ignores_an_inactive_regulariser(small_cfg):
    ce = small_cfg()
    assert run_id(small_cfg("reg.layers=random", "reg.dtype=float64")) == run_id(ce)
    no_section = {k: v for k, v in ce.items() if k != "reg"}
    assert run_id(no_section) == run_id(ce)  # runs from before the regulariser keep their identity
    on = {run_id(small_cfg("reg.alpha=0.01", f"reg.layers={s}")) for s in ("all", "random", "1", "2")}
    assert len(on) == 4 and run_id(ce) not in on
    assert "srr_alpha" not in hparams(ce) and hparams(small_cfg("reg.alpha=0.01"))["srr_alpha"] == 0.01


def test_regularised_training_lowers_the_measured_srr(small_cfg, tmp_path):
    from measures import compute

    values = {}
    for name, extra in (("ce", []), ("reg", ["reg.alpha=0.05"])):
        m = train(small_cfg("train.epochs=3", *extra), tmp_path / name)
        assert m["status"] == "done"
        values[name] = compute(tmp_path / name, ["srr"])["values"]
    hist = pd.read_csv(tmp_path / "reg" / "history.csv")
    assert "batch_srr" in hist.columns and hist.loc[hist["step"] > 0, "batch_srr"].notna().all()  # every trained epoch
    assert "batch_srr" not in pd.read_csv(tmp_path / "ce" / "history.csv").columns
    assert values["reg"]["srr"] < values["ce"]["srr"] - 5  # ~2 (CE) against ~-20 (CE + SRR) per layer


def test_layer_recording_is_the_measure_and_does_not_change_training(small_cfg, tmp_path):
    from measures import compute

    plain = train(small_cfg("train.epochs=3"), tmp_path / "plain")
    cfg = small_cfg("train.epochs=3", "train.record_layers.every=2", "train.record_layers.n_images=100")
    rec = train(cfg, tmp_path / "rec")
    drop = lambda m: {k: v for k, v in m.items() if not k.endswith("wall_s")}
    assert drop(rec) == drop(plain) and run_id(cfg) == plain["run_id"]
    hist = pd.read_csv(tmp_path / "rec" / "history.csv")
    assert hist["epoch"].tolist() == [0, 1, 2, 3]
    recorded = hist.set_index("epoch")["layer.1.R"]
    assert recorded.loc[[0, 2, 3]].notna().all() and pd.isna(recorded.loc[1])  # init, every 2, the last
    depth = cfg["model"]["depth"]
    cols = {f"layer.{i}.{q}" for i in range(1, depth + 1) for q in ("R", "Rc", "dR", "l0", "srr")}
    assert cols <= set(hist.columns)
    measured = compute(tmp_path / "rec", ["srr"], settings={"srr.n_images": 100})["values"]
    last = hist.iloc[-1]
    for col in cols:
        i, q = col.split(".")[1:]
        assert last[col] == pytest.approx(measured[f"srr.L{i}.{q}"], rel=1e-12)
    assert json.loads((tmp_path / "rec" / "metrics.json").read_text())["status"] == "done"


@pytest.mark.slow
def test_regularization_study_end_to_end_on_digits(small_cfg, tmp_path, capsys):
    """Train CE and CE + SRR runs with layer recording, then the table command and its figures."""
    from analysis.cli import main

    sweep = tmp_path / "sweep"
    for variant in ("crate", "crate_t"):
        for seed in (0, 1):
            for extra in ([], ["reg.alpha=0.01"], ["reg.alpha=0.01", "reg.layers=random"]):
                if extra and extra[-1].endswith("random") and variant != "crate":
                    continue
                cfg = small_cfg(f"model={variant}", f"seed={seed}", "train.epochs=3", "train.record_layers.every=1",
                                "train.record_layers.n_images=64", *extra)
                train(cfg, sweep / run_id(cfg))
    out = tmp_path / "out"
    assert main(["regularization", str(sweep), "--out", str(out)]) == 0
    table = pd.read_csv(out / "regularization.csv")
    assert len(table) == 3 and set(table["variant"]) == {"crate", "crate_t"}
    assert (table["n_ce"] == 2).all() and (table["n_srr"] == 2).all() and (table["ci_kind"] == "paired").all()
    assert set(table["layers"].astype(str)) == {"all", "random"}
    for name in ("regularization.md", "regularization.tex", "regularization_bars.png", "regularization_layers.png",
                 "layers_ce_epochs.png", "layers_ce_history.png", "layers_srr_epochs.png"):
        assert (out / name).stat().st_size > 0, name
    assert "crate_t" in capsys.readouterr().out
