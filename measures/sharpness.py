"""Worst-case sharpness by gradient ascent (Jiang et al. 2020 §sharpness; Andriushchenko et al. 2023).

    sharpness(ρ) = max_{δ ∈ B(ρ)} L(w + δ) − L(w)

on a fixed seeded subset of training images, cross-entropy, evaluation mode. The sets:

- ``sharpness``: isotropic box |δ_i| ≤ ρ (Jiang et al.'s α-box, L∞);
- ``sharpness_mag``: magnitude-aware box |δ_i| ≤ ρ·(|w_i| + ε) (Jiang et al.'s α' with
  |w_i| + ε as the scale, ε = 1e-3; here ε is scaled by ρ too, so ρ = 0 means no
  perturbation);
- ``sharpness_m``: adaptive m-sharpness (Andriushchenko et al. 2023): the images are cut into
  batches of m = 128, the ascent is run on each batch separately, and the per-batch
  increases are averaged; the set is ‖δ / |w|‖_p ≤ ρ (elementwise-adaptive; ``norm``
  l2 (default, an ellipsoid) or linf).

Values are the loss increase at the fixed radius (0 at ρ = 0, growing with ρ), with the
training-error increase at the worst point as extra value ``<name>.err`` (Andriushchenko
et al. report both). Jiang et al.'s 1/α² (search for the radius of a fixed increase) is
not computed: it costs a search of ascents.

The ascent is projected gradient ascent in the scaled coordinates u = δ / scale (so the
set is a ball or box of radius ρ): a first step to the boundary along the gradient
(sign for linf, normalised for l2), then ``steps`` − 1 steps of size ρ·2/(t+1), projecting
back each time; the largest loss seen is kept, so the value is ≥ 0. Perturbed: the
trainable parameters (``perturb``), frozen ones stay fixed.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from .context import MeasureContext, trainable
from .registry import MeasureError, Result, measure, settings_group

settings_group("sharpness", radius=5e-4, n_images=512, steps=5, perturb="trainable")
settings_group("sharpness_mag", radius=5e-3, eps=1e-3, n_images=512, steps=5, perturb="trainable")
settings_group("sharpness_m", radius=0.1, norm="l2", m=128, n_images=512, steps=5, perturb="trainable")


def loss_and_grad(ctx: MeasureContext, params: dict[str, Tensor], x: Tensor, y: Tensor,
                  grad: bool = True) -> tuple[float, float, Optional[dict[str, Tensor]]]:
    """Mean cross-entropy, error rate and (optionally) its gradient at ``params``, in eval batches."""
    leaf = {k: v.detach().requires_grad_(grad) for k, v in params.items()}
    total, wrong = 0.0, 0.0
    grads = {k: torch.zeros_like(v) for k, v in params.items()} if grad else None
    for i in range(0, len(x), ctx.batch_size):
        xb, yb = x[i : i + ctx.batch_size], y[i : i + ctx.batch_size]
        with torch.set_grad_enabled(grad):
            logits = functional_call(ctx.model, leaf, (xb,), strict=False)
            loss = F.cross_entropy(logits.float(), yb, reduction="sum")
        if grad:
            for k, g in zip(leaf, torch.autograd.grad(loss, list(leaf.values()))):
                grads[k] += g
        total += loss.item()
        wrong += (logits.argmax(1) != yb).sum().item()
    if grad:
        grads = {k: g / len(x) for k, g in grads.items()}
    return total / len(x), wrong / len(x), grads


def ascent(ctx: MeasureContext, params: dict[str, Tensor], x: Tensor, y: Tensor, radius: float, norm: str = "linf",
           scale: Optional[dict[str, Tensor]] = None, steps: int = 5) -> dict[str, float]:
    """max over δ = scale·u, ‖u‖_norm ≤ radius, of L(w + δ) by projected ascent (module docstring)."""
    if norm not in ("linf", "l2"):
        raise MeasureError(f"sharpness norm must be 'linf' or 'l2', not {norm!r}")
    scale = scale or {k: torch.ones_like(p) for k, p in params.items()}
    u = {k: torch.zeros_like(p) for k, p in params.items()}
    clean, clean_err, g = loss_and_grad(ctx, params, x, y)
    best, best_err = clean, clean_err
    if radius <= 0:
        return {"clean": clean, "worst": clean, "increase": 0.0, "err_increase": 0.0}
    for t in range(1, steps + 1):
        gu = {k: g[k] * scale[k] for k in u}  # gradient in the scaled coordinates
        size = radius * (1.0 if t == 1 else 2.0 / (t + 1))
        if norm == "linf":
            u = {k: (u[k] + size * gu[k].sign()).clamp(-radius, radius) for k in u}
        else:
            gnorm = torch.sqrt(sum(v.square().sum() for v in gu.values())).clamp_min(1e-30)
            u = {k: u[k] + size * gu[k] / gnorm for k in u}
            unorm = torch.sqrt(sum(v.square().sum() for v in u.values()))
            shrink = min(1.0, radius / max(unorm.item(), 1e-30))
            u = {k: v * shrink for k, v in u.items()}
        perturbed = {k: p + scale[k] * u[k] for k, p in params.items()}
        loss, err, g = loss_and_grad(ctx, perturbed, x, y, grad=t < steps)
        if loss > best:
            best, best_err = loss, err
    return {"clean": clean, "worst": best, "increase": best - clean, "err_increase": best_err - clean_err}


def _result(out: dict[str, float], s: dict[str, Any], n: int, **diag: Any) -> Result:
    return Result(out["increase"], {"err": out["err_increase"]},
                  {"clean_loss": out["clean"], "worst_loss": out["worst"], "radius": s["radius"],
                   "steps": s["steps"], "n_images": n, **diag})


@measure("sharpness", group="sharpness", needs=("train", "grad"), eq="Jiang et al. 2020 §sharpness (α-box)")
def sharpness(ctx: MeasureContext, s: dict) -> Result:
    """Worst-case loss increase in the box |δ_i| ≤ ρ (gradient ascent); extra value err: error increase."""
    x, y = ctx.subset("train", s["n_images"])
    params = trainable(ctx.model, s["perturb"])
    return _result(ascent(ctx, params, x, y, s["radius"], "linf", None, int(s["steps"])), s, len(y))


@measure("sharpness_mag", group="sharpness_mag", needs=("train", "grad"),
         eq="Jiang et al. 2020 §sharpness (magnitude-aware α')")
def sharpness_mag(ctx: MeasureContext, s: dict) -> Result:
    """Worst-case loss increase in the box |δ_i| ≤ ρ(|w_i| + ε); extra value err: error increase."""
    x, y = ctx.subset("train", s["n_images"])
    params = trainable(ctx.model, s["perturb"])
    scale = {k: p.abs() + s["eps"] for k, p in params.items()}
    return _result(ascent(ctx, params, x, y, s["radius"], "linf", scale, int(s["steps"])), s, len(y))


@measure("sharpness_m", group="sharpness_m", needs=("train", "grad"),
         eq="Andriushchenko et al. 2023, adaptive m-sharpness")
def sharpness_m(ctx: MeasureContext, s: dict) -> Result:
    """Adaptive m-sharpness: mean over batches of m of max_{‖δ/|w|‖ ≤ ρ} L_B(w + δ) − L_B(w)."""
    x, y = ctx.subset("train", s["n_images"])
    params = trainable(ctx.model, s["perturb"])
    scale = {k: p.abs() for k, p in params.items()}
    m = int(s["m"])
    outs = [ascent(ctx, params, x[i : i + m], y[i : i + m], s["radius"], s["norm"], scale, int(s["steps"]))
            for i in range(0, len(y), m)]
    mean = {k: sum(o[k] for o in outs) / len(outs) for k in outs[0]}
    inc = torch.tensor([o["increase"] for o in outs], dtype=torch.float64)
    se = (inc.std().item() / len(outs) ** 0.5) if len(outs) > 1 else float("nan")
    return _result(mean, s, len(y), batches=len(outs), m=m, norm=s["norm"],
                   ci95=[mean["increase"] - 1.96 * se, mean["increase"] + 1.96 * se])
