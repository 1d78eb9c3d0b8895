"""Model files: self-describing, rebuildable, and never a door for pickled code."""
import pytest
import torch

from srr_bench.checkpoints import CheckpointError, load_model, pickle_protocol, refused_globals, safe_load, save_model
from srr_bench.models import MODELS, build_model

SMALL = dict(image_size=16, patch_size=4, channels=3, num_classes=5, dim=32, depth=2, heads=4)


class Payload:  # stands for arbitrary code inside a pickle
    pass


@pytest.mark.parametrize("name", MODELS.names())
def test_round_trip_rebuilds_every_model(tmp_path, name):
    m = build_model(dict(SMALL, name=name)).eval()
    save_model(m, tmp_path / "m.pt", meta=dict(epoch=3))
    raw = torch.load(tmp_path / "m.pt", weights_only=True)  # plain tensors and containers only
    assert raw["format"].startswith("srr-bench/model/") and raw["meta"]["epoch"] == 3
    m2 = load_model(tmp_path / "m.pt").eval()
    assert type(m2) is type(m) and m2.config == m.config
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(m(x), m2(x))


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


def test_corrupt_truncated_missing_and_foreign_files(tmp_path):
    m = build_model(dict(SMALL, name="crate"))
    save_model(m, tmp_path / "m.pt")
    blob = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(blob[: len(blob) // 2])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "foreign.pt")
    for name, words in [("trunc.pt", "corrupt"), ("junk.pt", "corrupt"), ("missing.pt", "no such"),
                        ("foreign.pt", "neither an srr-bench model file")]:
        with pytest.raises(CheckpointError, match=words) as e:
            load_model(tmp_path / name)
        assert "\n" not in str(e.value)



@pytest.mark.parametrize("protocol", [4, 5])
@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_protocols_4_and_5_load_as_the_same_model(tmp_path, protocol, zipped):
    """torch's weights-only unpickler cannot parse protocol 4's opcodes; such a file of tensors still loads."""
    m = build_model(dict(SMALL, name="crate_t")).eval()
    save_model(m, tmp_path / "p2.pt", meta=dict(epoch=3, note="x"))
    obj = torch.load(tmp_path / "p2.pt", weights_only=True)
    obj["meta"]["layers"] = {f"l{i}": "x" for i in range(300)}  # > 256 memo slots, one string many times
    torch.save(obj, tmp_path / "p4.pt", pickle_protocol=protocol, _use_new_zipfile_serialization=zipped)
    with pytest.raises(Exception, match="operand|protocol"):  # the control: torch alone refuses it
        torch.load(tmp_path / "p4.pt", weights_only=True)
    assert pickle_protocol(tmp_path / "p4.pt") == protocol
    back = safe_load(tmp_path / "p4.pt")
    assert back["meta"] == obj["meta"] and back["model_config"] == obj["model_config"]
    assert back["state_dict"].keys() == obj["state_dict"].keys()
    assert all(torch.equal(back["state_dict"][k], v) for k, v in obj["state_dict"].items())
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(load_model(tmp_path / "p4.pt").eval()(x), m(x))


def test_truncated_protocol_4_file_is_one_line(tmp_path):
    torch.save({"w": torch.zeros(3)}, tmp_path / "p4.pt", pickle_protocol=4, _use_new_zipfile_serialization=False)
    blob = (tmp_path / "p4.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(blob[:40])
    with pytest.raises(CheckpointError, match="pickle protocol 4") as e:
        load_model(tmp_path / "cut.pt")
    assert "\n" not in str(e.value)


def test_state_dict_that_does_not_fit_is_refused(tmp_path):
    m = build_model(dict(SMALL, name="crate"))
    save_model(m, tmp_path / "m.pt")
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    raw["model_config"]["dim"] = 64
    torch.save(raw, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model(tmp_path / "bad.pt")
