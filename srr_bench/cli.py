"""Console entry points. Each is thin: it composes the config and calls a plain function."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

CONF_DIR = str(Path(__file__).resolve().parent.parent / "sweeps" / "conf")


def register_resolvers() -> None:
    """``${run_id:}``: hash of the result-affecting config (used to name run directories)."""
    from omegaconf import OmegaConf

    from .runs import run_id

    def _run_id(*, _root_: Any) -> str:
        from omegaconf import OmegaConf as OC

        cfg = OC.to_container(_root_, resolve=False)
        cfg.pop("hydra", None)
        return run_id(OC.to_container(OC.create(cfg), resolve=True))

    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", _run_id)


def to_plain(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    return plain


def train_main() -> None:
    """``srr-train``: train one model (or a grid with ``-m``) into hash-named run directories."""
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from .train import train

    register_resolvers()

    @hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
    def _main(cfg: Any) -> Optional[float]:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        metrics = train(to_plain(cfg), run_dir)
        print(f"{metrics['status']}: test_acc={metrics['test_acc']:.4f} gap_acc={metrics['gap_acc']:.4f} -> {run_dir}")
        return metrics["test_acc"]

    _main()


def measure_main() -> None:
    from measures.cli import main

    sys.exit(main())


def analyze_main() -> None:
    from analysis.cli import main

    sys.exit(main())
