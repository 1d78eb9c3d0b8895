"""The coding rates and sparse rate reduction, re-exported from the core (``srr_bench.rates``).

The maths is the objective the model unrolls, so it is defined once in ``srr_bench``;
this module keeps the old import path (``from measures.rates import srr_terms``).
"""
from srr_bench.rates import (  # noqa: F401
    NORMALIZATIONS, coding_rate, compression_rate, logdet_eye_plus, project_heads, small_gram, sparsity, srr_terms,
)

__all__ = [
    "NORMALIZATIONS", "coding_rate", "compression_rate", "logdet_eye_plus", "project_heads", "small_gram", "sparsity",
    "srr_terms",
]
