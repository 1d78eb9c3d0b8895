"""Path-norm's frozen LayerNorm scales on the converged grid's runs that kept their weights
(issue 19 section 4): per run, path_norm recomputed by today's code (without writing
measures.json) with its diagnostics ln_log10_inv_sigma (the sum over the 2L+3 frozen
LayerNorms of the token-mean log10(1/sigma), averaged over the training images) and
n_layernorms, beside the stored path_norm.

    SRR_DATA=../shared/data .venv/bin/python results/converged_cifar10_cpu/layernorm_scales.py \
        /root/srr-grids/converged > results/converged_cifar10_cpu/layernorm_scales.csv
"""
import csv
import json
import sys
from pathlib import Path

import torch

from measures import compute
from srr_bench.rundir import FINAL, RunDir

torch.set_num_threads(1)
out = csv.writer(sys.stdout)
out.writerow(["run", "variant", "width", "lr", "batch_size", "dropout", "seed", "path_norm_stored", "path_norm",
              "ln_log10_inv_sigma", "n_layernorms", "blank_patches"])
for run in sorted(p.parent for p in Path(sys.argv[1]).glob(f"*/{FINAL}")):
    hp = RunDir(run).read_hparams()
    stored = json.loads((run / "measures.json").read_text())["values"].get("path_norm")
    got = compute(run, names=["path_norm"], write=False, recompute=True)
    d = got["diagnostics"]["path_norm"]
    out.writerow([run.name, hp["variant"], hp["width"], hp["lr"], hp["batch_size"], hp["dropout"], hp["seed"],
                  stored, got["values"]["path_norm"], d["ln_log10_inv_sigma"], d["n_layernorms"], d["blank_patches"]])
    sys.stdout.flush()
