"""The run config (issue 12 items 3, 9, 10 and its Structure paragraph; issue 10's CLI layering):
one place for defaults, typed sections that train() reads, run identities unchanged, bad
values refused when the config is checked, and one line for every command-line mistake."""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from srr_bench.config import (AdamConfig, ConfigError, MeasureConfig, OptimConfig, RecordLayersConfig, RegConfig,
                              RunConfig, SGDConfig, TrainConfig, compose)
from srr_bench.runs import run_id
from sweeps.cli import precheck
from sweeps.schema import validate

ROOT = Path(__file__).resolve().parents[1]

# The demo grid's run ids before the typed config (commit b458e8f): the hash is still taken
# from the plain config, so every existing run directory keeps its name.
DEMO_RUN_IDS = {'188898648b6c', '2afcea659991', '46dc5bd7a732', '497800c2efd3', '4dd3d6822440', '70301df5a064',
                '78abae9fe258', '8e5fe966f37a', '9913a9e720d2', 'a6e59cd9ba15', 'b1d19504e049', 'b1dee2d0ac36',
                'c64892e2e66b', 'd6899abc6d54', 'f3c93b81ffc0', 'ff956d1a0deb'}


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_demo_grid_run_ids_are_unchanged_except_where_the_dropout_placement_changed_training():
    """10 of the 16 demo runs keep their ids; the 6 with dropout 0.2 on crate_c / crate_n / crate_t
    train differently since the MSSA dropout moved to the reference placement, so they get new ones
    (a relaunch retrains them instead of taking the old results for new ones)."""
    from srr_bench.models import placement_changes_function
    from tests.test_sweeps import experiment_jobs

    jobs = experiment_jobs("experiment=demo")
    changed = [j for j in jobs if placement_changes_function(j.cfg["model"])]
    assert sorted((j.cfg["model"]["name"], j.cfg["model"]["dropout"]) for j in changed) == \
        sorted((name, 0.2) for name in ("crate_c", "crate_n", "crate_t") for _ in range(2))
    assert {j.run_id for j in jobs if j not in changed} <= DEMO_RUN_IDS and len(jobs) - len(changed) == 10
    assert not {j.run_id for j in changed} & DEMO_RUN_IDS
    old = [dict(j.cfg, model=dict(j.cfg["model"], dropout_placement="every_output")) for j in changed]
    assert {run_id(c) for c in old} <= DEMO_RUN_IDS  # the old placement, asked for, finds the old runs


def test_defaults_live_in_the_yaml_tree_only():
    """The run sections declare types and ranges, no defaults (one exception: a key older configs
    lack); the SRR conventions' defaults are the core's SRRSettings, composed into the tree."""
    from srr_bench.config import DataSection, ModelSection
    from srr_bench.settings import SRRSettings

    for cls in (OptimConfig, AdamConfig, SGDConfig, TrainConfig, RecordLayersConfig, RegConfig, MeasureConfig,
                DataSection, ModelSection):
        with_default = [name for name, f in cls.model_fields.items() if not f.is_required()]
        assert with_default == (["dropout_placement"] if cls is ModelSection else []), cls.__name__
    assert compose([])["srr"] == SRRSettings().model_dump()
    assert not list((ROOT / "sweeps" / "conf").glob("srr*")), "the srr defaults are the core's, not a YAML file's"


def test_train_reads_the_typed_config():
    cfg = compose(["optim=sgd", "train.epochs=7", "train.record_layers.every=2"])
    run = RunConfig.read(cfg)
    assert isinstance(run.optim, SGDConfig) and run.optim.momentum == 0.9 and run.optim.lr == 0.05
    assert run.train.epochs == 7 and run.train.record_layers.every == 2 and run.plain == cfg
    assert run_id(run.plain) == run_id(compose(["optim=sgd", "train.epochs=7", "train.record_layers.every=2"]))
    missing = {**cfg, "train": {k: v for k, v in cfg["train"].items() if k != "label_smoothing"}}
    with pytest.raises(ConfigError, match="train.label_smoothing: missing"):  # never a silent fallback
        RunConfig.read(missing)


