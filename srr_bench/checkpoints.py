"""Model files and the resumable training state: safetensors, never a pickle.

The suite writes weights (``init.safetensors``, ``final.safetensors``) as safetensors: plain
tensors, with the model config and a note as JSON in the file's metadata::

    {"format": "srr-bench/model/2", "model_config": "{...}", "meta": "{...}"}

so a file rebuilds its model alone (``load_model``) and loading never runs anything. The
resumable state (``checkpoint.safetensors``) is the same kind of file: the model's and the
optimizer's tensors and the RNG states as tensors, and the rest (optimizer hyperparameters,
counters, history rows) as JSON in the metadata.

Foreign files and runs written before (``init.pt``, ``final.pt``, ``checkpoint.pt``, a released
CRATE ``.pth``) load only through torch's weights-only reader; a file holding Python objects
other than tensors and containers is refused, naming them. Files saved with pickle protocol 4
or 5 (not torch's default; opcodes the weights-only reader does not parse) are refused in one
line saying how to re-save them: the suite no longer rewrites them, since it writes no pickle.
"""
from __future__ import annotations

import io
import json
import math
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from collections import deque
from pathlib import Path
from typing import Any, Optional, Union

import torch

from .io import atomic_write
from .models import ModelConfig, TokenClassifier, build_model
from .rundir import MODEL_FORMAT, STATE_FORMAT, safetensors_metadata

FORMAT_PT = "srr-bench/model/1"  # the pickled model files of runs written before safetensors
FORMAT = MODEL_FORMAT
PathLike = Union[str, os.PathLike]


class CheckpointError(ValueError):
    """A model file that cannot be trusted or understood; the message says why in one line."""


