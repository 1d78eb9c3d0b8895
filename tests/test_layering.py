"""The packages import downward only: srr_bench (core) < measures < sweeps, analysis.

Read from the source (every ``import`` and ``from ... import`` statement, also inside
functions), so a lazy import cannot hide an upward dependency.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN = {
    "srr_bench": {"measures", "sweeps", "analysis"},
    "measures": {"sweeps", "analysis"},
    "analysis": {"torch", "torchvision"},
}


def imported_packages(path: Path) -> set[str]:
    """Top-level names of the absolute imports in a file (relative ones stay in its package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_never_import_upward(package):
    files = modules(package)
    assert files, f"no modules found under {package}/"
    bad = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        for name in sorted(imported_packages(path) & FORBIDDEN[package]):
            bad.append(f"{rel} imports {name}")
    assert not bad, "; ".join(bad)


def test_the_check_sees_lazy_and_dotted_imports(tmp_path):
    """The parser finds imports inside functions and in every form the packages use."""
    src = tmp_path / "m.py"
    src.write_text("import os.path\nfrom . import x\n\ndef f():\n    from measures.rates import srr_terms\n"
                   "    import torch.nn as nn\n    from .y import z\n")
    assert imported_packages(src) == {"os", "measures", "torch"}


def test_the_coding_rate_maths_has_one_home():
    """measures.rates and measures.srr re-export the core's objects, not copies."""
    import measures.rates
    import measures.srr
    import srr_bench.rates
    import srr_bench.srr
    from measures import SETTINGS

    for name in ("coding_rate", "compression_rate", "srr_terms", "logdet_eye_plus", "sparsity"):
        assert getattr(measures.rates, name) is getattr(srr_bench.rates, name)
    for name in ("check_settings", "layer_bases", "layer_tokens"):
        assert getattr(measures.srr, name) is getattr(srr_bench.srr, name)
    assert SETTINGS["srr"] == srr_bench.srr.SRR_SETTINGS  # the measure's group is the core's defaults
