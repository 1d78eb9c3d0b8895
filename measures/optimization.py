"""Optimisation-based measures (Jiang et al. 2020 §optimisation), read from the run's record.

- ``steps_to_ce_0.1``: optimisation steps until the full-train-set cross-entropy first
  reached 0.1 (checked by the trainer at the end of each epoch);
- ``steps_ce_0.1_to_0.01``: steps from CE 0.1 to CE 0.01;
- ``sum_train_loss``: the sum over optimisation steps of the mini-batch training loss;
- ``grad_noise``: the variance of the mini-batch gradient at the end of training,
  tr Cov(g_B) = E‖g_B − ḡ‖², with the run's recorded value if metrics.json has one, else
  computed on the final model: ``n_batches`` seeded disjoint mini-batches of the training
  batch size (the run's ``train.batch_size``, else ``batch_size``), evaluation mode (no
  dropout), mean cross-entropy; the unbiased estimate over batches. ‖ḡ‖² is the extra
  value ``grad_noise.mean_sq``.

A run that never reached a milestone gives its total number of steps, a lower bound,
flagged ``censored`` in the diagnostics.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from .context import MeasureContext, flat, trainable
from .registry import MissingInput, Result, measure, settings_group
from .sharpness import loss_and_grad

settings_group("optimization")
settings_group("grad_noise", n_batches=16, batch_size=None, perturb="trainable")


def _metric(ctx: MeasureContext, key: str) -> Optional[float]:
    v = (ctx.metrics or {}).get(key)
    return None if v is None else float(v)


def _steps_to(ctx: MeasureContext, ce: str) -> tuple[float, bool]:
    v = _metric(ctx, f"steps_to_ce_{ce}")
    if v is not None:
        return v, False
    total = _metric(ctx, "steps")
    if total is None:
        raise MissingInput(f"the run record has neither steps_to_ce_{ce} nor steps")
    return total, True


@measure("steps_to_ce_0.1", group="optimization", needs=("run",), eq="Jiang et al. 2020 §optimisation (#steps to CE 0.1)")
def steps_to_ce_01(ctx: MeasureContext, s: dict) -> Result:
    """Optimisation steps until the training cross-entropy reached 0.1 (total steps if never, censored)."""
    v, censored = _steps_to(ctx, "0.1")
    return Result(v, {}, {"censored": censored})


@measure("steps_ce_0.1_to_0.01", group="optimization", needs=("run",),
         eq="Jiang et al. 2020 §optimisation (#steps from CE 0.1 to 0.01)")
def steps_ce_01_to_001(ctx: MeasureContext, s: dict) -> Result:
    """Optimisation steps from training CE 0.1 to CE 0.01 (to the end of training if never, censored)."""
    a, ca = _steps_to(ctx, "0.1")
    b, cb = _steps_to(ctx, "0.01")
    return Result(b - a, {}, {"censored": ca or cb})


@measure("sum_train_loss", group="optimization", needs=("run",), eq="Ru et al. 2021 (SOTL); RGM fork's SOTL")
def sum_train_loss(ctx: MeasureContext, s: dict) -> Result:
    """Sum over optimisation steps of the mini-batch training loss."""
    v = _metric(ctx, "sum_train_loss")
    if v is None:
        raise MissingInput("the run record has no sum_train_loss")
    return Result(v)


def _train_batch_size(ctx: MeasureContext, s: dict[str, Any]) -> int:
    if s["batch_size"]:
        return int(s["batch_size"])
    return int((ctx.run_config.get("train") or {}).get("batch_size") or 128)


@measure("grad_noise", group="grad_noise", needs=("train",), eq="Jiang et al. 2020 §optimisation (gradient noise)")
def grad_noise(ctx: MeasureContext, s: dict) -> Result:
    """E‖g_B − ḡ‖² of mini-batch gradients at the end of training (recorded, else computed)."""
    recorded = _metric(ctx, "grad_noise")
    if recorded is not None:
        return Result(recorded, {}, {"source": "run"})
    b = _train_batch_size(ctx, s)
    x, y = ctx.subset("train", b * int(s["n_batches"]))
    order = torch.randperm(len(y), generator=ctx.generator("grad-noise"), device=ctx.device)
    params = trainable(ctx.model, s["perturb"])
    grads = []
    for i in range(0, len(y) - b + 1, b):  # disjoint full batches
        idx = order[i : i + b]
        grads.append(flat(loss_and_grad(ctx, params, x[idx], y[idx])[2]).double())
    if len(grads) < 2:
        raise MissingInput(f"grad_noise needs at least two batches of {b} training images")
    G = torch.stack(grads)  # (B, P)
    mean = G.mean(0)
    noise = (G - mean).square().sum(1).sum().item() / (len(grads) - 1)
    return Result(noise, {"mean_sq": mean.square().sum().item()},
                  {"source": "computed", "batches": len(grads), "batch_size": b})