def save_model(model: TokenClassifier, path: PathLike, meta: Optional[dict[str, Any]] = None) -> None:
    """The model's weights as safetensors, its config and ``meta`` as JSON in the metadata."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    _write_safetensors(path, tensors, format=MODEL_FORMAT, model_config=model.config.to_dict(), meta=meta or {})


def _write_safetensors(path: PathLike, tensors: dict[str, torch.Tensor], **metadata: Any) -> None:
    from safetensors.torch import save

    text = {k: v if isinstance(v, str) else json.dumps(v, allow_nan=True) for k, v in metadata.items()}
    blob = save(tensors, metadata=text)
    atomic_write(path, lambda f: f.write(blob))


def is_safetensors(path: PathLike) -> bool:
    """A safetensors file by its bytes (an 8-byte header length, then the JSON header's ``{``)."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{"


def read_safetensors(path: PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; one-line ``CheckpointError`` when it is not a whole one."""
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_symlink():
        raise CheckpointError(f"{path}: a symbolic link; give the file itself")
    meta, problem = safetensors_metadata(path)
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    try:
        return load_file(str(path)), meta
    except Exception as e:  # the rust reader fails with its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file ({_brief(e, 160)})") from None


def _json_meta(meta: dict[str, str], key: str, path: Path) -> Any:
    try:
        return json.loads(meta[key])
    except (KeyError, ValueError):
        raise CheckpointError(f"{path}: its metadata has no readable {key!r}") from None


# --- the resumable training state -------------------------------------------------------


def save_training_state(path: PathLike, model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any],
                        rng: torch.Tensor, cuda_rng: Optional[torch.Tensor] = None) -> None:
    """Model, optimizer and RNG tensors as safetensors; the training state (JSON: NaN and ±inf
    kept, floats exact), the optimizer's hyperparameters and non-tensor state in the metadata."""
    tensors = {f"model/{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    osd = opt.state_dict()
    plain: dict[str, dict[str, Any]] = {}
    for index, values in osd["state"].items():
        for key, v in values.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim/{index}/{key}"] = v.detach().cpu().contiguous().clone()
            else:
                plain.setdefault(str(index), {})[key] = v
    tensors["rng"] = rng.cpu().clone()
    if cuda_rng is not None:
        tensors["cuda_rng"] = cuda_rng.cpu().clone()
    config = model.config.to_dict() if hasattr(model, "config") else {}
    _write_safetensors(path, tensors, format=STATE_FORMAT, model_config=config, state=state,
                       optim=dict(param_groups=osd["param_groups"], state=plain))


def load_training_state(path: PathLike) -> dict[str, Any]:
    """``{"model", "optim", "state", "rng"[, "cuda_rng"]}`` from a resumable state: safetensors, or
    an older run's ``checkpoint.pt`` through the weights-only reader; one-line ``CheckpointError``."""
    path = Path(path)
    if not is_safetensors(path):
        obj = safe_load(path)
        if not (isinstance(obj, dict) and {"model", "optim", "state", "rng"} <= set(obj)):
            raise CheckpointError(f"{path}: not a resumable training state")
        return obj
    tensors, meta = read_safetensors(path)
    if meta.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not a resumable training state (format {meta.get('format')!r})")
    optim = _json_meta(meta, "optim", path)
    state: dict[int, dict[str, Any]] = {int(i): dict(v) for i, v in optim.get("state", {}).items()}
    for name, v in tensors.items():
        if name.startswith("optim/"):
            _, index, key = name.split("/", 2)
            state.setdefault(int(index), {})[key] = v
    out = dict(model={k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")},
               optim=dict(state=state, param_groups=optim["param_groups"]), state=_json_meta(meta, "state", path),
               rng=tensors["rng"])
    if "cuda_rng" in tensors:
        out["cuda_rng"] = tensors["cuda_rng"]
    return out


def safe_load(path: PathLike) -> Any:
    """``torch.load`` with ``weights_only=True``, turning every failure into a CheckpointError.

    A file torch refuses because it names Python callables or classes is reported as
    pickled code, with their names; one whose pickle is broken, as corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():  # torch warns before refusing a protocol it cannot read; the error says it
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        code = refused_globals(path, str(e))
        if code:
            raise _code_error(path, code) from None
        protocol = pickle_protocol(path)
        if protocol is not None and protocol >= 4:
            raise CheckpointError(
                f"{path}: pickle protocol {protocol}, which torch's weights-only reader cannot parse; re-save it "
                "with torch.save's default protocol (2) or as safetensors where it was made") from None
        raise CheckpointError(f"{path}: corrupt or not a PyTorch file (cannot be read as tensors)") from None
    except Exception as e:  # torch (and the safetensors reader it tries on some files) fail with many error types
        raise CheckpointError(f"{path}: not a readable PyTorch file ({_brief(e, 200)})") from None


def _brief(e: Exception, limit: int) -> str:
    """An exception as the tail of a one-line message (torch's messages span several lines)."""
    return f"{type(e).__name__}: {' '.join(str(e).split())[:limit]}"


def _code_error(path: Path, code: list[str]) -> CheckpointError:
    return CheckpointError(
        f"{path}: holds pickled Python code ({', '.join(code)}); refusing to unpickle it "
        "(only tensors and plain containers are loaded)"
    )


# torch's weights-only refusal of a global, in both wordings: "Unsupported global: GLOBAL
# m.f was not an allowed global by default" and, for the blocked modules (os, posix, nt,
# sys), which newer torch refuses outright: "Trying to load unsupported GLOBAL m.f whose module m is blocked".
_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+) (?:was not an allowed global|whose module \S+ is blocked)")


def refused_globals(path: PathLike, message: str = "") -> list[str]:
    """The callables and classes a file's pickle names that torch's weights-only unpickler refuses.

    Found two ways, so that neither a change in torch's wording nor a pickle protocol
    torch cannot parse (it stops at protocol 4's first opcode) hides a payload: the names
    quoted in torch's error ``message``, and the file's GLOBAL / STACK_GLOBAL opcodes
    listed by ``pickle_globals`` that are not on torch's allowlist.
    """
    allowed = _torch_allowed_globals()
    found = set(_REFUSED_GLOBAL.findall(message)) | {g for g in pickle_globals(path) if g not in allowed}
    return sorted(found)


def _torch_allowed_globals() -> set[str]:
    """What ``torch.load(weights_only=True)`` accepts: its built-in allowlist and the user's safe globals.

    The built-in list is private to torch; without it every global counts as refused,
    which errs towards calling a file unsafe rather than corrupt.
    """
    from torch import _weights_only_unpickler as wo

    builtin = set(getattr(wo, "_get_allowed_globals", dict)())
    user = getattr(torch.serialization, "get_safe_globals", list)()
    return builtin | {f"{g.__module__}.{g.__qualname__}" for g in user if hasattr(g, "__qualname__")}


_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}


def pickle_globals(path: PathLike) -> set[str]:
    """``module.name`` of every global a checkpoint's pickle names, read with pickletools (parsed, never run).

    A torch zip archive's pickle is its ``data.pkl``; a legacy (pre-zip) file is a run of
    pickles, all read. GLOBAL and INST carry their name; STACK_GLOBAL (protocol 4+) takes
    the two strings before it, followed through the memo; one whose strings cannot be
    followed is reported as ``?.?``. Reading stops quietly where the bytes stop being a pickle.
    """
    found: set[str] = set()
    try:
        stream = io.BytesIO(_pickle_bytes(Path(path)))
    except Exception:  # a broken zip fails with many error types; then there is nothing to name
        return found
    for _ in range(16):  # a legacy file: magic, protocol, sys info, object, storage keys, then raw bytes
        start = stream.tell()
        try:
            _scan_pickle(stream, found)
        except Exception:  # pickletools fails with many error types where the pickle ends or breaks
            break
        if stream.tell() == start:
            break
    return found


def _pickle_bytes(path: Path) -> bytes:
    """The zip archive's ``data.pkl``, or the whole file if it is a legacy one (starts with a pickle's PROTO)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
            return z.read(names[0]) if names else b""
    blob = path.read_bytes()
    return blob if blob[:1] == pickle.PROTO else b""


def _scan_pickle(stream: io.BytesIO, found: set[str]) -> None:
    memo: dict[int, Any] = {}
    recent: deque[Any] = deque([None, None], maxlen=2)  # what the last two ops pushed: strings or None
    for op, arg, _ in pickletools.genops(stream):
        name = op.name
        if name in ("GLOBAL", "INST"):
            found.add(arg.replace(" ", "."))
        elif name == "STACK_GLOBAL":
            module, attr = recent
            found.add(f"{module}.{attr}" if isinstance(module, str) and isinstance(attr, str) else "?.?")
        if name in _STRING_OPS:
            recent.append(arg)
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            recent.append(memo.get(arg))
        elif name == "MEMOIZE":
            memo[len(memo)] = recent[-1]
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = recent[-1]
        elif op.stack_after:
            recent.append(None)



def pickle_protocol(path: PathLike) -> Optional[int]:
    """The protocol of a checkpoint's (first) pickle, from its PROTO opcode; None if it has none."""
    try:
        blob = _pickle_bytes(Path(path))
    except Exception:  # a broken zip fails with many error types
        return None
    return blob[1] if len(blob) >= 2 and blob[:1] == pickle.PROTO else None


def load_model(path: PathLike, *, heads: Optional[int] = None, **config_overrides: Any) -> TokenClassifier:
    """Rebuild a model from an srr-bench weights file (safetensors, or an older run's ``.pt``) or a
    reference CRATE state dict (a ``.pth``/``.pt`` through the weights-only reader, or safetensors).

    A reference state dict (the official CRATE code's names, optionally DataParallel's
    ``module.`` prefix, optionally inside {"model": ...} or {"state_dict": ...}) becomes
    a ``crate`` model; see ``from_reference_state_dict`` for ``heads``.
    """
    path = Path(path)
    if is_safetensors(path):
        tensors, meta = read_safetensors(path)
        if meta.get("format") == MODEL_FORMAT:
            return model_from_file(_json_meta(meta, "model_config", path), tensors, path, config_overrides)
        obj: Any = tensors
    else:
        obj = safe_load(path)
        if isinstance(obj, dict) and obj.get("format") == FORMAT_PT:
            return model_from_file(obj["model_config"], obj["state_dict"], path, config_overrides)
    sd = _unwrap_state_dict(obj)
    if sd is not None and any(k.startswith("transformer.layers.") for k in sd):
        return from_reference_state_dict(sd, heads=heads, **config_overrides)
    raise CheckpointError(f"{path}: neither an srr-bench model file ({FORMAT}) nor a reference CRATE state dict")


def model_from_file(model_config: Any, state_dict: dict[str, torch.Tensor], path: Path,
                    overrides: Optional[dict[str, Any]] = None) -> TokenClassifier:
    """The model a file's config describes, holding the file's weights: the one building step of
    ``load_model`` (checks of the config against the tensors belong before ``build_model``)."""
    if not isinstance(model_config, dict):
        raise CheckpointError(f"{path}: its model config is not a mapping")
    try:
        cfg = ModelConfig.from_dict({**model_config, **(overrides or {})})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: model config out of range ({_brief(e, 200)})") from None
    check_config_fits_tensors(cfg, state_dict, path)
    model = build_model(cfg)
    _load_state(model, state_dict, path)
    return model


def check_config_fits_tensors(cfg: ModelConfig, state_dict: Any, path: Path) -> None:
    """Refuse, in one line and before any model is allocated, a config whose model differs from the file's tensors.

    The model is built on torch's ``meta`` device (shapes only, no memory), and every
    parameter's and buffer's name and shape must be the file's. A real model is then no
    larger than the tensors already read, so a config declaring ``dim=1000000`` beside
    small weights costs nothing. A config deeper than the file holds tensors is refused
    before even the meta build (each layer holds at least one tensor), so that its cost
    too is bounded by the file.
    """
    if not (isinstance(state_dict, dict) and all(isinstance(v, torch.Tensor) for v in state_dict.values())):
        raise CheckpointError(f"{path}: its state dict is not a mapping of names to tensors")
    held = {k: tuple(v.shape) for k, v in state_dict.items()}
    if not isinstance(cfg.depth, int) or cfg.depth > len(held):
        raise CheckpointError(f"{path}: its model config declares depth={cfg.depth}, more layers than the file "
                              f"holds tensors ({len(held)}); the config does not describe these weights")
    try:
        with torch.device("meta"):
            implied = {k: tuple(v.shape) for k, v in build_model(cfg).state_dict().items()}
    except (RuntimeError, TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: its model config does not build a model ({_brief(e, 200)})") from None
    if implied == held:
        return
    missing, extra = sorted(implied.keys() - held.keys()), sorted(held.keys() - implied.keys())
    wrong = [k for k in sorted(implied.keys() & held.keys()) if implied[k] != held[k]]
    what = (f"{wrong[0]} is {list(held[wrong[0]])} in the file but {list(implied[wrong[0]])} by the config" if wrong
            else f"tensors missing from the file: {missing[:3]}" if missing else f"tensors the model lacks: {extra[:3]}")
    raise CheckpointError(f"{path}: its model config does not fit its tensors ({what}; "
                          f"{len(wrong)} of different shape, {len(missing)} missing, {len(extra)} extra); "
                          "the file is damaged or its config was edited")


def _load_state(model: TokenClassifier, sd: dict[str, torch.Tensor], where: Any) -> None:
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        msg = " ".join(str(e).split())
        raise CheckpointError(f"{where}: state dict does not fit the model ({msg[:300]})") from None


def _unwrap_state_dict(obj: Any) -> Optional[dict[str, torch.Tensor]]:
    if not isinstance(obj, dict):
        return None
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        return None
    return {k.removeprefix("module."): v for k, v in obj.items()}


# Reference CRATE (Ma-Lab-Berkeley/CRATE, model/crate.py) parameter names -> ours.
_REFERENCE_NAMES = [
    (r"^to_patch_embedding\.1\.", "embed.patch_norm."),
    (r"^to_patch_embedding\.2\.", "embed.proj."),
    (r"^to_patch_embedding\.3\.", "embed.norm."),
    (r"^pos_embedding$", "embed.pos_embedding"),
    (r"^cls_token$", "embed.cls_token"),
    (r"^transformer\.layers\.(\d+)\.0\.norm\.", r"layers.\1.norm1."),
    (r"^transformer\.layers\.(\d+)\.0\.fn\.qkv\.", r"layers.\1.mssa.qkv."),
    (r"^transformer\.layers\.(\d+)\.0\.fn\.to_out\.0\.", r"layers.\1.mssa.out_op.proj."),
    (r"^transformer\.layers\.(\d+)\.1\.norm\.", r"layers.\1.norm2."),
    (r"^transformer\.layers\.(\d+)\.1\.fn\.weight$", r"layers.\1.ista.weight"),
    (r"^mlp_head\.0\.", "head.norm."),
    (r"^mlp_head\.1\.", "head.fc."),
]

# Published sizes (dim, depth) -> heads: CRATE tiny / small / base / large.
_PUBLISHED_HEADS = {(384, 12): 6, (576, 12): 12, (768, 12): 12, (1024, 24): 16}


def rename_reference_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        k = k.removeprefix("module.")
        for pattern, repl in _REFERENCE_NAMES:
            new, n = re.subn(pattern, repl, k)
            if n:
                out[new] = v
                break
        else:
            raise CheckpointError(f"unexpected parameter {k!r} in a reference CRATE state dict")
    return out


def from_reference_state_dict(
    sd: dict[str, torch.Tensor], *, heads: Optional[int] = None, channels: int = 3, **overrides: Any
) -> TokenClassifier:
    """A ``crate`` model holding the weights of a reference CRATE state dict.

    Sizes are read off the tensor shapes. The number of heads is not in the shapes: it
    is taken from the published sizes (tiny 6, small 12, base 12, large 16) unless given
    (e.g. the CRATE_base_demo checkpoint has dim 768 with 6 heads).
    """
    sd = rename_reference_state_dict(sd)
    dim = sd["embed.pos_embedding"].shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("layers."))
    if heads is None:
        if (dim, depth) not in _PUBLISHED_HEADS:
            raise CheckpointError(f"reference CRATE with dim={dim}, depth={depth} is not a published size; pass heads=")
        heads = _PUBLISHED_HEADS[(dim, depth)]
    patch_dim = sd["embed.patch_norm.weight"].shape[0]
    patch = math.isqrt(patch_dim // channels)
    n_patches = sd["embed.pos_embedding"].shape[1] - 1
    cfg = dict(
        name="crate", dim=dim, depth=depth, heads=heads, dim_head=sd["layers.0.mssa.qkv.weight"].shape[0] // heads,
        channels=channels, patch_size=patch, image_size=patch * math.isqrt(n_patches),
        num_classes=sd["head.fc.weight"].shape[0],
    )
    model = build_model({**cfg, **overrides})
    _load_state(model, sd, "reference CRATE state dict")
    return model
