"""The attention-only experiment (Hu, Zou & Xu 2024, §3): does Z + MSSA(Z) compress?

A stack of MSSA steps with a skip connection and no LayerNorm, on fixed orthonormal
subspaces U = [U_1 … U_K] (a random orthogonal d×d matrix cut into K blocks):

    Z^{ℓ+1} = Z^ℓ ± κ · MSSA(Z^ℓ | U),   MSSA = [U_1 … U_K] · [SSA(U_kᵀ Z)]_k

with the suite's own MSSA block and the tied output operators of ``crate_c`` (+) and
``crate_n`` (−). R^c(Z | U) is tracked across the stack for random unit-norm tokens:
the + step (the operator as derived) *raises* R^c, the − step lowers it. The
second-order Taylor approximation behind MSSA turns the compression gradient step into
an ascent step on R^c.

    srr-attention-only --out results/attention_only       # CSV + plot
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .io import atomic_write, one_line_os_errors
from .models.blocks import MSSA
from .models.config import ModelConfig
from .models.crate import TiedOutput
from .rates import compression_rate

SIGNS = {"Z + MSSA (crate_c)": +1.0, "Z − MSSA (crate_n)": -1.0}


def run(dim: int = 64, heads: int = 4, tokens: int = 50, layers: int = 6, step: float = 0.5, eps: float = 0.1,
        seeds: Sequence[int] = range(5)) -> dict[str, torch.Tensor]:
    """R^c(Z^ℓ | U) for ℓ = 0..layers, per sign: {label: (len(seeds), layers + 1)} float64."""
    cfg = ModelConfig(dim=dim, heads=heads, depth=1)
    out = {label: torch.empty(len(seeds), layers + 1, dtype=torch.float64) for label in SIGNS}
    for i, seed in enumerate(seeds):
        g = torch.Generator().manual_seed(seed)
        Q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
        U = Q.T.reshape(heads, dim // heads, dim).transpose(1, 2)  # (K, d, p), U_k = W[kp:(k+1)p]ᵀ
        Z0 = F.normalize(torch.randn(1, tokens, dim, generator=g, dtype=torch.float64), dim=-1)
        for label, sign in SIGNS.items():
            mssa = MSSA(cfg, TiedOutput(cfg, sign)).double().eval()
            with torch.no_grad():
                mssa.qkv.weight.copy_(Q.T)
                Z = Z0
                for layer in range(layers + 1):
                    out[label][i, layer] = compression_rate(Z[0], U, eps)
                    Z = Z + step * mssa(Z)
    return out


def plot(rates: dict[str, torch.Tensor], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for (label, r), colour in zip(rates.items(), ("tab:red", "tab:blue")):
        mean, std = r.mean(0), r.std(0)
        layers = range(r.shape[1])
        ax.plot(layers, mean, "o-", color=colour, label=label)
        ax.fill_between(layers, mean - std, mean + std, color=colour, alpha=0.2)
    ax.set_xlabel(r"attention-only layer $\ell$")
    ax.set_ylabel(r"$R^c(Z^\ell \mid U)$  (nats)")
    ax.set_title(f"MSSA with skip connection on fixed U ({rates[label].shape[0]} seeds, ±1 std)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


@one_line_os_errors("srr-attention-only")  # --out on a full disk or read-only: one line; | head: quiet (141)
def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Attention-only stack: R^c across layers for Z ± MSSA(Z)")
    ap.add_argument("--out", default="results/attention_only")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=50)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--step", type=float, default=0.5, help="κ, the step size")
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args(argv)
    rates = run(args.dim, args.heads, args.tokens, args.layers, args.step, seeds=range(args.seeds))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["layer," + ",".join(f"{k} mean,{k} std" for k in rates)]
    for layer in range(args.layers + 1):
        lines.append(f"{layer}," + ",".join(f"{r[:, layer].mean():.4f},{r[:, layer].std():.4f}" for r in rates.values()))
    text = "\n".join(lines) + "\n"
    atomic_write(out / "attention_only.csv", lambda f: f.write(text.encode()))
    plot(rates, out / "attention_only.png")
    for label, r in rates.items():
        print(f"{label}: R^c {r[:, 0].mean():.2f} -> {r[:, -1].mean():.2f} over {args.layers} layers")
    print(f"wrote {out}/attention_only.csv and .png")
    return 0
