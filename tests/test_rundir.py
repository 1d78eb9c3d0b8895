"""The run directory's one owner (srr_bench.rundir): names, one finder, one reader, state and repair.

The damage table of the README is ``TABLE`` below, one test per row: each file of a trained
run damaged in each way, then what ``srr-status`` says (``run_state``) and what a relaunch
(``run_job``) does, and that the relaunch says exactly the damage srr-status named.
"""
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from srr_bench.config import compose
from srr_bench.io import RunFileError, read_json
from srr_bench.rundir import (CHECKPOINT, CONFIG, FINAL, HISTORY, HPARAMS, INIT, MEASURES, METRICS, RunDir,
                              find_runs, measures_shape, metrics_shape)
from sweeps.runner import run_job
from sweeps.state import complete, run_state

ROOT = Path(__file__).resolve().parents[1]

try:
    import measures  # noqa: F401

    HAVE_MEASURES = True
except ImportError:
    HAVE_MEASURES = False

needs_measures = pytest.mark.skipif(not HAVE_MEASURES, reason="measures package not installed")
drop = lambda m: {k: v for k, v in m.items() if not k.endswith("wall_s")}  # noqa: E731


@pytest.fixture(scope="module")
def cfg():
    measure = ["measure.names=[l2]"] if HAVE_MEASURES else ["measure=none"]
    return compose(["train.epochs=2", "train.device=cpu", "train.progress=false", *measure])


@pytest.fixture(scope="module")
def reference(cfg, tmp_path_factory):
    """One trained (and measured) run, copied by each test that damages it."""
    run = tmp_path_factory.mktemp("reference") / "run"
    before = torch.get_num_threads()
    try:
        assert run_job(cfg, run).state == "trained"
    finally:
        torch.set_num_threads(before)
    return run


def copy_run(reference: Path, tmp_path: Path, name: str = "run") -> Path:
    run = tmp_path / name
    shutil.copytree(reference, run, ignore=shutil.ignore_patterns(".lock"))
    return run


def job(cfg, run: Path, capsys) -> tuple:
    before = torch.get_num_threads()
    try:
        out = run_job(cfg, run)
    finally:
        torch.set_num_threads(before)
    captured = capsys.readouterr()
    return out, captured.out + captured.err


# --- the reader: one failure mode -------------------------------------------------------------

@pytest.mark.parametrize("kind, content, words", [
    ("missing", None, "is missing"),
    ("empty", "  \n", "is empty"),
    ("truncated", '{"values": {"l2": 1.', "not valid JSON"),
    ("garbage", "\x00\x01 not json", "not valid JSON"),
    ("wrong shape", '{"values": "x"}', "wrong shape ('values' is a JSON str"),
    ("symlink", '{"values": {}}', "symbolic link"),
])
def test_one_reader_one_failure_mode(tmp_path, kind, content, words):
    path = tmp_path / MEASURES
    if kind == "symlink":
        (tmp_path / "elsewhere.json").write_text(content)
        path.symlink_to(tmp_path / "elsewhere.json")
    elif content is not None:
        path.write_text(content)
    with pytest.raises(RunFileError) as e:
        read_json(path, measures_shape, "the fix")
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and words in msg and msg.endswith("; the fix") and "\n" not in msg
    assert isinstance(e.value, ValueError) and e.value.path == path


def test_metrics_shape_names_a_status_it_does_not_know():
    assert metrics_shape({"status": "done"}) is None and metrics_shape({"train_acc": 1.0}) is None
    assert "not one of" in metrics_shape({"status": "finished"}) and "list" in metrics_shape(["done"])


# --- one finder -------------------------------------------------------------------------------

def test_one_finder_for_every_caller(tmp_path):
    """srr-status, srr-measure and the collector find the same runs, by any run file."""
    from analysis.collect import find_run_dirs as collect_dirs
    from measures.cli import find_run_dirs as measure_dirs
    from sweeps.status import find_run_dirs as status_dirs

    for name, marker in (("a", METRICS), ("b", CONFIG), ("c", HPARAMS), ("d", "failure.json"), ("e/f", CHECKPOINT),
                         ("g", "checkpoint.pt"), (".hydra", CONFIG), ("h/.submitit/x", METRICS)):
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / name / marker).write_text("{}")
    (tmp_path / "i").mkdir()
    (tmp_path / "i" / "notes.txt").write_text("not a run")
    (tmp_path / "link").symlink_to(tmp_path / "a")  # a link to a run is not a second run
    want = [tmp_path / n for n in ("a", "b", "c", "d", "e/f", "g")]
    assert find_runs(tmp_path) == want
    assert status_dirs(tmp_path) == [p.resolve() for p in want]
    assert measure_dirs([str(tmp_path)]) == want and measure_dirs([str(tmp_path / "b")]) == [tmp_path / "b"]
    assert collect_dirs(tmp_path) == [tmp_path / "a"] and collect_dirs(tmp_path, finished=False) == want[1:]
    with pytest.raises(FileNotFoundError, match="no such directory"):
        find_runs(tmp_path / "nope")


