"""Sparse rate reduction as a training regulariser (Hu et al. 2024 §6; spec §6).

    loss = CE + α · Σ_{ℓ∈S} SRR_ℓ,      SRR_ℓ = λ₀·‖Z^ℓ‖₁ + R^c(Z^ℓ | U^ℓ) − R(Z^ℓ)

averaged over the images of the batch. The SRR conventions (representation, ε, λ₀,
``l0`` fraction/count, normalisation, cls token, subspace source, U normalisation) are
the ``srr`` measure's settings, defined once in ``srr_bench.srr`` and read with the run's
``measure.settings`` overrides (``srr.<key>``), so the regularised quantity is the
measured one with ‖Z‖₁ in place of ‖Z‖₀ (the only non-differentiable term). Config
(``reg`` section)::

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

from .rates import srr_terms
from .runs import flatten
from .seeding import subset_indices
from .srr import check_settings, layer_bases, layer_tokens, srr_per_image, srr_settings

DTYPES = {"float32": torch.float32, "float64": torch.float64}
LAYER_CHOICES = ("all", "random")


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


def config_problems(reg: Mapping[str, Any], depth: Optional[int]) -> list[str]:
    """What is wrong with a ``reg`` section (one line each); the schema check and the trainer share it."""
    problems = []
    alpha = reg.get("alpha", 0.0)
    if isinstance(alpha, (int, float)) and alpha < 0:
        problems.append(f"reg.alpha: must be >= 0, got {alpha}")
    if reg.get("dtype", "float32") not in DTYPES:
        problems.append(f"reg.dtype: must be one of {', '.join(DTYPES)}, got {reg.get('dtype')!r}")
    if depth is not None:
        try:
            parse_layers(reg.get("layers", "all"), depth)
        except RegularizerError as e:
            problems.append(str(e))
    return problems


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
    def from_config(cls, reg: Optional[Mapping[str, Any]], measure_settings: Optional[Mapping[str, Any]],
                    depth: int, seed: int) -> Optional["SRRRegularizer"]:
        """The regulariser a run's config asks for, or None when α = 0 (or no ``reg`` section)."""
        reg = dict(reg or {})
        alpha = float(reg.get("alpha", 0.0) or 0.0)
        if alpha == 0.0:
            return None
        problems = config_problems(reg, depth)
        if problems:
            raise RegularizerError(problems[0])
        s = srr_settings(measure_settings)
        check_settings(s)
        return cls(alpha, parse_layers(reg.get("layers", "all"), depth), s, depth, int(seed),
                   DTYPES[reg.get("dtype", "float32")], bool(reg.get("detach_u", False)))

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


def layer_record(model: torch.nn.Module, train_xy: tuple[Tensor, Tensor], measure_settings: Optional[Mapping[str, Any]],
                 n_images: Optional[int] = 256) -> dict[str, float]:
    """The ``srr`` measure's per-layer values on a fixed training subset: {"layer.<ℓ>.<q>": v}.

    q ∈ R, Rc, dR, l0, srr and ℓ = 1..L, exactly ``srr.L<ℓ>.<q>`` of the measure (same
    settings, same seeded subset (``srr_bench.seeding``, seeded by ``measure.settings``'
    ``seed``) when ``n_images`` equals the measure's ``srr.n_images``).
    No gradient, evaluation mode, no draw from the global generator: recording does not
    change training.
    """
    s = srr_settings(measure_settings)
    seed = int(flatten(dict(measure_settings or {})).get("seed", 0))
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
