"""Model configuration: every size and switch of the CRATE family and the ViT baseline.

Sizes are config, not code: the named presets (tiny / small / base / large and the small
CIFAR-scale ones) live in the Hydra tree under ``sweeps/conf/size``; this dataclass only
holds the fields and their defaults.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional


# Where ``dropout`` acts besides the attention map (every variant drops attention weights):
# - ``reference``: as the reference code, only after a learned output projection (``crate``,
#   ``crate_fix`` and the ViT; Ma-Lab-Berkeley/CRATE ``to_out = Sequential(Linear, Dropout)``),
#   none after the tied, transposed or identity operators (``crate_c``, ``crate_n``,
#   ``crate_t``, ``crate_identity``; the first author's CRATE-T code has attention dropout only);
# - ``every_output``: after every MSSA output operator, the suite's placement before issue 10
#   (kept to reproduce runs trained with it).
DROPOUT_PLACEMENTS = ("reference", "every_output")


@dataclass
class ModelConfig:
    name: str = "crate"  # registered model name: crate, crate_c, crate_n, crate_t, ...
    image_size: int = 32
    patch_size: int = 4
    channels: int = 3
    num_classes: int = 10
    dim: int = 384  # d, token width
    depth: int = 12  # L, number of layers
    heads: int = 6  # K, number of heads (subspaces)
    dim_head: Optional[int] = None  # p; None means dim // heads
    dropout: float = 0.0  # attention-map dropout of every layer; output dropout as dropout_placement says
    dropout_placement: str = "reference"  # reference | every_output (see DROPOUT_PLACEMENTS)
    emb_dropout: float = 0.0  # dropout after the embedding
    pool: str = "cls"  # cls | mean
    ista_step: float = 0.1  # eta, ISTA step size (reference code: 0.1)
    ista_lambda: float = 0.1  # lambda, sparsity penalty (reference code: 0.1)
    mlp_ratio: float = 4.0  # ViT baseline only: MLP hidden width / dim

    def __post_init__(self) -> None:
        if self.dim_head is None:
            if self.dim % self.heads:
                raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}; set dim_head")
            self.dim_head = self.dim // self.heads
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size={self.image_size} is not divisible by patch_size={self.patch_size}")
        if self.dropout_placement not in DROPOUT_PLACEMENTS:
            raise ValueError(f"dropout_placement must be one of {', '.join(DROPOUT_PLACEMENTS)}, "
                             f"not {self.dropout_placement!r}")
        if self.pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', not {self.pool!r}")

    @property
    def inner_dim(self) -> int:  # K * p
        return self.heads * self.dim_head

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; known: {sorted(fields)}")
        return cls(**d)
