"""Model files and training states: safetensors, self-describing, rebuildable, never a door for pickled code."""
import json
import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from srr_bench.checkpoints import (FORMAT, CheckpointError, is_safetensors, load_model, load_training_state,
                                   pickle_protocol, refused_globals, save_model, save_training_state)
from srr_bench.models import MODELS, build_model

SMALL = dict(image_size=16, patch_size=4, channels=3, num_classes=5, dim=32, depth=2, heads=4)


class Payload:  # stands for arbitrary code inside a pickle
    pass


def rewrite_config(src, dst, **changes):
    """``src`` saved again as ``dst`` with its metadata's model config changed."""
    tensors = load_file(str(src))
    with safe_open(str(src), framework="pt") as f:
        meta = f.metadata()
    meta["model_config"] = json.dumps({**json.loads(meta["model_config"]), **changes})
    save_file(tensors, str(dst), metadata=meta)


@pytest.mark.parametrize("name", MODELS.names())
def test_round_trip_rebuilds_every_model(tmp_path, name):
    m = build_model(dict(SMALL, name=name)).eval()
    save_model(m, tmp_path / "m.safetensors", meta=dict(epoch=3))
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:  # plain tensors, the config as JSON
        meta = f.metadata()
        assert set(f.keys()) == set(m.state_dict())
    assert meta["format"] == FORMAT and json.loads(meta["meta"]) == {"epoch": 3}
    assert json.loads(meta["model_config"]) == m.config.to_dict()
    assert not (tmp_path / "m.safetensors").read_bytes().startswith(b"PK")  # no zip of pickles
    m2 = load_model(tmp_path / "m.safetensors").eval()
    assert type(m2) is type(m) and m2.config == m.config
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(m(x), m2(x))


def test_model_files_of_older_runs_still_load(tmp_path):
    """init.pt / final.pt as the suite wrote them before safetensors: read by the weights-only reader."""
    m = build_model(dict(SMALL, name="crate_c")).eval()
    old = {"format": "srr-bench/model/1", "model_config": m.config.to_dict(), "meta": {"epoch": 2},
           "state_dict": {k: v.clone() for k, v in m.state_dict().items()}}
    torch.save(old, tmp_path / "final.pt")
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(load_model(tmp_path / "final.pt").eval()(x), m(x))


def test_training_state_round_trips_without_pickle(tmp_path):
    """Model, optimizer (tensors and hyperparameters), RNG and the JSON state, NaN and ±inf kept."""
    m = build_model(dict(SMALL, name="crate"))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, betas=(0.9, 0.95))
    m(torch.randn(2, 3, 16, 16)).sum().backward()
    opt.step()
    state = dict(epoch=1, history=[dict(epoch=0, train_loss=float("nan"), lr=0.1 + 0.2)], steps_to={"0.1": None},
                 sum_train_loss=float("inf"), stopped=False)
    rng = torch.get_rng_state()
    save_training_state(tmp_path / "c.safetensors", m, opt, state, rng)
    assert is_safetensors(tmp_path / "c.safetensors")
    back = load_training_state(tmp_path / "c.safetensors")
    assert torch.equal(back["rng"], rng) and back["state"]["history"][0]["lr"] == 0.1 + 0.2
    assert math.isnan(back["state"]["history"][0]["train_loss"]) and back["state"]["sum_train_loss"] == math.inf
    assert {k: v for k, v in back["state"].items() if k != "history"} == {k: v for k, v in state.items() if k != "history"}
    ref = opt.state_dict()
    opt2 = torch.optim.AdamW(build_model(dict(SMALL, name="crate")).parameters(), lr=5.0)
    opt2.load_state_dict(back["optim"])
    got = opt2.state_dict()
    assert got["param_groups"][0]["lr"] == 1e-3 and list(got["param_groups"][0]["betas"]) == [0.9, 0.95]
    assert got["state"].keys() == ref["state"].keys()
    for i, values in ref["state"].items():
        assert all(torch.equal(got["state"][i][k], v) for k, v in values.items())
    assert all(torch.equal(back["model"][k], v) for k, v in m.state_dict().items())