@pytest.mark.parametrize("override,path,value", [
    ("data.n_train=-499", "data.n_train", "-499"),
    ("data.n_test=0", "data.n_test", "0"),
    ("optim.lr=-1e-3", "optim.lr", "-0.001"),
    ("optim.lr=inf", "optim.lr", "inf"),
    ("optim.warmup_epochs=-1", "optim.warmup_epochs", "-1"),
    ("train.label_smoothing=1.5", "train.label_smoothing", "1.5"),
    ("train.target=nan", "train.target", "nan"),
    ("train.device=gpu", "train.device", "'gpu'"),
    ("train.epochs=true", "train.epochs", "True"),
    ("srr.eps=-1", "srr.eps", "-1"),
    ("srr.eps=inf", "srr.eps", "inf"),
    ("srr.normalize=tokens", "srr.normalize", "'tokens'"),
    ("reg.layers=7", "reg.layers", "7"),
    ("+optim.lrr=1", "optim.lrr", "did you mean 'lr'"),
])
def test_bad_values_are_refused_when_composed(override, path, value):
    """Every value out of its type or range is refused in one line naming the key and the value."""
    with pytest.raises(ConfigError) as e:
        compose([override])
    line = str(e.value)
    assert "\n" not in line and f"{path}:" in line and value in line, line


def test_a_ce_stop_with_a_nan_target_or_none_is_refused():
    for args in (["train.stop=ce", "train.target=nan"], ["train.stop=ce"], ["train.stop=acc", "train.target=1.5"]):
        with pytest.raises(ConfigError, match="train.target"):
            compose(args)


def test_srr_settings_live_in_the_srr_section_not_in_measure_settings():
    """The regulariser and the measures read the run's srr section; measure.settings.srr.* would be a
    second home for the same settings (one the run id never saw), so it is refused with the fix."""
    with pytest.raises(ConfigError, match=r"measure.settings: srr.eps: .*set srr.eps instead"):
        compose(["+measure.settings.srr.eps=0.05"])
    assert compose(["srr.eps=0.05"])["srr"]["eps"] == 0.05
    with pytest.raises(ConfigError, match="srr.eps:"):  # checked with the measures off too (every reg_* experiment)
        compose(["experiment=reg_cifar10_small", "srr.eps=-1"])


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (ROOT / "sweeps" / "conf" / "experiment").glob("*.yaml")))
def test_measure_none_turns_the_measures_off_in_every_experiment(experiment):
    """An experiment file may choose measures but not switch them back on after measure=none."""
    assert compose([f"experiment={experiment}", "measure=none"], validate=False)["measure"]["enabled"] is False


def test_a_device_the_machine_lacks_stops_the_sweep_before_any_job(tmp_path):
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    r = run("-m", "sweeps.cli", "-m", f"hydra.sweep.dir={tmp_path / 'sweep'}", f"train.device=cuda:{max(99, n)}",
            "seed=0,1", cwd=tmp_path)
    assert r.returncode == 2 and "nothing was started" in r.stderr and "train.device:" in r.stderr
    assert not list((tmp_path / "sweep").glob("*/config.yaml"))  # no job ran


def test_measure_settings_out_of_range_are_refused_by_the_check():
    pytest.importorskip("measures")
    with pytest.raises(ConfigError, match="sharpness.radius") as e:
        validate(compose(["+measure.settings.sharpness.radius=inf"]))
    assert "inf" in str(e.value) and "\n" not in str(e.value)


# --- the command line ------------------------------------------------------------------------

