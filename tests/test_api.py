"""The public API: every name in __all__ exists; the layering stays honest."""

import ast
from pathlib import Path

import actlens


def test_every_public_name_imports():
    for name in actlens.__all__:
        assert getattr(actlens, name) is not None, name


def test_metrics_and_plots_never_import_the_model():
    root = Path(actlens.__file__).parent
    for path in [root / "core" / "metrics.py", *sorted((root / "plots").glob("*.py"))]:
        tree = ast.parse(path.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert "actlens.models.model" not in imported and "transformer_lens" not in imported, path.name


# The package's layers, bottom to top: a module may import its own subpackage and those of lower layers only.
LAYERS = {"core": 0, "models": 1, "vectors": 2, "steering": 3, "analysis": 4, "experiments": 5, "plots": 6,
          "figures": 7, "bench": 8, "cli": 9}
FACE = 7.5  # the package face (actlens/__init__.py) re-exports the API; only bench and cli may import it


def _modules() -> dict[str, Path]:
    root = Path(actlens.__file__).parent
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every actlens module ``name`` imports, at the top or inside functions, by statement or import_module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in
              ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)):
            targets = [str(node.args[0].value)]
        found |= {t for t in targets if t in modules and t != name}
    return found


def _rank(name: str) -> float:
    parts = name.split(".")
    if name == "actlens":
        return FACE
    if name == "actlens._compat":
        return -1  # imports nothing of actlens by statement; its table names modules as strings
    return LAYERS[parts[1]]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_every_module_belongs_to_a_layer():
    unplaced = [m for m in _modules() if m.count(".") >= 1 and m != "actlens._compat"
                and m.split(".")[1] not in LAYERS]
    assert not unplaced, f"modules outside the subpackages (add them to one, or to LAYERS): {unplaced}"


def test_no_module_imports_a_higher_layer():
    upward = [f"{a} -> {b}" for a, deps in _graph().items() for b in deps
              if _rank(b) > _rank(a) or (_rank(b) == _rank(a) and a.split(".")[:2] != b.split(".")[:2]
                                          and _rank(a) != FACE)]
    assert not upward, "imports that point up the layers (core < models < vectors < steering < analysis < " \
                       f"experiments < plots < figures < bench < cli): {upward}"


def test_no_import_cycles():
    graph, cycles = _graph(), []
    state: dict[str, int] = {}  # 1: on the DFS stack, 2: done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, f"import cycles: {[' -> '.join(c) for c in cycles]}"


def test_the_layer_checks_catch_an_upward_import_and_a_cycle(tmp_path, monkeypatch):
    """The checks above are not vacuous: a planted upward import and a planted cycle are reported."""
    import actlens.core.types as low

    modules = _modules()
    fake = tmp_path / "fake.py"
    fake.write_text("from actlens.figures import registry\nfrom actlens.core import types\n")
    deps = _imports("actlens.core.types", fake, modules)
    assert "actlens.figures.registry" in deps and _rank("actlens.figures.registry") > _rank(low.__name__)
    cyclic = tmp_path / "cyclic.py"
    cyclic.write_text("def f():\n    import actlens.core.metrics\n")
    assert _imports("actlens.core.corpora", cyclic, modules) == {"actlens.core.metrics"}


def test_the_repo_map_lists_every_module_of_every_subpackage():
    """The docs' repo map (notebooks/docs/internals.md) matches the tree; the README names every subpackage."""
    root = Path(actlens.__file__).parent
    repo = root.parent
    table = {}
    for line in (repo / "notebooks" / "docs" / "internals.md").read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 3 and cells[1].startswith("`") and cells[1].endswith("/`"):
            table[cells[1].strip("`/")] = cells[2]
    assert set(table) == set(LAYERS), f"repo map rows {sorted(table)} != subpackages {sorted(LAYERS)}"
    missing = [f"{sub}/{p.stem}" for sub in LAYERS for p in sorted((root / sub).glob("*.py"))
               if not p.stem.startswith("__") and f"`{p.stem}`" not in table[sub]]
    assert not missing, f"modules the repo map does not mention: {missing}"
    readme = (repo / "README.md").read_text()
    assert all(f"`{sub}/`" in readme for sub in LAYERS), "the README's short repo map names every subpackage"
