"""Composing the shipped Hydra config tree from Python (tests, demo, benchmarks)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

CONF_DIR = str(Path(__file__).resolve().parent.parent / "sweeps" / "conf")


def register_resolvers() -> None:
    """``${run_id:}``: hash of the result-affecting config (names run directories)."""
    from omegaconf import OmegaConf

    from .runs import run_id

    def _run_id(*, _root_: Any) -> str:
        cfg = OmegaConf.to_container(_root_, resolve=False)
        cfg.pop("hydra", None)
        return run_id(OmegaConf.to_container(OmegaConf.create(cfg), resolve=True))

    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", _run_id)


def to_plain(cfg: Any) -> dict[str, Any]:
    """A resolved plain dict of a composed config, without Hydra's own node."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    return plain


def compose(overrides: Sequence[str] = (), config_name: str = "config") -> dict[str, Any]:
    """The config ``srr-train OVERRIDES...`` would run, as a plain dict."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return to_plain(hydra_compose(config_name=config_name, overrides=list(overrides)))
