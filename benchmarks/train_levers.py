"""The training side of the converged grid, lever by lever, each against today's path in the same run.

On the grid's four cells (CRATE width 64 and 128 × batch 32 and 64, depth 4, 4 heads,
4×4 patches, 32 px, one thread), with synthetic images of the grid's shape (1,000 train,
10,000 test), rounds alternating between the contenders so that machine load hits both:

- **optimiser**: AdamW's single-tensor update (torch's default on a CPU, the suite's until
  2026-12) against the foreach update ``build_optimizer`` now asks for, on the same
  gradients: the time of ``opt.step()`` and of whole training steps;
- **train-set evaluation** (what the CE stopping rule reads every epoch): ``evaluate`` with
  one forward pass per 1,024-image batch (today's) against the forward passes chunked by
  ``EVAL_CHUNK`` under ``inference_mode``;
- **final evaluation**: train and test sets as today, against the test set chunked and the
  train set's figures taken from the last epoch's evaluation of the same weights;
- **attention kernel** (``--attention``): whole training steps with the attention as today
  (``F.scaled_dot_product_attention``, which takes torch's flash kernel on a CPU) against
  the same call restricted to the math backend and against softmax(q kᵀ/√p) v as two
  matmuls (the reference code's form). Measured 2026-12-03 (2-core AMD EPYC, under load):
  on CRATE and CRATE-T at width 64/128 × batch 32/64 the math backend took 1.25–1.62× and
  the two matmuls 1.10–1.35× the flash kernel's time, so today's kernel stays.

Ratios are new / today (below 1: faster), medians over rounds of CPU time (the process's
user + system time, steadier than wall time on a shared machine; wall-time ratios too).
Each line says whether the two paths gave the same bits on this machine. With ``--grid``
the ratios are weighted by the stage shares that grid's runs recorded
(``benchmarks.grid_cost``) into the models-per-hour ratio they imply.

    python -m benchmarks.train_levers                       # about 5 minutes on one thread
    python -m benchmarks.train_levers --grid results/converged_cifar10_cpu/runs
"""
from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import srr_bench.models.blocks as blocks

from srr_bench.data import Dataset, Split
from srr_bench.models import ModelConfig, build_model
from srr_bench.optim import build_optimizer
from srr_bench.train import evaluate, train_step

CELLS = ((64, 32), (64, 64), (128, 32), (128, 64))  # (width, batch) of the converged grid
TODAY_EVAL_BATCH = 1024  # evaluate's batch: today's path runs it as one forward pass


