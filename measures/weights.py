"""What "the weights" of a model are: one definition for the norm family and the PAC-Bayes bounds.

RGM (Dziugaite et al. 2020, ``measures.py``) takes as weights every parameter whose name
holds neither ``bias`` nor ``bn``: on its networks, exactly the conv kernels and linear
matrices, the multiplicative parameters. Here the rule is stated on the parameter, not
on its name, so that it holds for any ``nn.Module``:

    a weight is a parameter with two or more dimensions, except
    (1) the parameters of normalisation modules (LayerNorm, GroupNorm, BatchNorm, RMSNorm),
    (2) biases: an attribute whose name contains ``bias`` (``bias``, ``in_proj_bias``,
        ``bias_k``, ``bias_v`` of ``nn.MultiheadAttention``), and
    (3) additive token parameters, listed in ``ADDITIVE``: CRATE's and the ViT's
        ``PatchEmbed.cls_token`` and ``PatchEmbed.pos_embedding``, which are added to the
        token sequence (biases of the first layer, not linear maps).

So every 1-D parameter (biases, normalisation gains and shifts, per-channel scales) is
not a weight, and every other ≥ 2-D parameter is: linear and conv weights, the shared
MSSA projection, ISTA's dictionary, ``nn.MultiheadAttention``'s ``in_proj_weight`` (or
``q/k/v_proj_weight``), ``nn.Embedding`` tables, any custom matrix. A parameter tied
under several names is one weight (its first name, as ``named_parameters``).

Two selections of it:
- ``weights(model)``: the learned weights (``requires_grad``), the vector w of ``params``,
  ``l2``, ``l2_dist`` and of the PAC-Bayes bounds (frozen ones, e.g. crate_fix's output
  operator, were not learned);
- ``weights(model, learned_only=False)``: every weight of the function, the matrices of
  the spectral/Frobenius measures (``norms.layer_matrices``).
"""
from __future__ import annotations

from typing import Iterator, NamedTuple, Optional

from torch import Tensor, nn

from srr_bench.models.blocks import PatchEmbed

from .context import flat, trainable

NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.RMSNorm)
# (module type, attribute): ≥ 2-D parameters that are added to activations, not multiplied.
ADDITIVE = {(PatchEmbed, "cls_token"), (PatchEmbed, "pos_embedding")}
PARAMETER_SETS = ("weights", "trainable")


class Weight(NamedTuple):
    """One weight: its parameter name, the module that owns it, the attribute, the tensor (detached)."""

    name: str
    module_name: str
    module: nn.Module
    attr: str
    tensor: Tensor


def is_weight(module: nn.Module, attr: str, p: Tensor) -> bool:
    """The rule of the module docstring for parameter ``attr`` of ``module``."""
    if p.dim() < 2 or isinstance(module, NORMS) or "bias" in attr:
        return False
    return not any(isinstance(module, cls) and attr == a for cls, a in ADDITIVE)


def weight_entries(model: nn.Module, learned_only: bool = True) -> Iterator[Weight]:
    """Every weight once, in ``named_parameters`` order, with its owning module."""
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for attr, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            if (learned_only and not p.requires_grad) or not is_weight(module, attr, p):
                continue
            name = f"{module_name}.{attr}" if module_name else attr
            yield Weight(name, module_name, module, attr, p.detach())


def weights(model: nn.Module, learned_only: bool = True) -> dict[str, Tensor]:
    """{parameter name: detached tensor} of the weights (see module docstring)."""
    return {w.name: w.tensor for w in weight_entries(model, learned_only)}


def parameter_set(model: nn.Module, which: str) -> dict[str, Tensor]:
    """The parameters a bound or a perturbation uses: ``weights`` (default) or every ``trainable`` one."""
    if which == "weights":
        return weights(model)
    if which == "trainable":
        return trainable(model)
    raise ValueError(f"parameter set must be one of {', '.join(PARAMETER_SETS)}, not {which!r}")


def weight_vectors(model: nn.Module, init_model: Optional[nn.Module] = None,
                   which: str = "weights") -> tuple[Tensor, Optional[Tensor]]:
    """(w, w − w₀) over ``parameter_set(which)``, flattened, float64; w − w₀ is None without ``init_model``."""
    w = parameter_set(model, which)
    v = flat(w).double()
    if init_model is None:
        return v, None
    w0 = parameter_set(init_model, which)
    if list(w0) != list(w) or any(w0[k].shape != w[k].shape for k in w):
        raise ValueError("initial and final models have different parameters")
    return v, v - flat([w0[k] for k in w]).double()
