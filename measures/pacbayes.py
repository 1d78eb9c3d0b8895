"""PAC-Bayes flatness: the σ search and the bound forms (Jiang et al. 2020 eqs. 48–61).

σ is the largest noise level at which the training accuracy drops by ``target`` (0.1):

    drop(σ) = acc(w) − E_ξ acc(w + σ·ξ)                      isotropic, ξ ~ N(0, I)
    drop(σ') = acc(w) − E_ξ acc(w + sqrt(σ'²w² + ε²)·ξ)      magnitude-aware, ε = 1e-3

σ is the noise's STANDARD DEVIATION (RGM passes σ² as the std), and the magnitude-aware
noise has VARIANCE σ'²w_i² + ε² (RGM uses that expression as the std). How it is found:

- the accuracy is measured on a fixed seeded subset of ``n_images`` training images,
  averaged over ``mc_samples`` noise draws ξ_1..ξ_M;
- common random numbers: ξ_j of parameter ``name`` comes from a generator seeded by
  (seed, j, name), so the same draws are scaled by every σ of the search and shared by
  every model with the same seed (and by shared parameter names across sizes);
- the bracket: start at ``sigma0``, double (or halve) until the drop is on both sides of
  the target (RGM caps σ at 2); then split the bracket until |drop − target| ≤ ``tol``
  (0.01), at the point interpolated in (log σ, drop), kept within the middle 60% of the
  bracket (``split = interpolate``) or at the geometric midpoint (``split = bisect``);
- ``converged`` is false when the budget (``max_evals``) or the σ range ran out, e.g. a
  model whose accuracy is within ``target`` of chance cannot lose ``target``.

Diagnostics: σ, converged, the drop at σ with its 95% confidence interval over the M
draws (t interval), the clean subset accuracy, every (σ, drop) evaluated.

Perturbed: every trainable parameter (``perturb = trainable``; ``weights`` leaves biases and
LayerNorm parameters alone); frozen parameters (crate_fix) are not part of the posterior.
The bounds use the same parameters, m = the training-set size:

    pacbayes_init/orig      = ‖v‖²/(4σ²) + log(m/σ) + 10,           v = w − w₀ or w      (48, 49)
    pacbayes_flatness       = 1/σ²                                                        (53)
    pacbayes_mag_init/orig  = ¼ Σ_i log[(ε² + (σ'²+1)‖v‖²/ω) / (ε² + σ'²w_i²)] + log(m/σ') + 10   (56, 57)
    pacbayes_mag_flatness   = 1/σ'²                                                       (61)

ω = the number of perturbed parameters. The denominator of (56, 57) is the posterior
variance ε² + σ'²w_i² of the noise the search actually applied, so (57) is the KL term
with the optimal prior variance. RGM's code puts (w_i − w_i⁰)² there in both forms (a
later reimplementation calls it "probably a typo"); that form is kept in the diagnostics
as ``rgm_form`` (when the initial weights are given).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
from scipy import stats
from torch import Tensor

from .context import MeasureContext, flat, trainable
from .registry import Result, measure, settings_group, size_adjusted

COMMON = dict(n_images=512, mc_samples=12, target=0.1, tol=0.01, max_evals=12, split="interpolate",
              perturb="trainable", sigma_min=1e-6, sigma_max=1e3)
settings_group("pacbayes", sigma0=0.01, **COMMON)
settings_group("pacbayes_mag", sigma0=0.1, eps=1e-3, **COMMON)


# ---- the noise and the accuracy drop -----------------------------------------------------------
def standard_normal(ctx: MeasureContext, params: dict[str, Tensor], j: int) -> dict[str, Tensor]:
    """Draw ξ_j for every parameter from its own (seed, j, name) generator: common random numbers."""
    return {
        k: torch.randn(p.shape, generator=ctx.generator("pacbayes-noise", j, k), device=ctx.device, dtype=p.dtype)
        for k, p in params.items()
    }


def noise_std(params: dict[str, Tensor], sigma: float, eps: Optional[float]) -> dict[str, Tensor]:
    """Per-entry standard deviation: σ (isotropic) or sqrt(σ²w² + ε²) (magnitude-aware)."""
    if eps is None:
        return {k: torch.full_like(p, sigma) for k, p in params.items()}
    return {k: torch.sqrt(sigma**2 * p.square() + eps**2) for k, p in params.items()}


def accuracy_drop(ctx: MeasureContext, s: dict[str, Any], eps: Optional[float]) -> Callable[[float], dict]:
    """drop(σ) on the fixed subset, with common random numbers; returns {drop, ci95, accs}."""
    x, y = ctx.subset("train", s["n_images"])
    params = trainable(ctx.model, s["perturb"])
    clean = (ctx.logits(x).argmax(1) == y).double().mean().item()

    def drop(sigma: float) -> dict[str, Any]:
        std = noise_std(params, sigma, eps)
        accs = []
        for j in range(int(s["mc_samples"])):
            xi = standard_normal(ctx, params, j)
            noisy = {k: p + std[k] * xi[k] for k, p in params.items()}
            accs.append((ctx.logits(x, noisy).argmax(1) == y).double().mean().item())
        drops = torch.tensor([clean - a for a in accs], dtype=torch.float64)
        return {"drop": drops.mean().item(), "ci95": t_interval(drops), "clean_acc": clean}

    return drop


def t_interval(v: Tensor, level: float = 0.95) -> list[float]:
    """Student-t confidence interval of the mean of v."""
    m = v.mean().item()
    if len(v) < 2:
        return [float("nan"), float("nan")]
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std().item() / math.sqrt(len(v))
    return [m - half, m + half]


# ---- the search ----------------------------------------------------------------------------------
def sigma_search(
    f: Callable[[float], dict], sigma0: float, target: float = 0.1, tol: float = 0.01, max_evals: int = 16,
    split: str = "interpolate", sigma_min: float = 1e-6, sigma_max: float = 1e3,
) -> dict[str, Any]:
    """Largest σ with f(σ)["drop"] ≈ target: bracket by doubling/halving, then split (module docstring)."""
    if split not in ("interpolate", "bisect"):
        raise ValueError(f"split must be 'interpolate' or 'bisect', not {split!r}")
    trace: list[tuple[float, dict]] = []

    def ev(sig: float) -> float:
        trace.append((sig, f(sig)))
        return trace[-1][1]["drop"]

    def done(converged: bool, sig: float) -> dict[str, Any]:
        info = dict(next(r for sg, r in trace if sg == sig))
        return {"sigma": sig, "converged": converged, "evals": len(trace), **info,
                "trace": [[sg, r["drop"]] for sg, r in trace]}

    lo: Optional[tuple[float, float]] = None  # (σ, drop) with drop < target
    hi: Optional[tuple[float, float]] = None  # (σ, drop) with drop > target
    sig = sigma0
    while len(trace) < max_evals:
        d = ev(sig)
        if abs(d - target) <= tol:
            return done(True, sig)
        if d < target:
            lo = (sig, d)
        else:
            hi = (sig, d)
        if lo is None:  # too much noise everywhere so far: halve
            sig = sig / 2
            if sig < sigma_min:
                return done(False, hi[0])
        elif hi is None:  # not enough noise yet: double
            sig = sig * 2
            if sig > sigma_max:
                return done(False, lo[0])
        else:
            sig = _split(lo, hi, target, split)
    # Out of budget: the bracket end whose drop is closest to the target.
    best = min(trace, key=lambda t: abs(t[1]["drop"] - target))[0]
    return done(False, best)


def _split(lo: tuple[float, float], hi: tuple[float, float], target: float, how: str) -> float:
    a, b = math.log(lo[0]), math.log(hi[0])
    t = 0.5
    if how == "interpolate" and hi[1] > lo[1]:
        t = min(0.8, max(0.2, (target - lo[1]) / (hi[1] - lo[1])))
    return math.exp(a + t * (b - a))


def search(ctx: MeasureContext, s: dict[str, Any], magnitude: bool) -> dict[str, Any]:
    """The σ (or σ') search for these settings, cached (the three measures of a family share it)."""
    keys = ("n_images", "mc_samples", "target", "tol", "max_evals", "split", "perturb", "sigma0",
            "sigma_min", "sigma_max", "eps")
    key = ("pacbayes", magnitude, tuple(s.get(k) for k in keys))

    def run() -> dict[str, Any]:
        f = accuracy_drop(ctx, s, s["eps"] if magnitude else None)
        out = sigma_search(f, s["sigma0"], s["target"], s["tol"], int(s["max_evals"]), s["split"],
                           s["sigma_min"], s["sigma_max"])
        out.update(n_images=len(ctx.subset("train", s["n_images"])[1]), mc_samples=int(s["mc_samples"]))
        return out

    return ctx.cached(key, run)


# ---- the measures ---------------------------------------------------------------------------------
def _vectors(ctx: MeasureContext, s: dict[str, Any], init: bool) -> tuple[Tensor, Tensor]:
    """(w, v) over the perturbed parameters, v = w − w₀ (init) or w (orig), float64."""
    params = trainable(ctx.model, s["perturb"])
    w = flat(params).double()
    if not init:
        return w, w
    w0 = trainable(ctx.init_model, s["perturb"])
    return w, w - flat([w0[k] for k in params]).double()


def _diag(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r[k] for k in ("sigma", "converged", "drop", "ci95", "clean_acc", "evals", "n_images",
                              "mc_samples", "trace")}


def _adjusted(ctx: MeasureContext, s: dict, v: float) -> dict[str, float]:
    return {"size_adjusted": size_adjusted("sqrt", v, ctx.train_size)} if s.get("size_adjusted") else {}


def _bound(ctx: MeasureContext, s: dict, init: bool) -> Result:
    r = search(ctx, s, magnitude=False)
    sig, m = r["sigma"], ctx.train_size
    _, v = _vectors(ctx, s, init)
    value = v.square().sum().item() / (4 * sig**2) + math.log(m / sig) + 10
    return Result(value, _adjusted(ctx, s, value), _diag(r))


def _mag_bound(ctx: MeasureContext, s: dict, init: bool) -> Result:
    r = search(ctx, s, magnitude=True)
    sig, m, eps = r["sigma"], ctx.train_size, s["eps"]
    w, v = _vectors(ctx, s, init)
    prior = eps**2 + (sig**2 + 1) * v.square().sum() / len(w)
    value = 0.25 * torch.log(prior / (eps**2 + sig**2 * w.square())).sum().item() + math.log(m / sig) + 10
    _, dist = _vectors(ctx, s, True) if ctx.has("init") else (None, None)
    rgm = None
    if dist is not None:
        rgm = 0.25 * torch.log(prior / (eps**2 + sig**2 * dist.square())).sum().item() + math.log(m / sig) + 10
    return Result(value, _adjusted(ctx, s, value), {**_diag(r), "rgm_form": rgm})


def _flatness(ctx: MeasureContext, s: dict, magnitude: bool) -> Result:
    """1/σ² of the found noise level, with σ as an extra value."""
    r = search(ctx, s, magnitude=magnitude)
    v = 1 / r["sigma"] ** 2
    return Result(v, {"sigma": r["sigma"], **_adjusted(ctx, s, v)}, _diag(r))


@measure("pacbayes_flatness", group="pacbayes", needs=("train",), eq="Jiang et al. 2020 eq. (53)", size_adjust="sqrt")
def pacbayes_flatness(ctx: MeasureContext, s: dict) -> Result:
    """1/σ², σ the std of isotropic weight noise that drops training accuracy by 0.1; extra value: sigma."""
    return _flatness(ctx, s, magnitude=False)


@measure("pacbayes_init", group="pacbayes", needs=("train", "init"), eq="Jiang et al. 2020 eq. (48)",
         size_adjust="sqrt")
def pacbayes_init(ctx: MeasureContext, s: dict) -> Result:
    """‖w − w₀‖²/(4σ²) + log(m/σ) + 10."""
    return _bound(ctx, s, init=True)


@measure("pacbayes_orig", group="pacbayes", needs=("train",), eq="Jiang et al. 2020 eq. (49)", size_adjust="sqrt")
def pacbayes_orig(ctx: MeasureContext, s: dict) -> Result:
    """‖w‖²/(4σ²) + log(m/σ) + 10."""
    return _bound(ctx, s, init=False)


@measure("pacbayes_mag_flatness", group="pacbayes_mag", needs=("train",), eq="Jiang et al. 2020 eq. (61)",
         size_adjust="sqrt")
def pacbayes_mag_flatness(ctx: MeasureContext, s: dict) -> Result:
    """1/σ'², σ' the magnitude-aware noise level (variance σ'²w² + ε²) that drops accuracy by 0.1."""
    return _flatness(ctx, s, magnitude=True)


@measure("pacbayes_mag_init", group="pacbayes_mag", needs=("train", "init"), eq="Jiang et al. 2020 eq. (56)",
         size_adjust="sqrt")
def pacbayes_mag_init(ctx: MeasureContext, s: dict) -> Result:
    """¼ Σ_i log[(ε² + (σ'²+1)‖w − w₀‖²/ω)/(ε² + σ'²w_i²)] + log(m/σ') + 10."""
    return _mag_bound(ctx, s, init=True)


@measure("pacbayes_mag_orig", group="pacbayes_mag", needs=("train",), eq="Jiang et al. 2020 eq. (57)",
         size_adjust="sqrt")
def pacbayes_mag_orig(ctx: MeasureContext, s: dict) -> Result:
    """¼ Σ_i log[(ε² + (σ'²+1)‖w‖²/ω)/(ε² + σ'²w_i²)] + log(m/σ') + 10."""
    return _mag_bound(ctx, s, init=False)
