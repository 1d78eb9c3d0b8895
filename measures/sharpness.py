"""Worst-case sharpness by projected gradient ascent (Jiang et al. 2020 §sharpness; Andriushchenko et al. 2023).

    sharpness(ρ) = max_{δ ∈ B(ρ)} L(w + δ) − L(w)

on a fixed seeded subset of training images, cross-entropy, evaluation mode. The sets:

- ``sharpness``: isotropic box |δ_i| ≤ ρ (Jiang et al.'s α-box, L∞);
- ``sharpness_mag``: magnitude-aware box |δ_i| ≤ ρ·(|w_i| + ε) (Jiang et al.'s α' with
  |w_i| + ε as the scale, ε = 1e-3; here ε is scaled by ρ too, so ρ = 0 means no
  perturbation);
- ``sharpness_m``: adaptive m-sharpness (Andriushchenko et al. 2023): the images are cut into
  batches of m = 128 drawn from a seeded permutation (never in stored order: data stored
  class by class would give one-class batches), the ascent is run on each batch
  separately, and the per-batch increases are averaged; the set is ‖δ / |w|‖_p ≤ ρ
  (elementwise-adaptive; ``norm`` l2 (default, an ellipsoid) or linf).

Values are the loss increase at the fixed radius (0 at ρ = 0, growing with ρ), with the
training-error increase at the worst point as extra value ``<name>.err`` (Andriushchenko
et al. report both). Jiang et al.'s 1/α² (search for the radius of a fixed increase) is
not computed: it costs a search of ascents.

The ascent is the anchor's APGD (Andriushchenko et al.'s ``eval_APGD_sharpness``, after
Croce & Hein 2020), run in the scaled coordinates u = δ / scale so that the set is a box
or ball of radius ρ:

    z = P(u_k + η·d_k),    u_{k+1} = P(u_k + α(z − u_k) + (1 − α)(u_k − u_{k−1}))

with d_k = sign(∇_u L) (linf) or ∇_u L / ‖∇_u L‖ (l2), P the projection onto the set,
α = ``momentum`` (0.75), η starting at ``step_size``·ρ (2ρ). The step-size schedule
(``schedule="apgd"``) halves η at the checkpoints ⌈p_j·steps⌉, p = 0.22, 0.41, 0.57, …
(p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)), whenever fewer than 75% of the steps
since the previous checkpoint raised the best loss or neither η nor the best loss changed,
and then goes back to the best iterate; ``schedule="constant"`` never halves.

Budget and restarts: one ascent costs at most ``steps`` gradient evaluations (20, the
anchor's n_iters), shared by at most ``restarts`` runs. The first run starts at u = 0
(the gradient's direction). A run ends early at a fixed point (the iterate, the previous
one and the best one coincide, to 1e-6·ρ: every later step, at any smaller η, returns
the same point); its remaining steps then go to a new run from a seeded random point
(uniform in the box for linf, uniform on the sphere of radius ρ for l2). So on a network
whose first run still moves after 20 steps the cost is the anchor's single run, and on a
small model whose runs converge in a few steps the same budget buys random restarts
(its maximum over a box is then a vertex problem with many local maxima). The largest
loss seen over all steps and runs is kept, so the value is ≥ 0. Diagnostics: the
increase of every run, the best run and step, ``last_quarter_gain`` (what the best run's
last quarter of steps added, as a fraction of the value) and ``still_improving`` (that
gain is above 1%: more steps might raise the value).
Perturbed: the trainable parameters (``perturb``), frozen ones stay fixed.

Version 2 (this ascent, seeded m-batches); version 1 was a 5-step sign ascent with
shrinking steps, no restarts, and m-batches in stored order.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from .context import MeasureContext
from .registry import MeasureError, Result, measure, settings_group
from .weights import parameter_set

ASCENT = dict(steps=20, restarts=10, schedule="apgd", step_size=2.0, momentum=0.75)
# 256 images for the two box measures (the anchor uses 1,024): with the anchor's 20 steps,
# 512 put all measures together over their cost target (8.8 of 8 training epochs on CRATE
# 192/6/6, benchmarks.measures_cost); the m-sharpness keeps 512 = 4 batches of m = 128.
settings_group("sharpness", radius=5e-4, n_images=256, perturb="trainable", **ASCENT)
settings_group("sharpness_mag", radius=5e-3, eps=1e-3, n_images=256, perturb="trainable", **ASCENT)
settings_group("sharpness_m", radius=0.1, norm="l2", m=128, n_images=512, perturb="trainable", **ASCENT)

Params = dict[str, Tensor]


def loss_and_grad(ctx: MeasureContext, params: Params, x: Tensor, y: Tensor,
                  grad: bool = True) -> tuple[float, float, Optional[Params]]:
    """Mean cross-entropy, error rate and (optionally) its gradient at ``params``, in eval batches.

    The loss is taken in at least float32 (a float64 model keeps float64).
    """
    leaf = {k: v.detach().requires_grad_(grad) for k, v in params.items()}
    total, wrong = 0.0, 0.0
    grads = {k: torch.zeros_like(v) for k, v in params.items()} if grad else None
    for i in range(0, len(x), ctx.batch_size):
        xb, yb = x[i : i + ctx.batch_size], y[i : i + ctx.batch_size]
        with torch.set_grad_enabled(grad):
            logits = functional_call(ctx.model, leaf, (xb,), strict=False)
            loss = F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), yb, reduction="sum")
        if grad:
            for k, g in zip(leaf, torch.autograd.grad(loss, list(leaf.values()))):
                grads[k] += g
        total += loss.item()
        wrong += (logits.argmax(1) != yb).sum().item()
    if grad:
        grads = {k: g / len(x) for k, g in grads.items()}
    return total / len(x), wrong / len(x), grads


def checkpoints(steps: int) -> set[int]:
    """APGD's step-size checkpoints ⌈p_j·steps⌉ (0-based step indices), p = 0.22, 0.41, 0.57, …"""
    p, w = [0.0, 0.22], [0, math.ceil(0.22 * steps)]
    while w[-1] < steps and w[-1] != w[-2]:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
        w.append(math.ceil(p[-1] * steps))
    return set(w[1:])


