"""The CRATE family (Yu et al. 2023; variants of Hu, Zou & Xu 2024).

Every variant is the same network: pre-LayerNorm layers

    Z^{ℓ+1/2} = Z^ℓ + MSSA(LN1(Z^ℓ))        compression step
    Z^{ℓ+1}   = ISTA(LN2(Z^{ℓ+1/2}))        sparsification step, no residual

and differs only in MSSA's *output operator*, which maps the concatenated head outputs
(R^{Kp}) back to R^d. Operators are registered by variant name; with W = qkv.weight
in R^{Kp x d} (so [U_1 ... U_K] = Wᵀ) and ``out`` the rows of the head outputs:

=================  ======================================  ==========================
variant            operator (column form)                   PyTorch (rows)
=================  ======================================  ==========================
``crate``          learnable W_out·out + b (Linear Kp→d)   ``proj(out)``
``crate_c``        +[U_1 … U_K]·out (tied, as derived)      ``out @ W``
``crate_n``        −[U_1 … U_K]·out (sign flipped)          ``-(out @ W)``
``crate_t``        [U_1 … U_K]ᵀ·out (transpose; Kp = d)     ``F.linear(out, W)``
``crate_fix``      W_out·out + b, frozen at initialisation  ``proj(out)``, no grad
``crate_identity`` identity (Kp = d)                        ``out``
=================  ======================================  ==========================

Dropout: on the attention map in every variant; on the output only after the learned
projection of ``crate`` / ``crate_fix`` (``project_out``), as the reference code
(``ModelConfig.dropout_placement``).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Registry
from .base import TokenClassifier
from .blocks import ISTA, MSSA
from .config import ModelConfig

OUTPUT_OPERATORS: Registry = Registry("MSSA output operator")


class LearnedOutput(nn.Module):
    """``crate``: the original CRATE, a learnable Linear(Kp -> d) with bias.

    As the reference code, K = 1 with p = d has no output projection (identity), and then
    no output dropout either (``project_out`` false).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.project_out = not (cfg.heads == 1 and cfg.dim_head == cfg.dim)
        self.proj = nn.Linear(cfg.inner_dim, cfg.dim) if self.project_out else nn.Identity()

    def forward(self, out: Tensor, W: Tensor) -> Tensor:
        return self.proj(out)


class FixedOutput(LearnedOutput):
    """``crate_fix``: the learnable operator of ``crate``, frozen at its initialisation.

    Its parameters stay in the state dict (measures see them) with requires_grad False.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.proj.requires_grad_(False)


class TiedOutput(nn.Module):
    """``crate_c`` (sign +1) and ``crate_n`` (sign −1): ±[U_1 … U_K]·out, i.e. ±out @ W.

    ``crate_c`` is the MSSA operator as derived from the compression objective; its
    residual step Z + MSSA(Z) ascends R^c (Hu et al. 2024, §3). ``crate_n`` flips the sign
    so that the step compresses.
    """

    project_out = False  # no learned projection: no output dropout (reference placement)

    def __init__(self, cfg: ModelConfig, sign: float):
        super().__init__()
        self.sign = sign

    def forward(self, out: Tensor, W: Tensor) -> Tensor:
        y = out @ W  # (B, N, d)
        return y if self.sign > 0 else -y

    def extra_repr(self) -> str:
        return f"sign={self.sign:+g}"


def _square(cfg: ModelConfig, variant: str) -> None:
    if cfg.inner_dim != cfg.dim:
        raise ValueError(f"{variant} needs heads*dim_head == dim, got {cfg.heads}*{cfg.dim_head} != {cfg.dim}")


class TransposeOutput(nn.Module):
    """``crate_t``: [U_1 … U_K]ᵀ·out, i.e. F.linear(out, W) (needs Kp = d).

    The transpose tying of the first author's later public code (CRATE-T).
    """

    project_out = False  # no learned projection: no output dropout (reference placement)

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        _square(cfg, "crate_t")

    def forward(self, out: Tensor, W: Tensor) -> Tensor:
        return F.linear(out, W)


class IdentityOutput(nn.Module):
    """``crate_identity``: the concatenated head outputs unchanged (needs Kp = d)."""

    project_out = False  # no learned projection: no output dropout (reference placement)

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        _square(cfg, "crate_identity")

    def forward(self, out: Tensor, W: Tensor) -> Tensor:
        return out


OUTPUT_OPERATORS.register("crate")(LearnedOutput)
OUTPUT_OPERATORS.register("crate_c")(lambda cfg: TiedOutput(cfg, +1.0))
OUTPUT_OPERATORS.register("crate_n")(lambda cfg: TiedOutput(cfg, -1.0))
OUTPUT_OPERATORS.register("crate_t")(TransposeOutput)
OUTPUT_OPERATORS.register("crate_fix")(FixedOutput)
OUTPUT_OPERATORS.register("crate_identity")(IdentityOutput)


class CRATELayer(nn.Module):
    def __init__(self, cfg: ModelConfig, out_op: nn.Module):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.mssa = MSSA(cfg, out_op)
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.ista = ISTA(cfg)

    def parts(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        a = self.norm1(z)
        z_half = z + self.mssa(a)  # compression step, with skip connection
        return a, z_half, self.ista(self.norm2(z_half))  # sparsification step, no skip

    def forward(self, z: Tensor) -> Tensor:
        return self.parts(z)[2]

    def subspace_bases(self, source: str = "qkv") -> Tensor:
        if source != "qkv":
            raise ValueError(f"CRATE has one shared projection; source must be 'qkv', not {source!r}")
        return self.mssa.subspace_bases()


class CRATE(TokenClassifier):
    """A CRATE white-box transformer; ``cfg.name`` picks the MSSA output operator."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, [CRATELayer(cfg, OUTPUT_OPERATORS.get(cfg.name)(cfg)) for _ in range(cfg.depth)])
