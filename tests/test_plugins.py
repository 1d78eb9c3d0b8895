"""Measures, models and data sets from installed packages (entry points; srr_bench.registry).

Quick tests install plugins by hand (a ``.dist-info`` folder with ``entry_points.txt`` in a
temporary folder on sys.path, which is all ``importlib.metadata`` reads); the slow test
pip-installs tests/plugin_pkg into a temporary folder and drives the command lines with it
on PYTHONPATH, so the virtual environment is never changed.
"""
import json
import logging
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from srr_bench.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_SRC = ROOT / "tests" / "plugin_pkg"
PLUGIN_PACKAGE = "srr-bench-example-plugin"


def install_by_hand(root: Path, package: str, entry_points: dict, modules: dict) -> None:
    """What pip leaves behind, reduced to what entry-point discovery reads."""
    info = root / f"{package.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) for group, eps in entry_points.items()))
    for name, source in modules.items():
        (root / f"{name}.py").write_text(source)


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A fresh registry ``WIDGETS`` (built-in entry "a") in an importable module, a unique group
    and module prefix, and ``install(package, {entry: value}, {module: source})``."""
    uid = uuid.uuid4().hex[:8]
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / f"host_{uid}.py").write_text(
        "from srr_bench.registry import Registry\nWIDGETS = Registry('widget')\nEXTRA = {}\nLOADS = []\n"
        "WIDGETS.register('a')('built-in a')\n")
    mod = __import__(f"host_{uid}")
    group = f"srr_bench_test.widgets_{uid}"

    def install(package, eps, modules):
        install_by_hand(tmp_path / package, package, {group: eps}, modules)
        monkeypatch.syspath_prepend(str(tmp_path / package))

    mod.uid, mod.group, mod.install = uid, group, install
    return mod


def test_entry_points_are_read_at_the_first_look_up_and_once(host):
    plug = f"plug_{host.uid}"
    host.install("widget-maker", {"maker": plug}, {plug: f"from host_{host.uid} import WIDGETS, LOADS\n"
                                                         "LOADS.append(1)\nWIDGETS.register('b')('plugin b')\n"})
    host.WIDGETS.open_to(host.group)
    assert plug not in sys.modules and host.LOADS == []  # opening reads nothing
    assert "b" in host.WIDGETS and host.WIDGETS.get("b") == "plugin b"
    assert host.WIDGETS.names() == ["a", "b"] and len(host.WIDGETS) == 2 and host.LOADS == [1]
    assert host.WIDGETS.origin == {"b": "widget-maker"}  # built-ins have no origin
    assert host.WIDGETS.load_plugins() == [] and host.LOADS == [1]  # never twice


def test_a_registry_not_opened_reads_no_entry_points(host):
    plug = f"plug_{host.uid}"
    host.install("widget-maker", {"maker": plug}, {plug: f"from host_{host.uid} import WIDGETS\n"
                                                         "WIDGETS.register('b')('plugin b')\n"})
    assert host.WIDGETS.names() == ["a"] and plug not in sys.modules


def test_a_callable_entry_point_is_called_once(host):
    plug = f"plug_{host.uid}"
    host.install("widget-maker", {"maker": f"{plug}:register"}, {plug: (
        f"from host_{host.uid} import WIDGETS, LOADS\n"
        "def register():\n    LOADS.append(1)\n    WIDGETS.register('c')('plugin c')\n")})
    host.WIDGETS.open_to(host.group)
    assert host.WIDGETS.names() == ["a", "c"] and host.WIDGETS.names() == ["a", "c"] and host.LOADS == [1]


def test_a_failing_plugin_is_rolled_back_with_one_line_naming_its_package(host, caplog):
    broken, good = f"broken_{host.uid}", f"good_{host.uid}"
    host.install("widget-broken", {"broken": broken}, {broken: (
        f"from host_{host.uid} import WIDGETS, EXTRA\nWIDGETS.register('half')('x')\nEXTRA['half'] = 1\n"
        "import no_such_module_anywhere\n")})
    host.install("widget-good", {"good": good}, {good: f"from host_{host.uid} import WIDGETS\n"
                                                       "WIDGETS.register('d')('plugin d')\n"})
    host.WIDGETS.open_to(host.group, companions=(host.EXTRA,))
    with caplog.at_level(logging.WARNING, logger="srr_bench.plugins"):
        assert host.WIDGETS.names() == ["a", "d"]  # the built-in and the good plugin are there
    assert host.EXTRA == {}  # what the broken one registered beside the registry is gone too
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "widget-broken" in lines[0] and "not loaded" in lines[0] and "ModuleNotFoundError" in lines[0]
    assert list(host.WIDGETS.plugin_errors) == ["widget-broken:broken"]


def test_a_plugin_cannot_take_a_registered_name(host, caplog):
    plug = f"plug_{host.uid}"
    host.install("widget-thief", {"thief": plug}, {plug: (f"from host_{host.uid} import WIDGETS\n"
                                                          "WIDGETS.register('e')('e')\nWIDGETS.register('a')('stolen')\n")})
    host.WIDGETS.open_to(host.group)
    with caplog.at_level(logging.WARNING, logger="srr_bench.plugins"):
        assert host.WIDGETS.get("a") == "built-in a"
    assert host.WIDGETS.names() == ["a"]  # refused whole: its 'e' is rolled back
    assert "widget-thief" in caplog.text and "widget 'a' is already registered" in caplog.text


# --- the measures, models and data-set registries -------------------------------------------

@pytest.fixture
def isolated(monkeypatch):
    """Plugins loaded into the real registries during a test are gone after it."""
    from measures import MEASURES, SETTINGS
    from srr_bench.data import DATASETS
    from srr_bench.models import MODELS
    from srr_bench.models.crate import OUTPUT_OPERATORS

    for reg in (MEASURES, MODELS, OUTPUT_OPERATORS, DATASETS):
        for attr in ("_items", "origin", "plugin_errors", "_seen"):
            monkeypatch.setattr(reg, attr, type(getattr(reg, attr))(getattr(reg, attr)))
    groups = set(SETTINGS)
    yield
    for g in set(SETTINGS) - groups:
        del SETTINGS[g]


def install_measures(tmp_path, monkeypatch, package, group, source):
    uid = uuid.uuid4().hex[:8]
    install_by_hand(tmp_path / package, package, {group: {"m": f"mod_{uid}"}}, {f"mod_{uid}": source})
    monkeypatch.syspath_prepend(str(tmp_path / package))


MEASURE_PLUGIN = """
from measures.registry import Result, measure, settings_group
settings_group("{group}", scale=2.0)

