"""Console entry points. Each is thin: it composes the config and calls a plain function."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

from .config import CONF_DIR, register_resolvers, to_plain


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
