"""Typed schemas of the config tree, checked as soon as a config is composed.

Every section of a composed config has a dataclass here (``model`` and ``data`` reuse the
package's own ``ModelConfig`` and ``DataConfig``), and ``validate(cfg)`` checks a plain
composed config against them: unknown keys (with the nearest known key), wrong types,
names that are not registered (models, data sets, optimizers, measures) and a few values
that would only fail later (``dim`` not divisible by ``heads``, ``stop=ce`` without a
target). It raises one ``ConfigError`` listing every problem.

Why a check and not OmegaConf structured configs: merging into a typed node converts
values (``warmup_epochs: 1`` would become ``1.0``), and that would change the hash that
names every existing run directory. The check reads the config and changes nothing.

``srr-train -m`` runs it on every job of a sweep before the first one starts
(``sweeps.callbacks``); a single run runs it before any work.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Union

# Model keys that come from the data set at training time, not from the config.
DATA_DERIVED_MODEL_KEYS = ("image_size", "channels", "num_classes")
STOP_RULES = ("epochs", "ce", "acc")


class ConfigError(ValueError):
    """A composed config that does not fit the schema; the message lists every problem."""

    def __init__(self, problems: list[str], where: str = ""):
        self.problems = problems
        head = f"invalid config{f' ({where})' if where else ''}"
        super().__init__(head + ": " + "; ".join(problems))


@dataclass
class OptimSchema:
    name: str
    lr: float
    weight_decay: float = 0.0
    warmup_epochs: float = 0.0  # may be fractional
    min_lr_ratio: float = 0.0
    grad_clip: Optional[float] = None
    decay_all: bool = False


@dataclass
class AdamSchema(OptimSchema):  # AdamW and Lion
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class SGDSchema(OptimSchema):
    momentum: float = 0.9
    nesterov: bool = False


# Per optimizer name; a registered optimizer without an entry gets the common keys only.
OPTIM_SCHEMAS: dict[str, type] = {"adamw": AdamSchema, "lion": AdamSchema, "sgd": SGDSchema}


@dataclass
class TrainSchema:
    epochs: int = 20
    batch_size: int = 64
    stop: str = "epochs"
    target: Optional[float] = None
    label_smoothing: float = 0.0
    eval_train_every_epoch: bool = True
    eval_test_every_epoch: bool = False
    bf16: bool = True
    compile: bool = False
    device: str = "auto"
    checkpoint_every: int = 1
    progress: Optional[bool] = None
    threads: Optional[int] = None
    record_layers: dict[str, Any] = field(default_factory=dict)  # RecordLayersSchema's keys


@dataclass
class RecordLayersSchema:
    every: int = 0
    epochs: list[int] = field(default_factory=list)
    n_images: Optional[int] = 256


@dataclass
class RegSchema:
    alpha: float = 0.0
    layers: Union[str, int] = "all"
    dtype: str = "float32"
    detach_u: bool = False


@dataclass
class MeasureSchema:
    enabled: bool = True
    names: Any = "all"  # "all" (the measures package's default set) or a list of names / glob patterns
    exclude: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)  # {"group.key": value}, see measures.SETTINGS
    batch_size: int = 256


def _model_fields() -> dict[str, Any]:
    from srr_bench.models.config import ModelConfig

    hints = typing.get_type_hints(ModelConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(ModelConfig) if f.name not in DATA_DERIVED_MODEL_KEYS}


def _data_fields() -> dict[str, Any]:
    from srr_bench.data import DataConfig

    hints = typing.get_type_hints(DataConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(DataConfig)}


def _fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _type_name(tp: Any) -> str:
    if tp is Any:
        return "any"
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


def _check_section(section: str, values: Any, fields: dict[str, Any], problems: list[str], owner: str = "") -> None:
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


def _check_name(section: str, name: Any, registry: Any, problems: list[str]) -> bool:
    if not isinstance(name, str):
        return False  # already reported as a type error
    if name not in registry:
        problems.append(f"{section}.name: unknown {registry.kind} {name!r}; known: {', '.join(registry.names())}")
        return False
    return True


def _check_values(cfg: dict[str, Any], problems: list[str]) -> None:
    model, train = cfg.get("model") or {}, cfg.get("train") or {}
    for key in ("dim", "depth", "heads", "patch_size"):
        if isinstance(model.get(key), int) and model[key] <= 0:
            problems.append(f"model.{key}: must be positive, got {model[key]}")
    dim, heads = model.get("dim"), model.get("heads")
    if model.get("dim_head") is None and isinstance(dim, int) and isinstance(heads, int) and heads > 0 and dim % heads:
        problems.append(f"model.heads: dim={dim} is not divisible by heads={heads}; set model.dim_head")
    if model.get("pool", "cls") not in ("cls", "mean"):
        problems.append(f"model.pool: must be cls or mean, got {model.get('pool')!r}")
    for key in ("dropout", "emb_dropout"):
        if isinstance(model.get(key), (int, float)) and not 0 <= model[key] < 1:
            problems.append(f"model.{key}: must be in [0, 1), got {model[key]}")
    for key in ("epochs", "batch_size", "checkpoint_every"):
        if isinstance(train.get(key), int) and train[key] <= 0:
            problems.append(f"train.{key}: must be positive, got {train[key]}")
    stop = train.get("stop", "epochs")
    if stop not in STOP_RULES:
        problems.append(f"train.stop: unknown rule {stop!r}; use {', '.join(STOP_RULES)}")
    elif stop != "epochs" and train.get("target") is None:
        problems.append(f"train.target: train.stop={stop} needs a target (e.g. 0.01 for ce, 0.99 for acc)")
    reg = cfg.get("reg") or {}
    if isinstance(reg, dict) and reg:
        from srr_bench.regularizer import config_problems

        problems += config_problems(reg, model["depth"] if isinstance(model.get("depth"), int) else None)


def _check_measures(measure: dict[str, Any], problems: list[str]) -> None:
    from .state import measure_names, measure_settings

    names = measure.get("names", "all")
    if not (isinstance(names, str) or (isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names))):
        problems.append(f"measure.names: expected 'all' or a list of measure names, got {names!r}")
        return
    try:
        import measures
        from measures.registry import MeasureError, validate_overrides
    except ImportError:  # the measures package is optional here
        return
    try:
        measures.select(measure_names(measure), list(measure.get("exclude") or []))
        validate_overrides(measure_settings(measure))
    except (MeasureError, KeyError, ValueError) as e:
        problems.append(f"measure: {e}")


def validate(cfg: dict[str, Any], registries: bool = True, where: str = "") -> None:
    """Check a plain composed config (``srr_bench.config.compose`` output); raise ``ConfigError``.

    ``registries=False`` skips the look-ups of model, data set, optimizer and measure names.
    """
    problems: list[str] = []
    top = {"seed": int, "model": dict, "data": dict, "optim": dict, "train": dict, "measure": dict, "reg": dict}
    _check_section("config", cfg, top, problems, owner="the config")
    for key in ("seed", "model", "data", "optim", "train"):
        if key not in cfg:
            problems.append(f"{key}: missing")
    if problems:
        raise ConfigError(problems, where)
    _check_section("model", cfg["model"], _model_fields(), problems)
    _check_section("data", cfg["data"], _data_fields(), problems)
    optim = cfg["optim"]
    schema = OPTIM_SCHEMAS.get(optim.get("name"), OptimSchema)
    _check_section("optim", optim, _fields(schema), problems, owner=f"optimizer {optim.get('name')!r}")
    _check_section("train", cfg["train"], _fields(TrainSchema), problems)
    if isinstance(cfg["train"].get("record_layers"), dict):
        _check_section("train.record_layers", cfg["train"]["record_layers"], _fields(RecordLayersSchema), problems)
    if "reg" in cfg:
        _check_section("reg", cfg["reg"], _fields(RegSchema), problems)
    if "measure" in cfg:
        _check_section("measure", cfg["measure"], _fields(MeasureSchema), problems)
    _check_values(cfg, problems)
    if registries:
        from srr_bench.data import DATASETS
        from srr_bench.models import MODELS
        from srr_bench.optim import OPTIMIZERS

        _check_name("model", cfg["model"].get("name"), MODELS, problems)
        _check_name("data", cfg["data"].get("name"), DATASETS, problems)
        _check_name("optim", optim.get("name"), OPTIMIZERS, problems)
        if "measure" in cfg and cfg["measure"].get("enabled", True):
            _check_measures(cfg["measure"], problems)
    if problems:
        raise ConfigError(problems, where)
