"""What a measure gets: the model, its initial weights, data, the run's record, a seed.

``MeasureContext`` holds them (loaded lazily when built from a run directory), hands
out fixed seeded subsets of the data and seeded generators, and caches what several
measures share (the training-set logits, the margin, the weight matrices, a σ search).

Randomness: every draw comes from ``ctx.generator(*tags)``, a fresh generator seeded by
a stable hash of (seed, tags). Two models measured with the same seed therefore see
the same subsets and the same standard-normal draws (common random numbers); the
global RNG is never touched.
"""
from __future__ import annotations

import contextlib
import hashlib
from typing import Any, Callable, Iterator, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from .registry import MissingInput

Data = tuple[Tensor, Tensor]  # (x (n, C, H, W), y (n,))
Loader = Callable[[], Any]


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from a stable hash of ``parts`` (same across Python runs and machines)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class MeasureContext:
    """The inputs of a measure (see module docstring).

    Args:
        model: any ``nn.Module`` classifier, ``model(x) -> logits``.
        init_model: the same architecture at initialisation (or a zero-argument loader).
        train, test: ``(x, y)`` tensors (or zero-argument loaders returning them).
        seed: seeds every generator and every subset.
        device: where the measures run; models and data are moved (copies) there.
        metrics, history: the run's metrics.json dict and history DataFrame.
        batch_size: evaluation batch size (memory only; results do not depend on it).
        run_config: the run's resolved config (batch size of training, data, ...).
        train_size: m, the size of the training set the bounds use (default: len(train)).
    """

    def __init__(
        self, model: nn.Module, init_model: Union[nn.Module, Loader, None] = None,
        train: Union[Data, Loader, None] = None, test: Union[Data, Loader, None] = None, *, seed: int = 0,
        device: Union[str, torch.device] = "cpu", metrics: Optional[dict] = None, history: Any = None,
        batch_size: int = 256, run_config: Optional[dict] = None, train_size: Optional[int] = None,
    ):
        self.device = torch.device(device)
        self.model = _on_device(model, self.device)
        self._init = init_model
        self._data = {"train": train, "test": test}
        self.seed = int(seed)
        self.metrics = metrics
        self.history = history
        self.batch_size = int(batch_size)
        self.run_config = run_config or {}
        self._train_size = train_size
        self._cache: dict[Any, Any] = {}

    # ---- inputs -------------------------------------------------------------------------
    @property
    def init_model(self) -> nn.Module:
        if self._init is None:
            raise MissingInput("needs the initial weights (init.pt); none given")
        if not isinstance(self._init, nn.Module):
            self._init = self._init()
        self._init = _on_device(self._init, self.device)
        return self._init

    def has(self, need: str) -> bool:
        if need in ("train", "test"):
            return self._data[need] is not None
        if need == "init":
            return self._init is not None
        if need == "run":
            return self.metrics is not None
        if need == "probe":
            return hasattr(self.model, "forward_intermediates") and hasattr(self.model, "subspace_bases")
        return True

    def data(self, split: str) -> Data:
        """The whole ``split`` ("train" or "test") as (x, y) on the device."""
        if split not in self._data:
            raise MissingInput(f"unknown split {split!r}; use train or test")
        d = self._data[split]
        if d is None:
            raise MissingInput(f"needs the {split} data; none given")
        if callable(d):
            d = d()
        x, y = d
        d = (x.to(self.device), y.to(self.device))
        self._data[split] = d
        return d

    @property
    def train_size(self) -> int:
        """m, the number of training examples (as in the bounds' log(m/σ) and RGM's adjustment)."""
        return int(self._train_size) if self._train_size else len(self.data("train")[1])

    def subset(self, split: str, n: Optional[int]) -> Data:
        """The first n of a seeded permutation of ``split`` (all of it if n is None or too big).

        The permutation depends only on (seed, split, split size), so subsets are nested
        (a smaller n is a prefix of a larger one) and identical across models.
        """
        x, y = self.data(split)
        if n is None or n >= len(y):
            return x, y
        rng = np.random.default_rng(stable_seed(self.seed, "subset", split, len(y)))
        idx = torch.as_tensor(np.sort(rng.permutation(len(y))[:n]), device=self.device)
        return x[idx], y[idx]

    def generator(self, *tags: Any) -> torch.Generator:
        """A fresh generator on the device, seeded by (seed, tags)."""
        return torch.Generator(device=self.device).manual_seed(stable_seed(self.seed, *tags))

    def peek(self, key: Any) -> Any:
        """What ``cached(key, ...)`` holds, or None: reuse a result only if another measure paid for it."""
        return self._cache.get(key)

    def cached(self, key: Any, fn: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    # ---- forward passes -----------------------------------------------------------------
    @torch.no_grad()
    def logits(self, x: Tensor, params: Optional[dict[str, Tensor]] = None, model: Optional[nn.Module] = None) -> Tensor:
        """Logits of ``x`` in evaluation batches, with ``params`` substituted if given."""
        model = model or self.model
        outs = []
        for i in range(0, len(x), self.batch_size):
            xb = x[i : i + self.batch_size]
            outs.append(model(xb) if params is None else functional_call(model, params, (xb,), strict=False))
        return torch.cat(outs).float()

    def split_logits(self, split: str, n: Optional[int] = None) -> Data:
        """(logits, y) of the final model on ``subset(split, n)``, cached."""

        def run() -> Data:
            x, y = self.subset(split, n)
            return self.logits(x), y

        return self.cached(("logits", split, n), run)


def _on_device(model: nn.Module, device: torch.device) -> nn.Module:
    """The model itself if it already lives on ``device``, else a moved copy (the caller's stays put)."""
    p = next(model.parameters(), None)
    if p is None or p.device == device:
        return model
    import copy

    return copy.deepcopy(model).to(device)


def trainable(model: nn.Module) -> dict[str, Tensor]:
    """Every parameter with ``requires_grad``, by name (tied parameters once).

    Frozen ones (e.g. crate_fix's output operator) are part of the function but not of what
    was learned. The other parameter set, the weights, is ``measures.weights``; measures
    choose between the two with ``weights.parameter_set``.
    """
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


@contextlib.contextmanager
def evaluation(*models: Optional[nn.Module]) -> Iterator[None]:
    """Put models in eval mode and restore every submodule's own mode afterwards."""
    modes = [(m, m.training) for model in models if model is not None for m in model.modules()]
    try:
        for model in models:
            if model is not None:
                model.eval()
        yield
    finally:
        for m, was in modes:
            m.training = was


def flat(tensors: Union[dict[str, Tensor], list[Tensor]]) -> Tensor:
    ts = tensors.values() if isinstance(tensors, dict) else tensors
    return torch.cat([t.reshape(-1) for t in ts])