@measure("{name}", group="{group}")
def fn(ctx, s):
    '''Sum of the parameters times a scale.'''
    return Result(s["scale"] * sum(float(p.detach().sum()) for p in ctx.model.parameters()))
"""


def test_a_plugin_measure_is_selected_and_computed_like_a_built_in_one(isolated, tmp_path, monkeypatch):
    from measures import MEASURES, SETTINGS, compute, select

    install_measures(tmp_path, monkeypatch, "pkg-scaled", "srr_bench.measures",
                     MEASURE_PLUGIN.format(name="scaled_sum", group="scaled"))
    assert MEASURES.load_plugins() == ["scaled_sum"]
    assert MEASURES.origin["scaled_sum"] == "pkg-scaled" and SETTINGS["scaled"] == {"scale": 2.0}
    assert [m.name for m in select(["scaled*"])] == ["scaled_sum"]
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.fill_(0.5)
        model.bias.fill_(1.0)
    out = compute(model, ["scaled_sum"], settings={"scaled.scale": 3.0})
    assert out["values"]["scaled_sum"] == pytest.approx(3.0 * (6 * 0.5 + 2 * 1.0))


@pytest.mark.parametrize("clash", ["name", "group"])
def test_a_plugin_measure_with_a_taken_name_or_group_is_refused_and_rolled_back(isolated, tmp_path, monkeypatch,
                                                                                caplog, clash):
    from measures import MEASURES, SETTINGS

    before, l2, srr_settings = MEASURES.names(), MEASURES.get("l2"), dict(SETTINGS["srr"])
    name, group = ("l2", "fresh_group") if clash == "name" else ("fresh_measure", "srr")
    source = MEASURE_PLUGIN.format(name=name, group=group)
    install_measures(tmp_path, monkeypatch, "pkg-clash", "srr_bench.measures", source)
    with caplog.at_level(logging.WARNING, logger="srr_bench.plugins"):
        assert MEASURES.load_plugins() == []
    assert MEASURES.names() == before and MEASURES.get("l2") is l2
    assert "fresh_group" not in SETTINGS and SETTINGS["srr"] == srr_settings
    assert len(caplog.records) == 1 and "pkg-clash" in caplog.text
    assert ("measure 'l2' is already registered" if clash == "name" else "group 'srr' is already declared") in caplog.text


def test_a_crate_variant_and_a_data_set_from_a_plugin(isolated, tmp_path, monkeypatch):
    from srr_bench.data import DATASETS, load_data
    from srr_bench.models import MODELS, build_model

    install_measures(tmp_path, monkeypatch, "pkg-variant", "srr_bench.models", (
        "from srr_bench.models import crate_variant\n"
        "@crate_variant('crate_half')\nclass Half:\n    project_out = False\n"
        "    def __init__(self, cfg): pass\n    def __call__(self, out, W): return 0.5 * (out @ W)\n"))
    install_measures(tmp_path, monkeypatch, "pkg-data", "srr_bench.datasets", (
        "import numpy as np\nfrom srr_bench.data import DATASETS\nfrom srr_bench.data.core import RawData\n"
        "@DATASETS.register('noise')\ndef noise(root='', download=False):\n"
        "    g = np.random.default_rng(0)\n"
        "    x, y = g.random((40, 1, 8, 8)).astype(np.float32), np.arange(40) % 4\n"
        "    return RawData(x[:30], y[:30], x[30:], y[30:], num_classes=4, scale=1.0)\n"))
    MODELS.load_plugins()
    DATASETS.load_plugins()
    assert MODELS.origin["crate_half"] == "pkg-variant" and DATASETS.origin["noise"] == "pkg-data"
    data = load_data({"name": "noise", "n_train": 20})
    assert len(data.train) == 20 and data.num_classes == 4
    m = build_model(dict(name="crate_half", image_size=8, patch_size=4, channels=1, num_classes=4, dim=16, depth=1,
                         heads=2))
    x = torch.randn(2, 5, 16)
    mssa = m.layers[0].mssa.eval()
    tied = build_model(dict(name="crate_c", image_size=8, patch_size=4, channels=1, num_classes=4, dim=16, depth=1,
                            heads=2)).layers[0].mssa.eval()
    tied.load_state_dict(mssa.state_dict())
    torch.testing.assert_close(mssa(x), 0.5 * tied(x))  # its operator is used, and is what it says
    assert m(data.train.x[:3]).shape == (3, 4)


# --- an installed package, end to end ---------------------------------------------------------

@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """tests/plugin_pkg pip-installed (offline, no dependencies) into a temporary folder."""
    src = tmp_path_factory.mktemp("src") / "plugin_pkg"
    shutil.copytree(PLUGIN_SRC, src)  # the build writes beside its sources: keep them out of the checkout
    target = tmp_path_factory.mktemp("site")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                        "--no-cache-dir", "--disable-pip-version-check", "-q", "--target", str(target), str(src)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return target


def env(*paths) -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(map(str, [*paths, ROOT])), OMP_NUM_THREADS="1",
                MKL_NUM_THREADS="1")


def python(code_or_args, *paths, cwd=None) -> subprocess.CompletedProcess:
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env(*paths), cwd=cwd,
                          timeout=600)


@pytest.mark.slow
def test_an_installed_measure_is_listed_computed_swept_and_collected(installed, run, tmp_path):
    lazy = python("import sys, measures\nbefore = 'srr_example_plugin' in sys.modules\n"
                  "measures.MEASURES.names()\nprint(before, 'srr_example_plugin' in sys.modules)", installed)
    assert lazy.stdout.split() == ["False", "True"], lazy.stderr[-2000:]

    listed = python(["-m", "measures.cli", "--list"], installed)
    line = next(x for x in listed.stdout.splitlines() if x.startswith("mean_abs_weight "))
    assert f"from package {PLUGIN_PACKAGE}" in line and "Mean absolute value" in line

    computed = python(["-m", "measures.cli", str(run), "--measures", "mean_abs_weight", "-q"], installed)
    assert computed.returncode == 0, computed.stderr[-2000:]
    stored = json.loads((run / "measures.json").read_text())
    from srr_bench.runs import load_run

    params = [p.detach().double() for p in load_run(run).model("final").parameters() if p.requires_grad]
    expected = float(sum(p.abs().sum() for p in params) / sum(p.numel() for p in params))
    assert stored["values"]["mean_abs_weight"] == pytest.approx(expected, rel=1e-12)
    assert stored["values"]["mean_abs_weight.count"] == sum(p.numel() for p in params)
    assert stored["settings"]["mean_abs_weight"]["trainable_only"] is True

    sweep = tmp_path / "grid"  # (the run fixture lives under tmp_path / "sweep")
    train = ["-c", "from sweeps.cli import train_main; train_main()", "-m", f"hydra.sweep.dir={sweep}",
             "train.epochs=3", "train.device=cpu", "train.progress=false", "data.n_train=256", "data.n_test=64",
             "measure.names=[mean_abs_weight]"]
    refused = python(train, cwd=tmp_path)  # without the package: refused before any run, naming it
    assert refused.returncode == 2 and "unknown measure 'mean_abs_weight'" in refused.stderr and not sweep.exists()
    swept = python(train, installed, cwd=tmp_path)
    assert swept.returncode == 0, swept.stderr[-3000:]
    (swept_run,) = [p.parent for p in sweep.glob("*/measures.json")]
    assert json.loads((swept_run / "measures.json").read_text())["values"]["mean_abs_weight"] > 0

    # the analysis reads the tables alone: no plugin, no measures package, no torch
    collect = python(f"import sys, json\nfrom analysis.collect import collect_runs\n"
                     f"df = collect_runs([{str(run.parent)!r}, {str(sweep)!r}], log=lambda s: None)\n"
                     "assert not {'measures', 'torch', 'srr_example_plugin'} & set(sys.modules), sys.modules.keys()\n"
                     "print(json.dumps(sorted(df['measure.mean_abs_weight'].tolist())))")
    assert collect.returncode == 0, collect.stderr[-2000:]
    values = json.loads(collect.stdout)
    assert len(values) == 2 and stored["values"]["mean_abs_weight"] in values
