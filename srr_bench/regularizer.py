"""Sparse rate reduction as a training regulariser (Hu et al. 2024 §6; spec §6).

    loss = CE + α · Σ_{ℓ∈S} SRR_ℓ,      SRR_ℓ = λ₀·‖Z^ℓ‖₁ + R^c(Z^ℓ | U^ℓ) − R(Z^ℓ)

averaged over the images of the batch. The SRR conventions (representation, ε, λ₀,
``l0`` fraction/count, normalisation, cls token, subspace source, U normalisation) are
the run's ``srr`` section, whose schema (defaults, ranges) is the ``srr`` measure's
settings group (``srr_bench.srr.SRRSettings``), so the regularised quantity is the measured
one with ‖Z‖₁ in place of ‖Z‖₀ (the only non-differentiable term). With the regulariser on,
``srr`` settings that change the loss enter the run id (``srr_bench.identity``). Config
(``reg`` section, checked by ``srr_bench.config.RegConfig``)::

    alpha: 0.0          the weight α; 0 = plain cross-entropy (the other keys then do not
                        affect results and are left out of the run's identity)
    layers: all         S: ``all`` layers, ``random`` (one layer drawn per step, from a
                        generator seeded by (seed, step), so a resumed run draws the same
                        layers), or a 1-based layer index (2 = the second layer, as the
                        paper numbers them)
    dtype: float32      arithmetic of the rate terms (the measure uses float64; the two
                        agree to ~1e-5 relative at the suite's sizes, see the tests)
    detach_u: false     true: no gradient through the subspaces U (the regulariser then
                        shapes only the representations)

The gradient reaches Z through every layer below ℓ and, unless ``detach_u``, the
subspaces U^ℓ (the attention's qkv weights): "add the term to the loss".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

import numpy as np
import torch
from torch import Tensor

from .config import RegConfig
from .rates import srr_terms
from .seeding import subset_indices
from .settings import validate_section
from .srr import layer_bases, layer_tokens, srr_per_image, srr_settings

DTYPES = {"float32": torch.float32, "float64": torch.float64}


LAYER_CHOICES = ("all", "random")
PYTHON_DEFAULTS = dict(alpha=0.0, layers="all", dtype="float32", detach_u=False)  # from_config given a plain mapping


class RegularizerError(ValueError):
    """A regulariser setting that cannot apply to this model; one-line message."""


def parse_layers(layers: Union[str, int], depth: int) -> Union[str, int]:
    """``all`` | ``random`` | a 1-based layer index in 1..depth (checked)."""
    if isinstance(layers, str) and layers in LAYER_CHOICES:
        return layers
    try:
        index = int(layers)
    except (TypeError, ValueError):
        raise RegularizerError(f"reg.layers must be all, random or a layer number, not {layers!r}") from None
    if not 1 <= index <= depth:
        raise RegularizerError(f"reg.layers={index}: the model has layers 1..{depth}")
    return index


@dataclass
class SRRRegularizer:
    """The SRR term of the loss; ``alpha * terms(model, intermediates, step)`` is added to CE."""

    alpha: float
    layers: Union[str, int]
    settings: dict[str, Any]
    depth: int
    seed: int = 0
    dtype: torch.dtype = torch.float32
    detach_u: bool = False

    @classmethod
    def from_config(cls, reg: Any, srr: Optional[Mapping[str, Any]], depth: int, seed: int = 0
                    ) -> Optional["SRRRegularizer"]:
        """The regulariser a run asks for, or None when it is off (α = 0 or no ``reg`` section).

        ``reg``: the run's checked ``RegConfig`` (``srr_bench.config``), or a plain mapping from
        Python (missing keys: all layers, float32, U not detached); ``srr``: the run's SRR
        settings (its ``srr`` section, or ``{"srr.eps": ...}`` overrides; ``srr_settings``).
        The layer number is checked against the built model's depth."""
        if reg is None:
            return None
        if isinstance(reg, Mapping):  # from Python: the run config's schema, missing keys as the shipped tree's
            reg = validate_section(RegConfig, {**PYTHON_DEFAULTS, **reg}, "reg")
        if reg.alpha == 0.0:
            return None
        return cls(reg.alpha, parse_layers(reg.layers, depth), srr_settings(srr), depth, int(seed),
                   DTYPES[reg.dtype], reg.detach_u)

    def layer_set(self, step: int) -> list[int]:
        """0-based indices of S at optimisation step ``step``."""
        if self.layers == "all":
            return list(range(self.depth))
        if self.layers == "random":
            return [int(np.random.default_rng((self.seed, step, 0x5EED)).integers(self.depth))]
        return [int(self.layers) - 1]

    def terms(self, model: torch.nn.Module, inter: Any, step: int) -> Tensor:
        """Σ_{ℓ∈S} SRR_ℓ (mean over the batch's images), differentiable; α not applied."""
        s = self.settings
        idx = self.layer_set(step)
        Z, Zs = layer_tokens(inter, s, idx)  # (|S|, B, N, d)
        U = torch.stack([model.layers[i].subspace_bases(s["source"]) for i in idx])  # (|S|, K, d, p)
        U = layer_bases((U.detach() if self.detach_u else U).to(self.dtype), s)
        t = srr_terms(Z, U.unsqueeze(1), s["eps"], s["lambda0"], normalize=s["normalize"], sparsity_kind="l1",
                      fraction=s["l0"] == "fraction", Z_sparse=Zs, dtype=self.dtype)
        return t["srr"].mean(1).sum()


def layer_record(model: torch.nn.Module, train_xy: tuple[Tensor, Tensor], srr: Optional[Mapping[str, Any]] = None,
                 n_images: Optional[int] = 256, seed: int = 0) -> dict[str, float]:
    """The ``srr`` measure's per-layer values on a fixed training subset: {"layer.<ℓ>.<q>": v}.

    q ∈ R, Rc, dR, l0, srr and ℓ = 1..L, exactly ``srr.L<ℓ>.<q>`` of the measure with the same
    SRR settings (``srr``: the run's section) and the same seeded subset (``srr_bench.seeding``,
    ``seed``: the measures' seed) when ``n_images`` equals the measure's ``srr.n_images``.
    No gradient, evaluation mode, no draw from the global generator: recording does not
    change training.
    """
    s = srr_settings(srr)
    x, _ = train_xy
    idx = subset_indices(len(x), n_images, seed, "train")
    device = next(model.parameters()).device
    x = (x if idx is None else x[torch.as_tensor(idx, device=x.device)]).to(device)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        per, _ = srr_per_image(model, x, s)
    finally:
        for m, was_training in modes:  # every submodule back to its own mode
            m.training = was_training
    return {f"layer.{layer}.{q}": v for q in per for layer, v in enumerate(per[q].mean(1).tolist(), start=1)}
