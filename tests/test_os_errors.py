"""Operating-system errors in one line (issue 17, item 6): a full disk, a read-only directory,
a name too long, a closed pipe. The line names the path and errno's cause; nothing
half-written ever reads as finished; a sweep records the failure per run and goes on.

How the failures are produced, without filling the real disk or mounting anything:

- a full disk: the temporary file of ``atomic_write`` is opened on ``/dev/full``, where the
  kernel answers every write with ENOSPC (so torch.save meets a real full disk and reports
  it its own way, as ``RuntimeError: [enforce fail at inline_container.cc] unexpected pos``);
- a read-only directory: the tests run as root, whom chmod does not stop, so an audit hook
  (``sys.addaudithook``) answers every open-for-writing, mkdir and rename under a directory
  with EROFS, what a read-only mount answers at the same system calls; the hook is inert
  outside the ``refuse_writes`` context (audit hooks cannot be removed);
- a name too long: a 300-character file name, refused by the real file system;
- a closed pipe: a subprocess whose stdout reader has closed its end.
"""
import contextlib
import errno
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from srr_bench.io import WriteError, atomic_write, os_error_line, write_csv, write_json

ROOT = Path(__file__).resolve().parents[1]
FAST = ("measure=none",)
needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")

# --- the simulated file systems ---------------------------------------------------------------

_REFUSED: dict[str, int] = {}  # directory -> errno answered to writes under it (while refuse_writes is active)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _refused(path) -> int:
    if not _REFUSED or isinstance(path, int):
        return 0
    p = os.path.abspath(os.fsdecode(path))
    return next((code for d, code in _REFUSED.items() if p == d or p.startswith(d + os.sep)), 0)


def _audit(event: str, args: tuple) -> None:
    if not _REFUSED:
        return
    if event == "open":
        path, mode, flags = args
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & _WRITE_FLAGS)
        targets = [path] if writing else []
    elif event in ("os.mkdir", "os.rename", "os.link", "os.symlink"):
        targets = [args[0], args[1]] if event != "os.mkdir" else [args[0]]
    else:
        return
    for path in targets:
        code = _refused(path)
        if code and not (event == "os.mkdir" and os.path.isdir(path)):  # an existing directory: EEXIST first
            raise OSError(code, os.strerror(code), os.fsdecode(path))


sys.addaudithook(_audit)


@contextlib.contextmanager
def refuse_writes(directory: Path, code: int = errno.EROFS):
    """Writes under ``directory`` fail with ``code`` (EROFS: a read-only mount) at the system call."""
    _REFUSED[os.path.abspath(directory)] = code
    try:
        yield
    finally:
        _REFUSED.pop(os.path.abspath(directory), None)


def disk_full(monkeypatch, when=lambda tmp_name: True) -> list[str]:
    """Temporary files of atomic_write chosen by ``when(name)`` are written to /dev/full (ENOSPC).
    Returns the names that were so redirected."""
    real = tempfile.mkstemp
    hit: list[str] = []

    def mkstemp(suffix=None, prefix=None, dir=None, text=False):
        fd, name = real(suffix, prefix, dir, text)
        if not when(name):
            return fd, name
        hit.append(name)
        os.close(fd)  # the name stays (removed by atomic_write), the data goes to a full device
        return os.open("/dev/full", os.O_WRONLY), name

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return hit


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


# --- the line ---------------------------------------------------------------------------------

@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.ENAMETOOLONG, errno.EACCES, errno.EPIPE])
def test_an_os_error_is_one_line_naming_the_path_and_the_cause(code):
    e = OSError(code, os.strerror(code), "/data/runs/r1/metrics.json")
    line = os_error_line(e, doing="write")
    assert line.startswith(f"cannot write /data/runs/r1/metrics.json: {os.strerror(code)} (")
    assert "\n" not in line and "[Errno" not in line
    assert str(WriteError(code, os.strerror(code), "/x/y.csv")).startswith(f"cannot write /x/y.csv: {os.strerror(code)}")
    assert isinstance(WriteError(code, "x", "y"), OSError)  # callers catching OSError still catch it


def test_the_cause_comes_from_errno_when_the_error_has_no_text():
    assert os_error_line(OSError(errno.ENOSPC, None)) == f"{os.strerror(errno.ENOSPC)} (free some space or write elsewhere)"
    assert os_error_line(OSError("no errno at all"), path="/p") == "/p: no errno at all"


# --- atomic_write: a full disk, a name too long, a read-only directory -----------------------------

