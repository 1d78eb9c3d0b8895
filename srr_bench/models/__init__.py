"""Model registry: ``build_model(ModelConfig(name=...))`` for every registered name.

A CRATE variant is one MSSA output operator registered in ``crate.py`` (``OUTPUT_OPERATORS``)
plus its ``sweeps/conf/model/<name>.yaml``; every registered operator is a model here, and the
registry-wide tests (tests/test_models.py, test_measures_*.py) cover it without being edited.
"""
from __future__ import annotations

from typing import Any, Callable, Union

from torch import nn

from ..registry import Registry
from .base import REPRESENTATIONS, Intermediates, TokenClassifier
from .config import ModelConfig
from .crate import CRATE, OUTPUT_OPERATORS
from .vit import ViT

MODELS: Registry[Callable[[ModelConfig], TokenClassifier]] = Registry("model")
for _variant in OUTPUT_OPERATORS.names():
    MODELS.register(_variant)(CRATE)
MODELS.register("vit")(ViT)
# Installed packages add models through this entry-point group (``srr_bench.registry``), read at
# the first look-up; a CRATE variant registers with ``crate_variant``, another model with
# ``MODELS.register(name)(builder)``. A failing plugin is rolled back in both registries.
MODELS.open_to("srr_bench.models", companions=(OUTPUT_OPERATORS,))


def crate_variant(name: str) -> Callable[[type], type]:
    """Register an MSSA output operator class as CRATE variant ``name`` (the operator and the model).

    The class is built as ``cls(cfg: ModelConfig)`` and called as ``op(out, W)`` with ``out``
    the concatenated head outputs (B, N, Kp) and W = qkv.weight (Kp, d); it returns (B, N, d)
    and sets ``project_out`` (True only after a learned projection: it decides the output
    dropout). See ``crate.py`` for the built-in ones.
    """

    def deco(cls: type) -> type:
        OUTPUT_OPERATORS.register(name)(cls)
        MODELS.register(name)(CRATE)
        return cls

    return deco


def build_model(cfg: Union[ModelConfig, dict[str, Any]], **overrides: Any) -> TokenClassifier:
    """Build a registered model from a ModelConfig or a plain dict of its fields."""
    if isinstance(cfg, ModelConfig):
        cfg = cfg.to_dict()
    cfg = ModelConfig.from_dict({**cfg, **overrides})
    return MODELS.get(cfg.name)(cfg)


def placement_changes_function(cfg: dict[str, Any]) -> bool:
    """Whether ``model.dropout_placement`` changes this model's training: dropout > 0 on a CRATE
    variant whose MSSA output operator has no learned projection (``project_out`` false), where
    ``reference`` has no output dropout and ``every_output`` has one. Elsewhere both are the same."""
    name = cfg.get("name")
    if float(cfg.get("dropout") or 0.0) <= 0.0 or name not in MODELS or name not in OUTPUT_OPERATORS:
        return False  # (looking in MODELS first loads the plugins' variants)
    mc = ModelConfig.from_dict({k: v for k, v in cfg.items() if k in ModelConfig.__dataclass_fields__})
    return not OUTPUT_OPERATORS.get(mc.name)(mc).project_out


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "MODELS", "ModelConfig", "build_model", "crate_variant", "count_parameters", "placement_changes_function", "Intermediates", "REPRESENTATIONS",
    "TokenClassifier", "CRATE", "ViT",
]