class Ball:
    """The set {u : ‖u‖_norm ≤ ρ} of scaled perturbations (linf: a box): projection, direction, random start."""

    def __init__(self, radius: float, norm: str):
        if norm not in ("linf", "l2"):
            raise MeasureError(f"sharpness norm must be 'linf' or 'l2', not {norm!r}")
        self.radius, self.norm = radius, norm

    def project(self, u: Params) -> Params:
        if self.norm == "linf":
            return {k: v.clamp(-self.radius, self.radius) for k, v in u.items()}
        shrink = min(1.0, self.radius / max(_norm(u), 1e-30))
        return {k: v * shrink for k, v in u.items()}

    def direction(self, g: Params) -> Params:
        if self.norm == "linf":
            return {k: v.sign() for k, v in g.items()}
        gnorm = max(_norm(g), 1e-30)
        return {k: v / gnorm for k, v in g.items()}

    def same(self, a: Params, b: Params) -> bool:
        """a = b up to 1e-6·ρ in every coordinate (exact for sign steps in the box; l2 steps round)."""
        gap = torch.stack([(a[k] - b[k]).abs().max() for k in a]).max().item()
        return gap <= 1e-6 * self.radius

    def random(self, like: Params, gen: torch.Generator) -> Params:
        """A uniform point of the box (linf) or of the sphere of radius ρ (l2)."""
        if self.norm == "linf":
            return {k: (2 * torch.rand(p.shape, generator=gen, device=p.device, dtype=p.dtype) - 1) * self.radius
                    for k, p in like.items()}
        u = {k: torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype) for k, p in like.items()}
        return {k: v * (self.radius / _norm(u)) for k, v in u.items()}


def _norm(u: Params) -> float:
    return torch.stack([v.double().square().sum() for v in u.values()]).sum().sqrt().item()  # one device sync


Objective = Callable[..., tuple[float, float, Optional[Params]]]  # f(u, grad=True) -> (loss, error, gradient in u)


