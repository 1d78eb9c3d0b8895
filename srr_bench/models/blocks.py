"""The building blocks, one implementation each: patch embedding, MSSA, ISTA, head.

Tokens are rows here, ``(B, N, d)``; the maths writes them as the columns of
Z in R^{d x N}. Where a line implements an equation its comment gives the column form.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig


class PatchEmbed(nn.Module):
    """Patches -> LayerNorm(patch_dim) -> Linear -> LayerNorm(d); cls token; learned positions.

    As the reference CRATE: a patch is flattened in (p1, p2, c) order, the cls token
    and the positional embedding are initialised from N(0, 1).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.patch_size = cfg.patch_size
        patch_dim = cfg.channels * cfg.patch_size**2
        self.patch_norm = nn.LayerNorm(patch_dim)
        self.proj = nn.Linear(patch_dim, cfg.dim)
        self.norm = nn.LayerNorm(cfg.dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, cfg.dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, cfg.num_patches + 1, cfg.dim))
        self.dropout = nn.Dropout(cfg.emb_dropout)

    def patchify(self, img: Tensor) -> Tensor:
        b, c, h, w = img.shape
        p = self.patch_size
        x = img.reshape(b, c, h // p, p, w // p, p)  # (B, c, gh, p1, gw, p2)
        return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)  # (B, N, p1 p2 c)

    def forward(self, img: Tensor) -> Tensor:
        x = self.norm(self.proj(self.patch_norm(self.patchify(img))))  # (B, N, d)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embedding[:, : x.shape[1] + 1]  # (B, N+1, d)
        return self.dropout(x)


class Head(nn.Module):
    """LayerNorm + Linear on the cls token (pool='cls') or the token mean (pool='mean')."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.pool = cfg.pool
        self.norm = nn.LayerNorm(cfg.dim)
        self.fc = nn.Linear(cfg.dim, cfg.num_classes)

    def forward(self, z: Tensor) -> Tensor:
        z = z[:, 0] if self.pool == "cls" else z.mean(dim=1)
        return self.fc(self.norm(z))


def multi_head_attention(q: Tensor, k: Tensor, v: Tensor, heads: int, dropout: float) -> Tensor:
    """softmax(q_k k_kᵀ / sqrt(p)) v_k for each head k, heads concatenated: (B, N, K p)."""
    b, n, inner = q.shape
    split = lambda t: t.view(b, n, heads, inner // heads).transpose(1, 2)  # (B, K, N, p)
    out = F.scaled_dot_product_attention(split(q), split(k), split(v), dropout_p=dropout)
    return out.transpose(1, 2).reshape(b, n, inner)


class MSSA(nn.Module):
    """Multi-head subspace self-attention (Yu et al. 2023, eq. for MSSA, as implemented).

    One shared projection W = ``qkv.weight`` in R^{Kp x d} (no bias): head k reads
    w_k = U_kᵀ z with U_k = W[kp:(k+1)p]ᵀ. Attention is softmax(w_k w_kᵀ / sqrt(p)) over
    keys, out_k = attn · w_k, heads are concatenated, and ``out_op(out, W)`` maps
    R^{Kp} back to R^d. The output operator is what distinguishes the CRATE variants
    (see ``crate.py``). Dropout (``cfg.dropout``) acts on the attention map in every
    variant and, as in the reference code, on the output only after a learned projection
    (an operator whose ``project_out`` is true); ``dropout_placement = every_output``
    puts it after every operator (see ``ModelConfig``).
    """

    def __init__(self, cfg: ModelConfig, out_op: nn.Module):
        super().__init__()
        self.heads = cfg.heads
        self.attn_dropout = cfg.dropout
        self.qkv = nn.Linear(cfg.dim, cfg.inner_dim, bias=False)
        self.out_op = out_op
        out_dropout = out_op.project_out or cfg.dropout_placement == "every_output"
        self.out_dropout = nn.Dropout(cfg.dropout) if out_dropout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        w = self.qkv(x)  # (B, N, Kp); column form: U_kᵀ Z for every head
        p = self.attn_dropout if self.training else 0.0
        out = multi_head_attention(w, w, w, self.heads, p)  # (B, N, Kp)
        return self.out_dropout(self.out_op(out, self.qkv.weight))

    def subspace_bases(self) -> Tensor:
        """U of this layer, shape (K, d, p): U_k = W[kp:(k+1)p]ᵀ."""
        kp, d = self.qkv.weight.shape
        return self.qkv.weight.view(self.heads, kp // self.heads, d).transpose(1, 2)


class ISTA(nn.Module):
    """One ISTA step on the non-negative LASSO with a complete dictionary D in R^{d x d}.

    Column form:  Z' = ReLU(Z + η Dᵀ(Z − D Z) − η λ).  The reference code computes
    Dᵀ Z − Dᵀ D Z with three products over the tokens; since Dᵀ(Z − DZ) = (Dᵀ − DᵀD) Z,
    one d×d×d product on the weights leaves a single product over the tokens (rows:
    x (D − DᵀD)), which halves the block's cost whenever a batch has more than d tokens.
    x is added outside the product, so low-precision matmuls round only the update.
    D is initialised kaiming-uniform as in the reference; η = ``ista_step``,
    λ = ``ista_lambda``. There is no residual connection around this block.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.step = cfg.ista_step
        self.lambd = cfg.ista_lambda
        self.weight = nn.Parameter(torch.empty(cfg.dim, cfg.dim))  # D
        nn.init.kaiming_uniform_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        D = self.weight
        update = x @ (D - D.T @ D)  # rows of Dᵀ(Z − D Z)
        return F.relu(x + self.step * update - self.step * self.lambd)
