"""Optimisers (AdamW, SGD with momentum, Lion) and the warm-up + cosine learning rate."""
from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import nn

from .registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023, Algorithm 2): update = sign(β1 m + (1−β1) g),
    w ← w − lr (update + wd·w), m ← β2 m + (1−β2) g. Decoupled weight decay, as AdamW."""

    def __init__(self, params: Iterable, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                m = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(torch.sign(m * b1 + p.grad * (1 - b1)), alpha=-group["lr"])
                m.lerp_(p.grad, 1 - b2)
        return loss


@OPTIMIZERS.register("adamw")
def _adamw(groups: list[dict], cfg: dict) -> torch.optim.Optimizer:
    """On a GPU the fused kernel (one launch for all tensors). On a CPU the foreach update, which
    torch leaves off there: the single-tensor update's operations in the same order, so the same
    bits (checked in tests/test_train_speed.py), for 0.6x the optimiser's time
    (``python -m benchmarks.train_levers``); fused AdamW on a CPU rounds differently."""
    params = [p for g in groups for p in g["params"]]
    fused = all(p.is_cuda for p in params)
    foreach = not fused and all(p.device.type == "cpu" for p in params)
    return torch.optim.AdamW(groups, lr=cfg["lr"], betas=tuple(cfg.get("betas", (0.9, 0.999))), fused=fused or None,
                             foreach=foreach or None)


@OPTIMIZERS.register("sgd")
def _sgd(groups: list[dict], cfg: dict) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=cfg["lr"], momentum=cfg.get("momentum", 0.9), nesterov=cfg.get("nesterov", False))


@OPTIMIZERS.register("lion")
def _lion(groups: list[dict], cfg: dict) -> torch.optim.Optimizer:
    return Lion(groups, lr=cfg["lr"], betas=tuple(cfg.get("betas", (0.9, 0.99))))


def build_optimizer(model: nn.Module, cfg: dict) -> torch.optim.Optimizer:
    """Trainable parameters only (``crate_fix``'s frozen operator stays out). Biases,
    LayerNorm weights and the cls/positional embeddings get no weight decay unless
    ``decay_all`` is set (the reference CRATE code decays everything)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or name.endswith(("cls_token", "pos_embedding"))
        (no_decay if skip and not cfg.get("decay_all", False) else decay).append(p)
    groups = [dict(params=decay, weight_decay=cfg.get("weight_decay", 0.0)), dict(params=no_decay, weight_decay=0.0)]
    return OPTIMIZERS.get(cfg["name"])([g for g in groups if g["params"]], cfg)


def learning_rate(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr: float) -> float:
    """Linear warm-up from lr/warmup to lr over ``warmup_steps``, then cosine to ``min_lr`` at ``total_steps``."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * t))