def grid_data(n_train: int, n_test: int) -> Dataset:
    g = torch.Generator().manual_seed(0)
    split = lambda n: Split(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g))
    return Dataset("synthetic", split(n_train), split(n_test), 10, torch.zeros(3), torch.ones(3), False, 4, False)  # no augmentation, as the grid


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(CPU seconds, wall seconds, result) of one call."""
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - c, time.perf_counter() - w, out


def compare(today: Callable[[], object], new: Callable[[], object], rounds: int) -> dict:
    """Median CPU and wall ratios new / today over alternating rounds; the last results of each."""
    cpu: dict[str, list[float]] = {"today": [], "new": []}
    wall: dict[str, list[float]] = {"today": [], "new": []}
    out = {}
    for _ in range(rounds):
        for name, fn in (("today", today), ("new", new)):
            c, w, out[name] = timed(fn)
            cpu[name].append(c)
            wall[name].append(w)
    med = lambda xs: statistics.median(xs)
    return {"today_s": med(cpu["today"]), "new_s": med(cpu["new"]), "cpu": med(cpu["new"]) / med(cpu["today"]),
            "wall": med(wall["new"]) / med(wall["today"]), "today": out["today"], "new": out["new"]}


def model_and_optimizer(width: int, foreach: bool):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="crate", image_size=32, patch_size=4, dim=width, depth=4, heads=4))
    opt = build_optimizer(model, dict(name="adamw", lr=1e-3, weight_decay=0.05))
    if not foreach:
        for g in opt.param_groups:
            g["foreach"] = None  # torch's CPU default: the single-tensor update
    return model, opt


def optimiser_lever(width: int, batch: int, data: Dataset, steps: int, rounds: int) -> tuple[dict, dict]:
    contenders = {k: model_and_optimizer(width, k == "new") for k in ("today", "new")}
    gen = torch.Generator().manual_seed(1)
    batches = list(data.batches("train", batch, generator=gen, shuffle=True, drop_last=True))[:steps]

    def run_steps(name: str) -> Callable[[], list[torch.Tensor]]:
        model, opt = contenders[name]

        def go():
            for x, y in batches:
                train_step(model, model, opt, x, y, 1e-3, bf16=False)
            return [p.detach().clone() for p in model.parameters()]
        return go

    for name in contenders:  # warm-up (and the optimiser state's allocation)
        run_steps(name)()
    whole = compare(run_steps("today"), run_steps("new"), rounds)
    same = all(torch.equal(a, b) for a, b in zip(whole["today"], whole["new"]))  # same batches, same order
    whole["same"] = same

    def opt_steps(name: str) -> Callable[[], None]:
        opt = contenders[name][1]
        return lambda: [opt.step() for _ in range(20)]
    alone = compare(opt_steps("today"), opt_steps("new"), rounds)
    alone["same"] = all(torch.equal(a, b) for a, b in zip(contenders["today"][0].parameters(),
                                                          contenders["new"][0].parameters()))
    return alone, whole


def evaluation_levers(width: int, data: Dataset, rounds: int) -> tuple[dict, dict]:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="crate", image_size=32, patch_size=4, dim=width, depth=4, heads=4))
    today = lambda split: evaluate(model, data, split, chunk=TODAY_EVAL_BATCH)
    new = lambda split: evaluate(model, data, split)
    train_eval = compare(lambda: today("train"), lambda: new("train"), rounds)
    train_eval["same"] = train_eval["today"] == train_eval["new"]
    last_epoch = new("train")  # what the run's last epoch recorded (the final eval reuses it)
    final = compare(lambda: (today("train"), today("test")), lambda: (last_epoch, new("test")), max(1, rounds // 2))
    final["same"] = final["today"] == final["new"]
    return train_eval, final


TODAY_ATTENTION = blocks.multi_head_attention


def two_matmuls(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, dropout: float) -> torch.Tensor:
    """softmax(q_k k_kᵀ/√p) v_k per head as two matmuls (no dropout: the grid's cells have none)."""
    b, n, inner = q.shape
    p = inner // heads
    split = lambda t: t.view(b, n, heads, p).transpose(1, 2)
    a = torch.softmax((split(q) * p**-0.5) @ split(k).transpose(-1, -2), dim=-1)
    return (a @ split(v)).transpose(1, 2).reshape(b, n, inner)


def math_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, dropout: float) -> torch.Tensor:
    with sdpa_kernel(SDPBackend.MATH):
        return TODAY_ATTENTION(q, k, v, heads, dropout)


@contextmanager
def attention(impl: Callable) -> Iterator[None]:
    """The models' attention replaced by ``impl`` for the block (the benchmark's contenders only)."""
    blocks.multi_head_attention = impl
    try:
        yield
    finally:
        blocks.multi_head_attention = TODAY_ATTENTION


