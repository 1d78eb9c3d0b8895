"""Path-norm (Gonon et al. 2024) of ReLU networks, and of CRATE and the ViT with frozen maps.

**Anchor.** Gonon, Brisebarre, Riccietti & Gribonval, ICLR 2024, "A path-norm toolkit for
modern networks". A DAG-ReLU network (ReLU and identity neurons, biases, skip connections,
any DAG) has one *path* per chain of edges from an input neuron, or from a neuron's bias,
to an output neuron; Φ(θ) is the vector of the paths' weight products (a bias path starts
with the bias). Its ℓ_q path-norm is ‖Φ(θ)‖_q, and (their Theorem A.1)

    ‖Φ(θ)‖_q^q = Σ_paths Π_{edges e} |w_e|^q = Σ_outputs N_{|θ|^q}(1),

one forward pass, on the all-ones input, of the network with every weight and bias w
replaced by |w|^q (ReLUs are then identities: every value is ≥ 0). Edges that are
constants of the architecture (average pooling's 1/k, the fixed maps below) enter as
|c|^q as well, as in their toolkit.

**Value.** ``path_norm`` = P_q = ‖Φ‖_q^q, the q-th power, no root (default q = 2: Jiang et
al. 2020 eq. (44) and RGM's PATH_NORM, without their square root; q = 1: Gonon's L1
path-norm ‖Φ‖₁ itself). Gonon report ‖Φ‖_q = P_q^{1/q}, a monotone function of P_q (same
Kendall τ). ``path_norm_over_margin`` = P_q / γ^q = (‖Φ‖_q / γ)^q (Jiang eq. (43) for
q = 2), γ the 10th-percentile training margin (``output.margin``). The size-adjusted
form (setting ``size_adjusted``) is RGM's √(v/m), for q = 2 ‖Φ‖₂/√m: the shape of the
path-norm bounds. Every parameter of the function counts, trainable or frozen
(crate_fix's output operator); everything runs in float64 in evaluation mode.

**DAG-ReLU modules** (``path_norm(module)``; the measure on any model that is not an
srr_bench transformer): modules built of Linear / Conv layers, ReLU, Identity, Flatten
and Dropout whose ``forward`` combines them by composition, sums (skip connections),
concatenation and reshapes. Exact: this is Gonon's path-norm. The leaves are checked; the
arithmetic of a custom ``forward`` cannot be, and is assumed to be of that kind.

**CRATE (all variants) and the ViT** are not DAG-ReLU networks: a LayerNorm divides by
the token's σ(x) and softmax attention mixes tokens by A(x), both functions of the input.
For each image x of a seeded training subset (``n_images``), A(x) and 1/σ(x) are frozen at
their values on x (computed from the model itself, in the same walk); with them frozen
the model is a DAG-ReLU network N_x whose edges are its weights and these constants, and
P_q(x) = ‖Φ_x‖_q^q is its path-norm (one |w|-forward on the all-ones input). The measure
is the mean of P_q(x) over the images: per image, then averaged (not the path-norm at
averaged maps, since N_x is the network that computes the model's output on x). The
path graph, piece by piece (rows are tokens; ``_Side`` writes each piece once, for the
model and for its |w|^q network):

- LayerNorm(z) = g ⊙ C z / σ(z) + b with C = I − 11ᵀ/n: edges j → i of weight
  g_i (δ_ij − 1/n) / σ and a bias b_i, so a ↦ |g|^q ⊙ (|C|^q a) / σ^q + |b|^q. A token
  that is constant on x (a blank patch) has σ = √eps and its paths weigh (1/√eps)^q
  (≈ 10⁵ at q = 2, eps = 1e-5): the frozen LayerNorm's gain there, though C z = 0 carries
  no signal at x. Such patches can dominate the value (on digits 28% of the 2×2 patches
  are blank; they carried ~99% of it on 2-epoch demo models); the diagnostic
  ``blank_patches`` gives their fraction. ``ln_log10_inv_sigma`` is Σ log10(1/σ) over the
  frozen LayerNorms (token mean per LayerNorm, image mean): a path crosses one token of
  each, so log10 P_q moves with q times it (a diagnostic of the variant gap: CRATE-N's
  tied −W output partly cancels the residual, which would shrink the next LayerNorm's σ).
- Attention, head k: out_k = A_k V_k with A_k = softmax(Q_k K_kᵀ/√p) frozen (entries ≥ 0):
  an edge of weight A_k[i, j] from token j to token i on each value channel. Query and
  key weights are on no path; they enter through A only (in CRATE Q = K = V = qkv).
- The value projection (CRATE: qkv.weight; ViT: v, with bias) and the MSSA output
  operator are edges: crate / crate_fix W_out (+ bias); crate_c / crate_n ±W, i.e.
  ``±out @ W``, the sign an edge of weight |±1| = 1; crate_t Wᵀ; crate_identity identity
  edges. Tied weights count per edge: a crate_c/n/t path through the value projection
  and the output operator carries |W_ab|^q |W_cd|^q, both entries of qkv.weight.
- Residual skips (Z + MSSA, the ViT's two) are identity edges.
- ISTA, column form ReLU(z + η Dᵀ(z − D z) − η λ), is the sum of its paths into each ReLU
  neuron: the identity (1), η·Dᵀ (one edge η D_ji), −η·DᵀD (two edges through the neuron
  (Dz)_k: D_kj then −η D_ki) and the bias −ηλ (a config constant, not a learned weight):
  a ↦ a + η^q a|D|^q + η^q (a|D|^qᵀ)|D|^q + (ηλ)^q. The implementation's merged matrix
  D − DᵀD would merge and cancel paths; the path graph follows the formula.
- ReLU (ISTA's, a ReLU MLP's) is an identity of the |w|-network, as in Gonon. The ViT's
  **GELU enters as a ReLU neuron** (an edge of weight 1): on the ViT this is the frozen
  path-norm of the same network with ReLU in place of GELU. GELU is not positively
  homogeneous; this is the one piece that is not exact.
- Embedding: the patches are the input neurons; patch LayerNorm, Linear, LayerNorm as
  above; the cls token and the positional embedding are biases (each entry starts paths).
- Head: cls pooling reads token 0; mean pooling is edges of weight 1/N; LayerNorm and
  Linear as above; P_q(x) sums the outputs.

Properties (tested): exact on ReLU MLPs with and without biases and with skips; ≥ 0, and
0 at zero weights; invariant under the rescaling of a neuron where the function is
(a ReLU neuron; a head-LayerNorm output neuron with the classifier's column; a ViT value
channel with its output-projection column; any global rescaling of a LayerNorm's input,
which the frozen 1/σ absorbs; not a GELU neuron, whose function is not homogeneous);
changed by any single weight matrix of every CRATE variant and of the ViT. The walk reproduces the model's logits with
the signed weights (checked on every batch), so its path graph is the model's. Since the
frozen constants depend on the data, no generalisation bound of Gonon et al. applies as
is: on these models the value is a well-defined path-norm of N_x, not a bound.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from srr_bench.models.base import TokenClassifier
from srr_bench.models.blocks import ISTA, MSSA, Head, PatchEmbed
from srr_bench.models.crate import CRATELayer, IdentityOutput, LearnedOutput, TiedOutput, TransposeOutput
from srr_bench.models.vit import ViTLayer

from .context import MeasureContext
from .output import margin
from .registry import MeasureError, Result, measure, settings_group, size_adjusted

settings_group("path_norm", q=2.0, n_images=256, margin_percentile=10.0, margin_n_images=None)

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_PASSTHROUGH = (nn.ReLU, nn.Identity, nn.Flatten, nn.Dropout)


# ---- DAG-ReLU modules: Gonon's Theorem A.1 as it stands ---------------------------------------
def check_dag_relu(model: nn.Module) -> None:
    """Raise TypeError unless every leaf is Linear / Conv / ReLU / Identity / Flatten / Dropout."""
    for name, mod in model.named_modules():
        if isinstance(mod, _WEIGHTED + _PASSTHROUGH):
            continue
        own = list(mod.parameters(recurse=False)) + list(mod.buffers(recurse=False))
        if own or not list(mod.children()):
            where = f" ({name})" if name else ""
            raise TypeError(f"path_norm is exact only for ReLU networks (Linear/Conv, ReLU, skips); "
                            f"found {type(mod).__name__}{where}")


def dag_relu_path_norm_q(model: nn.Module, input_shape: Sequence[int], q: float) -> Tensor:
    """Σ_paths Π|w|^q = Σ outputs of the |w|^q network on the all-ones input (float64)."""
    check_dag_relu(model)
    device = next(model.parameters()).device
    params = {k: v.detach().double().abs() ** q for k, v in model.named_parameters()}
    buffers = {k: v.double() if v.is_floating_point() else v for k, v in model.named_buffers()}
    ones = torch.ones((1, *input_shape), dtype=torch.float64, device=device)
    with torch.no_grad():
        return functional_call(model, {**params, **buffers}, (ones,), strict=False).sum()


def path_norm(model: nn.Module, p: float = 2.0, root: bool = True,
              input_shape: Optional[Sequence[int]] = None) -> Tensor:
    """Exact ℓ_p path-norm ‖Φ‖_p (``root``) or ‖Φ‖_p^p of a DAG-ReLU module (Gonon Thm A.1).

    ``input_shape`` (without the batch) defaults to the first Linear's in_features.
    """
    if input_shape is None:
        first = next((m for m in model.modules() if isinstance(m, _WEIGHTED)), None)
        if not isinstance(first, nn.Linear):
            raise TypeError("path_norm needs input_shape for a module that does not start with a Linear layer")
        input_shape = (first.in_features,)
    total = dag_relu_path_norm_q(model, input_shape, p)
    return total ** (1.0 / p) if root else total


# ---- CRATE and the ViT: the model and its |w|^q network, walked side by side -------------------
@dataclass(frozen=True)
class _Side:
    """How one side of the walk weighs an edge: the model itself (q None) or its |w|^q network."""

    q: Optional[float] = None

    def w(self, t: Any) -> Any:
        """An edge weight (parameter or frozen constant): itself, or |t|^q."""
        return t if self.q is None else abs(t) ** self.q

    def act(self, fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        """A ReLU-like neuron: ``fn`` on the model; an identity on the (non-negative) |w|-network."""
        return fn(x) if self.q is None else x

    def centre(self, x: Tensor) -> Tensor:
        """C x with C = I − 11ᵀ/n over the last dim; |C|^q x on the |w|-network."""
        n = x.shape[-1]
        if self.q is None:
            return x - x.mean(-1, keepdim=True)
        off = n ** -self.q
        return ((1 - 1 / n) ** self.q - off) * x + off * x.sum(-1, keepdim=True)


Pair = tuple[Tensor, Tensor]  # (the model's activation on the image, the |w|-network's on the ones)


def _linear(s: _Side, x: Tensor, lin: nn.Linear) -> Tensor:
    return F.linear(x, s.w(lin.weight), None if lin.bias is None else s.w(lin.bias))


def _layer_norm(sides: Pair, xs: Pair, ln: nn.LayerNorm) -> Pair:
    """g ⊙ C z/σ + b with 1/σ frozen at the model's value on the image (per token)."""
    if len(ln.normalized_shape) != 1:
        raise MeasureError("path_norm: LayerNorm over more than the last dimension is not supported")
    inv_sigma = torch.rsqrt(xs[0].var(-1, unbiased=False, keepdim=True) + ln.eps)  # (..., 1)

    def one(s: _Side, x: Tensor) -> Tensor:
        y = s.centre(x) * s.w(inv_sigma)
        y = y if ln.weight is None else y * s.w(ln.weight)
        return y if ln.bias is None else y + s.w(ln.bias)

    return tuple(one(s, x) for s, x in zip(sides, xs))


