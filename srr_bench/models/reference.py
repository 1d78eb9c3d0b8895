"""A plain, independent implementation of the reference CRATE maths (Yu et al. 2023).

Not a registered model: it is the oracle of the fidelity tests and the baseline of the
speed benchmark. It follows the reference code's computation literally (explicit
softmax(w wᵀ/√p), attention as two matmuls, the three-product ISTA Dᵀx − DᵀDx, fp32)
and its parameter names (``to_patch_embedding.{1,2,3}``, ``transformer.layers.i.{0,1}``,
``mlp_head.{0,1}``), so its state dict is what the reference code saves.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _Patchify(nn.Module):
    def __init__(self, p: int):
        super().__init__()
        self.p = p

    def forward(self, img: Tensor) -> Tensor:
        b, c, h, w = img.shape
        p = self.p
        patches = img.unfold(2, p, p).unfold(3, p, p)  # (b, c, h/p, w/p, p1, p2)
        return patches.permute(0, 2, 3, 4, 5, 1).reshape(b, -1, p * p * c)


class _PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(self.norm(x))


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.scale = heads, dim_head**-0.5
        self.qkv = nn.Linear(dim, inner, bias=False)
        self.attn_drop = nn.Dropout(dropout)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        w = self.qkv(x).reshape(b, n, self.heads, -1).permute(0, 2, 1, 3)
        attn = self.attn_drop(torch.softmax(w @ w.transpose(-1, -2) * self.scale, dim=-1))
        return self.to_out((attn @ w).permute(0, 2, 1, 3).reshape(b, n, -1))


class _ISTA(nn.Module):
    def __init__(self, dim: int, step: float, lambd: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, dim))
        nn.init.kaiming_uniform_(self.weight)
        self.step, self.lambd = step, lambd

    def forward(self, x: Tensor) -> Tensor:
        DtDx = F.linear(F.linear(x, self.weight), self.weight.t())
        Dtx = F.linear(x, self.weight.t())
        return F.relu(x + self.step * (Dtx - DtDx) - self.step * self.lambd)


class _Transformer(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, dropout: float, step: float, lambd: float):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([_PreNorm(dim, _Attention(dim, heads, dim_head, dropout)), _PreNorm(dim, _ISTA(dim, step, lambd))])
            for _ in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        for attn, ista in self.layers:
            x = ista(attn(x) + x)
        return x


class ReferenceCRATE(nn.Module):
    """The original (learnable output) CRATE, written plainly; same sizes as ModelConfig."""

    def __init__(self, *, image_size: int, patch_size: int, num_classes: int, dim: int, depth: int, heads: int,
                 dim_head: int, channels: int = 3, dropout: float = 0.0, pool: str = "cls",
                 ista_step: float = 0.1, ista_lambda: float = 0.1):
        super().__init__()
        patch_dim = channels * patch_size**2
        n = (image_size // patch_size) ** 2
        self.to_patch_embedding = nn.Sequential(
            _Patchify(patch_size), nn.LayerNorm(patch_dim), nn.Linear(patch_dim, dim), nn.LayerNorm(dim)
        )
        self.pos_embedding = nn.Parameter(torch.randn(1, n + 1, dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.transformer = _Transformer(dim, depth, heads, dim_head, dropout, ista_step, ista_lambda)
        self.pool = pool
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    def forward(self, img: Tensor) -> Tensor:
        x = self.to_patch_embedding(img)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embedding
        x = self.transformer(x)
        return self.mlp_head(x[:, 0] if self.pool == "cls" else x.mean(dim=1))
