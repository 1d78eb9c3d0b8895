"""Path-norm: exact for ReLU MLPs, a named surrogate on everything else.

The ℓ_p path-norm (Neyshabur et al. 2015; with biases as in Gonon et al. 2024) of a
ReLU network is (Σ_paths Π_{edges on the path} |w_e|^p)^{1/p}, a path starting at an
input or at a bias. For a ReLU MLP it is computed exactly by ``path_norm``: with
v₀ = 1, v_l = |W_l|^p v_{l−1} + |b_l|^p, the sum of v_L is the sum over paths. It is
invariant under the rescaling of a hidden neuron (incoming weights and bias × c > 0,
outgoing weights / c), as the network function is.

The "square every parameter and forward an all-ones input" trick (RGM's PATH_NORM,
Jiang et al. eq. 44, no square root) equals that sum for p = 2 only when the network is
positively homogeneous and built of ReLU/linear maps. CRATE and the ViT have LayerNorm,
softmax attention (and GELU); there the quantity is a surrogate, named
``path_norm_surrogate``. It is computed in float64, in evaluation mode, with every
parameter (trainable or frozen, tied ones once) squared.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn
from torch.func import functional_call

from .context import MeasureContext
from .output import margin
from .registry import MeasureError, Result, measure, settings_group, size_adjusted

settings_group("path_norm", margin_percentile=10.0, margin_n_images=None)

_MLP_PASSTHROUGH = (nn.ReLU, nn.Identity, nn.Flatten, nn.Dropout)


def path_norm(mlp: nn.Sequential, p: float = 2.0, root: bool = True) -> torch.Tensor:
    """Exact ℓ_p path-norm of a ReLU MLP (nn.Sequential of Linear / ReLU / Identity / Flatten / Dropout)."""
    if not isinstance(mlp, nn.Sequential):
        raise TypeError("path_norm needs an nn.Sequential of Linear and ReLU layers")
    v: Optional[torch.Tensor] = None
    for layer in mlp:
        if isinstance(layer, nn.Linear):
            W = layer.weight.detach().double().abs() ** p  # (out, in)
            v = W.sum(1) if v is None else W @ v  # paths from the inputs (v₀ = 1)
            if layer.bias is not None:
                v = v + layer.bias.detach().double().abs() ** p  # paths from this layer's biases
        elif not isinstance(layer, _MLP_PASSTHROUGH):
            raise TypeError(f"path_norm is exact only for ReLU MLPs; found {type(layer).__name__}")
    if v is None:
        raise TypeError("path_norm: the network has no Linear layer")
    total = v.sum()
    return total ** (1.0 / p) if root else total


def ones_input(ctx: MeasureContext) -> torch.Tensor:
    """One all-ones input of the model's input shape (from the data, else from model.config)."""
    if ctx.has("train"):
        shape = ctx.data("train")[0].shape[1:]
    else:
        cfg = getattr(ctx.model, "config", None)
        if cfg is None:
            raise MeasureError("path_norm_surrogate needs the input shape: give data or a model with .config")
        shape = (cfg.channels, cfg.image_size, cfg.image_size)
    return torch.ones((1, *shape), dtype=torch.float64, device=ctx.device)


@torch.no_grad()
def surrogate(ctx: MeasureContext) -> float:
    """Σ outputs of the model with every parameter squared, on an all-ones input (float64)."""

    def run() -> float:
        model = ctx.model
        squared = {k: v.detach().double() ** 2 for k, v in model.named_parameters()}
        buffers = {k: v.double() if v.is_floating_point() else v for k, v in model.named_buffers()}
        out = functional_call(model, {**squared, **buffers}, (ones_input(ctx),), strict=False)
        return out.sum().item()

    return ctx.cached("path_norm_surrogate", run)


@measure("path_norm_surrogate", group="path_norm", eq="RGM PATH_NORM / Jiang et al. 2020 eq. (44), a surrogate",
         size_adjust="sqrt")
def path_norm_surrogate(ctx: MeasureContext, s: dict[str, Any]) -> Result:
    """Square every parameter, forward an all-ones input, sum the outputs (a path-norm² only for ReLU nets)."""
    v = surrogate(ctx)
    extra = {"size_adjusted": size_adjusted("sqrt", v, ctx.train_size)} if s.get("size_adjusted") else {}
    return Result(v, extra, {"exact": False})


@measure("path_norm_surrogate_over_margin", group="path_norm", needs=("train",),
         eq="RGM PATH_NORM_OVER_MARGIN / Jiang et al. 2020 eq. (43), a surrogate", size_adjust="sqrt")
def path_norm_surrogate_over_margin(ctx: MeasureContext, s: dict[str, Any]) -> Result:
    """path_norm_surrogate / γ², γ the 10th-percentile training margin."""
    g = margin(ctx, s["margin_percentile"], s["margin_n_images"])["gamma"]
    v = surrogate(ctx) / g**2 if g > 0 else float("inf")
    extra = {"size_adjusted": size_adjusted("sqrt", v, ctx.train_size)} if s.get("size_adjusted") else {}
    return Result(v, extra, {"exact": False, "gamma": g})
