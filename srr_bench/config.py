"""A run's config: one typed object, built once from Hydra's composed config and passed down.

Defaults live in one place, the YAML tree (``sweeps/conf``), except the SRR conventions,
whose defaults and ranges are the core's (``srr_bench.srr.SRRSettings``, registered into
the tree as the ``srr`` group by ``register_resolvers``). The sections below declare each
key, its type and its range, with no default: ``RunConfig.read(cfg)`` checks a plain
composed config (unknown keys with the nearest known one, missing keys, wrong types,
non-finite numbers, values out of range, names that are not registered) and returns the
typed config that training, the regulariser, the sweep runner and ``srr-status`` read. A
problem raises one ``ConfigError`` listing them all, one line each. The schemas are
pydantic models in strict mode (``srr_bench.settings``: why pydantic).

The run id is hashed from the plain composed config (``srr_bench.identity``), not from the
typed one (which reads ``warmup_epochs: 1`` as ``1.0``), so no existing id moves;
``RunConfig.run_id`` computes it once.

``sweeps.schema.validate`` adds the check of measure names (the measures package sits
above this one); ``compose`` runs this check.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Optional, Sequence, Union

from pydantic import Field, field_validator, model_validator

from .device import check_name

from .settings import SRRSettings, Section, SettingError, near, validate_section

CONF_DIR = str(Path(__file__).resolve().parent.parent / "sweeps" / "conf")

# Model keys that come from the data set at training time, not from the config.
DATA_DERIVED_MODEL_KEYS = ("image_size", "channels", "num_classes")
STOP_RULES = ("epochs", "ce", "acc")
OPTIONAL_SECTIONS = ("reg", "measure", "srr")  # absent = regulariser off, no measures, SRR defaults


class ConfigError(ValueError):
    """A composed config that does not fit the schema; the message lists every problem."""

    def __init__(self, problems: list[str], where: str = ""):
        self.problems = problems
        head = f"invalid config{f' ({where})' if where else ''}"
        super().__init__(head + ": " + "; ".join(problems))


# --- the typed sections (no defaults: those are in sweeps/conf) ----------------------------

PosInt = Annotated[int, Field(gt=0)]
Unit = Annotated[float, Field(ge=0, lt=1)]  # a rate in [0, 1)


class ModelSection(Section):
    """``model``: the run's model less what the data set decides (``DATA_DERIVED_MODEL_KEYS``).
    The model's own ranges are ``ModelConfig``'s; this section checks types and the
    ranges a config can get wrong before any data is read."""

    name: str
    dim: PosInt
    depth: PosInt
    heads: PosInt
    dim_head: Optional[PosInt]
    patch_size: PosInt
    dropout: Unit
    emb_dropout: Unit
    dropout_placement: Literal["reference", "every_output"] = "reference"  # absent from configs before 2026-12
    pool: Literal["cls", "mean"]
    ista_step: float = Field(gt=0)
    ista_lambda: float = Field(ge=0)
    mlp_ratio: float = Field(gt=0)

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> "ModelSection":
        if self.dim_head is None and self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}; set model.dim_head")
        return self


class DataSection(Section):
    name: str
    root: str
    n_train: Optional[PosInt]  # null = the whole split
    n_test: Optional[PosInt]
    subset_seed: int
    augment: Optional[bool]  # null = the data set's default
    crop_padding: int = Field(ge=0)
    flip: bool
    download: bool
    options: dict[str, Any]


class OptimConfig(Section):
    name: str
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    warmup_epochs: float = Field(ge=0)  # may be fractional
    min_lr_ratio: float = Field(ge=0, le=1)
    grad_clip: Optional[float] = Field(gt=0)  # null = off
    decay_all: bool


class AdamConfig(OptimConfig):  # AdamW and Lion
    betas: list[Unit] = Field(min_length=2, max_length=2)


class SGDConfig(OptimConfig):
    momentum: Unit
    nesterov: bool


# Per optimizer name; a registered optimizer without an entry gets the common keys only.
OPTIM_CONFIGS: dict[str, type] = {"adamw": AdamConfig, "lion": AdamConfig, "sgd": SGDConfig}


class RecordLayersConfig(Section):
    every: int = Field(ge=0)  # 0 = off
    epochs: list[Annotated[int, Field(ge=0)]]
    n_images: Optional[PosInt]


class TrainConfig(Section):
    epochs: PosInt
    batch_size: PosInt
    stop: Literal["epochs", "ce", "acc"]
    target: Optional[float]
    label_smoothing: Unit
    eval_train_every_epoch: bool
    eval_test_every_epoch: bool
    bf16: bool
    compile: bool
    device: str  # auto | cpu | mps | cuda | cuda:N (srr_bench.device)
    checkpoint_every: PosInt
    progress: Optional[bool]
    threads: Optional[PosInt]
    record_layers: RecordLayersConfig

    @field_validator("device")
    @classmethod
    def _device_name(cls, name: str) -> str:
        return check_name(name)

    @model_validator(mode="after")
    def _target_fits_rule(self) -> "TrainConfig":
        if self.stop != "epochs" and self.target is None:
            raise ValueError(f"train.stop={self.stop} needs a train.target (e.g. 0.01 for ce, 0.99 for acc)")
        if self.stop == "ce" and not self.target > 0:
            raise ValueError(f"train.target: a cross-entropy target must be positive, got {self.target}")
        if self.stop == "acc" and not 0 < self.target <= 1:
            raise ValueError(f"train.target: an accuracy target must be in (0, 1], got {self.target}")
        return self


class RegConfig(Section):
    alpha: float = Field(ge=0)  # 0 = cross-entropy only
    layers: Union[Literal["all", "random"], PosInt]  # or a 1-based layer number (checked against depth)
    dtype: Literal["float32", "float64"]
    detach_u: bool


class MeasureConfig(Section):
    enabled: bool
    names: Union[str, list[str]]  # "all" (the measures package's default set) or names / glob patterns
    exclude: list[str]
    settings: dict[str, Any]  # {"group.key": value} or nested, see measures.SETTINGS
    batch_size: PosInt

    @model_validator(mode="after")
    def _srr_has_its_own_section(self) -> "MeasureConfig":
        from .identity import flatten

        srr = sorted(k for k in flatten(self.settings) if k.startswith("srr."))
        if srr:
            raise ValueError(f"measure.settings: {', '.join(srr)}: the SRR settings are the run's srr section "
                             f"(read by the regulariser and the measures alike): set {srr[0]} instead")
        return self


class RunConfig(Section):
    """What a run reads; ``plain`` is the composed config it was read from (config.yaml, the run id)."""

    seed: int
    model: ModelSection
    data: DataSection
    optim: Union[AdamConfig, SGDConfig, OptimConfig]
    train: TrainConfig
    reg: Optional[RegConfig] = None
    measure: Optional[MeasureConfig] = None
    srr: SRRSettings = SRRSettings()  # absent (configs before 2026-12): the core's defaults
    plain: dict[str, Any]

    @classmethod
    def read(cls, cfg: Mapping[str, Any], where: str = "", registries: bool = True) -> "RunConfig":
        """Check ``cfg`` (raises ``ConfigError`` listing every problem) and return it typed.

        ``registries=False`` skips the look-ups of model, data set and optimizer names."""
        typed, problems = _read(cfg, registries)
        if problems:
            raise ConfigError(problems, where)
        return cls.model_validate({**typed, "seed": cfg["seed"], "plain": dict(cfg)})  # sections: checked once

    @cached_property
    def run_id(self) -> str:
        from .identity import run_id

        return run_id(self.plain)

    @property
    def model_dict(self) -> dict[str, Any]:
        return self.model.model_dump()

    @property
    def regularised(self) -> bool:
        return self.reg is not None and self.reg.alpha > 0


def _read(cfg: Any, registries: bool) -> tuple[dict[str, Section], list[str]]:
    """The typed sections of a plain composed config, and every problem, one line each."""
    if not isinstance(cfg, Mapping):
        return {}, [f"config: expected a mapping, got {type(cfg).__name__}"]
    typed: dict[str, Section] = {}
    problems: list[str] = []
    sections = {"seed": None, "model": ModelSection, "data": DataSection, "optim": None, "train": TrainConfig,
                "reg": RegConfig, "measure": MeasureConfig, "srr": SRRSettings}
    for key in cfg:
        if key not in sections:
            problems.append(f"{key}: unknown key{near(key, sections)}; the config has: {', '.join(sections)}")
    for key in sections:
        if key not in cfg and key not in OPTIONAL_SECTIONS:
            problems.append(f"{key}: missing (the shipped config tree sets every key: sweeps/conf)")
    if problems:
        return typed, problems
    if isinstance(cfg["seed"], bool) or not isinstance(cfg["seed"], int):
        problems.append(f"seed: expected an integer, got {cfg['seed']!r}")
    optim = cfg["optim"]
    name = optim.get("name") if isinstance(optim, Mapping) else None
    checks = [("optim", OPTIM_CONFIGS.get(name, OptimConfig), optim)]
    checks += [(k, sections[k], cfg[k]) for k in ("model", "data", "train", "reg", "measure", "srr")
               if cfg.get(k) is not None]
    for key, schema, values in checks:
        if key == "model" and isinstance(values, Mapping):
            derived = [k for k in values if k in DATA_DERIVED_MODEL_KEYS]
            problems += [f"model.{k}: set by the data set, not by the config" for k in derived]
            values = {k: v for k, v in values.items() if k not in DATA_DERIVED_MODEL_KEYS}
        try:
            typed[key] = validate_section(schema, values, key)
        except SettingError as e:
            problems += [p if p.startswith(key) else f"{key}: {p}" for p in e.problems]
    reg, model = cfg.get("reg"), cfg.get("model")
    if isinstance(reg, Mapping) and isinstance(reg.get("layers"), int) and isinstance(model, Mapping):
        depth = model.get("depth")
        if isinstance(depth, int) and not 1 <= reg["layers"] <= depth:
            problems.append(f"reg.layers: the model has layers 1..{depth}, got {reg['layers']}")
    if registries:
        from .data import DATASETS
        from .models import MODELS
        from .optim import OPTIMIZERS

        for section, registry in (("model", MODELS), ("data", DATASETS), ("optim", OPTIMIZERS)):
            value = cfg[section].get("name") if isinstance(cfg[section], Mapping) else None
            if isinstance(value, str) and value not in registry:
                problems.append(f"{section}.name: unknown {registry.kind} {value!r}{near(value, registry.names())}; "
                                f"known: {', '.join(registry.names())}")
    return typed, problems


def check(cfg: Mapping[str, Any], registries: bool = True, where: str = "") -> None:
    """Check a plain composed config; raise ``ConfigError`` listing every problem."""
    problems = _read(cfg, registries)[1]
    if problems:
        raise ConfigError(problems, where)


# --- composing the shipped tree ----------------------------------------------------------

def register_resolvers() -> None:
    """Before Hydra composes the tree: ``${run_id:}`` (the hash that names run directories,
    ``srr_bench.identity``) and the ``srr`` group's ``default`` node, the core's SRR defaults
    (``SRRSettings``), so that they are written in one place and ``srr.eps=0.05`` overrides them."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from .identity import run_id

    ConfigStore.instance().store(group="srr", name="default", node=SRRSettings().model_dump())

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


def measure_section(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The ``measure`` section a run is measured with at the end of its job: ``measure.settings``
    (flat) plus the run's ``srr`` section where it differs from the defaults, as ``srr.<key>``
    overrides of the ``srr`` measures' group, so the measured SRR is the regularised one.
    Plain dicts only (``srr-status`` reads it without torch)."""
    from .identity import flatten

    measure = dict(cfg.get("measure") or {})
    defaults = SRRSettings().model_dump()
    srr = {f"srr.{k}": v for k, v in dict(cfg.get("srr") or {}).items() if k in defaults and v != defaults[k]}
    if srr:
        measure["settings"] = {**flatten(dict(measure.get("settings") or {})), **srr}
    return measure

