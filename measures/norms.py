"""Size, norm and spectral measures (Jiang et al. 2020 eqs. 20, 29–42; RGM's conventions).

Two views of the weights:

- the parameter vector w (``params``, ``l2``, ``l2_dist``, the PAC-Bayes bounds): the
  trainable parameters except biases and normalisation gains/shifts (RGM's "weights":
  no bias, no BN), each tied tensor once;
- the layer matrices W_l (everything with Σ_l or Π_l): the linear maps of the forward
  pass, from ``layer_matrices``. On CRATE these are the patch embedding, each head's
  U_kᵀ (the row block of the shared qkv projection), the MSSA output operator, each ISTA
  dictionary D and the classifier head. The output operator is the learned (or, in
  crate_fix, frozen) W_out; in crate_c/n/t it *is* the qkv matrix W (used as ±Wᵀ or W), so
  W appears once more as that layer; crate_identity's identity is no weight. On the ViT,
  each head's q/k/v block, the attention output and the MLP layers. On any other module,
  every Linear weight and every conv kernel reshaped to (out, in·k·k).

Spectral norms are exact (``torch.linalg.matrix_norm(ord=2)``, float64). LayerNorm makes
the next linear map scale-invariant, so products of norms are not reparametrisation
invariant on these models: they are reported as defined, not as bounds.

Values are RGM's raw quantities (squared norms, logs of products); RGM's final data-set
size adjustment (``log`` measures ½(v − log m), others √(v/m)) is added as
``<name>.size_adjusted`` only when the global setting ``size_adjusted`` is true.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from srr_bench.models.blocks import ISTA, MSSA
from srr_bench.models.crate import IdentityOutput, TiedOutput, TransposeOutput
from srr_bench.models.vit import MultiHeadAttention

from .context import MeasureContext, flat, trainable
from .output import margin
from .registry import Result, measure, settings_group, size_adjusted

settings_group("norms", margin_percentile=10.0, margin_n_images=None)


def layer_matrices(model: nn.Module) -> dict[str, Tensor]:
    """The weight matrices of the forward pass, by name (see module docstring); detached views."""
    out: dict[str, Tensor] = {}
    claimed: set[int] = set()
    for name, mod in model.named_modules():
        if isinstance(mod, MSSA):
            W = mod.qkv.weight.detach()  # (Kp, d); rows k·p..(k+1)·p are U_kᵀ
            for k, block in enumerate(W.chunk(mod.heads, dim=0)):
                out[f"{name}.U{k}"] = block
            claimed.add(id(mod.qkv))
            if isinstance(mod.out_op, (TiedOutput, TransposeOutput)):
                out[f"{name}.out_op(tied)"] = W
        elif isinstance(mod, MultiHeadAttention):
            for proj in ("q", "k", "v"):
                lin = getattr(mod, proj)
                for k, block in enumerate(lin.weight.detach().chunk(mod.heads, dim=0)):
                    out[f"{name}.{proj}{k}"] = block
                claimed.add(id(lin))
        elif isinstance(mod, ISTA):
            out[f"{name}.D"] = mod.weight.detach()
        elif isinstance(mod, IdentityOutput):
            pass
        elif isinstance(mod, nn.Linear) and id(mod) not in claimed:
            out[name] = mod.weight.detach()
        elif isinstance(mod, nn.modules.conv._ConvNd):
            out[name] = mod.weight.detach().flatten(1)
    if not out:
        raise ValueError(f"{type(model).__name__} has no weight matrices (Linear, conv, MSSA, ISTA)")
    return out


def matrix_norms(ctx: MeasureContext) -> dict[str, Tensor]:
    """Per layer matrix: squared Frobenius and spectral norms (float64), cached."""

    def run() -> dict[str, Tensor]:
        mats = layer_matrices(ctx.model)
        fro = torch.stack([w.double().square().sum() for w in mats.values()])
        spec = torch.stack([torch.linalg.matrix_norm(w.double(), ord=2) ** 2 for w in mats.values()])
        return {"fro": fro, "spec": spec, "names": list(mats)}

    return ctx.cached("matrix_norms", run)


def distance_norms(ctx: MeasureContext) -> dict[str, Tensor]:
    """Per layer matrix: squared Frobenius and spectral norms of W_l − W_l⁰ (float64), cached."""

    def run() -> dict[str, Tensor]:
        mats, init = layer_matrices(ctx.model), layer_matrices(ctx.init_model)
        if list(mats) != list(init):
            raise ValueError("initial and final models have different layer matrices")
        diffs = [mats[k].double() - init[k].double() for k in mats]
        return {
            "fro": torch.stack([d.square().sum() for d in diffs]),
            "spec": torch.stack([torch.linalg.matrix_norm(d, ord=2) ** 2 for d in diffs]),
        }

    return ctx.cached("distance_norms", run)


def weight_vectors(ctx: MeasureContext) -> tuple[Tensor, Tensor]:
    """(w, w − w₀) over RGM's weights (see module docstring), float64; w − w₀ needs init."""
    w = trainable(ctx.model, "weights")
    w0 = trainable(ctx.init_model, "weights")
    return flat(w).double(), flat(w).double() - flat([w0[k] for k in w]).double()


