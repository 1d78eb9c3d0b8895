"""Training throughput: the suite's CRATE against a plain reference-style implementation.

Both models see the same batches from the same on-device pipeline (augmentation
included) in the same process; rounds alternate between them so that machine noise hits
both. Prints images/s for each, their ratio and, on a GPU, model FLOPs utilisation.

    python -m benchmarks.train_speed                        # CPU, CIFAR-scale CRATE
    python -m benchmarks.train_speed --device cuda --size cifar_tiny --batch 1024 --ref-batch 256 --compile

The reference baseline is the reference code's recipe: eager attention as explicit
matmuls + softmax, the three-product ISTA, fp32 (TF32 matmuls on a GPU).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from srr_bench.data import Dataset, Split
from srr_bench.models import ModelConfig, build_model
from srr_bench.models.reference import ReferenceCRATE
from srr_bench.optim import build_optimizer
from srr_bench.train import train_step

SIZES = {  # dim, depth, heads: the shipped size presets (sweeps/conf/size)
    "cifar_small": (96, 4, 4), "cifar_tiny": (384, 12, 6), "cifar_base": (768, 12, 12),
}


def forward_flops(cfg: ModelConfig) -> float:
    """Matmul FLOPs of one forward pass of one image (2 per multiply-add)."""
    n, d, kp = cfg.num_patches + 1, cfg.dim, cfg.inner_dim
    patch_dim = cfg.channels * cfg.patch_size**2
    per_layer = 2 * n * d * kp * 2 + 2 * n * n * kp * 2 + 2 * n * d * d * 2  # qkv + out, QKᵀ + AV, ISTA (2 products)
    return cfg.num_patches * patch_dim * d * 2 + cfg.depth * per_layer + d * cfg.num_classes * 2


def synthetic_data(n: int, device: torch.device) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    split = Split(x.to(device), y.to(device))
    return Dataset("synthetic", split, split, 10, torch.zeros(3), torch.ones(3), True, 4, True)


def time_steps(forward, model, opt, data: Dataset, batch: int, steps: int, bf16: bool, device: torch.device,
               reg=None) -> float:
    """Seconds per step over ``steps`` steps (after the caller's warm-up); ``reg``: an SRRRegularizer."""
    gen = torch.Generator(device).manual_seed(1)
    it = data.batches("train", batch, generator=gen, shuffle=True, augment=True, drop_last=True)
    batches = [next(it) for _ in range(steps)]
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for step, (x, y) in enumerate(batches):
        train_step(forward, model, opt, x, y, 1e-4, bf16=bf16, reg=reg, step=step)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", default="cifar_small", choices=sorted(SIZES))
    ap.add_argument("--batch", type=int, default=128, help="the suite's batch size")
    ap.add_argument("--ref-batch", type=int, default=None, help="the reference's batch size (default: --batch)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="torch.compile the suite's model")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode (default, reduce-overhead, max-autotune...)")
    ap.add_argument("--no-bf16", action="store_true", help="fp32 for the suite's model too")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the card (H100/H200 SXM: 989)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True  # the reference's "fp32" on a GPU is TF32, as the issue measured
    torch.backends.cudnn.allow_tf32 = True
    dim, depth, heads = SIZES[args.size]
    cfg = ModelConfig(name="crate", image_size=32, patch_size=4, dim=dim, depth=depth, heads=heads)
    ref_batch = args.ref_batch or args.batch
    bf16 = not args.no_bf16 and device.type == "cuda"
    data = synthetic_data(max(args.batch, ref_batch) * args.steps, device)

    torch.manual_seed(0)
    ref = ReferenceCRATE(image_size=32, patch_size=4, num_classes=10, dim=dim, depth=depth, heads=heads,
                         dim_head=cfg.dim_head).to(device)
    ours = build_model(cfg).to(device)
    from srr_bench.checkpoints import rename_reference_state_dict

    ours.load_state_dict(rename_reference_state_dict(ref.state_dict()))  # same weights
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-4)  # the reference: plain AdamW over all parameters
    our_opt = build_optimizer(ours, dict(name="adamw", lr=1e-4, weight_decay=0.05))
    forward = torch.compile(ours, mode=args.compile_mode) if args.compile else ours

    contenders = {
        "reference": (ref, ref, ref_opt, ref_batch, False),
        "srr-bench": (forward, ours, our_opt, args.batch, bf16),
    }
    t0 = time.perf_counter()
    for name, (fwd, model, opt, batch, b16) in contenders.items():  # warm-up (and compilation)
        time_steps(fwd, model, opt, data, batch, 3, b16, device)
    print(f"warm-up {time.perf_counter() - t0:.1f}s", flush=True)
    per_step: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(args.rounds):
        for name, (fwd, model, opt, batch, b16) in contenders.items():
            per_step[name].append(time_steps(fwd, model, opt, data, batch, args.steps, b16, device))
    ips = {k: contenders[k][3] / statistics.median(v) for k, v in per_step.items()}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nCRATE {args.size} (dim {dim}, depth {depth}, heads {heads}), 32 px, patch 4, on {where}")
    flops = 3 * forward_flops(cfg)  # forward + backward
    for k in contenders:
        batch, b16 = contenders[k][3], contenders[k][4]
        line = f"  {k:10s} batch {batch:5d} {'bf16' if b16 else 'fp32'}: {ips[k]:10.1f} images/s"
        if device.type == "cuda":
            line += f"  ({ips[k] * flops / 1e12:6.1f} TFLOP/s, MFU {100 * ips[k] * flops / (args.peak_tflops * 1e12):4.1f}% of {args.peak_tflops:g})"
        print(line)
    print(f"  ratio srr-bench / reference: {ips['srr-bench'] / ips['reference']:.2f}x")


if __name__ == "__main__":
    main()
