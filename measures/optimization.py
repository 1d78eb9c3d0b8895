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

A milestone the run never reached is *censored*: the measure is missing (NaN), not the
run's total number of steps (a lower bound that would rank a run that never fitted its
training set with the fastest ones, or give ``steps_ce_0.1_to_0.01 = 0``). The diagnostics
say ``censored: true`` and the reason, e.g. "censored: CE 0.1 never reached in 500 steps".
A record whose final train CE is already below a milestone it does not hold was not
checked every epoch: also NaN, with that reason. The analysis drops missing values per
measure and counts them (``analysis.correlate``).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch

from .context import MeasureContext, flat
from .registry import MissingInput, Result, measure, settings_group
from .sharpness import loss_and_grad
from .weights import parameter_set

settings_group("optimization")
settings_group("grad_noise", n_batches=16, batch_size=None, perturb="trainable")


def _metric(ctx: MeasureContext, key: str) -> Optional[float]:
    v = (ctx.metrics or {}).get(key)
    return None if v is None else float(v)


def _milestone(ctx: MeasureContext, ce: str) -> tuple[float, str]:
    """(steps at which the train CE first reached ``ce``, "") or (NaN, why it is missing).

    ``steps_to_ce_<ce>`` is null in the record when the run never reached the milestone;
    a record without the key at all predates milestones (MissingInput).
    """
    key = f"steps_to_ce_{ce}"
    metrics = ctx.metrics or {}
    if key not in metrics:
        raise MissingInput(f"the run record has no {key}")
    v = _metric(ctx, key)
    if v is not None and math.isfinite(v):
        return v, ""
    steps = _metric(ctx, "steps")
    final = _metric(ctx, "train_loss")
    if final is not None and final <= float(ce):
        return math.nan, (f"not recorded: the final train CE {final:.3g} is below {ce} but the record has "
                          f"no {key} (the train set was not evaluated every epoch)")
    within = f" in {int(steps)} steps" if steps is not None and math.isfinite(steps) else ""
    return math.nan, f"censored: CE {ce} never reached{within}"


def _censored(reason: str) -> Result:
    return Result(math.nan, {}, {"censored": True, "reason": reason})


@measure("steps_to_ce_0.1", group="optimization", needs=("run",), version=2,
         eq="Jiang et al. 2020 §optimisation (#steps to CE 0.1)")
def steps_to_ce_01(ctx: MeasureContext, s: dict) -> Result:
    """Optimisation steps until the training cross-entropy reached 0.1 (NaN if never: censored)."""
    v, why = _milestone(ctx, "0.1")
    return _censored(why) if why else Result(v, {}, {"censored": False})


@measure("steps_ce_0.1_to_0.01", group="optimization", needs=("run",), version=2,
         eq="Jiang et al. 2020 §optimisation (#steps from CE 0.1 to 0.01)")
def steps_ce_01_to_001(ctx: MeasureContext, s: dict) -> Result:
    """Optimisation steps from training CE 0.1 to CE 0.01 (NaN if either was never reached: censored)."""
    a, why = _milestone(ctx, "0.1")
    if why:
        return _censored(why)
    b, why = _milestone(ctx, "0.01")
    if why:
        return _censored(f"{why} (CE 0.1 at step {int(a)})")
    return Result(b - a, {}, {"censored": False})


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
    params = parameter_set(ctx.model, s["perturb"])
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
