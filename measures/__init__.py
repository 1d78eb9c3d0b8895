"""Complexity measures on trained models: SRR, norms, margins, path-norm, flatness, sharpness, Hessian.

Every measure is a small registered function (``MEASURES``; see ``registry``) taking a
``MeasureContext`` and its settings. ``compute`` runs a selection on a run directory (into
its measures.json), a model or a context; ``srr-measure`` (``measures.cli``) does it from the
shell. Installed packages add measures through the ``srr_bench.measures`` entry-point
group (``measures.plugins``). The differentiable SRR pieces (``coding_rate``, ``compression_rate``, ``srr_terms``)
are plain functions so that a regulariser can use exactly the measured quantity.
"""
from .registry import MEASURES, SETTINGS, Measure, MeasureError, MissingInput, Result, measure, settings_group
from .context import MeasureContext, evaluation, trainable
from .rates import coding_rate, compression_rate, sparsity, srr_terms

# Registration happens in these modules (imported for that side effect).
from . import srr, output, norms, pathnorm, pacbayes, sharpness, hessian, optimization  # noqa: E402,F401  isort:skip
from .api import compute, select  # noqa: E402
from .pathnorm import path_norm  # noqa: E402
from .norms import layer_matrices  # noqa: E402
from .plugins import open_registry  # noqa: E402

open_registry()  # installed packages' measures (entry points), read at the registry's first look-up

__all__ = [
    "MEASURES", "SETTINGS", "Measure", "MeasureContext", "MeasureError", "MissingInput", "Result", "compute",
    "select", "measure", "settings_group", "evaluation", "trainable", "coding_rate", "compression_rate", "sparsity",
    "srr_terms", "path_norm", "layer_matrices",
]
