"""PAC-Bayes flatness: the σ search and the bound forms (Jiang et al. 2020 eqs. 48–61).

σ is the largest noise level at which the training accuracy drops by ``target`` (0.1):

    drop(σ) = acc(w) − E_ξ acc(w + σ·ξ)                      isotropic, ξ ~ N(0, I)
    drop(σ') = acc(w) − E_ξ acc(w + sqrt(σ'²w² + ε²)·ξ)      magnitude-aware, ε = 1e-3

σ is the noise's STANDARD DEVIATION (RGM passes σ² as the std), and the magnitude-aware
noise has VARIANCE σ'²w_i² + ε² (RGM uses that expression as the std).

Perturbed: the learned weights (``perturb = weights``, the definition of
``measures.weights`` shared with the norm family: no biases, normalisation or token
parameters), as RGM and the docs; ``perturb = trainable`` perturbs every trainable
parameter. Frozen parameters (crate_fix) are never perturbed.

The drop is estimated by Monte Carlo, and the search is sequential in the draws:

- draw j perturbs the weights by ξ_j, each parameter's ξ_j from a generator seeded by
  (seed, j, name): common random numbers, the same draws scaled by every σ of the search
  and shared by every model measured with the same seed;
- draw j is scored on its own ``n_images`` training images, the j-th block of a seeded
  permutation of the training set (the same for every model), as clean accuracy −
  noisy accuracy on those images; the mean over draws estimates the drop on the whole
  training set, and its 95% t interval includes the image sampling. (On CRATE 192/6/6
  after one CIFAR-10 epoch, 89% of a draw's variance is the sampling of its 64 images,
  so the cost of a decision hardly depends on the block size. Which images flip is hardly
  told by their clean margin: blocks stratified along it would keep 97–100% of a draw's
  variance on the converged grid's models, ``benchmarks.pacbayes_variance``, so blocks stay
  plain permutation blocks.) The clean accuracies are
  read from the training-set logits when another measure (the margin) has computed them;
- levels share their draws: draw j at every σ is the same ξ_j on the same images, so the
  drop at σ is estimated from its own n draws paired with the n_a > n draws of an earlier
  level, mean(A) + mean(B_j − A_j), whenever that gives a smaller standard error than the
  plain mean (``paired_estimate``: unbiased, variance (Var B − Var(B − A))/n_a +
  Var(B − A)/n, t interval with n − 1 degrees of freedom). Near σ* the levels are close
  and B − A varies little, so a level next to one that needed many draws decides in few
  (``paired_with`` in the diagnostics: the σ each level borrowed from, or None);
- at a noise level, draws are added ``mc_batch`` at a time until the interval decides:
  its 95% interval within target ± ``tol`` (found), or its 99% interval above or below
  the target (a decisive comparison: a wrong one would lose σ* from the bracket for
  good, and a search makes several); or until ``mc_samples`` draws (the cap per level)
  or the search's ``max_draws`` (its cost: at most max_draws × n_images noisy forward
  passes, plus at most one clean pass over the training set) are spent;
- the bracket: start at ``sigma0``, double (or halve) until decisive comparisons lie on
  both sides of the target (RGM caps σ at 2); then split the bracket at the point
  interpolated in (log σ, drop), kept in its middle 60% (``split = interpolate``), or at
  the geometric midpoint (``split = bisect``); only decisive comparisons move it;
- it stops when an interval lies within target ± tol (``converged``), when a level stays
  undecided at the cap (more draws would be needed to tell it from the target), or when
  ``max_evals`` levels, ``max_draws`` draws or the σ range [sigma_min, sigma_max] run out
  (e.g. a model within ``target`` of chance cannot lose ``target``).

Reported: σ (the level that converged, else the undecided one, else the one whose drop
is closest to the target); ``converged`` only when the drop's 95% interval at σ lies
within target ± tol; ``sigma_interval``, the final bracket [lo, hi] of decisive
comparisons (None for a side never found), which holds the σ* with drop(σ*) = target;
the drop at σ with its interval and draw count; the draws in all; every level tried.
The intervals are nominal 95% t intervals: the looks after each batch make their true
coverage somewhat lower (optional stopping); a test checks σ against a closed form.

The bounds (m = the training-set size, v = w − w₀ (init) or w (orig) over the perturbed
parameters, ω = their number):

    pacbayes_init/orig     = ‖v‖²/(4σ²) + log(m/σ) + 10                      (48, 49)
    pacbayes_flatness      = 1/σ²                                              (53)
    pacbayes_mag_init/orig = ½ KL(Q‖P) + log(m/σ') + 10                        (56, 57)
    pacbayes_mag_flatness  = 1/σ'²                                             (61)

with Q = N(w, diag(s²)), s_i² = σ'²w_i² + ε², the noise the search applied, and
P = N(w − v, τ²I) at the τ² that minimises the KL, τ² = (Σ_i s_i² + ‖v‖²)/ω, so that

    ½ KL(Q‖P) = ¼ Σ_i log(τ²/s_i²),   τ² = ε² + (σ'²‖w‖² + ‖v‖²)/ω.

The isotropic forms are likewise ½ KL(N(w, σ²I) ‖ N(w − v, σ²I)). For orig (v = w) this
is Jiang's eq. (57) exactly. Jiang's (56) and RGM's code use ε² + (σ'²+1)‖v‖²/ω over
ε² + σ'²(w_i − w⁰_i)², the KL of noise scaled by |w − w₀|, which is not the noise
applied; that form is kept in the diagnostics as ``rgm_form`` (when init is given).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from scipy import stats
from torch import Tensor

from .context import MeasureContext
from .registry import Result, measure, settings_group, size_adjusted
from .weights import parameter_set, weight_vectors

COMMON = dict(n_images=64, mc_batch=16, mc_samples=512, max_draws=512, target=0.1, tol=0.01, max_evals=16,
              split="interpolate", perturb="weights", sigma_min=1e-6, sigma_max=1e3)
settings_group("pacbayes", sigma0=0.01, **COMMON)
settings_group("pacbayes_mag", sigma0=0.1, eps=1e-3, **COMMON)
SEARCH_KEYS = ("target", "tol", "max_evals", "split", "sigma_min", "sigma_max", "mc_batch", "mc_samples", "max_draws")

Draws = Callable[[float, int, int], Tensor]  # (σ, j0, j1) -> the drops of draws j0..j1−1, float64


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


def draw_images(ctx: MeasureContext, n: Optional[int], j: int) -> tuple[Tensor, Tensor, float]:
    """(x, y, clean accuracy) of draw j: block j of a seeded permutation of the training set.

    Blocks of ``n`` images follow each other through the permutation and wrap around;
    ``n`` None or ≥ the set's size: every draw sees the whole training set.
    """
    x, y = ctx.data("train")
    if n is None or n >= len(y):
        idx = torch.arange(len(y), device=ctx.device)
    else:
        perm = ctx.cached(("pacbayes-perm", len(y)), lambda: torch.randperm(
            len(y), generator=ctx.generator("pacbayes-images"), device=ctx.device))
        idx = perm[(torch.arange(n, device=ctx.device) + j * n) % len(y)]
    return x[idx], y[idx], _clean_correct(ctx, idx).double().mean().item()


def _clean_correct(ctx: MeasureContext, idx: Tensor) -> Tensor:
    """Whether the unperturbed model classifies training images ``idx`` correctly. Read from the
    training set's logits when a measure has computed them (the margin does: no second clean pass),
    else each image is evaluated once per context (both searches share it): at most one pass."""
    x, y = ctx.data("train")
    full = ctx.peek(("logits", "train", None))
    if full is not None:
        return full[0][idx].argmax(1) == y[idx]
    known = ctx.cached("pacbayes-clean", lambda: torch.full((len(y),), -1, dtype=torch.int8, device=ctx.device))
    todo = idx[known[idx] < 0].unique()
    if len(todo):
        known[todo] = (ctx.logits(x[todo]).argmax(1) == y[todo]).to(torch.int8)
    return known[idx] == 1


def drop_sampler(ctx: MeasureContext, s: dict[str, Any], eps: Optional[float]) -> Draws:
    """The per-draw accuracy drops at σ, with common random numbers (module docstring)."""
    params = parameter_set(ctx.model, s["perturb"])
    n = s["n_images"]

    def draws(sigma: float, j0: int, j1: int) -> Tensor:
        std = noise_std(params, sigma, eps)
        out = []
        for j in range(j0, j1):
            x, y, clean = draw_images(ctx, n, j)
            xi = standard_normal(ctx, params, j)
            noisy = {k: p + std[k] * xi[k] for k, p in params.items()}
            out.append(clean - (ctx.logits(x, noisy).argmax(1) == y).double().mean().item())
        return torch.tensor(out, dtype=torch.float64)

    return draws


def t_interval(v: Tensor, level: float = 0.95) -> list[float]:
    """Student-t confidence interval of the mean of v."""
    if len(v) < 2:
        return [float("nan"), float("nan")]
    return interval(v.mean().item(), v.std().item() / math.sqrt(len(v)), len(v) - 1, level)


def interval(mean: float, se: float, df: int, level: float = 0.95) -> list[float]:
    """mean ± t_{df} quantile × se."""
    half = stats.t.ppf(0.5 + level / 2, df) * se
    return [mean - half, mean + half]


def paired_estimate(drops: Tensor, ref: Tensor) -> tuple[float, float]:
    """The drop at σ from its n draws and the n_a > n draws of the same ξ_j and images at another level:

        θ̂ = mean(A_0..A_{n_a−1}) + mean(B_j − A_j, j < n),   B: the draws at σ, A: at the reference,

    unbiased for E B (E A_j cancels), with Var θ̂ = (Var B − Var(B − A))/n_a + Var(B − A)/n: for nearby
    levels B − A varies little (common random numbers) and θ̂ has about the precision of n_a draws.
    Returns (θ̂, its standard error), the variances estimated from the n pairs (the first term at ≥ 0)."""
    n, n_a = len(drops), len(ref)
    d = drops - ref[:n]
    vb, vd = drops.var().item(), d.var().item()
    return ref.mean().item() + d.mean().item(), math.sqrt(max(vb - vd, 0.0) / n_a + vd / n)


# ---- the search ----------------------------------------------------------------------------------
WITHIN, BELOW, ABOVE, UNDECIDED = "within", "below", "above", "undecided"
DECISIVE = 0.99  # the level of the comparisons that move the bracket (module docstring)


@dataclass
class Level:
    """The draws at one noise level, the estimate of its drop and what its interval says about the target.

    ``ref``: the earlier level whose draws the estimate borrows (``paired_estimate``), or None."""

    sigma: float
    drops: Tensor
    verdict: str = UNDECIDED
    drop: float = float("nan")
    se: float = float("nan")
    ref: Optional["Level"] = None

    @property
    def ci95(self) -> list[float]:
        return interval(self.drop, self.se, len(self.drops) - 1) if len(self.drops) > 1 else [float("nan")] * 2

    def row(self) -> list:
        return [self.sigma, self.drop, *self.ci95, len(self.drops), self.verdict]

    def update(self, earlier: list["Level"], target: float, tol: float) -> None:
        """Estimate the drop, plainly or paired with the earlier level with more draws that gives the
        smallest standard error, and decide (``verdict``)."""
        n = len(self.drops)
        self.drop, self.ref = self.drops.mean().item(), None
        self.se = self.drops.std().item() / math.sqrt(n) if n > 1 else float("nan")
        for other in earlier:
            if len(other.drops) > n > 1:
                drop, se = paired_estimate(self.drops, other.drops)
                if se < self.se:
                    self.drop, self.se, self.ref = drop, se, other
        self.verdict = verdict(self.drop, self.se, n - 1, target, tol)


def verdict(drop: float, se: float, df: int, target: float, tol: float) -> str:
    """Within target ± tol (95% interval), else below or above the target (99% interval), else undecided."""
    if df < 1 or math.isnan(se):
        return UNDECIDED
    lo, hi = interval(drop, se, df)
    if target - tol <= lo and hi <= target + tol:
        return WITHIN
    lo, hi = interval(drop, se, df, DECISIVE)
    return BELOW if hi < target else ABOVE if lo > target else UNDECIDED


def estimate(draws: Draws, sigma: float, target: float, tol: float, mc_batch: int, mc_samples: int,
             budget: int, earlier: Optional[list[Level]] = None) -> Level:
    """Add draws at σ, ``mc_batch`` at a time, until the interval decides or the cap or budget is reached.

    The draws at σ are paired with those of the ``earlier`` levels (the same ξ_j on the same images)
    where that narrows the interval (``Level.update``)."""
    level = Level(sigma, torch.empty(0, dtype=torch.float64))
    while level.verdict == UNDECIDED:
        k = min(mc_batch, mc_samples - len(level.drops), budget - len(level.drops))
        if k <= 0:
            break
        level.drops = torch.cat([level.drops, draws(sigma, len(level.drops), len(level.drops) + k)])
        level.update(earlier or [], target, tol)
    return level


def sigma_search(
    draws: Draws, sigma0: float, target: float = 0.1, tol: float = 0.01, max_evals: int = 16,
    split: str = "interpolate", sigma_min: float = 1e-6, sigma_max: float = 1e3, mc_batch: int = 16,
    mc_samples: int = 512, max_draws: int = 512, pair: bool = True,
) -> dict[str, Any]:
    """Largest σ with drop(σ) = target, sequential in the draws (module docstring).

    ``pair = False`` estimates every level from its own draws only (the search before version 3)."""
    if split not in ("interpolate", "bisect"):
        raise ValueError(f"split must be 'interpolate' or 'bisect', not {split!r}")
    if min(mc_batch, mc_samples, max_draws) < 2:
        raise ValueError(f"mc_batch, mc_samples and max_draws must be at least 2 (an interval needs two draws), "
                         f"not {mc_batch}, {mc_samples}, {max_draws}")
    levels: list[Level] = []
    lo: Optional[Level] = None  # decisively below the target
    hi: Optional[Level] = None  # decisively above
    sig, used = sigma0, 0
    while len(levels) < max_evals and max_draws - used >= 2:
        level = estimate(draws, sig, target, tol, mc_batch, mc_samples, max_draws - used, levels if pair else None)
        levels.append(level)
        used += len(level.drops)
        if level.verdict in (WITHIN, UNDECIDED):
            break
        lo, hi = (level, hi) if level.verdict == BELOW else (lo, level)
        if hi is None:
            sig = sig * 2
        elif lo is None:
            sig = sig / 2
        else:
            sig = _split(lo, hi, target, split)
        if not sigma_min <= sig <= sigma_max:
            break
    last = levels[-1]
    best = last if last.verdict in (WITHIN, UNDECIDED) else min(levels, key=lambda l: abs(l.drop - target))
    return {"sigma": best.sigma, "converged": best.verdict == WITHIN,
            "sigma_interval": [lo.sigma if lo else None, hi.sigma if hi else None],
            "drop": best.drop, "ci95": best.ci95, "draws": len(best.drops), "draws_total": used,
            "evals": len(levels), "trace": [l.row() for l in levels],
            "paired_with": [l.ref.sigma if l.ref else None for l in levels]}


def _split(lo: Level, hi: Level, target: float, how: str) -> float:
    a, b = math.log(lo.sigma), math.log(hi.sigma)
    t = 0.5
    if how == "interpolate" and hi.drop > lo.drop:
        t = min(0.8, max(0.2, (target - lo.drop) / (hi.drop - lo.drop)))
    return math.exp(a + t * (b - a))


def search(ctx: MeasureContext, s: dict[str, Any], magnitude: bool) -> dict[str, Any]:
    """The σ (or σ') search for these settings, cached (the three measures of a family share it)."""
    keys = ("n_images", "perturb", "sigma0", "eps", *SEARCH_KEYS)
    key = ("pacbayes", magnitude, tuple(s.get(k) for k in keys))

    def run() -> dict[str, Any]:
        draws = drop_sampler(ctx, s, s["eps"] if magnitude else None)
        out = sigma_search(draws, s["sigma0"], **{k: s[k] for k in SEARCH_KEYS})
        images = [draw_images(ctx, s["n_images"], j) for j in range(out["draws"])]
        out["clean_acc"] = sum(c for _, _, c in images) / len(images)  # over the images of the draws at σ
        out["n_images"] = len(images[0][1])
        return out

    return ctx.cached(key, run)


# ---- the measures ---------------------------------------------------------------------------------
def mag_half_kl(w: Tensor, v: Tensor, sigma: float, eps: float) -> float:
    """½ KL(N(w, diag(σ²w² + ε²)) ‖ N(w − v, τ²I)) at the minimising τ² = (Σ s² + ‖v‖²)/ω (module docstring)."""
    s2 = sigma**2 * w.square() + eps**2
    tau2 = (s2.sum() + v.square().sum()) / len(w)
    return 0.25 * torch.log(tau2 / s2).sum().item()


def _vectors(ctx: MeasureContext, s: dict[str, Any], init: bool) -> tuple[Tensor, Tensor]:
    """(w, v) over the perturbed parameters, v = w − w₀ (init) or w (orig), float64."""
    w, dist = weight_vectors(ctx.model, ctx.init_model if init else None, s["perturb"])
    return w, (dist if init else w)


def _diag(r: dict[str, Any], omega: int) -> dict[str, Any]:
    keys = ("sigma", "converged", "sigma_interval", "drop", "ci95", "draws", "draws_total", "clean_acc", "evals",
            "n_images", "trace", "paired_with")
    return {**{k: r[k] for k in keys}, "perturbed": omega}


def _adjusted(ctx: MeasureContext, s: dict, v: float) -> dict[str, float]:
    return {"size_adjusted": size_adjusted("sqrt", v, ctx.train_size)} if s.get("size_adjusted") else {}


def _bound(ctx: MeasureContext, s: dict, init: bool) -> Result:
    r = search(ctx, s, magnitude=False)
    sig, m = r["sigma"], ctx.train_size
    _, v = _vectors(ctx, s, init)
    value = v.square().sum().item() / (4 * sig**2) + math.log(m / sig) + 10
    return Result(value, _adjusted(ctx, s, value), _diag(r, len(v)))


def _mag_bound(ctx: MeasureContext, s: dict, init: bool) -> Result:
    r = search(ctx, s, magnitude=True)
    sig, m, eps = r["sigma"], ctx.train_size, s["eps"]
    w, v = _vectors(ctx, s, init)
    value = mag_half_kl(w, v, sig, eps) + math.log(m / sig) + 10
    rgm = None
    if ctx.has("init"):
        dist = _vectors(ctx, s, True)[1]
        prior = eps**2 + (sig**2 + 1) * v.square().sum() / len(w)
        rgm = 0.25 * torch.log(prior / (eps**2 + sig**2 * dist.square())).sum().item() + math.log(m / sig) + 10
    return Result(value, _adjusted(ctx, s, value), {**_diag(r, len(w)), "rgm_form": rgm})


def _flatness(ctx: MeasureContext, s: dict, magnitude: bool) -> Result:
    """1/σ² of the found noise level, with σ as an extra value."""
    r = search(ctx, s, magnitude=magnitude)
    v = 1 / r["sigma"] ** 2
    return Result(v, {"sigma": r["sigma"], **_adjusted(ctx, s, v)}, _diag(r, len(parameter_set(ctx.model, s["perturb"]))))


@measure("pacbayes_flatness", group="pacbayes", needs=("train",), eq="Jiang et al. 2020 eq. (53)", size_adjust="sqrt",
         version=3)
def pacbayes_flatness(ctx: MeasureContext, s: dict) -> Result:
    """1/σ², σ the std of isotropic weight noise that drops training accuracy by 0.1; extra value: sigma."""
    return _flatness(ctx, s, magnitude=False)


@measure("pacbayes_init", group="pacbayes", needs=("train", "init"), eq="Jiang et al. 2020 eq. (48)",
         size_adjust="sqrt", version=3)
def pacbayes_init(ctx: MeasureContext, s: dict) -> Result:
    """‖w − w₀‖²/(4σ²) + log(m/σ) + 10."""
    return _bound(ctx, s, init=True)


@measure("pacbayes_orig", group="pacbayes", needs=("train",), eq="Jiang et al. 2020 eq. (49)", size_adjust="sqrt",
         version=3)
def pacbayes_orig(ctx: MeasureContext, s: dict) -> Result:
    """‖w‖²/(4σ²) + log(m/σ) + 10."""
    return _bound(ctx, s, init=False)


@measure("pacbayes_mag_flatness", group="pacbayes_mag", needs=("train",), eq="Jiang et al. 2020 eq. (61)",
         size_adjust="sqrt", version=3)
def pacbayes_mag_flatness(ctx: MeasureContext, s: dict) -> Result:
    """1/σ'², σ' the magnitude-aware noise level (variance σ'²w² + ε²) that drops accuracy by 0.1."""
    return _flatness(ctx, s, magnitude=True)


@measure("pacbayes_mag_init", group="pacbayes_mag", needs=("train", "init"),
         eq="Jiang et al. 2020 eq. (56), KL of the applied noise", size_adjust="sqrt", version=3)
def pacbayes_mag_init(ctx: MeasureContext, s: dict) -> Result:
    """¼ Σ_i log(τ²/(σ'²w_i² + ε²)) + log(m/σ') + 10, τ² = ε² + (σ'²‖w‖² + ‖w − w₀‖²)/ω."""
    return _mag_bound(ctx, s, init=True)


@measure("pacbayes_mag_orig", group="pacbayes_mag", needs=("train",), eq="Jiang et al. 2020 eq. (57)",
         size_adjust="sqrt", version=3)
def pacbayes_mag_orig(ctx: MeasureContext, s: dict) -> Result:
    """¼ Σ_i log[(ε² + (σ'²+1)‖w‖²/ω)/(ε² + σ'²w_i²)] + log(m/σ') + 10."""
    return _mag_bound(ctx, s, init=False)