def apgd_run(f: Objective, box: Ball, u: Params, budget: int, s: dict, start: Optional[tuple] = None) -> dict[str, Any]:
    """One APGD run from ``u`` of at most ``budget`` evaluations of ``f(u) -> (loss, err, grad_u)``.

    ``start`` is f(u) when already known (else evaluating it costs one). The run ends early
    at a fixed point: when the iterate, the previous one and the best one coincide, every
    later step (any smaller η) returns the same point. Returns the best iterate's loss,
    error and step, its best loss after three quarters of the steps, the evaluations used and
    whether it converged (ended at a fixed point).
    """
    alpha, evals = float(s["momentum"]), 0 if start else 1
    loss, err, g = start or f(u)
    best = {"loss": loss, "err": err, "u": u, "grad": g, "step": 0}
    steps = budget - evals
    eta, checks = float(s["step_size"]) * box.radius, checkpoints(steps) if s["schedule"] == "apgd" else set()
    prev_u, last_check, improved, eta_then, best_then = u, 0, 0, eta, loss
    quarter, at_quarter = math.ceil(0.75 * steps), loss  # the best loss after three quarters of the steps
    for k in range(steps):
        if k == quarter:
            at_quarter = best["loss"]
        z = box.project({n: u[n] + eta * d for n, d in box.direction(g).items()})
        new = box.project({n: u[n] + alpha * (z[n] - u[n]) + (1 - alpha) * (u[n] - prev_u[n]) for n in u})
        if box.same(new, u) and box.same(u, prev_u) and box.same(u, best["u"]):
            return {**_best(best), "at_quarter": best["loss"], "evals": evals, "converged": True}
        prev_u, u = u, new
        loss, err, g = f(u, grad=k < steps - 1)  # the last point's gradient would never be used
        evals += 1
        if loss > best["loss"]:
            best, improved = {"loss": loss, "err": err, "u": u, "grad": g, "step": k + 1}, improved + 1
        if k in checks:
            stalled = improved < 0.75 * (k - last_check) or (eta == eta_then and best["loss"] == best_then)
            eta_then, best_then, last_check, improved = eta, best["loss"], k, 0
            if stalled:  # halve the step and go back to the best iterate
                eta, u, prev_u, g = eta / 2, best["u"], best["u"], best["grad"]
    return {**_best(best), "at_quarter": at_quarter if steps > quarter else best["loss"], "evals": evals,
            "converged": False}


def _best(best: dict) -> dict:
    return {"loss": best["loss"], "err": best["err"], "step": best["step"]}


def ascent(ctx: MeasureContext, params: Params, x: Tensor, y: Tensor, radius: float, norm: str,
           scale: Optional[Params], s: dict, tag: Any = (), clean_key: Any = None) -> dict[str, Any]:
    """max over δ = scale·u, ‖u‖_norm ≤ radius, of L(w + δ) − L(w): APGD with restarts (module docstring).

    ``s`` holds steps, restarts, schedule, step_size, momentum; ``tag`` names the
    generator of the random starts (one stream per measure and batch); ``clean_key``, if
    given, caches L(w) and its gradient in the context under that key (measures that
    ascend from the same parameters on the same images share them).
    """
    check_ascent(s)
    box = Ball(radius, norm)
    scale = scale or {k: torch.ones_like(p) for k, p in params.items()}
    if radius > 0 and clean_key is not None:
        clean, clean_err, g0 = ctx.cached(("sharpness-clean", clean_key), lambda: loss_and_grad(ctx, params, x, y))
    else:
        clean, clean_err, g0 = loss_and_grad(ctx, params, x, y, grad=radius > 0)
    if radius <= 0:
        return {"clean": clean, "worst": clean, "increase": 0.0, "err_increase": 0.0, "runs": []}

    def f(u: Params, grad: bool = True) -> tuple[float, float, Optional[Params]]:
        loss, err, g = loss_and_grad(ctx, {k: p + scale[k] * u[k] for k, p in params.items()}, x, y, grad)
        return loss, err, g and {k: g[k] * scale[k] for k in u}  # the gradient in the scaled coordinates

    gen = ctx.generator("sharpness-start", *tag)
    u = {k: torch.zeros_like(p) for k, p in params.items()}
    start = (clean, clean_err, {k: g0[k] * scale[k] for k in params})  # f(0), already computed
    budget, runs = int(s["steps"]), []
    while budget > 0 and len(runs) < int(s["restarts"]):
        runs.append(apgd_run(f, box, u, budget, s, start))
        budget -= runs[-1]["evals"]
        u, start = box.random(params, gen), None
    top = max(range(len(runs)), key=lambda r: runs[r]["loss"])
    worst = max(clean, runs[top]["loss"])
    worst_err = runs[top]["err"] if runs[top]["loss"] > clean else clean_err
    return {"clean": clean, "worst": worst, "increase": worst - clean, "err_increase": worst_err - clean_err,
            "runs": runs, "best_run": top}


def check_ascent(s: dict) -> None:
    if s["schedule"] not in ("apgd", "constant"):
        raise MeasureError(f"sharpness schedule must be 'apgd' or 'constant', not {s['schedule']!r}")
    if int(s["restarts"]) < 1 or int(s["steps"]) < 1:
        raise MeasureError(f"sharpness needs steps ≥ 1 and restarts ≥ 1, not {s['steps']} and {s['restarts']}")


