"""A standard pre-LN ViT baseline, so that measures can be compared across architectures.

Layer: Z^{ℓ+1/2} = Z + Proj(MHA(LN1(Z))) with separate Q, K, V projections (with bias),
Z^{ℓ+1} = Z^{ℓ+1/2} + MLP(LN2(Z^{ℓ+1/2})) with a GELU MLP of width mlp_ratio·d.
The embedding and head are CRATE's, so the two differ only in their layers.
Dropout (``cfg.dropout``) as a standard ViT (vit-pytorch, timm): on the attention map,
after the output projection and after the MLP's activation and output; the projection
is learned, so this is also the reference placement (``dropout_placement`` changes nothing here).
SRR on a ViT takes U^ℓ from the query, key or value projection (``source``).
"""
from __future__ import annotations

from torch import Tensor, nn

from .base import TokenClassifier
from .blocks import multi_head_attention
from .config import ModelConfig


class MultiHeadAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads = cfg.heads
        self.attn_dropout = cfg.dropout
        self.q = nn.Linear(cfg.dim, cfg.inner_dim)
        self.k = nn.Linear(cfg.dim, cfg.inner_dim)
        self.v = nn.Linear(cfg.dim, cfg.inner_dim)
        self.proj = nn.Linear(cfg.inner_dim, cfg.dim)
        self.out_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        p = self.attn_dropout if self.training else 0.0
        out = multi_head_attention(self.q(x), self.k(x), self.v(x), self.heads, p)
        return self.out_dropout(self.proj(out))


class ViTLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.attn = MultiHeadAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.dim)
        hidden = int(cfg.mlp_ratio * cfg.dim)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.dim, hidden), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(hidden, cfg.dim), nn.Dropout(cfg.dropout)
        )

    def parts(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        a = self.norm1(z)
        z_half = z + self.attn(a)
        return a, z_half, z_half + self.mlp(self.norm2(z_half))

    def forward(self, z: Tensor) -> Tensor:
        return self.parts(z)[2]

    def subspace_bases(self, source: str = "q") -> Tensor:
        """U_k = W_source[kp:(k+1)p]ᵀ, shape (K, d, p); source in q, k, v ('qkv' means q)."""
        source = "q" if source == "qkv" else source
        if source not in ("q", "k", "v"):
            raise ValueError(f"ViT subspace source must be q, k or v, not {source!r}")
        W = getattr(self.attn, source).weight  # (Kp, d)
        return W.view(self.attn.heads, -1, W.shape[1]).transpose(1, 2)


class ViT(TokenClassifier):
    """Standard pre-LN vision transformer (Dosovitskiy et al. 2021) with CRATE's embedding and head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, [ViTLayer(cfg) for _ in range(cfg.depth)])
