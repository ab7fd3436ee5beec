"""Users unbroken by the move to subpackages: every old module path still imports, as the same module object,
with one DeprecationWarning naming the new path; the public names and the artefacts written before still work."""

import importlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import actlens
from actlens._compat import MOVED

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_path_is_the_new_module_with_one_warning(old):
    new = importlib.import_module(MOVED[old])
    sys.modules.pop(old, None)  # a fresh import of the old path, as in a new process
    with pytest.warns(DeprecationWarning) as caught:
        module = importlib.import_module(old)
    assert module is new
    moved = [w for w in caught if issubclass(w.category, DeprecationWarning) and old in str(w.message)]
    assert len(moved) == 1 and MOVED[old] in str(moved[0].message)


def test_an_old_path_does_not_replace_the_api_function_of_the_same_name():
    for name in ("sinks", "steerability", "calibrate", "propagation", "logit_lens"):
        sys.modules.pop(f"actlens.{name}", None)
        with pytest.warns(DeprecationWarning):
            importlib.import_module(f"actlens.{name}")
        assert callable(getattr(actlens, name)) and not isinstance(getattr(actlens, name), type(sys)), name
    assert actlens.sinks is importlib.import_module("actlens.analysis.sinks").sinks


def test_old_from_imports_work_in_a_fresh_process_and_warn_at_the_caller():
    code = ("import warnings; warnings.simplefilter('always')\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    from actlens.kl import kl_per_token\n"
            "    from actlens.sweeps import sweep\n"
            "    import actlens.figure_jobs as fj\n"
            "import actlens\n"
            "assert kl_per_token is actlens.kl_per_token and sweep is actlens.sweep\n"
            "assert list(fj.JOBS)[0] == 'topic_by_layer'\n"
            "moved = [x for x in w if issubclass(x.category, DeprecationWarning) and 'moved to' in str(x.message)]\n"
            "assert len(moved) == 3, [str(x.message) for x in w]\n"
            "assert all(x.filename == '<string>' for x in moved), [x.filename for x in moved]\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]


def test_new_paths_do_not_warn():
    code = ("import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            "import actlens, actlens.analysis.kl, actlens.experiments.sweeps, actlens.figures.registry, actlens.cli\n"
            "from actlens.vectors import SteeringVector, actadd_vector\n")
    done = subprocess.run([sys.executable, "-W", "ignore::DeprecationWarning:transformers",
                           "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert "moved to" not in done.stderr, done.stderr[-2000:]


def test_package_faces_keep_the_names_of_the_modules_they_replaced():
    from actlens import cli, figures, vectors

    for name in ("SteeringVector", "actadd_vector", "actadd_vectors", "mean_diff_vector", "mean_diff_vectors",
                 "random_like", "from_values", "check_vector", "FORMAT"):
        assert getattr(vectors, name) is not None, name
    assert callable(cli.main) and callable(figures.main) and callable(figures.png_problem)
    assert vectors.FORMAT == "actlens.steering_vector/1"  # the file format did not move with the module


def test_vector_files_and_pickles_from_before_the_move_load(tmp_path):
    from actlens.models.tiny import tiny_model
    from actlens.vectors import SteeringVector, actadd_vector

    model = tiny_model()
    v = actadd_vector(model, "Love", "Hate", layer=1)
    path = v.save(tmp_path / "v.safetensors")
    assert SteeringVector.load(path) == v
    # A pickle written before the move names the class by its old module; it must resolve to the same class.
    SteeringVector.__module__ = "actlens.steering_vector"
    try:
        with pytest.warns(DeprecationWarning):
            sys.modules.pop("actlens.steering_vector", None)
            data = pickle.dumps(v)
    finally:
        SteeringVector.__module__ = "actlens.vectors.steering_vector"
    assert b"actlens.steering_vector" in data and b"actlens.vectors.steering_vector" not in data
    old = pickle.loads(data)
    assert type(old) is SteeringVector and old == v
    # A vector pickled before the largest value was recorded steers: the value is read on first use.
    old.__dict__.pop("_peak")
    with actlens.steer(model, old, 2.0):
        pass
    assert old.peak == v.peak > 0


def test_committed_sweep_stores_still_read():
    from actlens.experiments.store import FORMAT, OLD_FORMATS

    stores = sorted((ROOT / "figures").rglob("*.completions.jsonl"))
    assert stores, "figures/ holds the sampling figures' stores"
    for path in stores:
        header = json.loads(path.open().readline())
        assert header.get("format") in (FORMAT, *OLD_FORMATS), (path, header.get("format"))


def test_the_cli_entry_point_is_unchanged():
    import importlib.metadata

    (entry,) = [e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == "actlens"]
    assert entry.value == "actlens.cli:main" and entry.load() is actlens.cli.main