def test_pickled_code_is_refused_with_the_reason(tmp_path):
    torch.save({"state_dict": {}, "evil": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError) as e:
        load_model(tmp_path / "evil.pt")
    assert "pickled Python code" in str(e.value) and "Payload" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("message", [
    "WeightsUnpickler error: Unsupported global: GLOBAL posix.system was not an allowed global by default. Please use",
    "Weights only load failed.\n\nTrying to load unsupported GLOBAL posix.system whose module posix is blocked.\n",
])
def test_both_wordings_of_torchs_refusal_are_recognised(tmp_path, message):
    """torch words the refusal of a module it blocks outright (os, posix, sys) differently; both name the global."""
    (tmp_path / "empty.pt").write_bytes(b"")
    assert refused_globals(tmp_path / "empty.pt", message) == ["posix.system"]
    assert refused_globals(tmp_path / "empty.pt", "Weights only load failed. Unsupported operand 149") == []



@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_corrupt_truncated_missing_and_foreign_files(tmp_path, suffix):
    m = build_model(dict(SMALL, name="crate"))
    if suffix == ".pt":
        torch.save({"format": "srr-bench/model/1", "model_config": m.config.to_dict(), "meta": {},
                    "state_dict": m.state_dict()}, tmp_path / "m.pt")
        torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "foreign.pt")
    else:
        save_model(m, tmp_path / "m.safetensors")
        save_file({"fc.weight": torch.zeros(2, 2)}, str(tmp_path / "foreign.safetensors"))
    blob = (tmp_path / f"m{suffix}").read_bytes()
    (tmp_path / f"trunc{suffix}").write_bytes(blob[: len(blob) // 2])
    (tmp_path / f"junk{suffix}").write_bytes(b"not a checkpoint at all")
    (tmp_path / f"empty{suffix}").write_bytes(b"")
    for name in ("trunc", "junk", "empty", "missing", "foreign"):
        with pytest.raises(CheckpointError) as e:
            load_model(tmp_path / f"{name}{suffix}")
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(str(tmp_path / f"{name}{suffix}"))
        if name == "foreign":
            assert "neither an srr-bench model file" in msg


def test_a_symlinked_weights_file_is_refused(tmp_path):
    save_model(build_model(dict(SMALL, name="crate")), tmp_path / "m.safetensors")
    (tmp_path / "link.safetensors").symlink_to(tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="symbolic link"):
        load_model(tmp_path / "link.safetensors")


@pytest.mark.parametrize("protocol", [4, 5])
@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_protocols_4_and_5_are_refused_in_one_line_with_the_fix(tmp_path, protocol, zipped):
    """The weights-only reader cannot parse protocol 4's opcodes; the suite writes no pickle, so it
    no longer rewrites such files: one line names the protocol and how to re-save the file."""
    m = build_model(dict(SMALL, name="crate_t"))
    obj = {"format": "srr-bench/model/1", "model_config": m.config.to_dict(), "meta": {}, "state_dict": m.state_dict()}
    torch.save(obj, tmp_path / "p4.pt", pickle_protocol=protocol, _use_new_zipfile_serialization=zipped)
    assert pickle_protocol(tmp_path / "p4.pt") == protocol
    with pytest.raises(CheckpointError, match=f"pickle protocol {protocol}.*re-save") as e:
        load_model(tmp_path / "p4.pt")
    assert "\n" not in str(e.value)


def test_a_model_config_that_cannot_be_built_is_one_line(tmp_path):
    save_model(build_model(dict(SMALL, name="crate")), tmp_path / "m.safetensors")
    rewrite_config(tmp_path / "m.safetensors", tmp_path / "bad.safetensors", heads=5, dim_head=None)  # 32 % 5
    with pytest.raises(CheckpointError, match="model config out of range") as e:
        load_model(tmp_path / "bad.safetensors")
    assert "\n" not in str(e.value)


def test_state_dict_that_does_not_fit_is_refused(tmp_path):
    save_model(build_model(dict(SMALL, name="crate")), tmp_path / "m.safetensors")
    rewrite_config(tmp_path / "m.safetensors", tmp_path / "bad.safetensors", dim=64, dim_head=None)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model(tmp_path / "bad.safetensors")