@needs_dev_full
@pytest.mark.parametrize("writer", ["torch.save", "json", "csv"])
def test_a_full_disk_is_a_write_error_and_the_old_file_stays(writer, tmp_path, monkeypatch):
    path = tmp_path / ("w.pt" if writer == "torch.save" else f"w.{writer}")
    path.write_bytes(b"the previous version")
    disk_full(monkeypatch)
    with pytest.raises(WriteError) as info:
        if writer == "torch.save":  # torch reports ENOSPC as RuntimeError '[enforce fail ...] unexpected pos'
            atomic_write(path, lambda f: torch.save({"w": torch.zeros(50_000)}, f))
        elif writer == "json":
            write_json(path, {"values": list(range(5000))})
        else:
            write_csv(path, [{"a": i, "b": i * 2} for i in range(5000)])
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert str(info.value) == f"cannot write {path}: {os.strerror(errno.ENOSPC)} (free some space or write elsewhere)"
    assert path.read_bytes() == b"the previous version"  # never half of the new one
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_a_name_too_long_is_refused_before_anything_is_written(tmp_path):
    long = tmp_path / ("m" * 300 + ".json")
    with pytest.raises(WriteError) as info:
        write_json(long, {"a": 1})
    assert info.value.errno == errno.ENAMETOOLONG and info.value.filename == str(long)
    line = one_line(str(info.value))
    assert line.startswith(f"cannot write {long}: {os.strerror(errno.ENAMETOOLONG)} (choose a shorter name")
    assert "305 bytes" in line and list(tmp_path.iterdir()) == []
    fits = tmp_path / ("n" * 250 + ".json")  # 255 bytes: its temporary sibling's name is shortened to fit
    write_json(fits, {"a": 1})
    assert json.loads(fits.read_text()) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == [fits.name]


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_a_read_only_directory_is_a_write_error(code, tmp_path):
    (tmp_path / "ro").mkdir()
    with refuse_writes(tmp_path / "ro", code):
        with pytest.raises(WriteError) as info:
            write_json(tmp_path / "ro" / "metrics.json", {"a": 1})
        with pytest.raises(WriteError) as nested:  # the directory itself cannot be made
            write_json(tmp_path / "ro" / "sub" / "metrics.json", {"a": 1})
    assert info.value.errno == code and str(info.value).startswith(
        f"cannot write {tmp_path / 'ro' / 'metrics.json'}: {os.strerror(code)} (")
    assert nested.value.filename == str(tmp_path / "ro" / "sub" / "metrics.json")
    assert list((tmp_path / "ro").iterdir()) == []
    write_json(tmp_path / "ro" / "metrics.json", {"a": 1})  # the hook is inert outside the context


# --- srr-analyze --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def table(tmp_path_factory):
    from analysis.cli import main
    from tests.conftest_analysis import make_sweep

    tmp = tmp_path_factory.mktemp("os-errors")
    make_sweep(tmp / "sweep")
    assert main(["collect", str(tmp / "sweep"), "-o", str(tmp / "results.csv")]) == 0
    return tmp / "results.csv"


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC])
@pytest.mark.parametrize("out_exists", [True, False])
def test_srr_analyze_out_on_a_read_only_or_full_directory_is_one_line(table, tmp_path, capsys, code, out_exists):
    from analysis.cli import main

    out = tmp_path / "out"
    if out_exists:
        out.mkdir()
    capsys.readouterr()
    with refuse_writes(tmp_path, code):
        status = main(["correlate", str(table), "--out", str(out)])
    text = capsys.readouterr().err  # the notes on the runs used come first, then the error
    assert "Traceback" not in text and [line for line in text.splitlines() if "error" in line] == [text.splitlines()[-1]]
    err = text.splitlines()[-1]
    assert status == 1 and err.startswith(f"srr-analyze: error: {out}") and f": {os.strerror(code)} (" in err
    assert not out.exists() or list(out.iterdir()) == []


def test_srr_analyze_with_a_closed_pipe_ends_quietly(table, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", "import sys; from analysis.cli import main; sys.exit(main())",
           "correlate", str(table), "--out", str(out)]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # srr-analyze ... | head -0
    err = p.stderr.read().decode()
    assert p.wait(timeout=300) in (0, 141)
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err
    assert (out / "correlations.csv").exists() or any(out.glob("*.csv"))  # the files were written first


def test_srr_measure_list_with_a_closed_pipe_ends_quietly():
    cmd = [sys.executable, "-c", "import sys; from measures.cli import main; sys.exit(main())", "--list"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=300) in (0, 141) and "Traceback" not in err and "Exception ignored" not in err, err