def _result(ctx: MeasureContext, s: dict[str, Any], value: float, kind: str, **diag: Any) -> Result:
    extra = {"size_adjusted": size_adjusted(kind, value, ctx.train_size)} if s.get("size_adjusted") else {}
    return Result(value, extra, diag)


def _log_margin(ctx: MeasureContext, s: dict) -> float:
    """log γ with the margin settings of this group (see ``output.margin``)."""
    return math.log(margin(ctx, s["margin_percentile"], s["margin_n_images"])["gamma"])


# ---- size and vector norms ------------------------------------------------------------------
@measure("params", group="norms", eq="Jiang et al. 2020 eq. (20)", size_adjust="sqrt")
def params(ctx: MeasureContext, s: dict) -> Result:
    """Number of trainable weights (no biases, no norm parameters; tied tensors once)."""
    n = sum(p.numel() for p in trainable(ctx.model, "weights").values())
    total = sum(p.numel() for p in {id(p): p for p in ctx.model.parameters()}.values())
    frozen = sum(p.numel() for p in ctx.model.parameters() if not p.requires_grad)
    return _result(ctx, s, float(n), "sqrt", all_parameters=total, frozen_parameters=frozen)


@measure("l2", group="norms", eq="RGM L2: ‖w‖₂", size_adjust="sqrt")
def l2(ctx: MeasureContext, s: dict) -> Result:
    """‖w‖₂ over the trainable weights (no square)."""
    w = flat(trainable(ctx.model, "weights")).double()
    return _result(ctx, s, w.norm().item(), "sqrt")


@measure("l2_dist", group="norms", needs=("init",), eq="RGM L2_DIST: ‖w − w₀‖₂", size_adjust="sqrt")
def l2_dist(ctx: MeasureContext, s: dict) -> Result:
    """‖w − w₀‖₂ over the trainable weights (no square)."""
    return _result(ctx, s, weight_vectors(ctx)[1].norm().item(), "sqrt")


# ---- sums over layer matrices -----------------------------------------------------------------
@measure("param_norm", group="norms", eq="Jiang et al. 2020 eq. (42)", size_adjust="sqrt")
def param_norm(ctx: MeasureContext, s: dict) -> Result:
    """Σ_l ‖W_l‖_F² over the layer matrices."""
    return _result(ctx, s, matrix_norms(ctx)["fro"].sum().item(), "sqrt")


@measure("fro_dist", group="norms", needs=("init",), eq="Jiang et al. 2020 eq. (40)", size_adjust="sqrt")
def fro_dist(ctx: MeasureContext, s: dict) -> Result:
    """Σ_l ‖W_l − W_l⁰‖_F² (Frobenius distance to initialisation)."""
    return _result(ctx, s, distance_norms(ctx)["fro"].sum().item(), "sqrt")


@measure("dist_spec_init", group="norms", needs=("init",), eq="Jiang et al. 2020 eq. (41)", size_adjust="sqrt")
def dist_spec_init(ctx: MeasureContext, s: dict) -> Result:
    """Σ_l ‖W_l − W_l⁰‖₂² (spectral distance to initialisation)."""
    return _result(ctx, s, distance_norms(ctx)["spec"].sum().item(), "sqrt")


@measure("fro_over_spec", group="norms", eq="Jiang et al. 2020 eq. (33)", size_adjust="sqrt")
def fro_over_spec(ctx: MeasureContext, s: dict) -> Result:
    """Σ_l ‖W_l‖_F² / ‖W_l‖₂² (sum of stable ranks)."""
    n = matrix_norms(ctx)
    return _result(ctx, s, (n["fro"] / n["spec"]).sum().item(), "sqrt")


# ---- products (as sums of logs) ---------------------------------------------------------------
def _log_prod(ctx: MeasureContext, which: str) -> float:
    return matrix_norms(ctx)[which].log().sum().item()


def _log_sum(ctx: MeasureContext, s: dict, which: str, over_margin: bool) -> float:
    """log(d · (Π_l ‖W_l‖² / γ²)^{1/d}) = log d + (1/d)(Σ_l log ‖W_l‖² − 2 log γ), d = #matrices."""
    d = len(matrix_norms(ctx)["names"])
    return math.log(d) + (_log_prod(ctx, which) - (2 * _log_margin(ctx, s) if over_margin else 0.0)) / d