def attention_levers(width: int, batch: int, data: Dataset, steps: int, rounds: int) -> dict[str, dict]:
    """Whole training steps, today's attention against each contender (same start, same batches)."""
    gen = torch.Generator().manual_seed(1)
    batches = list(data.batches("train", batch, generator=gen, shuffle=True, drop_last=True))[:steps]

    def run_steps(impl: Callable) -> Callable[[], list[torch.Tensor]]:
        model, opt = model_and_optimizer(width, True)

        def go():
            with attention(impl):
                for x, y in batches:
                    train_step(model, model, opt, x, y, 1e-3, bf16=False)
            return [p.detach().clone() for p in model.parameters()]
        go()  # warm-up
        return go

    out = {}
    for name, impl in (("math backend", math_backend), ("two matmuls", two_matmuls)):
        r = compare(run_steps(TODAY_ATTENTION), run_steps(impl), rounds)
        r["same"] = all(torch.equal(a, b) for a, b in zip(r["today"], r["new"]))
        out[name] = r
    return out


def stage_shares(grid: Path) -> dict[str, float]:
    """The share of each stage in a grid's recorded time (``benchmarks.grid_cost``)."""
    from benchmarks.grid_cost import STAGES, run_cost
    from srr_bench.rundir import find_runs

    costs = [c for c in map(run_cost, find_runs(grid)) if c]
    if not costs:
        raise SystemExit(f"{grid}: no finished run with the time split")
    total = {s: sum(c[s] for c in costs) for s in STAGES}
    return {s: total[s] / sum(total.values()) for s in STAGES}


def line(what: str, r: dict) -> str:
    return (f"  {what:<28}{r['today_s'] * 1e3:>9.1f} ms {r['new_s'] * 1e3:>9.1f} ms   cpu {r['cpu']:.3f}   "
            f"wall {r['wall']:.3f}   {'same bits' if r['same'] else 'DIFFERENT results'}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=8, help="training steps per round")
    ap.add_argument("--n-test", type=int, default=10_000)
    ap.add_argument("--cells", default=",".join(f"{w}x{b}" for w, b in CELLS), help="width x batch, comma-separated")
    ap.add_argument("--grid", type=Path, default=None, help="a grid's runs: weight the ratios by its stage shares")
    ap.add_argument("--attention", action="store_true", help="also time the attention kernels (not in the ratio)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # as the grid's runs
    data = grid_data(1000, args.n_test)
    cells = [tuple(int(v) for v in c.split("x")) for c in args.cells.split(",")]
    print(f"{'':<30}{'today':>12}{'new':>13}   (medians of {args.rounds} rounds; ratios new/today)")
    ratios: dict[str, list[float]] = {"steps": [], "train_eval": [], "final_eval": []}
    evaluated: dict[int, tuple[dict, dict]] = {}
    for width, batch in cells:
        print(f"width {width}, batch {batch}", flush=True)
        alone, whole = optimiser_lever(width, batch, data, args.steps, args.rounds)
        print(line("optimiser step x20", alone))
        print(line(f"training steps x{args.steps}", whole), flush=True)
        ratios["steps"].append(whole["cpu"])
        if args.attention:
            for name, r in attention_levers(width, batch, data, args.steps, args.rounds).items():
                print(line(f"attention: {name}", r), flush=True)
        if width not in evaluated:  # the evaluations do not depend on the batch: once per width
            evaluated[width] = evaluation_levers(width, data, args.rounds)
            print(line("train-set evaluation", evaluated[width][0]))
            print(line("final evaluation", evaluated[width][1]), flush=True)
        train_eval, final = evaluated[width]
        ratios["train_eval"].append(train_eval["cpu"])
        ratios["final_eval"].append(final["cpu"])
    mean = {k: statistics.fmean(v) for k, v in ratios.items()}
    print("mean over the cells (cpu, each width's evaluations counted in both of its cells): " + ", ".join(f"{k} {v:.3f}" for k, v in mean.items()))
    if args.grid:
        shares = stage_shares(args.grid)
        after = sum(shares[s] * mean.get(s, 1.0) for s in shares)  # measures unchanged here
        print(f"{args.grid}: stage shares " + ", ".join(f"{s} {v:.1%}" for s, v in shares.items())
              + f" -> time per model x{after:.3f}, models per hour x{1 / after:.3f}")


if __name__ == "__main__":
    main()