def test_committed_results_read_as_finished_and_are_never_retrained():
    """results/*/runs hold finished runs without weights: done for srr-status and for a relaunch."""
    runs = find_runs(*sorted((ROOT / "results").glob("*/runs")))
    assert len(runs) >= 100
    for run in runs:
        rd = RunDir(run)
        assert rd.light_copy() and rd.damage() == [], run
        state = run_state(run, measure_cfg="run")
        assert state.state == "done", (run, state.reason)
        assert complete(run, rd.read_config().get("measure"))


# --- the issue's reproductions ------------------------------------------------------------------

@needs_measures
def test_measures_json_of_the_wrong_shape_is_one_line_then_measured_again(cfg, reference, tmp_path, capsys):
    from analysis.collect import collect
    from measures.cli import main as measure_main

    run = copy_run(reference, tmp_path / "sweep")
    (run / MEASURES).write_text('{"values":"x"}')
    assert measure_main([str(run), "-m", "l2", "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{run / MEASURES}: is valid JSON of the wrong shape" in err[0]
    lines = []
    with pytest.warns(UserWarning):
        with pytest.raises(Exception, match="no readable run directory"):
            collect(tmp_path / "sweep", log=lines.append)
    assert any(str(run / MEASURES) in line and "left out" in line for line in lines)
    state = run_state(run, measure_cfg="run")
    assert state.state == "damaged" and f"{MEASURES} is valid JSON of the wrong shape" in state.reason
    out, text = job(cfg, run, capsys)
    assert out.state == "trained" and f"repairing: {MEASURES} is valid JSON" in text
    assert "l2" in json.loads((run / MEASURES).read_text())["values"] and (run / f"{MEASURES}.corrupt").exists()
    assert job(cfg, run, capsys)[0].state == "finished_before"


def unfinished(reference: Path, tmp_path: Path) -> Path:
    """The reference run as a kill during training leaves it: weights at init and a checkpoint."""
    from srr_bench.checkpoints import load_model, save_training_state

    run = copy_run(reference, tmp_path)
    for name in (METRICS, FINAL, HISTORY, MEASURES):
        (run / name).unlink(missing_ok=True)
    model = load_model(run / INIT)
    opt = torch.optim.AdamW(model.parameters())
    save_training_state(run / CHECKPOINT, model, opt, dict(epoch=0, step=0, history=[]), torch.get_rng_state())
    return run


def test_a_garbage_checkpoint_is_removed_and_the_run_retrained_from_scratch(cfg, reference, tmp_path, capsys):
    run = unfinished(reference, tmp_path)
    (run / CHECKPOINT).write_bytes(b"e" * 101)
    state = run_state(run)
    assert state.state == "damaged" and CHECKPOINT in state.reason and "trains the run again" in state.reason
    out, text = job(cfg, run, capsys)
    assert out.state == "trained" and f"repairing: {CHECKPOINT}" in text and "resuming" not in text
    assert drop(out.metrics) == drop(json.loads((reference / METRICS).read_text()))
    assert not (run / CHECKPOINT).exists() and RunDir(run).damage() == []


def test_deleted_final_weights_are_damage_and_the_run_is_retrained(cfg, reference, tmp_path, capsys):
    run = copy_run(reference, tmp_path)
    (run / FINAL).unlink()
    state = run_state(run, measure_cfg="run")
    assert state.state == "damaged" and f"{FINAL} is missing" in state.reason and "trains the run again" in state.reason
    assert not complete(run, cfg.get("measure"))
    out, text = job(cfg, run, capsys)
    assert out.state == "trained" and f"repairing: {FINAL} is missing" in text
    assert drop(out.metrics) == drop(json.loads((reference / METRICS).read_text())) and (run / FINAL).exists()
    assert run_state(run, measure_cfg="run").state == "done"


@needs_measures
def test_collect_names_a_run_whose_measures_json_is_truncated(reference, tmp_path):
    from analysis.collect import collect

    good, bad = copy_run(reference, tmp_path / "sweep", "good"), copy_run(reference, tmp_path / "sweep", "bad")
    blob = (bad / MEASURES).read_text()
    (bad / MEASURES).write_text(blob[: len(blob) // 2])
    lines = []
    with pytest.warns(UserWarning, match="unreadable"):
        df = collect(tmp_path / "sweep", log=lines.append)
    assert list(df["run_dir"]) == [str(good)]
    named = [line for line in lines if str(bad / MEASURES) in line]
    assert len(named) == 1 and "left out" in named[0] and "not valid JSON" in named[0]
    assert any("left out 1 unreadable run directory" in line for line in lines)


def test_a_run_of_the_pickle_era_still_reads_resumes_and_finishes_the_same(cfg, tmp_path, monkeypatch, capsys):
    """init.pt and checkpoint.pt as written before safetensors: the run resumes from them, rewrites
    its state as safetensors and ends with the metrics of an uninterrupted run."""
    import srr_bench.train as training
    from srr_bench.checkpoints import FORMAT_PT, load_model

    plain = {**cfg, "measure": {**cfg.get("measure", {}), "enabled": False}}
    reference, _ = job(plain, tmp_path / "reference", capsys)

    def legacy(rd, model, opt, state, device):  # the old writer: torch.save of one dict, then stop
        torch.save(dict(model=model.state_dict(), optim=opt.state_dict(), state=state, rng=torch.get_rng_state()),
                   rd / "checkpoint.pt")
        init = load_model(rd / INIT)
        torch.save({"format": FORMAT_PT, "model_config": init.config.to_dict(), "meta": {},
                    "state_dict": init.state_dict()}, rd / "init.pt")
        (rd / INIT).unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "_checkpoint", legacy)
    with pytest.raises(KeyboardInterrupt):
        run_job(plain, tmp_path / "run")
    monkeypatch.undo()
    run = tmp_path / "run"
    assert {"init.pt", "checkpoint.pt"} <= {p.name for p in run.iterdir()} and not (run / INIT).exists()
    assert run_state(run).state == "interrupted"
    out, text = job(plain, run, capsys)
    assert out.state == "trained" and "resuming from checkpoint.pt" in text
    assert drop(out.metrics) == drop(reference.metrics)
    assert not (run / "checkpoint.pt").exists() and not (run / CHECKPOINT).exists() and (run / FINAL).exists()
    assert RunDir(run).weights("init").name == "init.pt" and run_state(run).state == "done"


# --- the README's damage table, a test per row -----------------------------------------------

def _wrong_shape(run: Path, name: str) -> None:
    if name in (METRICS, HPARAMS):
        (run / name).write_text('["done"]')
    elif name == MEASURES:
        (run / name).write_text('{"values": "x"}')
    elif name == CONFIG:
        (run / name).write_text("- model\n- data\n")
    elif name == HISTORY:
        (run / name).write_text("step,loss\n1,2.0\n")
    else:  # weights: a whole safetensors file, but not the suite's
        (run / name).unlink()
        save_file({"w": torch.zeros(2)}, str(run / name))


def _out_of_range(run: Path, name: str) -> None:
    with safe_open(str(run / name), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(run / name))
    meta["model_config"] = json.dumps({**json.loads(meta["model_config"]), "dim": 1_000_000})
    (run / name).unlink()
    save_file(tensors, str(run / name), metadata=meta)


def damage_file(run: Path, name: str, kind: str) -> None:
    path = run / name
    if kind == "missing":
        path.unlink()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        blob = path.read_bytes()
        path.write_bytes(blob[: len(blob) // 2])
    elif kind == "garbage":
        path.write_bytes(b"\x00\xffnot what it should be\x00" * 8)
    elif kind == "wrong shape":
        _wrong_shape(run, name)
    elif kind == "symlink":  # even a link to a sound copy: run files are the files themselves
        elsewhere = run.parent / f"elsewhere-{name}"
        shutil.copy2(path, elsewhere)
        path.unlink()
        path.symlink_to(elsewhere)
    elif kind == "out of range":
        _out_of_range(run, name)
    else:
        raise ValueError(kind)


KINDS = ("missing", "empty", "truncated", "garbage", "wrong shape", "symlink")
# (file, kinds, state srr-status reports, what a relaunch does); the README's damage table.
TABLE = [
    (METRICS, ("missing",), "interrupted", "retrain"),
    (METRICS, KINDS[1:], "damaged", "retrain"),
    (CONFIG, KINDS, "damaged", "rewrite"),
    (HPARAMS, KINDS, "damaged", "rewrite"),
    (INIT, (*KINDS, "out of range"), "damaged", "retrain"),
    (FINAL, (*KINDS, "out of range"), "damaged", "retrain"),
    (HISTORY, KINDS, "damaged", "retrain"),
    (MEASURES, ("missing",), "interrupted", "remeasure"),
    (MEASURES, KINDS[1:], "damaged", "remeasure"),
    (CHECKPOINT, ("missing",), "interrupted", "retrain"),
    (CHECKPOINT, (*KINDS[1:], "out of range"), "damaged", "retrain"),
    ("checkpoint left over", ("present",), "done", "remove"),
    ("light copy: " + HISTORY, KINDS, "damaged", "restore"),
]
ROWS = [pytest.param(f, k, s, fix, id=f"{f}-{k}") for f, kinds, s, fix in TABLE for k in kinds]


def prepare(reference: Path, tmp_path: Path, file: str, kind: str) -> tuple[Path, str]:
    """The reference run (or its unfinished or light copy) with ``file`` damaged in ``kind``."""
    if file == CHECKPOINT:
        run = unfinished(reference, tmp_path)
    elif file.startswith("light copy"):
        run, file = copy_run(reference, tmp_path), HISTORY
        for name in (INIT, FINAL):
            (run / name).unlink()
    else:
        run = copy_run(reference, tmp_path)
    if file == "checkpoint left over":
        (run / CHECKPOINT).write_bytes(b"killed between metrics.json and its removal")
        return run, CHECKPOINT
    if kind == "wrong shape" and file == MEASURES and not HAVE_MEASURES:
        pytest.skip("no measures.json without the measures package")
    if file == MEASURES and not (run / MEASURES).exists():
        pytest.skip("no measures.json without the measures package")
    damage_file(run, file, kind)
    return run, file


@pytest.mark.slow
@pytest.mark.parametrize("file, kind, state, fix", ROWS)
def test_damage_table_row(cfg, reference, tmp_path, capsys, file, kind, state, fix):
    run, name = prepare(reference, tmp_path, file, kind)
    metrics = json.loads((reference / METRICS).read_text())
    before = RunDir(run).damage()
    seen = run_state(run, measure_cfg=cfg.get("measure"))
    assert seen.state == state, seen.reason
    if state == "damaged":
        assert name in seen.reason and seen.reason == "; ".join(map(str, (d for d in before if d.fix != "remove")))
    untouched = {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()}
    out, text = job(cfg, run, capsys)
    for d in before:  # the relaunch says what srr-status named, word for word
        assert f": {d} -> {run}" in text
    after = RunDir(run)
    if fix == "restore":  # a copy without weights: named with the fix by hand, nothing retrained or removed
        assert "damaged: history.csv" in text and "git checkout" in text
        assert all((run / n).stat().st_mtime_ns == t for n, t in untouched.items() if n != ".lock")
        return
    assert out.state in ("trained", "finished_before"), out.message
    assert after.damage() == [] and complete(run, cfg.get("measure"))
    if fix == "retrain":
        assert f"done: " in text and drop(out.metrics) == drop(metrics)
    else:  # the record is kept: not retrained
        assert (run / METRICS).stat().st_mtime_ns == untouched[METRICS] and "done: " not in text
    if fix == "rewrite":
        assert (run / name).read_bytes() == (reference / name).read_bytes() and not (run / name).is_symlink()
    if fix == "remeasure" and kind != "missing":
        assert (run / f"{MEASURES}.corrupt").exists() or (run / f"{MEASURES}.corrupt").is_symlink()
    if fix == "remove":
        assert not (run / CHECKPOINT).exists()


def test_a_config_cut_anywhere_is_named_even_where_the_rest_is_valid_yaml(cfg, tmp_path):
    # A cut at a line boundary can leave valid YAML holding every section; the end marker
    # still tells it from a whole file, at every cut.
    from srr_bench.train import write_run_config

    write_run_config(cfg, tmp_path)
    whole = (tmp_path / CONFIG).read_text()
    assert RunDir(tmp_path).read_config()["model"] == cfg["model"]
    cuts = [i + 1 for i, ch in enumerate(whole[:-1]) if ch == "\n"] + [len(whole) // 2, len(whole) - 1]
    for cut in cuts:
        (tmp_path / CONFIG).write_text(whole[:cut])
        with pytest.raises(RunFileError):
            RunDir(tmp_path).read_config()
    legacy = whole.split("\n", 1)[1].removesuffix("# end of config.yaml\n")  # written before the markers
    (tmp_path / CONFIG).write_text(legacy)
    assert RunDir(tmp_path).read_config()["model"] == cfg["model"]
