"""Cost of every measure as a multiple of one training epoch on the same data and machine.

    python -m benchmarks.measures_cost                      # CIFAR-10 10k, CRATE 192/6/6, patch 4
    python -m benchmarks.measures_cost --quick              # a small run to check the wiring
    python -m benchmarks.measures_cost --data random --dim 384 --depth 12 --heads 6

It trains the model for one epoch (AdamW, batch 128, a plain loop, no augmentation),
timing it; that epoch is the unit. Then it computes the measures on the trained model
(with its initial weights) one by one in one shared context, as ``srr-measure`` would,
and prints each one's cost in epochs, with its convergence flags and confidence
intervals, and the totals of the SRR, PAC-Bayes, sharpness and Hessian groups. Targets
(issue 18): SRR ≤ 0.1 epoch, the PAC-Bayes σ searches together ≤ 1 epoch, all measures
together ≤ 2.5 epochs (the earlier targets were 3 and 8). ``--json`` also writes every
value and diagnostic, so that two runs on the same trained model can be compared.

On a shared machine the speed can change several-fold within minutes (other jobs, other
virtual machines). So the unit is also re-measured around each measure: ``--calib``
training steps of a separate copy of the model (the measured one is never touched),
timed just before and just after it; a measure's cost in "local epochs" is its time over
the epoch that those steps predict (the mean step time × steps per epoch). The table
shows both ratios; the targets are judged on the local one.

Real CIFAR-10 is read from the JPEG archive (``--cifar``) through srr_bench.data's
``imagefolder``; ``--data random`` uses random tensors of CIFAR's shape (the model then
stays at chance, so the accuracy searches cannot converge and run to their budget).
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from measures import MeasureContext, compute, select
from srr_bench.models import build_model, count_parameters

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"
TARGETS = {"srr": 0.1, "pacbayes": 1.0, "all": 2.5}


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
    p.add_argument("--calib", type=int, default=3, help="training steps timed around each measure (0: off)")
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


class Trainer:
    """AdamW steps (batch ``batch``) on one model: the timed epoch and the calibration steps."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, lr: float):
        self.model, self.x, self.y, self.batch = model, x, y, batch
        self.opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.05)
        self.order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
        self.steps_per_epoch = -(-len(y) // batch)

    def step(self, i: int) -> float:
        idx = self.order[(i % self.steps_per_epoch) * self.batch :][: self.batch]
        loss = F.cross_entropy(self.model(self.x[idx]), self.y[idx])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.item()

    def epoch(self) -> dict[str, float]:
        self.model.train()
        t0 = time.perf_counter()
        losses = [self.step(i) for i in range(self.steps_per_epoch)]
        return {"seconds": time.perf_counter() - t0, "steps": len(losses), "sum_train_loss": sum(losses)}

    def local_epoch(self, steps: int) -> float:
        """Seconds per epoch predicted by ``steps`` steps timed now (after one untimed step)."""
        self.model.train()
        self.step(0)
        t0 = time.perf_counter()
        for i in range(1, steps + 1):
            self.step(i)
        return (time.perf_counter() - t0) / steps * self.steps_per_epoch


def settings(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        k, _, v = item.partition("=")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def summary(diag: dict) -> str:
    bits = [f"{k}={diag[k]}" for k in ("converged", "evals", "mc_samples", "n_images", "iters", "probes", "batches")
            if diag.get(k) is not None]
    ci = diag.get("ci95")
    ci = ci.get("mean") if isinstance(ci, dict) else ci
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
    calib = Trainer(copy.deepcopy(init), *train, args.batch, args.lr)  # timing only; never measured
    before = calib.local_epoch(args.calib) if args.calib else float("nan")
    epoch = Trainer(model, *train, args.batch, args.lr).epoch()
    unit = epoch["seconds"]
    print(f"one training epoch (AdamW, batch {args.batch}, {epoch['steps']} steps): {unit:.1f}s  <- the unit; "
          f"{args.calib} calibration steps just before predicted {before:.1f}s")
    metrics = {"steps": epoch["steps"], "sum_train_loss": epoch["sum_train_loss"], "n_train": len(train[1]),
               "steps_to_ce_0.1": None, "steps_to_ce_0.01": None}
    ctx = MeasureContext(model.eval(), init_model=init, train=train, test=test, metrics=metrics,
                         run_config={"train": {"batch_size": args.batch}})
    names = [m.name for m in select(args.measures.split(",") if args.measures else None)]
    values, diags, failures, rows = {}, {}, {}, {}
    last = before
    for name in tqdm(names, desc="measures", leave=False):  # one at a time, sharing the context's caches
        t = time.perf_counter()
        out = compute(ctx, [name], settings=settings(args.set), write=False)
        sec = time.perf_counter() - t
        local = last
        if args.calib and sec > 1.0:  # re-time the unit around anything that is not instantaneous
            after = calib.local_epoch(args.calib)
            local, last = (last + after) / 2, after
        rows[name] = {"seconds": sec, "epochs": sec / unit, "local_epochs": sec / local if args.calib else None}
        values.update(out["values"])
        diags.update(out["diagnostics"])
        failures.update(out["failures"])
    report(rows, values, diags, failures, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"epoch": epoch, "args": vars(args), "measures": rows, "values": values,
                                               "diagnostics": diags, "failures": failures}, indent=2, default=str))


def report(rows: dict, values: dict, diags: dict, failures: dict, args: argparse.Namespace) -> None:
    key = "local_epochs" if args.calib else "epochs"
    print(f"\n{'measure':34s} {'seconds':>8s} {'epochs':>7s} {'local':>7s}  value / diagnostics")
    for name in sorted(rows, key=lambda n: -rows[n]["seconds"]):
        r = rows[name]
        local = f"{r['local_epochs']:7.3f}" if r["local_epochs"] is not None else "      -"
        value = f"{values[name]:.5g}  {summary(diags[name])}" if name in values else "FAILED: " + failures[name]
        print(f"{name:34s} {r['seconds']:8.1f} {r['epochs']:7.3f} {local}  {value}")
    groups = {"srr": ["srr"], "srr_ref": ["srr_ref"], "pacbayes": [n for n in rows if n.startswith("pacbayes")],
              "sharpness": [n for n in rows if n.startswith("sharpness")],
              "hessian": [n for n in rows if n.startswith("hessian")], "all": list(rows)}
    print(f"\n{'':10s} {'seconds':>8s} {'epochs':>7s} {'local':>7s}")
    for g, members in groups.items():
        sec = sum(rows[n]["seconds"] for n in members if n in rows)
        ep = sum(rows[n]["epochs"] for n in members if n in rows)
        lo = sum(rows[n][key] for n in members if n in rows)
        target = TARGETS.get(g)
        verdict = "" if target is None else (f"  target ≤ {target}: " + ("ok" if lo <= target else "OVER"))
        print(f"{g:10s} {sec:8.1f} {ep:7.3f} {lo:7.3f}{verdict}")


if __name__ == "__main__":
    main()