@measure("log_prod_of_spec", group="norms", eq="Jiang et al. 2020 eq. (32)", size_adjust="log")
def log_prod_of_spec(ctx: MeasureContext, s: dict) -> Result:
    """Σ_l log ‖W_l‖₂² (log of the product of squared spectral norms)."""
    return _result(ctx, s, _log_prod(ctx, "spec"), "log")


@measure("log_prod_of_spec_over_margin", group="norms", needs=("train",), eq="Jiang et al. 2020 eq. (31)",
         size_adjust="log")
def log_prod_of_spec_over_margin(ctx: MeasureContext, s: dict) -> Result:
    """Σ_l log ‖W_l‖₂² − 2 log γ."""
    return _result(ctx, s, _log_prod(ctx, "spec") - 2 * _log_margin(ctx, s), "log")


@measure("log_sum_of_spec", group="norms", eq="Jiang et al. 2020 eq. (35)", size_adjust="log")
def log_sum_of_spec(ctx: MeasureContext, s: dict) -> Result:
    """log d + (1/d) Σ_l log ‖W_l‖₂²."""
    return _result(ctx, s, _log_sum(ctx, s, "spec", False), "log")


@measure("log_sum_of_spec_over_margin", group="norms", needs=("train",), eq="Jiang et al. 2020 eq. (34)",
         size_adjust="log")
def log_sum_of_spec_over_margin(ctx: MeasureContext, s: dict) -> Result:
    """log d + (1/d)(Σ_l log ‖W_l‖₂² − 2 log γ)."""
    return _result(ctx, s, _log_sum(ctx, s, "spec", True), "log")


@measure("log_prod_of_fro", group="norms", eq="Jiang et al. 2020 eq. (37)", size_adjust="log")
def log_prod_of_fro(ctx: MeasureContext, s: dict) -> Result:
    """Σ_l log ‖W_l‖_F²."""
    return _result(ctx, s, _log_prod(ctx, "fro"), "log")


@measure("log_prod_of_fro_over_margin", group="norms", needs=("train",), eq="Jiang et al. 2020 eq. (36)",
         size_adjust="log")
def log_prod_of_fro_over_margin(ctx: MeasureContext, s: dict) -> Result:
    """Σ_l log ‖W_l‖_F² − 2 log γ."""
    return _result(ctx, s, _log_prod(ctx, "fro") - 2 * _log_margin(ctx, s), "log")


@measure("log_sum_of_fro", group="norms", eq="Jiang et al. 2020 eq. (39)", size_adjust="log")
def log_sum_of_fro(ctx: MeasureContext, s: dict) -> Result:
    """log d + (1/d) Σ_l log ‖W_l‖_F²."""
    return _result(ctx, s, _log_sum(ctx, s, "fro", False), "log")


@measure("log_sum_of_fro_over_margin", group="norms", needs=("train",), eq="Jiang et al. 2020 eq. (38)",
         size_adjust="log")
def log_sum_of_fro_over_margin(ctx: MeasureContext, s: dict) -> Result:
    """log d + (1/d)(Σ_l log ‖W_l‖_F² − 2 log γ)."""
    return _result(ctx, s, _log_sum(ctx, s, "fro", True), "log")


@measure("log_spec_init_main", group="norms", needs=("train", "init"), eq="Jiang et al. 2020 eq. (29)",
         size_adjust="log")
def log_spec_init_main(ctx: MeasureContext, s: dict) -> Result:
    """Σ_l log ‖W_l‖₂² − 2 log γ + log Σ_l ‖W_l − W_l⁰‖_F² / ‖W_l‖₂²."""
    n, dist = matrix_norms(ctx), distance_norms(ctx)
    v = _log_prod(ctx, "spec") - 2 * _log_margin(ctx, s) + (dist["fro"] / n["spec"]).sum().log().item()
    return _result(ctx, s, v, "log")


@measure("log_spec_orig_main", group="norms", needs=("train",), eq="Jiang et al. 2020 eq. (30)", size_adjust="log")
def log_spec_orig_main(ctx: MeasureContext, s: dict) -> Result:
    """Σ_l log ‖W_l‖₂² − 2 log γ + log Σ_l ‖W_l‖_F² / ‖W_l‖₂²."""
    n = matrix_norms(ctx)
    v = _log_prod(ctx, "spec") - 2 * _log_margin(ctx, s) + (n["fro"] / n["spec"]).sum().log().item()
    return _result(ctx, s, v, "log")
