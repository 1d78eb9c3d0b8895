"""Sparse rate reduction as a complexity measure (Hu, Zou & Xu 2024, §5; Yu et al. 2023).

Per layer ℓ = 1..L and per image, with the layer's own subspaces U^ℓ (``subspace_bases``):

    srr_ℓ = λ₀·‖Z‖₀ + R^c(Z | U^ℓ) − R(Z)          (lower = more compressed and sparser)

averaged over a fixed seeded subset of images. Values: ``srr.L<ℓ>.{R,Rc,dR,l0,srr}``
for every layer (1-based, as the papers number layers), the aggregates
``srr.{R,Rc,dR,l0}.{mean,last}`` and ``srr.mean`` / ``srr.last`` (the main value is
``srr.mean``, stored as ``srr``). Diagnostics: the number of images and tokens, and
95% confidence intervals over images of the aggregates.

The paper's exact choices are not public (srr_papers.md §4.1); the defaults, all settings:

- ``representation = ista_out``: every term on the layer's output Z^{ℓ+1} (the only
  representation where ‖Z‖₀ is informative: the ISTA ReLU makes exact zeros);
  ``mssa_in`` is LN1(Z^ℓ) (what the reference code's R^c hook sees), ``z_half`` Z^{ℓ+1/2}.
  ``l0_representation`` (default: the same) lets ‖Z‖₀ come from another one.
- ``eps = 0.1`` (ε² = 0.01, the reference code's ``eps``); ``lambda0 = 1``.
- ``l0 = fraction``: ‖Z‖₀/(N·d) in [0, 1], as the reference code's sparsity plot
  (``count``: the raw number of non-zeros, which then dominates the rate terms).
- ``normalize = token``: every token scaled to unit norm before R and R^c, so the rates do
  not reward scale; ``head`` is the reference code's per-head normalisation of U_kᵀz_i
  for R^c; ``none`` uses raw tokens.
- ``cls = true``: the cls token counts among the N tokens (as the reference hooks).
- ``split = train``, ``n_images = 256``; ``source = qkv`` (CRATE; on the ViT baseline
  ``q``, ``k`` or ``v`` picks U); ``u_norm = none`` (raw U; ``orthonormal`` replaces each
  U_k by the nearest matrix with orthonormal columns).

``srr_ref`` pins the reference CRATE code's conventions (srr_papers.md §7.6): R and R^c
on the MSSA input LN1(Z^ℓ) with per-head normalisation, sparsity from the ISTA output.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import Tensor

from .context import MeasureContext
from .rates import srr_terms
from .registry import MeasureError, Result, measure, settings_group

COMPONENTS = ("R", "Rc", "dR", "l0", "srr")

settings_group(
    "srr", representation="ista_out", l0_representation=None, eps=0.1, lambda0=1.0, l0="fraction", l0_tol=0.0,
    normalize="token", cls=True, split="train", n_images=256, source="qkv", u_norm="none", chunk=32,
)


def orthonormal(U: Tensor) -> Tensor:
    """The nearest matrix with orthonormal columns (polar factor), per head: (..., d, p)."""
    A, _, Bh = torch.linalg.svd(U, full_matrices=False)
    return A @ Bh


def check_settings(s: dict[str, Any]) -> None:
    """The choices srr_terms cannot check itself (shared with the SRR regulariser)."""
    if s["l0"] not in ("fraction", "count"):
        raise MeasureError(f"srr: l0 must be 'fraction' or 'count', not {s['l0']!r}")
    if s["u_norm"] not in ("none", "orthonormal"):
        raise MeasureError(f"srr: u_norm must be 'none' or 'orthonormal', not {s['u_norm']!r}")


def layer_bases(U: Tensor, s: dict[str, Any]) -> Tensor:
    """Subspace bases (..., K, d, p) as the settings use them (``u_norm``)."""
    return orthonormal(U) if s["u_norm"] == "orthonormal" else U


def layer_tokens(inter: Any, s: dict[str, Any], layers: Optional[list[int]] = None) -> tuple[Tensor, Optional[Tensor]]:
    """(Z, Z for ‖Z‖₀ or None when the same) of the chosen layers (0-based; all by default),
    stacked (L', B, N, d), without the cls token unless ``cls``."""
    first = 0 if s["cls"] else 1
    rep, l0_rep = s["representation"], s["l0_representation"] or s["representation"]

    def stack(name: str) -> Tensor:
        reps = inter.get(name)
        return torch.stack(reps if layers is None else [reps[i] for i in layers])[:, :, first:]

    return stack(rep), (stack(l0_rep) if l0_rep != rep else None)


@torch.no_grad()
def srr_per_image(ctx: MeasureContext, s: dict[str, Any]) -> tuple[dict[str, Tensor], int]:
    """Every component for every layer and image, {component: (L, n_images)} float64, and N."""
    check_settings(s)
    model = ctx.model
    x, _ = ctx.subset(s["split"], s["n_images"])
    U = layer_bases(model.subspace_bases(s["source"]).detach().double(), s)  # (L, K, d, p)
    U = U.unsqueeze(1)  # (L, 1, K, d, p): broadcast over images
    parts = []
    for i in range(0, len(x), int(s["chunk"])):
        Z, Zs = layer_tokens(model.forward_intermediates(x[i : i + int(s["chunk"])]), s)  # (L, B, N, d)
        t = srr_terms(
            Z, U, s["eps"], s["lambda0"], normalize=s["normalize"], sparsity_kind="l0",
            fraction=s["l0"] == "fraction", l0_tol=s["l0_tol"], Z_sparse=Zs,
        )
        t["l0"] = t.pop("sparsity")
        parts.append(t)
    return {k: torch.cat([p[k] for p in parts], dim=1) for k in COMPONENTS}, Z.shape[-2]


def _ci95(v: Tensor) -> list[float]:
    """Normal-approximation 95% interval of the mean of v (over images)."""
    m = v.mean().item()
    half = 1.96 * v.std().item() / math.sqrt(len(v)) if len(v) > 1 else float("nan")
    return [m - half, m + half]


def srr_result(ctx: MeasureContext, s: dict[str, Any]) -> Result:
    per, tokens = srr_per_image(ctx, s)  # {component: (L, n)}
    extra: dict[str, float] = {}
    diag: dict[str, Any] = {"n_images": per["srr"].shape[1], "layers": per["srr"].shape[0], "tokens": tokens, "ci95": {}}
    for c in COMPONENTS:
        layer_means = per[c].mean(1)  # (L,)
        for layer, v in enumerate(layer_means.tolist(), start=1):
            extra[f"L{layer}.{c}"] = v
        prefix = "" if c == "srr" else f"{c}."
        extra[f"{prefix}mean"] = layer_means.mean().item()
        extra[f"{prefix}last"] = layer_means[-1].item()
        diag["ci95"][f"{prefix}mean"] = _ci95(per[c].mean(0))
        diag["ci95"][f"{prefix}last"] = _ci95(per[c][-1])
    return Result(extra["mean"], extra, diag)


@measure("srr", group="srr", needs=("probe",), eq="Hu et al. 2024 §5: λ₀‖Z‖₀ + R^c(Z|U) − R(Z)")
def srr(ctx: MeasureContext, s: dict[str, Any]) -> Result:
    """Sparse rate reduction measure per layer (R, R^c, ΔR, ‖Z‖₀, SRR), mean over layers and last layer."""
    return srr_result(ctx, s)


@measure(
    "srr_ref", group="srr", needs=("probe",), eq="Hu et al. 2024 §5, with the reference CRATE code's conventions",
    fixed=dict(representation="mssa_in", l0_representation="ista_out", normalize="head"),
)
def srr_ref(ctx: MeasureContext, s: dict[str, Any]) -> Result:
    """SRR with the reference CRATE code's conventions: rates of LN1(Z^ℓ), per-head normalised; ‖Z‖₀ of Z^{ℓ+1}."""
    return srr_result(ctx, s)