def _result(out: dict[str, Any], s: dict[str, Any], n: int, **diag: Any) -> Result:
    return Result(out["increase"], {"err": out["err_increase"]},
                  {"clean_loss": out["clean"], "worst_loss": out["worst"], "radius": s["radius"],
                   "steps": s["steps"], "restarts": s["restarts"], "schedule": s["schedule"], "n_images": n, **diag})


def ascent_diagnostics(out: dict[str, Any]) -> dict[str, Any]:
    """The increase of every run, the best run and its best step, and what its last quarter of steps added.

    ``last_quarter_gain``: the best run's gain over its last quarter of steps as a fraction
    of the increase (0 for a run that converged); ``still_improving``: that gain is > 1%.
    """
    if not out["runs"]:
        return {"runs": 0}
    best = out["runs"][out["best_run"]]
    gain = (best["loss"] - best["at_quarter"]) / max(out["increase"], 1e-30)
    return {"runs": len(out["runs"]), "run_increases": [r["loss"] - out["clean"] for r in out["runs"]],
            "best_run": out["best_run"], "best_step": best["step"], "last_quarter_gain": gain,
            "still_improving": gain > 0.01}


@measure("sharpness", group="sharpness", needs=("train", "grad"), eq="Jiang et al. 2020 §sharpness (α-box)",
         version=2)
def sharpness(ctx: MeasureContext, s: dict) -> Result:
    """Worst-case loss increase in the box |δ_i| ≤ ρ (APGD with restarts); extra value err: error increase."""
    x, y = ctx.subset("train", s["n_images"])
    params = parameter_set(ctx.model, s["perturb"])
    out = ascent(ctx, params, x, y, s["radius"], "linf", None, s, ("sharpness",), (s["n_images"], s["perturb"]))
    return _result(out, s, len(y), **ascent_diagnostics(out))


@measure("sharpness_mag", group="sharpness_mag", needs=("train", "grad"),
         eq="Jiang et al. 2020 §sharpness (magnitude-aware α')", version=2)
def sharpness_mag(ctx: MeasureContext, s: dict) -> Result:
    """Worst-case loss increase in the box |δ_i| ≤ ρ(|w_i| + ε) (APGD, restarts); extra value err: error increase."""
    x, y = ctx.subset("train", s["n_images"])
    params = parameter_set(ctx.model, s["perturb"])
    scale = {k: p.abs() + s["eps"] for k, p in params.items()}
    out = ascent(ctx, params, x, y, s["radius"], "linf", scale, s, ("sharpness_mag",), (s["n_images"], s["perturb"]))
    return _result(out, s, len(y), **ascent_diagnostics(out))


def m_batches(ctx: MeasureContext, n: int, m: int) -> list[Tensor]:
    """Indices of the m-batches: consecutive slices of a permutation seeded by (seed, n), not the stored order."""
    if m < 1:
        raise MeasureError(f"sharpness_m needs m ≥ 1, not {m}")
    perm = torch.randperm(n, generator=ctx.generator("sharpness_m-batches", n), device=ctx.device)
    return [perm[i : i + m] for i in range(0, n, m)]


@measure("sharpness_m", group="sharpness_m", needs=("train", "grad"),
         eq="Andriushchenko et al. 2023, adaptive m-sharpness", version=2)
def sharpness_m(ctx: MeasureContext, s: dict) -> Result:
    """Adaptive m-sharpness: mean over batches of m of max_{‖δ/|w|‖ ≤ ρ} L_B(w + δ) − L_B(w)."""
    x, y = ctx.subset("train", s["n_images"])
    params = parameter_set(ctx.model, s["perturb"])
    scale = {k: p.abs() for k, p in params.items()}
    batches = m_batches(ctx, len(y), int(s["m"]))
    outs = [ascent(ctx, params, x[idx], y[idx], s["radius"], s["norm"], scale, s, ("sharpness_m", b))
            for b, idx in enumerate(batches)]
    mean = {k: sum(o[k] for o in outs) / len(outs) for k in ("clean", "worst", "increase", "err_increase")}
    inc = torch.tensor([o["increase"] for o in outs], dtype=torch.float64)
    se = (inc.std().item() / len(outs) ** 0.5) if len(outs) > 1 else float("nan")
    diags = [ascent_diagnostics(o) for o in outs]
    return _result(mean, s, len(y), batches=len(outs), m=int(s["m"]), norm=s["norm"],
                   ci95=[mean["increase"] - 1.96 * se, mean["increase"] + 1.96 * se],
                   runs=[d["runs"] for d in diags], best_run=[d.get("best_run") for d in diags],
                   last_quarter_gain=[d.get("last_quarter_gain") for d in diags],
                   still_improving_batches=sum(bool(d.get("still_improving")) for d in diags) / len(diags))
