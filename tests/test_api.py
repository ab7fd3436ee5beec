"""The public API: every name in __all__ exists; the layering stays honest."""

import ast
from pathlib import Path

import actlens


def test_every_public_name_imports():
    for name in actlens.__all__:
        assert getattr(actlens, name) is not None, name


def test_metrics_and_plots_never_import_the_model():
    root = Path(actlens.__file__).parent
    for path in [root / "metrics.py", *sorted((root / "plots").glob("*.py"))]:
        tree = ast.parse(path.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert "actlens.model" not in imported and "transformer_lens" not in imported, path.name
