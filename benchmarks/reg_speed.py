"""Cost of the SRR regulariser: training-step time with it over without, in the same run.

Four copies of one CRATE (same weights, same batches) train side by side: cross-entropy
only, and CE + α·SRR on one fixed layer, on one random layer per step, and on all layers.
Rounds alternate between them so that machine noise hits all four; the median step time
of each is divided by the CE-only one. Targets (issue 6): ≤ 1.3× for one fixed or random
layer, ≤ 2× for all layers. Also the cost of one per-layer record (``train.record_layers``:
the srr measure on 256 training images), in CE training steps.

    python -m benchmarks.reg_speed                                   # CPU, cifar_small, batch 128
    python -m benchmarks.reg_speed --device cuda --size cifar_tiny --batch 256 [--compile]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from srr_bench.models import ModelConfig, build_model
from srr_bench.optim import build_optimizer
from srr_bench.regularizer import SRRRegularizer, layer_record

from .train_speed import SIZES, synthetic_data, time_steps

TARGETS = {"layer 2": 1.3, "random": 1.3, "all": 2.0}


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", default="cifar_small", choices=sorted(SIZES))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="the regulariser's arithmetic")
    ap.add_argument("--compile", action="store_true", help="torch.compile the forward pass")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dim, depth, heads = SIZES[args.size]
    cfg = ModelConfig(name="crate", image_size=32, patch_size=4, dim=dim, depth=depth, heads=heads)
    bf16 = device.type == "cuda"
    data = synthetic_data(args.batch * args.steps, device)
    torch.manual_seed(0)
    base = build_model(cfg).to(device)

    contenders = {}
    for name, layers in {"CE only": None, "layer 2": 2, "random": "random", "all": "all"}.items():
        model = copy.deepcopy(base)
        opt = build_optimizer(model, dict(name="adamw", lr=1e-4, weight_decay=0.05))
        reg = None
        if layers is not None:
            reg = SRRRegularizer.from_config(dict(alpha=1e-3, layers=layers, dtype=args.dtype), None, depth, seed=0)
        forward = model.forward_intermediates if reg else model
        contenders[name] = (torch.compile(forward) if args.compile else forward, model, opt, reg)
    t0 = time.perf_counter()
    for fwd, model, opt, reg in contenders.values():  # warm-up (and compilation)
        time_steps(fwd, model, opt, data, args.batch, 2, bf16, device, reg=reg)
    print(f"warm-up {time.perf_counter() - t0:.1f}s", flush=True)
    per_step: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(args.rounds):
        for name, (fwd, model, opt, reg) in contenders.items():
            per_step[name].append(time_steps(fwd, model, opt, data, args.batch, args.steps, bf16, device, reg=reg))
    med = {k: statistics.median(v) for k, v in per_step.items()}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nCRATE {args.size} (dim {dim}, depth {depth}, heads {heads}), batch {args.batch}, "
          f"{'bf16' if bf16 else 'fp32'} model, {args.dtype} rates, on {where}")
    ratios = {}
    for k, t in med.items():
        line = f"  {k:8s} {1e3 * t:8.1f} ms/step"
        if k in TARGETS:
            ratios[k] = t / med["CE only"]
            ok = "ok" if ratios[k] <= TARGETS[k] else "OVER TARGET"
            line += f"   {ratios[k]:.2f}x CE only (target <= {TARGETS[k]}x: {ok})"
        print(line)
    x, y = data.train.x[:256], data.train.y[:256]
    layer_record(base, (x, y), None, 256)  # warm-up
    t = time.perf_counter()
    layer_record(base, (x, y), None, 256)
    record = time.perf_counter() - t
    print(f"  one per-layer record (256 images): {1e3 * record:.0f} ms = {record / med['CE only']:.1f} CE steps")
    return ratios


if __name__ == "__main__":
    main()
