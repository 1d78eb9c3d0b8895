"""Size, norm and spectral measures (Jiang et al. 2020 eqs. 20, 29–42; RGM's conventions).

Two views of the weights (``measures.weights`` defines what a weight is, once):

- the parameter vector w (``params``, ``l2``, ``l2_dist``, and the PAC-Bayes bounds):
  the learned weights, ``weights.weights(model)``: every parameter with ≥ 2 dimensions
  except normalisation parameters, biases and additive token parameters (cls token,
  positional embedding), each tied tensor once;
- the layer matrices W_l (everything with Σ_l or Π_l): every weight of the function,
  learned or frozen, split into the linear maps the forward pass applies
  (``layer_matrices``). Rules, by owning module:

  * ``MSSA`` (CRATE): the shared W = ``qkv.weight`` (Kp×d) as one matrix per head,
    U_kᵀ = its k-th row block; in crate_c/n/t the output operator *is* ±W or Wᵀ, so W
    enters once more as that layer (``<name>.out_op(tied)``), the one weight that is a
    layer twice because the forward pass applies it twice; crate_identity's identity is
    no weight;
  * the ViT's attention: each head's block of the q, k and v projections;
  * ``nn.MultiheadAttention``: ``in_proj_weight`` (3E×E) as its q, k, v row blocks, each
    split per head (or ``q/k/v_proj_weight`` when the key/value sizes differ);
  * ``ISTA``: the dictionary D;
  * any other weight: one matrix, ``p.reshape(p.shape[0], -1)``, named by its module for
    a ``weight`` attribute (Linear as is, conv kernels as (out, in·k·k) as RGM,
    ``nn.Embedding`` as its table) and by its parameter name otherwise.

  So every weight's entries lie in exactly one of its layer matrices (plus the tied
  re-use above), and nothing else is a layer matrix.

Spectral norms are exact (``torch.linalg.matrix_norm(ord=2)``, float64). LayerNorm makes
the next linear map scale-invariant, so products of norms are not reparametrisation
invariant on these models: they are reported as defined, not as bounds.

Values are RGM's raw quantities (squared norms, logs of products); RGM's final data-set
size adjustment (``log`` measures ½(v − log m), others √(v/m)) is added as
``<name>.size_adjusted`` only when the global setting ``size_adjusted`` is true.
"""
from __future__ import annotations

import math
from typing import Any, Iterator, Optional

import torch
from torch import Tensor, nn

from srr_bench.models.blocks import ISTA, MSSA
from srr_bench.models.crate import TiedOutput, TransposeOutput
from srr_bench.models.vit import MultiHeadAttention

from .context import MeasureContext
from .output import margin
from .registry import Result, measure, settings_group, size_adjusted
from .weights import Weight, weight_entries, weight_vectors, weights

settings_group("norms", margin_percentile=10.0, margin_n_images=None)


def _heads(prefix: str, W: Tensor, heads: int) -> Iterator[tuple[str, Tensor]]:
    """One matrix per head: the row blocks of W, named prefix0..prefix{K-1}."""
    for k, block in enumerate(W.chunk(heads, dim=0)):
        yield f"{prefix}{k}", block


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _split(w: Weight, parent: Optional[nn.Module]) -> Iterator[tuple[str, Tensor]]:
    """The layer matrices of one weight, given the module that holds its owner (module docstring)."""
    mod, attr, W, name = w.module, w.attr, w.tensor, w.module_name
    child = name.rpartition(".")[2]
    if isinstance(parent, MultiHeadAttention) and child in ("q", "k", "v"):
        yield from _heads(name, W, parent.heads)
    elif isinstance(parent, MSSA) and child == "qkv":
        yield from _heads(name[: -len("qkv")] + "U", W, parent.heads)
        if isinstance(parent.out_op, (TiedOutput, TransposeOutput)):
            yield name[: -len("qkv")] + "out_op(tied)", W
    elif isinstance(mod, nn.MultiheadAttention) and attr == "in_proj_weight":
        for proj, block in zip("qkv", W.chunk(3, dim=0)):
            yield from _heads(_join(name, proj), block, mod.num_heads)
    elif isinstance(mod, nn.MultiheadAttention) and attr.endswith("_proj_weight"):
        yield from _heads(_join(name, attr[0]), W, mod.num_heads)
    elif isinstance(mod, ISTA):
        yield _join(name, "D"), W
    else:
        yield (name if attr == "weight" and name else w.name), W.reshape(W.shape[0], -1)


def layer_matrices(model: nn.Module) -> dict[str, Tensor]:
    """The weight matrices of the forward pass, by name (see module docstring); detached views."""
    modules = dict(model.named_modules())
    out: dict[str, Tensor] = {}
    for w in weight_entries(model, learned_only=False):
        parent = modules[w.module_name.rpartition(".")[0]] if w.module_name else None
        for key, mat in _split(w, parent):
            if key in out:
                raise ValueError(f"two layer matrices named {key!r}")
            out[key] = mat
    if not out:
        raise ValueError(f"{type(model).__name__} has no weight matrices (no parameter with two or more dimensions)")
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


def _result(ctx: MeasureContext, s: dict[str, Any], value: float, kind: str, **diag: Any) -> Result:
    extra = {"size_adjusted": size_adjusted(kind, value, ctx.train_size)} if s.get("size_adjusted") else {}
    return Result(value, extra, diag)


def _log_margin(ctx: MeasureContext, s: dict) -> float:
    """log γ with the margin settings of this group (see ``output.margin``)."""
    return math.log(margin(ctx, s["margin_percentile"], s["margin_n_images"])["gamma"])


# ---- size and vector norms ------------------------------------------------------------------
@measure("params", group="norms", eq="Jiang et al. 2020 eq. (20)", size_adjust="sqrt", version=2)
def params(ctx: MeasureContext, s: dict) -> Result:
    """Number of learned weights (``measures.weights``: no biases, norm or token parameters; tied once)."""
    n = sum(p.numel() for p in weights(ctx.model).values())
    total = sum(p.numel() for p in {id(p): p for p in ctx.model.parameters()}.values())
    frozen = sum(p.numel() for p in ctx.model.parameters() if not p.requires_grad)
    return _result(ctx, s, float(n), "sqrt", all_parameters=total, frozen_parameters=frozen)


@measure("l2", group="norms", eq="RGM L2: ‖w‖₂", size_adjust="sqrt", version=2)
def l2(ctx: MeasureContext, s: dict) -> Result:
    """‖w‖₂ over the learned weights (no square)."""
    return _result(ctx, s, weight_vectors(ctx.model)[0].norm().item(), "sqrt")


@measure("l2_dist", group="norms", needs=("init",), eq="RGM L2_DIST: ‖w − w₀‖₂", size_adjust="sqrt", version=2)
def l2_dist(ctx: MeasureContext, s: dict) -> Result:
    """‖w − w₀‖₂ over the learned weights (no square)."""
    return _result(ctx, s, weight_vectors(ctx.model, ctx.init_model)[1].norm().item(), "sqrt")


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
