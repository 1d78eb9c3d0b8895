"""Model registry: ``build_model(ModelConfig(name=...))`` for every registered name."""
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
    if float(cfg.get("dropout") or 0.0) <= 0.0 or cfg.get("name") not in OUTPUT_OPERATORS.names():
        return False
    mc = ModelConfig.from_dict({k: v for k, v in cfg.items() if k in ModelConfig.__dataclass_fields__})
    return not OUTPUT_OPERATORS.get(mc.name)(mc).project_out


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "MODELS", "ModelConfig", "build_model", "count_parameters", "placement_changes_function", "Intermediates", "REPRESENTATIONS",
    "TokenClassifier", "CRATE", "ViT",
]
