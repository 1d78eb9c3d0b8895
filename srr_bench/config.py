"""A run's config: its typed sections, their check, and composing the shipped Hydra tree.

Defaults live in one place, the YAML tree (``sweeps/conf``). The dataclasses below
declare each key and its type, with no default: ``RunConfig.read(cfg)`` checks a plain
composed config (unknown keys with the nearest known one, missing keys, wrong types,
names that are not registered, values out of range) and returns the typed config that
``train`` reads. A problem raises one ``ConfigError`` listing them all, one line each.
``model`` and ``data`` keep the package's own ``ModelConfig`` / ``DataConfig`` (their
builders take the plain sections).

Why a check and not OmegaConf structured configs: merging into a typed node converts
values (``warmup_epochs: 1`` would become ``1.0``), and that would change the hash that
names every existing run directory (``runs.run_id``, computed from the plain config).

``sweeps.schema.validate`` adds the check of measure names (the measures package sits
above this one); ``compose`` runs this check.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

CONF_DIR = str(Path(__file__).resolve().parent.parent / "sweeps" / "conf")

# Model keys that come from the data set at training time, not from the config.
DATA_DERIVED_MODEL_KEYS = ("image_size", "channels", "num_classes")
STOP_RULES = ("epochs", "ce", "acc")
OPTIONAL_SECTIONS = ("reg", "measure")  # absent = regulariser off, no measures


class ConfigError(ValueError):
    """A composed config that does not fit the schema; the message lists every problem."""

    def __init__(self, problems: list[str], where: str = ""):
        self.problems = problems
        head = f"invalid config{f' ({where})' if where else ''}"
        super().__init__(head + ": " + "; ".join(problems))


# --- the typed sections (no defaults: those are in sweeps/conf) ----------------------------

@dataclass(frozen=True)
class OptimConfig:
    name: str
    lr: float
    weight_decay: float
    warmup_epochs: float  # may be fractional
    min_lr_ratio: float
    grad_clip: Optional[float]
    decay_all: bool


@dataclass(frozen=True)
class AdamConfig(OptimConfig):  # AdamW and Lion
    betas: list[float]


@dataclass(frozen=True)
class SGDConfig(OptimConfig):
    momentum: float
    nesterov: bool


# Per optimizer name; a registered optimizer without an entry gets the common keys only.
OPTIM_CONFIGS: dict[str, type] = {"adamw": AdamConfig, "lion": AdamConfig, "sgd": SGDConfig}


@dataclass(frozen=True)
class RecordLayersConfig:
    every: int
    epochs: list[int]
    n_images: Optional[int]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    stop: str
    target: Optional[float]
    label_smoothing: float
    eval_train_every_epoch: bool
    eval_test_every_epoch: bool
    bf16: bool
    compile: bool
    device: str
    checkpoint_every: int
    progress: Optional[bool]
    threads: Optional[int]
    record_layers: RecordLayersConfig


@dataclass(frozen=True)
class RegConfig:
    alpha: float
    layers: Union[str, int]
    dtype: str
    detach_u: bool


@dataclass(frozen=True)
class MeasureConfig:
    enabled: bool
    names: Any  # "all" (the measures package's default set) or a list of names / glob patterns
    exclude: list[str]
    settings: dict[str, Any]  # {"group.key": value} or nested, see measures.SETTINGS
    batch_size: int


@dataclass(frozen=True)
class RunConfig:
    """What ``train`` reads. ``plain`` is the config it was read from (run identity, config.yaml)."""

    seed: int
    model: dict[str, Any]
    data: dict[str, Any]
    optim: OptimConfig
    train: TrainConfig
    reg: Optional[RegConfig]
    measure: Optional[MeasureConfig]
    plain: dict[str, Any]

    @classmethod
    def read(cls, cfg: dict[str, Any], where: str = "") -> "RunConfig":
        """Check ``cfg`` (raises ``ConfigError``) and return it typed."""
        check(cfg, where=where)
        optim_cls = OPTIM_CONFIGS.get(cfg["optim"]["name"], OptimConfig)
        return cls(seed=cfg["seed"], model=dict(cfg["model"]), data=dict(cfg["data"]),
                   optim=_build(optim_cls, cfg["optim"]), train=_build(TrainConfig, cfg["train"]),
                   reg=_build(RegConfig, cfg["reg"]) if cfg.get("reg") else None,
                   measure=_build(MeasureConfig, cfg["measure"]) if cfg.get("measure") else None, plain=cfg)


def _build(cls: type, values: dict[str, Any]) -> Any:
    """A (checked) section as its dataclass; nested dataclass fields are built too."""
    kwargs = {}
    for name, tp in _fields(cls).items():
        kwargs[name] = _build(tp, values[name]) if dataclasses.is_dataclass(tp) else values[name]
    return cls(**kwargs)


# --- the check -------------------------------------------------------------------------

def _fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _required(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}


def _model_fields() -> dict[str, Any]:
    from .models.config import ModelConfig

    return {k: v for k, v in _fields(ModelConfig).items() if k not in DATA_DERIVED_MODEL_KEYS}


def _data_fields() -> dict[str, Any]:
    from .data import DataConfig

    return _fields(DataConfig)


def _type_name(tp: Any) -> str:
    if tp is Any:
        return "any"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    origin = typing.get_origin(tp)
    if origin is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin in (list, tuple):
        return "list"
    if origin is dict:
        return "dict"
    return getattr(tp, "__name__", str(tp))


def _fits(value: Any, tp: Any) -> bool:
    if tp is Any:
        return True
    if dataclasses.is_dataclass(tp):
        return isinstance(value, dict)
    origin = typing.get_origin(tp)
    if origin is Union:
        return any(_fits(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return isinstance(value, (list, tuple)) and (not args or all(_fits(v, args[0]) for v in value))
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, tp)


def check_section(section: str, values: Any, fields: dict[str, Any], problems: list[str], owner: str = "",
                  required: Sequence[str] = ()) -> None:
    """Unknown keys (with the nearest known one), missing required keys and wrong types, one line each."""
    if not isinstance(values, dict):
        problems.append(f"{section}: expected a mapping, got {type(values).__name__} {values!r}")
        return
    for key, value in values.items():
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            problems.append(f"{section}.{key}: unknown key{hint}; {owner or section} has: {', '.join(fields)}")
        elif not _fits(value, fields[key]):
            problems.append(f"{section}.{key}: expected {_type_name(fields[key])}, got {type(value).__name__} {value!r}")
    for key in required:
        if key not in values:
            problems.append(f"{section}.{key}: missing (the shipped tree sets every key: sweeps/conf)")


def _check_typed(section: str, values: Any, cls: type, problems: list[str], owner: str = "") -> None:
    check_section(section, values, _fields(cls), problems, owner, sorted(_required(cls)))
    for name, tp in _fields(cls).items():
        if dataclasses.is_dataclass(tp) and isinstance(values, dict) and isinstance(values.get(name), dict):
            _check_typed(f"{section}.{name}", values[name], tp, problems)


def _check_name(section: str, name: Any, registry: Any, problems: list[str]) -> None:
    if isinstance(name, str) and name not in registry:  # a non-string is already a type error
        near = difflib.get_close_matches(name, list(registry.names()), n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        problems.append(f"{section}.name: unknown {registry.kind} {name!r}{hint}; known: {', '.join(registry.names())}")


def _number(d: dict[str, Any], key: str) -> Optional[float]:
    v = d.get(key)
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _out_of_range(section: str, d: dict[str, Any], rules: dict[str, tuple[str, Any]], problems: list[str]) -> None:
    """``rules``: key -> (what it must be, predicate); applied to the numbers present."""
    for key, (what, ok) in rules.items():
        v = _number(d, key)
        if v is not None and not ok(v):
            problems.append(f"{section}.{key}: must be {what}, got {v}")


MODEL_RANGES = {k: ("positive", lambda v: v > 0) for k in ("dim", "depth", "heads", "patch_size")}
MODEL_RANGES.update({k: ("in [0, 1)", lambda v: 0 <= v < 1) for k in ("dropout", "emb_dropout")})
DATA_RANGES = {k: ("a positive number of images (null = the whole split)", lambda v: v > 0) for k in ("n_train", "n_test")}
OPTIM_RANGES = {
    "lr": ("positive", lambda v: v > 0), "weight_decay": (">= 0", lambda v: v >= 0),
    "warmup_epochs": (">= 0", lambda v: v >= 0), "min_lr_ratio": ("in [0, 1]", lambda v: 0 <= v <= 1),
    "grad_clip": ("positive (null = off)", lambda v: v > 0), "momentum": ("in [0, 1)", lambda v: 0 <= v < 1),
}
TRAIN_RANGES = {k: ("positive", lambda v: v > 0) for k in ("epochs", "batch_size", "checkpoint_every", "threads")}
TRAIN_RANGES["label_smoothing"] = ("in [0, 1)", lambda v: 0 <= v < 1)


def _check_values(cfg: dict[str, Any], problems: list[str]) -> None:
    model, train, optim = cfg.get("model") or {}, cfg.get("train") or {}, cfg.get("optim") or {}
    _out_of_range("model", model, MODEL_RANGES, problems)
    _out_of_range("data", cfg.get("data") or {}, DATA_RANGES, problems)
    _out_of_range("optim", optim, OPTIM_RANGES, problems)
    _out_of_range("train", train, TRAIN_RANGES, problems)
    betas = optim.get("betas")
    if isinstance(betas, (list, tuple)) and not (len(betas) == 2 and all(_fits(b, float) and 0 <= b < 1 for b in betas)):
        problems.append(f"optim.betas: must be two numbers in [0, 1), got {betas!r}")
    dim, heads = model.get("dim"), model.get("heads")
    if model.get("dim_head") is None and isinstance(dim, int) and isinstance(heads, int) and heads > 0 and dim % heads:
        problems.append(f"model.heads: dim={dim} is not divisible by heads={heads}; set model.dim_head")
    if model.get("pool", "cls") not in ("cls", "mean"):
        problems.append(f"model.pool: must be cls or mean, got {model.get('pool')!r}")
    _check_stop(train, problems)
    reg = cfg.get("reg") or {}
    if isinstance(reg, dict) and reg:
        from .regularizer import config_problems

        problems += config_problems(reg, model["depth"] if isinstance(model.get("depth"), int) else None)


def _check_stop(train: dict[str, Any], problems: list[str]) -> None:
    stop, target = train.get("stop", "epochs"), _number(train, "target")
    if stop not in STOP_RULES:
        problems.append(f"train.stop: unknown rule {stop!r}; use {', '.join(STOP_RULES)}")
    elif stop != "epochs" and train.get("target") is None:
        problems.append(f"train.target: train.stop={stop} needs a target (e.g. 0.01 for ce, 0.99 for acc)")
    elif stop == "ce" and target is not None and target <= 0:
        problems.append(f"train.target: a cross-entropy target must be positive, got {target}")
    elif stop == "acc" and target is not None and not 0 < target <= 1:
        problems.append(f"train.target: an accuracy target must be in (0, 1], got {target}")


def check(cfg: dict[str, Any], registries: bool = True, where: str = "") -> None:
    """Check a plain composed config; raise ``ConfigError`` listing every problem.

    ``registries=False`` skips the look-ups of model, data set and optimizer names.
    """
    problems: list[str] = []
    top = {"seed": int, "model": dict, "data": dict, "optim": dict, "train": dict, "measure": dict, "reg": dict}
    check_section("config", cfg, top, problems, owner="the config",
                  required=[k for k in top if k not in OPTIONAL_SECTIONS])
    if problems:
        raise ConfigError(problems, where)
    check_section("model", cfg["model"], _model_fields(), problems)
    check_section("data", cfg["data"], _data_fields(), problems)
    optim = cfg["optim"]
    _check_typed("optim", optim, OPTIM_CONFIGS.get(optim.get("name"), OptimConfig), problems,
                 owner=f"optimizer {optim.get('name')!r}")
    _check_typed("train", cfg["train"], TrainConfig, problems)
    for section, cls in (("reg", RegConfig), ("measure", MeasureConfig)):
        if cfg.get(section) is not None:
            _check_typed(section, cfg[section], cls, problems)
    _check_values(cfg, problems)
    if registries:
        from .data import DATASETS
        from .models import MODELS
        from .optim import OPTIMIZERS

        _check_name("model", cfg["model"].get("name"), MODELS, problems)
        _check_name("data", cfg["data"].get("name"), DATASETS, problems)
        _check_name("optim", optim.get("name"), OPTIMIZERS, problems)
    if problems:
        raise ConfigError(problems, where)


# --- composing the shipped tree ----------------------------------------------------------

def register_resolvers() -> None:
    """``${run_id:}``: hash of the result-affecting config (names run directories)."""
    from omegaconf import OmegaConf

    from .runs import run_id

    def _run_id(*, _root_: Any) -> str:
        cfg = OmegaConf.to_container(_root_, resolve=False)
        cfg.pop("hydra", None)
        return run_id(OmegaConf.to_container(OmegaConf.create(cfg), resolve=True))

    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", _run_id)


def to_plain(cfg: Any) -> dict[str, Any]:
    """A resolved plain dict of a composed config, without Hydra's own node."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    return plain


def compose(overrides: Sequence[str] = (), config_name: str = "config", validate: bool = True) -> dict[str, Any]:
    """The config ``srr-train OVERRIDES...`` would run, as a plain dict, checked (``check``)
    unless ``validate=False`` (to build a bad config on purpose)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = to_plain(hydra_compose(config_name=config_name, overrides=list(overrides)))
    if validate:
        check(cfg)
    return cfg