def _attention_maps(q: Tensor, k: Tensor, heads: int) -> Tensor:
    """softmax(q_k k_kᵀ/√p) per head: (B, K, N, N), as ``multi_head_attention`` without dropout."""
    b, n, inner = q.shape
    split = lambda t: t.view(b, n, heads, inner // heads).transpose(1, 2)  # (B, K, N, p)
    return torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(inner // heads), dim=-1)


def _mix(s: _Side, v: Tensor, A: Tensor) -> Tensor:
    """Head k's tokens mixed by the frozen A_k: (B, N, Kp) -> (B, N, Kp)."""
    b, n, inner = v.shape
    heads = A.shape[1]
    out = s.w(A) @ v.view(b, n, heads, inner // heads).transpose(1, 2)  # (B, K, N, p)
    return out.transpose(1, 2).reshape(b, n, inner)


def _output_operator(s: _Side, out: Tensor, mssa: MSSA) -> Tensor:
    op, W = mssa.out_op, mssa.qkv.weight  # W: (Kp, d)
    if isinstance(op, LearnedOutput):  # crate, crate_fix
        return out if isinstance(op.proj, nn.Identity) else _linear(s, out, op.proj)
    if isinstance(op, TiedOutput):  # crate_c (+), crate_n (−): ±out @ W
        return s.w(op.sign) * (out @ s.w(W))
    if isinstance(op, TransposeOutput):  # crate_t
        return F.linear(out, s.w(W))
    if isinstance(op, IdentityOutput):
        return out
    raise MeasureError(f"path_norm: unknown MSSA output operator {type(op).__name__}")


def _ista(s: _Side, x: Tensor, ista: ISTA) -> Tensor:
    """ReLU(x + η xD − η (xDᵀ)D − ηλ): rows of the column form, one term per kind of path."""
    D, eta = ista.weight, ista.step
    u = x + s.w(eta) * (x @ s.w(D)) + s.w(-eta) * ((x @ s.w(D).T) @ s.w(D)) + s.w(-eta * ista.lambd)
    return s.act(F.relu, u)


def _crate_layer(sides: Pair, zs: Pair, layer: CRATELayer) -> Pair:
    xs = _layer_norm(sides, zs, layer.norm1)
    w = _linear(sides[0], xs[0], layer.mssa.qkv)
    A = _attention_maps(w, w, layer.mssa.heads)  # Q = K = V = qkv(x)
    zh = tuple(z + _output_operator(s, _mix(s, _linear(s, x, layer.mssa.qkv), A), layer.mssa)
               for s, z, x in zip(sides, zs, xs))  # compression step, skip = identity edges
    return tuple(_ista(s, x, layer.ista) for s, x in zip(sides, _layer_norm(sides, zh, layer.norm2)))


def _mlp(s: _Side, x: Tensor, seq: nn.Sequential) -> Tensor:
    for mod in seq:
        if isinstance(mod, nn.Linear):
            x = _linear(s, x, mod)
        elif isinstance(mod, (nn.ReLU, nn.GELU)):  # GELU enters as a ReLU neuron
            x = s.act(mod, x)
        elif not isinstance(mod, (nn.Dropout, nn.Identity)):
            raise MeasureError(f"path_norm: unsupported MLP layer {type(mod).__name__}")
    return x


def _vit_layer(sides: Pair, zs: Pair, layer: ViTLayer) -> Pair:
    at = layer.attn
    xs = _layer_norm(sides, zs, layer.norm1)
    A = _attention_maps(_linear(sides[0], xs[0], at.q), _linear(sides[0], xs[0], at.k), at.heads)
    zh = tuple(z + _linear(s, _mix(s, _linear(s, x, at.v), A), at.proj) for s, z, x in zip(sides, zs, xs))
    return tuple(z + _mlp(s, x, layer.mlp) for s, z, x in zip(sides, zh, _layer_norm(sides, zh, layer.norm2)))


_LAYERS: dict[type, Callable[[Pair, Pair, nn.Module], Pair]] = {CRATELayer: _crate_layer, ViTLayer: _vit_layer}


def _embed(sides: Pair, imgs: Pair, e: PatchEmbed) -> Pair:
    xs = _layer_norm(sides, tuple(e.patchify(x) for x in imgs), e.patch_norm)
    xs = _layer_norm(sides, tuple(_linear(s, x, e.proj) for s, x in zip(sides, xs)), e.norm)
    n = xs[0].shape[1] + 1
    return tuple(torch.cat([s.w(e.cls_token).expand(x.shape[0], -1, -1), x], dim=1) + s.w(e.pos_embedding[:, :n])
                 for s, x in zip(sides, xs))


def _head(sides: Pair, zs: Pair, head: Head) -> Pair:
    if head.pool == "cls":
        zs = tuple(z[:, 0] for z in zs)
    else:  # mean over tokens: edges of weight 1/N
        zs = tuple(s.w(1.0 / z.shape[1]) * z.sum(1) for s, z in zip(sides, zs))
    return tuple(_linear(s, x, head.fc) for s, x in zip(sides, _layer_norm(sides, zs, head.norm)))


@torch.no_grad()
def frozen_path_norms(model: TokenClassifier, images: Tensor, q: float, input_value: float = 1.0) -> Pair:
    """(P_q(x) per image, the model's logits from the same walk); float64 model and images.

    ``input_value`` is the |w|-network's constant input (1 defines the path-norm; with c
    the result is c·(input paths) + (bias paths), which the tests use).
    """
    sides = (_Side(), _Side(q))
    zs = _embed(sides, (images, torch.full_like(images, input_value)), model.embed)
    for layer in model.layers:
        walk = _LAYERS.get(type(layer))
        if walk is None:
            raise MeasureError(f"path_norm: unsupported layer {type(layer).__name__}")
        zs = walk(sides, zs, layer)
    logits, out = _head(sides, zs, model.head)
    return out.sum(-1), logits


def _log_inv_sigma(model: nn.Module, images: Tensor) -> tuple[Tensor, int]:
    """Σ over the model's LayerNorms of the token mean of log10(1/σ), per image, from one
    forward pass (hooks on every ``nn.LayerNorm``), and the number of LayerNorms.

    These are the frozen 1/σ factors of the path graph: a path crosses one token of each
    LayerNorm on its way, so log10 P_q moves with q times this sum (a diagnostic of where
    the value comes from, not part of it)."""
    total = torch.zeros(len(images), dtype=torch.float64)
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]

    def hook(ln: nn.LayerNorm, args: tuple[Tensor, ...], _out: Tensor) -> None:
        z = args[0]
        inv = torch.rsqrt(z.var(-1, unbiased=False) + ln.eps)  # (B, N) or (B,)
        total.add_(torch.log10(inv).reshape(len(z), -1).mean(1))

    handles = [m.register_forward_hook(hook) for m in norms]
    try:
        model(images)
    finally:
        for h in handles:
            h.remove()
    return total, len(norms)


def _transformer_values(ctx: MeasureContext, q: float, n_images: Optional[int]) -> tuple[Tensor, dict[str, Any]]:
    """P_q(x) for every image of the seeded training subset, and the diagnostics: the fraction
    of blank patches and Σ log10(1/σ) over the frozen LayerNorms (mean over images).

    Checks on every batch that the walk reproduces the model's logits. A patch is blank
    when its variance is below the patch LayerNorm's eps (its paths then weigh ≥ (1/√(2eps))^q).
    """
    model = copy.deepcopy(ctx.model).double().eval()
    x, _ = ctx.subset("train", n_images)
    values, blank, log_inv, n_norms = [], 0.0, 0.0, 0
    for i in range(0, len(x), ctx.batch_size):
        xb = x[i : i + ctx.batch_size].double()
        pq, logits = frozen_path_norms(model, xb, q)
        expect = model(xb)
        if not torch.allclose(logits, expect, rtol=1e-6, atol=1e-6 * (1 + expect.abs().max().item())):
            raise MeasureError(f"path_norm's walk of {type(ctx.model).__name__} no longer reproduces its logits; "
                               "update measures/pathnorm.py to the model's forward")
        values.append(pq)
        patches = model.embed.patchify(xb)  # (B, N, patch_dim)
        blank += (patches.var(-1, unbiased=False) < model.embed.patch_norm.eps).double().mean(1).sum().item()
        li, n_norms = _log_inv_sigma(model, xb)
        log_inv += li.sum().item()
    return torch.cat(values), {"blank_patches": blank / len(x), "ln_log10_inv_sigma": log_inv / len(x),
                               "n_layernorms": n_norms}


def path_norm_q(ctx: MeasureContext, q: float, n_images: Optional[int]) -> dict[str, Any]:
    """P_q = ‖Φ‖_q^q (mean over images on the transformers) and its diagnostics, cached."""
    if not q > 0:
        raise MeasureError(f"path_norm.q must be > 0, got {q}")
    if n_images is not None and n_images < 1:
        raise MeasureError(f"path_norm.n_images must be ≥ 1 or None, got {n_images}")

    def run() -> dict[str, Any]:
        if isinstance(ctx.model, TokenClassifier):
            v, diag = _transformer_values(ctx, q, n_images)
            se = v.std().item() / math.sqrt(len(v)) if len(v) > 1 else float("nan")
            return {"value": v.mean().item(), "n_images": len(v), "se": se, "frozen": "attention, LayerNorm 1/σ",
                    **diag}
        try:
            v = dag_relu_path_norm_q(ctx.model, ctx.data("train")[0].shape[1:], q).item()
        except TypeError as e:
            raise MeasureError(str(e)) from None
        return {"value": v, "n_images": 0, "se": 0.0, "frozen": "none (exact)"}

    return ctx.cached(("path_norm", q, n_images), run)


def _result(ctx: MeasureContext, v: float, s: dict[str, Any], r: dict[str, Any], **diag: Any) -> Result:
    extra = {"size_adjusted": size_adjusted("sqrt", v, ctx.train_size)} if s.get("size_adjusted") else {}
    return Result(v, extra, {**{k: x for k, x in r.items() if k != "value"}, "q": s["q"], **diag})


@measure("path_norm", group="path_norm", needs=("train",), size_adjust="sqrt",
         eq="Gonon et al. 2024 Thm A.1, ‖Φ‖_q^q with frozen attention and LayerNorm scales; Jiang eq. (44) at q=2")
def path_norm_measure(ctx: MeasureContext, s: dict[str, Any]) -> Result:
    """ℓ_q path-norm ‖Φ‖_q^q (no root), per image with frozen attention / LayerNorm scales, averaged."""
    r = path_norm_q(ctx, s["q"], s["n_images"])
    return _result(ctx, r["value"], s, r)


@measure("path_norm_over_margin", group="path_norm", needs=("train",), size_adjust="sqrt",
         eq="‖Φ‖_q^q / γ^q; Jiang et al. 2020 eq. (43) at q=2")
def path_norm_over_margin(ctx: MeasureContext, s: dict[str, Any]) -> Result:
    """path_norm / γ^q, γ the 10th-percentile training margin."""
    r = path_norm_q(ctx, s["q"], s["n_images"])
    g = margin(ctx, s["margin_percentile"], s["margin_n_images"])["gamma"]
    v = r["value"] / g ** s["q"] if g > 0 else float("inf")
    return _result(ctx, v, s, r, gamma=g)
