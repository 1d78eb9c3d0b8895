"""Correlation analysis of generalization measures (spec §5). Reads the tidy table only.

Modules, one concept each (import the functions from them, e.g.
``from analysis.correlate import correlate``):

- :mod:`analysis.schema`      the tidy table: column prefixes, axes, validation, :class:`Design`
- :mod:`analysis.collect`     run directories -> tidy table; filters; CSV / Parquet I/O
- :mod:`analysis.kendall`     Jiang et al. (2020) sign τ and τ_b, O(n log² n), grouped
- :mod:`analysis.granulated`  granulated Kendall ψ_i and Ψ
- :mod:`analysis.cmi`         conditional mutual information K(μ), exact pair counting
- :mod:`analysis.sign_error`  robust sign-error over coupled environments (Dziugaite et al. 2020)
- :mod:`analysis.bootstrap`   seed-bootstrap percentile CIs of τ and Ψ
- :mod:`analysis.exclusions`  which runs and values the correlations leave out, counted per reason
- :mod:`analysis.flags`       measures that are constant, nearly constant, NaN or ±inf: not ranked
- :mod:`analysis.correlate`   all of the above, one row per measure
- :mod:`analysis.tables`      Markdown / LaTeX / CSV tables in the paper's layout
- :mod:`analysis.plots`       scatter, τ/Ψ bars, ψ heatmap, per-layer SRR profiles
- :mod:`analysis.report`      tables + figures + report.md
- :mod:`analysis.cli`         the ``srr-analyze`` command
- :mod:`analysis.synthetic`   synthetic tables with known structure (tests, benchmark)

Nothing here imports torch; nothing runs at import time.
"""
