"""The notebooks and their jupytext twins: the same cells, committed without outputs.

Each ``notebooks/NN_name.ipynb`` is paired with ``notebooks/NN_name.py`` (jupytext ``py:percent``),
the plain-text file that diffs and reviews read. After editing one of them, run
``jupytext --sync notebooks/NN_name.ipynb`` (the newer file wins). Running the notebooks is
nbmake's job: ``python -m pytest`` executes each one in smoke mode (see ``notebooks/conftest.py``).
"""

import difflib
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())  # the repository
NOTEBOOKS = ROOT / "notebooks"
IPYNBS = sorted(NOTEBOOKS.glob("*.ipynb"))


def cells(path: Path) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in jupytext.read(path).cells]


def test_every_notebook_has_a_twin_and_every_twin_a_notebook():
    notebooks = {p.stem for p in IPYNBS}
    twins = {p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.py")}
    assert notebooks, f"no notebooks found in {NOTEBOOKS}"
    assert notebooks == twins, (
        f"notebooks without a .py twin: {sorted(notebooks - twins)}; twins without a notebook: "
        f"{sorted(twins - notebooks)}. Pair them with `jupytext --set-formats ipynb,py:percent <file>`"
    )


@pytest.mark.parametrize("notebook", IPYNBS, ids=lambda p: p.stem)
def test_notebook_and_twin_have_the_same_cells(notebook: Path):
    twin = notebook.with_suffix(".py")
    a, b = cells(notebook), cells(twin)
    for i, (x, y) in enumerate(zip(a, b, strict=False)):  # lengths compared below
        if x != y:
            diff = "\n".join(difflib.unified_diff(x[1].splitlines(), y[1].splitlines(), notebook.name, twin.name,
                                                  lineterm=""))
            pytest.fail(f"cell {i} differs ({x[0]} vs {y[0]}); run `jupytext --sync {notebook.relative_to(ROOT)}` "
                        f"after editing one side:\n{diff}")
    assert len(a) == len(b), f"{notebook.name} has {len(a)} cells, {twin.name} has {len(b)}; run `jupytext --sync`"


@pytest.mark.parametrize("notebook", IPYNBS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(notebook: Path):
    nb = nbformat.read(notebook, as_version=4)
    dirty = [i for i, cell in enumerate(nb.cells)
             if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, (f"{notebook.name}: cells {dirty} carry outputs or execution counts; clear them (Jupyter: "
                       f"Edit > Clear Outputs of All Cells), or rebuild the notebook from its twin with "
                       f"`jupytext --to ipynb {notebook.with_suffix('.py').relative_to(ROOT)}`")
    assert "widgets" not in nb.metadata, f"{notebook.name} stores widget state; clear it before committing"


@pytest.mark.parametrize("notebook", IPYNBS, ids=lambda p: p.stem)
def test_notebook_starts_with_parameters_and_ends_with_a_check(notebook: Path):
    code = [source for kind, source in cells(notebook) if kind == "code"]
    assert "ACTLENS_SMOKE" in code[0], f"{notebook.name}: the first code cell must read the ACTLENS_SMOKE switch"
    assert "assert " in code[-1], f"{notebook.name}: the last code cell must assert the headline result"


def test_no_notebooks_outside_notebooks_dir():
    # pytest runs with --nbmake over every test path, so a notebook in tests/ or actlens/ would be executed too.
    stray = [p.relative_to(ROOT) for d in ("tests", "actlens") for p in (ROOT / d).rglob("*.ipynb")
             if ".ipynb_checkpoints" not in p.parts]
    assert not stray, f"notebooks belong in notebooks/, found {stray}"
