"""Coding rates and sparse rate reduction (Yu et al. 2023, eqs. for R, R^c, SRR), differentiable.

The objective a CRATE layer unrolls, so it lives in the core: the ``srr`` measure
(``measures.srr``) and the SRR regulariser (``srr_bench.regularizer``) both compute it
here, on the inputs chosen by ``srr_bench.srr``.

Convention: the maths writes one image's tokens as the columns of Z in R^{d x N};
these functions take them as the ROWS of a tensor ``Z`` of shape (..., N, d), the
layout of ``forward_intermediates``. Leading dimensions (layers, images) are batched.

    R(Z)        = ½ logdet(I_N + d/(N ε²) ZᵀZ)
    R^c(Z | U)  = Σ_k ½ logdet(I_N + p/(N ε²) (U_kᵀZ)ᵀ(U_kᵀZ)),      U_k in R^{d x p}
    ΔR          = R − R^c
    SRR measure = λ₀·S(Z) + R^c − R       (S = ‖Z‖₀ to measure, ‖Z‖₁ to regularise)

- ε is the quantisation precision, NOT its square: the default ε = 0.1 is the reference
  CRATE code's ``eps = 0.01`` which that code uses in the place of ε².
- Everything is computed in float64 (``dtype``) with the N×N or the d×d Gram matrix,
  whichever is smaller (equal by Sylvester's identity det(I + AB) = det(I + BA)); the
  log-determinant of the SPD matrix I + cG is 2 Σ log diag(cholesky).
- The functions are differentiable, so a regulariser can use exactly the measured
  quantity (``srr_terms(..., sparsity_kind="l1")``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

NORMALIZATIONS = ("none", "token", "head")


class _LogdetSPD(torch.autograd.Function):
    """logdet(A) of SPD matrices by Cholesky, with the closed-form gradient A⁻¹.

    Autograd's generic Cholesky backward costs ~2.5x this on small batched matrices
    (triangular solves dominate); d logdet(A) = tr(A⁻¹ dA) needs one inverse from the factor.
    NaN where the factorisation fails (A not finite or not SPD).
    """

    @staticmethod
    def forward(ctx, A: Tensor) -> Tensor:
        L, info = torch.linalg.cholesky_ex(A)
        ctx.save_for_backward(L)
        out = 2.0 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return torch.where(info == 0, out, torch.full_like(out, float("nan")))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:
        (L,) = ctx.saved_tensors
        return grad[..., None, None] * torch.cholesky_inverse(L)


def logdet_eye_plus(G: Tensor, c: float) -> Tensor:
    """logdet(I + c G) for a batch of PSD matrices G (..., n, n), c ≥ 0.

    NaN (not an exception) where the factorisation fails, i.e. where G is not finite: a
    diverged representation then gives a NaN measure or a NaN loss, as any other term.
    """
    eye = torch.eye(G.shape[-1], dtype=G.dtype, device=G.device)
    return _LogdetSPD.apply(eye + c * G)


def small_gram(X: Tensor) -> Tensor:
    """X Xᵀ (N×N) or Xᵀ X (d×d) for rows-as-tokens X (..., N, d), whichever is smaller."""
    return X @ X.mT if X.shape[-2] <= X.shape[-1] else X.mT @ X


def coding_rate(Z: Tensor, eps: float = 0.1, *, dtype: torch.dtype = torch.float64) -> Tensor:
    """R(Z) = ½ logdet(I + d/(N ε²) ZᵀZ) per leading index; Z (..., N, d) -> (...)."""
    Z = Z.to(dtype)
    n, d = Z.shape[-2:]
    return 0.5 * logdet_eye_plus(small_gram(Z), d / (n * eps**2))


def project_heads(Z: Tensor, U: Tensor) -> Tensor:
    """Rows of U_kᵀZ for every head: Z (..., N, d), U (..., K, d, p) -> (..., K, N, p).

    One product with the concatenated bases [U_1 … U_K] (d × Kp) instead of K products
    with Z repeated per head.
    """
    k, d, p = U.shape[-3:]
    U_cat = U.to(Z.dtype).movedim(-3, -2).reshape(*U.shape[:-3], d, k * p)  # (..., d, Kp)
    return (Z @ U_cat).unflatten(-1, (k, p)).movedim(-2, -3)  # (..., K, N, p)


def compression_rate(
    Z: Tensor, U: Tensor, eps: float = 0.1, *, normalize_heads: bool = False, dtype: torch.dtype = torch.float64
) -> Tensor:
    """R^c(Z | U) = Σ_k ½ logdet(I + p/(N ε²)(U_kᵀZ)ᵀ(U_kᵀZ)); Z (..., N, d), U (..., K, d, p) -> (...).

    ``normalize_heads`` scales every projected token U_kᵀz_i to unit norm first (the
    reference CRATE code's convention, ``vis_utils/coding_rate.py``).
    """
    W = project_heads(Z.to(dtype), U.to(dtype))  # (..., K, N, p)
    if normalize_heads:
        W = F.normalize(W, dim=-1)
    n, p = W.shape[-2:]
    return 0.5 * logdet_eye_plus(small_gram(W), p / (n * eps**2)).sum(-1)


def sparsity(Z: Tensor, kind: str = "l1", *, fraction: bool = True, tol: float = 0.0) -> Tensor:
    """‖Z‖₁ or ‖Z‖₀ (entries with |z| > tol) per leading index; divided by N·d if ``fraction``."""
    if kind == "l1":
        s = Z.abs().sum((-2, -1))
    elif kind == "l0":
        s = (Z.abs() > tol).sum((-2, -1)).to(Z.dtype)
    else:
        raise ValueError(f"sparsity must be 'l0' or 'l1', not {kind!r}")
    return s / (Z.shape[-2] * Z.shape[-1]) if fraction else s


def srr_terms(
    Z: Tensor, U: Tensor, eps: float = 0.1, lambda0: float = 1.0, *, normalize: str = "token",
    sparsity_kind: str = "l1", fraction: bool = True, l0_tol: float = 0.0, Z_sparse: Optional[Tensor] = None,
    dtype: torch.dtype = torch.float64,
) -> dict[str, Tensor]:
    """The SRR measure and its components, per leading index of Z (..., N, d).

    Returns ``R``, ``Rc``, ``dR`` = R − R^c, ``sparsity`` (of ``Z_sparse``, default Z, taken
    before any normalisation) and ``srr`` = λ₀·sparsity + R^c − R (lower = more compressed
    and sparser). ``normalize``: ``none``; ``token`` (every token z_i scaled to unit norm
    before R and R^c); ``head`` (R on unit tokens, R^c on unit projected tokens U_kᵀz_i,
    as the reference CRATE code).
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, not {normalize!r}")
    Zd = Z.to(dtype)
    S = sparsity((Zd if Z_sparse is None else Z_sparse.to(dtype)), sparsity_kind, fraction=fraction, tol=l0_tol)
    if normalize in ("token", "head"):
        Zd = F.normalize(Zd, dim=-1)
    R = coding_rate(Zd, eps, dtype=dtype)
    Rc = compression_rate(Zd, U, eps, normalize_heads=normalize == "head", dtype=dtype)
    return {"R": R, "Rc": Rc, "dR": R - Rc, "sparsity": S, "srr": lambda0 * S + Rc - R}
