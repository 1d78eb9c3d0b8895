"""Console entry points. Each is thin: it composes the config and calls a plain function."""
from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any, Optional

from .config import CONF_DIR, register_resolvers, to_plain

# Errors whose message is the whole story: printed as one line, no traceback.
USER_ERRORS = (KeyError, ValueError, FileNotFoundError, RuntimeError)


def one_line(e: BaseException) -> str:
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return f"{type(e).__name__}: {' '.join(msg.split())}"


def train_main() -> None:
    """``srr-train``: train one model (or a grid with ``-m``) into hash-named run directories.

    A failing run records ``failure.json`` in its directory; in a sweep (``-m``) the
    sweep goes on with the next run, alone it exits with status 1 and a one-line error.
    """
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from .io import write_json
    from .train import train

    register_resolvers()

    @hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
    def _main(cfg: Any) -> Optional[float]:
        hc = HydraConfig.get()
        run_dir = Path(hc.runtime.output_dir)
        try:
            metrics = train(to_plain(cfg), run_dir)
        except Exception as e:  # recorded per run, so that a sweep survives it
            write_json(run_dir / "failure.json", dict(error=one_line(e), traceback=traceback.format_exc()))
            print(f"failed: {one_line(e)} -> {run_dir}", file=sys.stderr, flush=True)
            if hc.mode == RunMode.MULTIRUN:
                return None
            sys.exit(1)
        print(f"{metrics['status']}: test_acc={metrics['test_acc']:.4f} gap_acc={metrics['gap_acc']:.4f} -> {run_dir}",
              flush=True)
        return metrics["test_acc"]

    _main()


def measure_main() -> None:
    from measures.cli import main

    sys.exit(main())


def analyze_main() -> None:
    from analysis.cli import main

    sys.exit(main())


def demo_main() -> None:
    from .demo import main

    sys.exit(main())