@pytest.mark.parametrize("args,message", [
    (["train.epoch=3"], "unknown key 'train.epoch' (did you mean 'train.epochs'?); to add a new key write +train.epoch=3"),
    (["-m", "optim.lrr=1e-3,3e-3"], "unknown key 'optim.lrr' (did you mean 'optim.lr'?)"),
    (["modle=crate_n"], "unknown key or group 'modle' (did you mean 'model'?)"),
    (["-m", "model=crate,crate_nn"], "unknown model option 'crate_nn' (did you mean 'crate_n'?)"),
    (["experiment=dem"], "unknown experiment option 'dem' (did you mean 'demo'?)"),
])
def test_precheck_names_misspelt_keys_and_options_in_one_line(args, message):
    problem = precheck(args)
    assert problem is not None and message in problem and "\n" not in problem


def test_precheck_lets_valid_command_lines_through():
    for args in (["-m", "experiment=demo", "model.dropout=0.0,0.1"], ["optim=sgd", "optim.momentum=0.5"],
                 ["model=vit", "+train.extra=1"], ["measure.settings={srr.eps: 0.05}"], ["~reg"],
                 ["hydra.sweep.dir=/tmp/x", "--cfg", "job"], ["-m", "model=crate,vit", "size=cifar_tiny", "data=cifar10"],
                 ["-m", "experiment=cifar10_small", "data=imagefolder", "data.options.path=/x/c.tar.gz"]):
        assert precheck(args) is None, args


def test_srr_train_misspelt_key_is_one_line_before_hydra(tmp_path):
    r = run("-m", "sweeps.cli", "train.epoch=3", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "did you mean 'train.epochs'" in r.stderr and not (tmp_path / "runs").exists()


def test_output_directories_that_are_files_are_one_line(tmp_path):
    (tmp_path / "afile").write_text("")
    r = run("-m", "sweeps.cli", "-m", f"hydra.sweep.dir={tmp_path / 'afile'}", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == f"srr-train: hydra.sweep.dir={tmp_path / 'afile'}: " \
                                                     f"{tmp_path / 'afile'} is a file, not a directory"
    r = run("-m", "sweeps.demo", "--out", str(tmp_path / "afile" / "demo"), cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "is a file, not a directory" in r.stderr


def test_srr_measure_refuses_a_negative_eps_and_a_missing_device_before_any_run(tmp_path, capsys):
    pytest.importorskip("measures")
    import torch

    from measures.cli import main

    assert main([str(tmp_path), "--eps", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("srr-measure: srr.eps:") and "-1" in err and "\n" not in err
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert main([str(tmp_path), "--device", f"cuda:{max(7, n)}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("srr-measure: --device: device 'cuda:") and "\n" not in err


def test_entry_points_sit_above_the_packages_they_call():
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["srr-train"] == "sweeps.cli:train_main" and scripts["srr-demo"] == "sweeps.demo:main"
    assert scripts["srr-measure"] == "measures.cli:main" and scripts["srr-analyze"] == "analysis.cli:main"
    assert not (ROOT / "srr_bench" / "cli.py").exists()
    for path in (ROOT / "srr_bench").rglob("*.py"):
        text = path.read_text()
        assert "from sweeps" not in text and "import sweeps" not in text, path


def test_kernel_facts_name_what_decides_the_kernels(monkeypatch):
    import torch

    from srr_bench.device import kernel_facts
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    facts = kernel_facts("cpu")
    assert facts["torch"] == torch.__version__
    assert facts["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert facts["threads"] == torch.get_num_threads()
    assert facts["env"]["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"
    assert isinstance(facts["cpu"], str) and facts["cpu"]
    assert set(facts["cpu_isa"]) <= {"avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16",
                                     "avx512_vnni", "amx_tile", "amx_bf16", "neon", "asimd", "sve"}
    json.dumps(facts)  # goes into metrics.json as it is


def test_a_finished_run_records_its_kernels(digits_run_dir):
    import torch

    kernels = json.loads((digits_run_dir / "metrics.json").read_text())["kernels"]
    assert kernels["torch"] == torch.__version__ and kernels["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert kernels["threads"] >= 1 and "gpu" not in kernels  # a CPU run
