"""Console entry points. Each is thin: it composes the config and calls a plain function."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

from .config import CONF_DIR, register_resolvers, to_plain


def train_main() -> None:
    """``srr-train``: train one model (or a grid with ``-m``) into hash-named run directories.

    Each job is ``sweeps.runner.run_job``: a finished run is returned untouched, an
    interrupted one resumes from its checkpoint, a run locked by another process is
    skipped, and a failing run records ``failure.json``. In a sweep (``-m``) the sweep goes
    on with the next run; alone, a failed or locked run exits with status 1.
    """
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from sweeps.runner import run_job

    register_resolvers()

    @hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
    def _main(cfg: Any) -> Optional[float]:
        hc = HydraConfig.get()
        multirun = hc.mode == RunMode.MULTIRUN
        run_dir = Path(hc.runtime.output_dir)
        outcome = run_job(to_plain(cfg), run_dir, job_num=int(hc.job.get("num", 0) or 0))
        if not multirun and outcome.state in ("failed", "running"):
            sys.exit(1)  # the runner has said why, in one line
        return outcome.value

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
