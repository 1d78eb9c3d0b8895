"""The sparse rate reduction of a model's layers: its inputs, its settings, its per-layer values.

Per layer ℓ = 1..L and per image, with the layer's own subspaces U^ℓ (``subspace_bases``):

    SRR_ℓ = λ₀·S(Z) + R^c(Z | U^ℓ) − R(Z)          (``srr_bench.rates.srr_terms``)

with S = ‖Z‖₀ when measured (``measures.srr``) and ‖Z‖₁ when regularised
(``srr_bench.regularizer``). Both read Z and U through this module, with the same
settings, so the regularised quantity is the measured one. The defaults and ranges
(``SRRSettings``; ``SRR_SETTINGS`` is its dump, registered unchanged as the ``srr``
measure's settings group, and the run config's ``srr`` section); the paper's exact choices
are not public (srr_papers.md §4.1):

- ``representation = ista_out``: every term on the layer's output Z^{ℓ+1} (the only
  representation where ‖Z‖₀ is informative: the ISTA ReLU makes exact zeros);
  ``mssa_in`` is LN1(Z^ℓ) (what the reference code's R^c hook sees), ``z_half`` Z^{ℓ+1/2}.
  ``l0_representation`` (default: the same) lets S(Z) come from another one.
- ``eps = 0.1`` (ε² = 0.01, the reference code's ``eps``); ``lambda0 = 1``.
- ``l0 = fraction``: S(Z)/(N·d), ‖Z‖₀ then in [0, 1], as the reference code's sparsity
  plot (``count``: the raw number, which then dominates the rate terms); ``l0_tol``:
  entries with |z| ≤ tol count as zeros.
- ``normalize = token``: every token scaled to unit norm before R and R^c, so the rates do
  not reward scale; ``head`` is the reference code's per-head normalisation of U_kᵀz_i
  for R^c; ``none`` uses raw tokens.
- ``cls = true``: the cls token counts among the N tokens (as the reference hooks).
- ``split = train``, ``n_images = 256``: the fixed seeded subset the values are averaged
  over (``srr_bench.seeding``); ``chunk``: images per forward pass (memory only).
- ``source = qkv`` (CRATE; on the ViT baseline ``q``, ``k`` or ``v`` picks U);
  ``u_norm = none`` (raw U; ``orthonormal`` replaces each U_k by the nearest matrix with
  orthonormal columns).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from torch import Tensor, nn

from .identity import flatten
from .rates import srr_terms
from .settings import SRRSettings, SettingError, coerce_setting, validate_section  # noqa: F401  (re-exported: old import paths)

GROUP = "srr"
COMPONENTS = ("R", "Rc", "dR", "l0", "srr")
# The srr settings group's defaults, registered as is by measures.srr.
SRR_SETTINGS: dict[str, Any] = SRRSettings().model_dump()


def srr_settings(overrides: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """The SRR settings with ``overrides`` applied, checked (``SRRSettings``; ``SettingError`` in one line).

    ``overrides`` is a run's ``srr`` section (``{"eps": 0.05}``) or measure-style keys, flat
    (``{"srr.eps": 0.05}``) or nested (``{"srr": {"eps": 0.05}}``); keys of other settings
    groups are the measures' business and are left alone here. Text values are read as
    the setting's type (``read_setting``).
    """
    mine: dict[str, Any] = {}
    for key, value in flatten(dict(overrides or {})).items():
        group, dot, k = key.partition(".")
        if not dot:  # a bare key: the srr section's own, or a global measure setting (seed, ...)
            group, k = (GROUP, key) if key in SRRSettings.model_fields else ("", key)
        if group == GROUP:  # text ("0.2", "false") read as the setting's type; the schema checks the rest
            mine[k] = coerce_setting(f"{GROUP}.{k}", value, SRR_SETTINGS[k]) if k in SRR_SETTINGS else value
    return validate_section(SRRSettings, {**SRR_SETTINGS, **mine}, GROUP).model_dump()


def check_settings(s: Mapping[str, Any]) -> None:
    """Refuse SRR settings ``srr_terms`` cannot run with (``SettingError``, one line); the keys a
    measure adds (``seed``, ``version``) are not the SRR section's and are left alone."""
    validate_section(SRRSettings, {k: v for k, v in s.items() if k in SRRSettings.model_fields}, GROUP)


def orthonormal(U: Tensor) -> Tensor:
    """The nearest matrix with orthonormal columns (polar factor), per head: (..., d, p)."""
    A, _, Bh = torch.linalg.svd(U, full_matrices=False)
    return A @ Bh


def layer_bases(U: Tensor, s: Mapping[str, Any]) -> Tensor:
    """Subspace bases (..., K, d, p) as the settings use them (``u_norm``)."""
    return orthonormal(U) if s["u_norm"] == "orthonormal" else U


def layer_tokens(inter: Any, s: Mapping[str, Any], layers: Optional[list[int]] = None) -> tuple[Tensor, Optional[Tensor]]:
    """(Z, Z for S(Z) or None when the same) of the chosen layers (0-based; all by default),
    stacked (L', B, N, d), without the cls token unless ``cls``."""
    first = 0 if s["cls"] else 1
    rep, l0_rep = s["representation"], s["l0_representation"] or s["representation"]

    def stack(name: str) -> Tensor:
        reps = inter.get(name)
        return torch.stack(reps if layers is None else [reps[i] for i in layers])[:, :, first:]

    return stack(rep), (stack(l0_rep) if l0_rep != rep else None)


@torch.no_grad()
def srr_per_image(model: nn.Module, x: Tensor, s: Mapping[str, Any]) -> tuple[dict[str, Tensor], int]:
    """Every component (``COMPONENTS``, S = ‖Z‖₀) for every layer and image of ``x``: {component: (L, n)}
    float64, and the number of tokens N. The model's mode is the caller's (measure in eval mode)."""
    check_settings(s)
    U = layer_bases(model.subspace_bases(s["source"]).detach().double(), s)  # (L, K, d, p)
    U = U.unsqueeze(1)  # (L, 1, K, d, p): broadcast over images
    chunk = int(s["chunk"])
    parts = []
    for i in range(0, len(x), chunk):
        Z, Zs = layer_tokens(model.forward_intermediates(x[i : i + chunk]), s)  # (L, B, N, d)
        t = srr_terms(
            Z, U, s["eps"], s["lambda0"], normalize=s["normalize"], sparsity_kind="l0",
            fraction=s["l0"] == "fraction", l0_tol=s["l0_tol"], Z_sparse=Zs,
        )
        t["l0"] = t.pop("sparsity")
        parts.append(t)
    return {k: torch.cat([p[k] for p in parts], dim=1) for k in COMPONENTS}, Z.shape[-2]
