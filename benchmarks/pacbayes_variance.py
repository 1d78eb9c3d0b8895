"""Where a PAC-Bayes draw's variance comes from, and what stratifying its images by clean margin would remove.

    python -m benchmarks.pacbayes_variance RUN_DIR [RUN_DIR ...]   # runs with weights and measures.json
    python -m benchmarks.pacbayes_variance RUN_DIR --draws 48 --n-images 64

A draw of the σ search (``measures.pacbayes``) scores one noise draw ξ_j on its own block of
``n_images`` training images, so its variance has two parts: which noise it drew (the
variance over draws of the drop on the whole training set) and which images it scored (the
variance of a block's mean around that whole-set drop). Here every draw is scored on the
whole training set, at the σ (and σ') the run's measures.json found, which gives the matrix
F[j, i] = clean correct_i − noisy correct_ij; from it, exactly (no sampling of blocks):

- ``noise``: Var_j mean_i F[j, i];
- ``random block``: mean_j S²_j/n (1 − n/N), the variance of a block drawn without replacement;
- ``stratified block``: mean_j Σ_s (N_s/N)² σ²_js, one image from each of n strata of equal
  size cut along the clean margin (logit of the label minus the largest other logit), each
  weighted by its stratum's share (unbiased for the whole-set drop).

The last column is what a draw's variance would become with stratified blocks (noise +
stratified over noise + random): the share of the cost of a decision that the lever would
save. It is the measurement behind leaving the search's image sampling as it is (issue 18).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch

if TYPE_CHECKING:
    from measures.context import MeasureContext

FLATNESS = {"pacbayes_flatness": None, "pacbayes_mag_flatness": "eps"}  # measure -> its ε setting (None: isotropic)


def random_block_variance(F: np.ndarray, n: int) -> float:
    """Mean over draws (rows) of the variance of the mean of n images drawn without replacement."""
    N = F.shape[1]
    return float(np.mean(F.var(axis=1, ddof=1) / n * (1 - n / N)))


def strata(key: np.ndarray, n: int) -> list[np.ndarray]:
    """n strata of (nearly) equal size along ``key`` (ascending; ties in index order)."""
    return np.array_split(np.argsort(key, kind="stable"), n)


def stratified_block_variance(F: np.ndarray, groups: list[np.ndarray]) -> float:
    """Mean over draws of the variance of Σ_s (N_s/N) F[j, i_s], i_s uniform in stratum s."""
    N = F.shape[1]
    per_draw = sum((len(g) / N) ** 2 * F[:, g].var(axis=1) for g in groups)
    return float(np.mean(per_draw))


def decomposition(F: np.ndarray, key: np.ndarray, n: int) -> dict[str, float]:
    noise = float(F.mean(axis=1).var(ddof=1))
    rand = random_block_variance(F, n)
    strat = stratified_block_variance(F, strata(key, n))
    return {"drop": float(F.mean()), "noise": noise, "random_block": rand, "stratified_block": strat,
            "image_share": rand / (noise + rand), "stratified_over_random": (noise + strat) / (noise + rand)}


def flips(run: Path, draws: int, seed: int) -> dict[str, dict[str, float]]:
    from measures.api import run_context
    from measures.context import evaluation

    ctx = run_context(run, seed=seed)
    with evaluation(ctx.model):  # as the measures run (dropout off)
        return _flips(ctx, json.loads((run / "measures.json").read_text())["diagnostics"], draws)


def _flips(ctx: "MeasureContext", found: dict, draws: int) -> dict[str, dict[str, float]]:
    from measures.pacbayes import noise_std, standard_normal
    from measures.registry import SETTINGS
    from measures.weights import parameter_set

    x, y = ctx.data("train")
    logits = ctx.logits(x)
    correct = (logits.argmax(1) == y).double()
    other = logits.scatter(1, y[:, None], -float("inf")).max(1).values
    margin = (logits.gather(1, y[:, None])[:, 0] - other).numpy()
    out = {}
    for name, eps_key in FLATNESS.items():
        if name not in found:
            continue
        s = SETTINGS[name.replace("_flatness", "")]
        params = parameter_set(ctx.model, s["perturb"])
        std = noise_std(params, found[name]["sigma"], s[eps_key] if eps_key else None)
        F = np.empty((draws, len(y)))
        for j in range(draws):
            xi = standard_normal(ctx, params, j)
            noisy = {k: p + std[k] * xi[k] for k, p in params.items()}
            F[j] = (correct - (ctx.logits(x, noisy).argmax(1) == y).double()).numpy()
        n = int(found[name].get("n_images") or s["n_images"])  # as the search ran
        out[name] = {"sigma": found[name]["sigma"], "n_images": n, "N": len(y), "search_drop": found[name]["drop"],
                     **decomposition(F, margin, n)}
    return out


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--draws", type=int, default=48, help="noise draws, each scored on the whole training set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{'run':<34}{'measure':<24}{'search':>7}{'drop':>6}{'noise':>9}{'images':>9}{'strat.':>9}{'img share':>10}{'strat/rand':>11}")
    every = {}
    for run in args.runs:
        every[run.name] = flips(run, args.draws, args.seed)
        for name, r in every[run.name].items():
            print(f"{run.name:<34}{name:<24}{r['search_drop']:>7.3f}{r['drop']:>6.3f}{r['noise']:>9.2e}{r['random_block']:>9.2e}"
                  f"{r['stratified_block']:>9.2e}{r['image_share']:>10.2f}{r['stratified_over_random']:>11.3f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(every, indent=1))


if __name__ == "__main__":
    main()
