"""Sparse rate reduction as a complexity measure (Hu, Zou & Xu 2024, §5; Yu et al. 2023).

Per layer ℓ = 1..L and per image, with the layer's own subspaces U^ℓ (``subspace_bases``):

    srr_ℓ = λ₀·‖Z‖₀ + R^c(Z | U^ℓ) − R(Z)          (lower = more compressed and sparser)

averaged over a fixed seeded subset of images. Values: ``srr.L<ℓ>.{R,Rc,dR,l0,srr}``
for every layer (1-based, as the papers number layers), the aggregates
``srr.{R,Rc,dR,l0}.{mean,last}`` and ``srr.mean`` / ``srr.last`` (the main value is
``srr.mean``, stored as ``srr``). Diagnostics: the number of images and tokens, and
95% confidence intervals over images of the aggregates.

The SRR inputs and settings (which representation, token and U normalisation, ε, λ₀,
‖Z‖₀ as a fraction or a count, the image subset) and their defaults are defined once in
the core, ``srr_bench.srr`` (the SRR regulariser reads the same), and documented there;
this module registers them as the ``srr`` settings group and averages per image.

``srr_ref`` pins the reference CRATE code's conventions (srr_papers.md §7.6): R and R^c
on the MSSA input LN1(Z^ℓ) with per-head normalisation, sparsity from the ISTA output.
"""
from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from srr_bench.srr import (  # noqa: F401  (check_settings, layer_bases, layer_tokens, orthonormal: old import path)
    COMPONENTS, SRR_SETTINGS, SRRSettings, SettingError, check_settings, layer_bases, layer_tokens, orthonormal,
    srr_per_image,
)

from .context import MeasureContext
from .registry import MeasureError, Result, measure, settings_group

settings_group("srr", schema=SRRSettings)  # the core's defaults and ranges (SRR_SETTINGS)


def per_image(ctx: MeasureContext, s: dict[str, Any]) -> tuple[dict[str, Tensor], int]:
    """Every component for every layer and image of the seeded subset, {component: (L, n_images)}, and N."""
    x, _ = ctx.subset(s["split"], s["n_images"])
    try:
        return srr_per_image(ctx.model, x, s)
    except SettingError as e:
        raise MeasureError(str(e)) from None


def _ci95(v: Tensor) -> list[float]:
    """Normal-approximation 95% interval of the mean of v (over images)."""
    m = v.mean().item()
    half = 1.96 * v.std().item() / math.sqrt(len(v)) if len(v) > 1 else float("nan")
    return [m - half, m + half]


def srr_result(ctx: MeasureContext, s: dict[str, Any]) -> Result:
    per, tokens = per_image(ctx, s)  # {component: (L, n)}
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
