"""Hydra discovers sweepers under the ``hydra_plugins`` namespace only; the logic lives in
``sweeps/sweeper.py``. Imported by Hydra's plugin scan at every start: keep it light."""
from __future__ import annotations

from typing import Any, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper


class SkipFinishedSweeper(BasicSweeper):
    """Hydra's basic sweeper that does not dispatch the jobs whose run is finished."""

    def split_arguments(  # type: ignore[override]  # an instance method here: it needs the config
            self, overrides: List[Any], max_batch_size: Optional[int]) -> List[List[List[str]]]:
        """Called once by ``BasicSweeper.sweep``: the grid, less the finished runs, in batches."""
        from sweeps.sweeper import drop_finished

        assert self.config is not None and self.hydra_context is not None
        (grid,) = BasicSweeper.split_arguments(overrides, None)
        return drop_finished(self.config, self.hydra_context.config_loader, grid, max_batch_size)

    def validate_batch_is_legal(self, batch: Any) -> None:
        """Every job was composed by ``drop_finished`` already (a bad one raised there)."""
