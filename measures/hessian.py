"""Hessian of the training loss: top eigenvalue and trace (as PyHessian, with torch.func HVPs).

The loss is the mean cross-entropy over a fixed seeded subset of training images, in
evaluation mode, as a function of the trainable parameters. Hessian-vector products are
forward-over-reverse (``torch.func.jvp`` of ``torch.func.grad``), accumulated over
evaluation batches, with the math attention kernel (the fused CPU/GPU kernels have no
second derivative).

- ``hessian_top_eig``: power iteration from a seeded Gaussian start; the Rayleigh quotient
  at convergence (relative change ≤ ``tol``) or after ``iters`` products. Power iteration
  finds the eigenvalue of largest MAGNITUDE; the value keeps its sign.
- ``hessian_trace``: Hutchinson's estimator with ``probes`` Rademacher vectors,
  tr(H) ≈ mean_j z_jᵀ H z_j, and a Student-t 95% confidence interval over the probes.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, grad, jvp
from torch.nn.attention import SDPBackend, sdpa_kernel

from .context import MeasureContext
from .pacbayes import t_interval
from .registry import Result, measure, settings_group
from .weights import parameter_set

Vec = list[Tensor]
settings_group("hessian", n_images=128, iters=20, tol=1e-3, probes=24, perturb="trainable")


def _dot(a: Vec, b: Vec) -> Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def power_iteration(hvp: Callable[[Vec], Vec], like: Vec, generator: torch.Generator, iters: int = 20,
                    tol: float = 1e-3) -> dict[str, Any]:
    """Largest-magnitude eigenvalue of the symmetric operator ``hvp`` (vectors shaped as ``like``)."""
    v = [torch.randn(t.shape, generator=generator, device=t.device, dtype=t.dtype) for t in like]
    norm = _dot(v, v).sqrt()
    v = [t / norm for t in v]
    lam, converged, it = float("nan"), False, 0
    for it in range(1, iters + 1):
        hv = hvp(v)
        new = _dot(v, hv).item()  # Rayleigh quotient, ‖v‖ = 1
        norm = _dot(hv, hv).sqrt()
        if norm == 0:
            lam, converged = 0.0, True
            break
        v = [t / norm for t in hv]
        if it > 1 and abs(new - lam) <= tol * abs(new):
            lam, converged = new, True
            break
        lam = new
    return {"eigenvalue": lam, "converged": converged, "iters": it}


def hutchinson_trace(hvp: Callable[[Vec], Vec], like: Vec, generator: torch.Generator, probes: int = 32) -> dict[str, Any]:
    """tr(H) ≈ mean of zᵀHz over Rademacher probes z, with a 95% t interval."""
    samples = []
    for _ in range(probes):
        z = [torch.randint(0, 2, t.shape, generator=generator, device=t.device).to(t.dtype) * 2 - 1 for t in like]
        samples.append(_dot(z, hvp(z)).item())
    v = torch.tensor(samples, dtype=torch.float64)
    return {"trace": v.mean().item(), "ci95": t_interval(v), "probes": probes,
            "se": v.std().item() / math.sqrt(probes) if probes > 1 else float("nan")}


def loss_hvp(ctx: MeasureContext, s: dict[str, Any]) -> tuple[Callable[[Vec], Vec], Vec]:
    """The HVP of the mean training loss on the subset, and the parameters it acts on."""
    params = parameter_set(ctx.model, s["perturb"])
    names = list(params)
    x, y = ctx.subset("train", s["n_images"])
    model = ctx.model

    def batch_loss(p: dict[str, Tensor], xb: Tensor, yb: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(model, p, (xb,), strict=False), yb, reduction="sum") / len(x)

    def hvp(v: Vec) -> Vec:
        tangent = dict(zip(names, v))
        out = [torch.zeros_like(t) for t in v]
        with sdpa_kernel(SDPBackend.MATH):
            for i in range(0, len(x), ctx.batch_size):
                xb, yb = x[i : i + ctx.batch_size], y[i : i + ctx.batch_size]
                _, hv = jvp(lambda p: grad(batch_loss)(p, xb, yb), (params,), (tangent,))
                out = [o + hv[k] for o, k in zip(out, names)]
        return out

    return hvp, list(params.values())


@measure("hessian_top_eig", group="hessian", needs=("train", "grad"), eq="power iteration on Hessian-vector products")
def hessian_top_eig(ctx: MeasureContext, s: dict) -> Result:
    """Largest-magnitude eigenvalue of the training-loss Hessian (power iteration)."""
    hvp, like = loss_hvp(ctx, s)
    r = power_iteration(hvp, like, ctx.generator("hessian-power"), int(s["iters"]), s["tol"])
    return Result(r["eigenvalue"], {}, {**r, "n_images": len(ctx.subset("train", s["n_images"])[1])})


@measure("hessian_trace", group="hessian", needs=("train", "grad"), eq="Hutchinson 1989, Rademacher probes")
def hessian_trace(ctx: MeasureContext, s: dict) -> Result:
    """Trace of the training-loss Hessian (Hutchinson), with a 95% confidence interval."""
    hvp, like = loss_hvp(ctx, s)
    r = hutchinson_trace(hvp, like, ctx.generator("hessian-trace"), int(s["probes"]))
    return Result(r["trace"], {}, {**r, "n_images": len(ctx.subset("train", s["n_images"])[1])})
