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


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "MODELS", "ModelConfig", "build_model", "count_parameters", "Intermediates", "REPRESENTATIONS",
    "TokenClassifier", "CRATE", "ViT",
]
