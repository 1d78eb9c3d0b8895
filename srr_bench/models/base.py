"""What every model of the suite exposes: logits, per-layer representations, subspaces.

Measures and the SRR regulariser read representations through
``forward_intermediates`` and the subspace bases through ``subspace_bases``; they never
hook into nested modules, so renaming a submodule cannot silently break a measure.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .blocks import Head, PatchEmbed
from .config import ModelConfig

REPRESENTATIONS = ("mssa_in", "z_half", "ista_out")


@dataclass
class Intermediates:
    """Per-layer representations of one batch; each list has one (B, N, d) tensor per layer.

    - ``mssa_in``: LN1(Z^ℓ), the input of layer ℓ's attention (MSSA) block;
    - ``z_half``: Z^{ℓ+1/2} = Z^ℓ + MSSA(LN1(Z^ℓ)), the attention block's output;
    - ``ista_out``: Z^{ℓ+1}, the layer's output (ISTA output in CRATE, MLP residual in ViT).

    Tensors keep their graph (so the SRR regulariser can differentiate through them);
    call under ``torch.no_grad()`` to measure.
    """

    logits: Tensor
    mssa_in: list[Tensor]
    z_half: list[Tensor]
    ista_out: list[Tensor]

    def get(self, which: str) -> list[Tensor]:
        if which not in REPRESENTATIONS:
            raise ValueError(f"unknown representation {which!r}; known: {', '.join(REPRESENTATIONS)}")
        return getattr(self, which)


class TokenClassifier(nn.Module):
    """Embedding -> a stack of layers -> head, with the probe API.

    A layer is any module whose ``parts(z)`` returns (attention input, Z^{ℓ+1/2}, Z^{ℓ+1}).
    """

    def __init__(self, cfg: ModelConfig, layers: list[nn.Module]):
        super().__init__()
        self.config = cfg
        self.embed = PatchEmbed(cfg)
        self.layers = nn.ModuleList(layers)
        self.head = Head(cfg)

    def forward(self, img: Tensor) -> Tensor:
        z = self.embed(img)
        for layer in self.layers:
            z = layer(z)
        return self.head(z)

    def forward_intermediates(self, img: Tensor) -> Intermediates:
        """Logits and every layer's representations (see ``Intermediates``)."""
        z = self.embed(img)
        mssa_in, z_half, ista_out = [], [], []
        for layer in self.layers:
            a, h, z = layer.parts(z)
            mssa_in.append(a)
            z_half.append(h)
            ista_out.append(z)
        return Intermediates(self.head(z), mssa_in, z_half, ista_out)

    def subspace_bases(self, source: str = "qkv") -> Tensor:
        """U^ℓ for every layer, shape (L, K, d, p); column k of U^ℓ_k spans head k's subspace."""
        return torch.stack([layer.subspace_bases(source) for layer in self.layers])

    @property
    def depth(self) -> int:
        return len(self.layers)
