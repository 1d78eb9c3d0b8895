"""Output (margin) measures (Jiang et al. 2020 eq. 22; RGM's INVERSE_MARGIN).

The margin of an example is its true-class logit minus the largest other logit, on the
final model in evaluation mode. γ is the ``percentile``-th percentile (default 10) of the
margins over the training set: the k-th smallest with k = max(1, ⌊n·percentile/100⌋),
as RGM's ``kthvalue(m // 10)``. As RGM, |γ| is used in 1/γ² and in the "over margin"
measures; a non-positive γ (more than ``percentile``% of the training set misclassified)
is flagged in the diagnostics (``gamma_raw``, ``margin_nonpositive``).
"""
from __future__ import annotations

from typing import Any

import torch

from .context import MeasureContext
from .registry import Result, measure, settings_group, size_adjusted

settings_group("margin", percentile=10.0, n_images=None)


def margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """True-class logit minus the largest other logit, per example."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return true - other


def margin(ctx: MeasureContext, percentile: float = 10.0, n_images: Any = None) -> dict[str, float]:
    """γ (absolute value), the raw percentile and the training accuracy, cached per setting."""

    def run() -> dict[str, float]:
        logits, y = ctx.split_logits("train", n_images)
        m = margins(logits.double(), y)
        k = max(1, int(len(m) * percentile / 100))
        raw = m.kthvalue(k).values.item()
        return {"gamma": abs(raw), "gamma_raw": raw, "k": k, "n": len(m), "train_acc": (m > 0).double().mean().item()}

    return ctx.cached(("margin", percentile, n_images), run)


@measure("inverse_margin", group="margin", needs=("train",), eq="Jiang et al. 2020 eq. (22)", size_adjust="sqrt")
def inverse_margin(ctx: MeasureContext, s: dict) -> Result:
    """1/γ², γ the 10th-percentile margin on the training set."""
    g = margin(ctx, s["percentile"], s["n_images"])
    v = 1.0 / g["gamma"] ** 2 if g["gamma"] > 0 else float("inf")
    extra = {"size_adjusted": size_adjusted("sqrt", v, ctx.train_size)} if s.get("size_adjusted") else {}
    return Result(v, extra, {**g, "margin_nonpositive": g["gamma_raw"] <= 0})