def test_srr_attention_only_out_on_a_read_only_directory_is_one_line(tmp_path, capsys):
    from srr_bench.attention_only import main

    with refuse_writes(tmp_path):
        status = main(["--out", str(tmp_path / "ao"), "--dim", "8", "--heads", "2", "--tokens", "5", "--layers", "1",
                       "--seeds", "1"])
    err = one_line(capsys.readouterr().err)
    assert status == 1 and err.startswith(f"srr-attention-only: error: {tmp_path / 'ao'}")
    assert os.strerror(errno.EROFS) in err


# --- a sweep's job -------------------------------------------------------------------------------

@needs_dev_full
def test_a_job_whose_checkpoint_meets_a_full_disk_fails_in_one_line_and_is_retried(small_cfg, tmp_path, monkeypatch, capsys):
    from sweeps.runner import run_job
    from sweeps.state import run_state

    cfg = small_cfg(*FAST)
    run = tmp_path / "run"
    hit = disk_full(monkeypatch, lambda name: Path(name).parent == run and Path(name).name.startswith(".checkpoint."))
    out = run_job(cfg, run)
    err = one_line(capsys.readouterr().err)
    assert hit and out.state == "failed" and "enforce fail" not in err
    assert f": {os.strerror(errno.ENOSPC)} (free some space" in out.message and str(run) in out.message
    assert err.startswith("FAILED (train): WriteError: cannot write ") and out.message in err
    assert json.loads((run / "failure.json").read_text())["error"] == out.message  # recorded per run
    assert run_state(run).state == "failed" and not (run / "metrics.json").exists()
    assert not list(run.glob(".*.tmp"))  # nothing half-written
    monkeypatch.undo()  # space freed: the relaunch retries and finishes
    assert run_job(cfg, run).state == "trained" and run_state(run).state == "done"


@needs_dev_full
def test_a_job_on_a_disk_too_full_for_its_failure_record_still_says_why(small_cfg, tmp_path, monkeypatch, capsys):
    from sweeps.runner import run_job

    run = tmp_path / "run"
    disk_full(monkeypatch, lambda name: Path(name).parent == run)  # every file of the run, failure.json too
    out = run_job(small_cfg(*FAST), run)
    err = one_line(capsys.readouterr().err)
    assert out.state == "failed" and os.strerror(errno.ENOSPC) in out.message
    assert "[failure.json not written: " in err and not (run / "failure.json").exists()
    assert not (run / "metrics.json").exists()


@needs_dev_full
@pytest.mark.slow
def test_a_sweep_goes_on_past_a_run_on_a_full_disk(tmp_path):
    """srr-train -m over two runs; every write into the first run's directory meets a full disk."""
    code = f"""
import os, tempfile
real = tempfile.mkstemp
full = []
def mkstemp(suffix=None, prefix=None, dir=None, text=False):
    fd, name = real(suffix, prefix, dir, text)
    parent = os.path.dirname(name)
    if os.path.basename(parent).startswith("crate-") and (not full or full[0] == parent):
        full[:] = [parent]
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), name
    return fd, name
tempfile.mkstemp = mkstemp
from sweeps.cli import train_main
train_main()
"""
    sweep = tmp_path / "sweep"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code, "-m", f"hydra.sweep.dir={sweep}", "train.epochs=1",
                        "train.device=cpu", "train.progress=false", *FAST, "seed=0,1"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "enforce fail" not in r.stderr, r.stderr[-3000:]
    failed = [line for line in r.stderr.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and os.strerror(errno.ENOSPC) in failed[0], r.stderr[-3000:]
    assert r.stdout.count("done: test_acc") == 1  # the other run trained
    runs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert sum((p / "metrics.json").exists() for p in runs) == 1


def test_a_closed_stdout_ends_a_job_quietly_and_leaves_the_run_resumable(small_cfg, tmp_path, monkeypatch):
    from sweeps.runner import run_job
    from sweeps.state import run_state

    class ClosedPipe:
        def write(self, s):
            raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

        def flush(self):
            raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

        def fileno(self):
            raise OSError("no descriptor")  # nothing to point at /dev/null

    cfg = small_cfg(*FAST)
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    with pytest.raises(SystemExit) as info:
        run_job(cfg, tmp_path / "run")
    assert info.value.code == 141 and not (tmp_path / "run" / "failure.json").exists()
    monkeypatch.undo()
    assert run_state(tmp_path / "run").state != "failed"
    assert run_job(cfg, tmp_path / "run").state in ("trained", "finished_before")
