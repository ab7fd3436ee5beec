"""Running the notebooks under pytest (nbmake): smoke settings, and a kernel on this very Python.

* Each notebook's kernel gets ``ACTLENS_SMOKE=1`` unless the caller set the variable
  (``ACTLENS_SMOKE=0 python -m pytest notebooks`` runs the full settings), and
  ``OMP_NUM_THREADS=1`` unless set: the smoke runs are small, latency-bound forwards, and on a
  shared CPU a two-thread OpenMP team waiting for a busy core made them 5-20x slower.
* nbmake starts the kernel a notebook names (``python3``), and Jupyter may resolve that name
  to a kernelspec of another environment. Unless ``--nbmake-kernel`` is given, the notebooks
  run on a private kernelspec whose command is this interpreter, ``sys.executable``.
* The jupytext twins (``NN_name.py``) and the docs hooks (``mkdocs_hooks.py``) are not modules to doctest: ``--doctest-modules`` must
  not import (that is, run) them.
"""

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

collect_ignore_glob = ["[0-9][0-9]_*.py", "_site"]
collect_ignore = ["mkdocs_hooks.py"]  # the docs build's hooks (needs the docs extra), not a module to doctest

KERNEL = "actlens-pytest"
_STATE: dict = {}


def pytest_configure(config: pytest.Config) -> None:
    if not getattr(config.option, "nbmake", False) or config.option.nbmake_kernel is not None:
        return  # not running notebooks, or the caller chose a kernel
    root = Path(tempfile.mkdtemp(prefix="actlens-kernels-"))
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"actlens pytest ({sys.executable})",
        "language": "python",
    }))
    _STATE.update(root=root, jupyter_path=os.environ.get("JUPYTER_PATH"))
    os.environ["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(root), _STATE["jupyter_path"]) if p)
    config.option.nbmake_kernel = KERNEL


def pytest_unconfigure(config: pytest.Config) -> None:
    root = _STATE.pop("root", None)
    if root is None:
        return
    previous = _STATE.pop("jupyter_path", None)
    if previous is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = previous
    shutil.rmtree(root, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Executed notebooks are ``slow``: the fast tier (``-m "not slow"``) skips them."""
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)


KERNEL_ENV = {"ACTLENS_SMOKE": "1", "OMP_NUM_THREADS": "1"}  # defaults; the caller's values win


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """The kernel inherits this process's environment when nbmake starts it inside the test."""
    added = [key for key in KERNEL_ENV if key not in os.environ]
    os.environ.update({key: KERNEL_ENV[key] for key in added})
    try:
        return (yield)
    finally:
        for key in added:
            os.environ.pop(key, None)
