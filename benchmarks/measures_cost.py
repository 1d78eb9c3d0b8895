"""Cost of every measure as a multiple of one training epoch on the same data and machine.

    python -m benchmarks.measures_cost                      # CIFAR-10 10k, CRATE 192/6/6, patch 4
    python -m benchmarks.measures_cost --quick              # a small run to check the wiring
    python -m benchmarks.measures_cost --data random --dim 384 --depth 12 --heads 6

It trains the model for one epoch (AdamW, batch 128, a plain loop, no augmentation),
timing it; that epoch is the unit. Then it computes the measures on the trained model
(with its initial weights) through ``measures.compute`` in one context, as
``srr-measure`` would, and prints each one's wall time in epochs, with its
convergence flags and confidence intervals. Targets (issue): SRR ≤ 0.1 epoch, the
PAC-Bayes σ searches together ≤ 3 epochs, all measures together ≤ 8 epochs.

Real CIFAR-10 is read from the JPEG archive (``--cifar``) through srr_bench.data's
``imagefolder``; ``--data random`` uses random tensors of CIFAR's shape (the model then
stays at chance, so the accuracy searches cannot converge and run to their budget).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from measures import compute
from srr_bench.models import build_model, count_parameters

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"
TARGETS = {"srr": 0.1, "pacbayes": 3.0, "all": 8.0}


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", choices=["cifar", "random"], default="cifar")
    p.add_argument("--cifar", default=str(CIFAR), help="CIFAR-10 as a class-per-folder .tar.gz")
    p.add_argument("--n-train", type=int, default=10_000)
    p.add_argument("--n-test", type=int, default=1_000)
    p.add_argument("--model", default="crate")
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--batch", type=int, default=128, help="training batch size of the timed epoch")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--measures", default=None, help="comma-separated names or patterns (default: all)")
    p.add_argument("--set", action="append", default=[], metavar="GROUP.KEY=VALUE", help="measure settings")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--quick", action="store_true", help="1k images, CRATE 96/4/4: a wiring check, not a figure")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args()
    if args.quick:
        args.n_train, args.n_test, args.dim, args.depth, args.heads = 1000, 200, 96, 4, 4
    return args


def load(args: argparse.Namespace) -> tuple[Any, Any, int]:
    if args.data == "cifar":
        from srr_bench.data import load_data

        path = Path(args.cifar)
        ds = load_data(dict(name="imagefolder", root=str(path.parent), options=dict(path=path.name),
                            n_train=args.n_train, n_test=args.n_test, download=False))
        return (ds.train.x, ds.train.y), (ds.test.x, ds.test.y), ds.num_classes
    g = torch.Generator().manual_seed(0)
    make = lambda n: (torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g))
    return make(args.n_train), make(args.n_test), 10


def train_one_epoch(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, lr: float) -> dict:
    """One AdamW epoch (plain loop); returns its wall time and loss record."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.05)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    model.train()
    losses = []
    t0 = time.perf_counter()
    for i in range(0, len(y), batch):
        idx = order[i : i + batch]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"seconds": time.perf_counter() - t0, "steps": len(losses), "sum_train_loss": sum(losses)}


def settings(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        k, _, v = item.partition("=")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def summary(name: str, diag: dict) -> str:
    bits = []
    for key in ("converged", "evals", "mc_samples", "n_images", "iters", "probes", "batches"):
        if key in diag and diag[key] is not None:
            bits.append(f"{key}={diag[key]}")
    ci = diag.get("ci95")
    if isinstance(ci, dict):
        ci = ci.get("mean")
    if isinstance(ci, list) and len(ci) == 2 and all(isinstance(c, (int, float)) for c in ci):
        bits.append(f"ci95=[{ci[0]:.4g}, {ci[1]:.4g}]")
    return " ".join(bits)


def main() -> None:
    args = arguments()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    train, test, classes = load(args)
    print(f"data: {args.data} train {tuple(train[0].shape)} test {tuple(test[0].shape)} ({time.perf_counter() - t0:.0f}s)")
    torch.manual_seed(0)
    model = build_model(dict(name=args.model, dim=args.dim, depth=args.depth, heads=args.heads, patch_size=args.patch,
                             image_size=train[0].shape[-1], channels=train[0].shape[1], num_classes=classes))
    init = copy.deepcopy(model)
    print(f"model: {args.model} dim {args.dim} depth {args.depth} heads {args.heads} patch {args.patch}, "
          f"{count_parameters(model) / 1e6:.2f}M parameters, torch threads {torch.get_num_threads()}")
    epoch = train_one_epoch(model, *train, args.batch, args.lr)
    unit = epoch["seconds"]
    print(f"one training epoch (AdamW, batch {args.batch}, {epoch['steps']} steps): {unit:.1f}s  <- the unit")
    metrics = {"steps": epoch["steps"], "sum_train_loss": epoch["sum_train_loss"], "n_train": len(train[1]),
               "steps_to_ce_0.1": None, "steps_to_ce_0.01": None}
    names = args.measures.split(",") if args.measures else None
    t1 = time.perf_counter()
    out = compute(model.eval(), names, init_model=init, train=train, test=test, metrics=metrics,
                  run_config={"train": {"batch_size": args.batch}}, settings=settings(args.set), progress=True)
    total = time.perf_counter() - t1
    rows = sorted(((d.get("wall_s", 0.0), n) for n, d in out["diagnostics"].items()), reverse=True)
    print(f"\n{'measure':34s} {'seconds':>8s} {'epochs':>7s}  value / diagnostics")
    for sec, name in rows:
        print(f"{name:34s} {sec:8.1f} {sec / unit:7.3f}  {out['values'][name]:.5g}  {summary(name, out['diagnostics'][name])}")
    for name, reason in out["failures"].items():
        print(f"{name:34s} FAILED: {reason}")
    groups = {
        "srr": sum(d["wall_s"] for n, d in out["diagnostics"].items() if n == "srr"),
        "srr_ref": sum(d["wall_s"] for n, d in out["diagnostics"].items() if n == "srr_ref"),
        "pacbayes": sum(d["wall_s"] for n, d in out["diagnostics"].items() if n.startswith("pacbayes")),
        "all": total,
    }
    print()
    for g, sec in groups.items():
        target = TARGETS.get(g)
        verdict = "" if target is None else (" ok" if sec / unit <= target else f" OVER the {target} epoch target")
        tgt = f" (target ≤ {target})" if target is not None else ""
        print(f"{g:10s} {sec:8.1f}s = {sec / unit:6.3f} epochs{tgt}{verdict}")
    if args.json:
        Path(args.json).write_text(json.dumps({"epoch_s": unit, "groups_s": groups, "args": vars(args),
                                               "measures_s": {n: s for s, n in rows}}, indent=2))


if __name__ == "__main__":
    main()
