"""Old module paths (before actlens was split into subpackages) that still import, with a DeprecationWarning.

``import actlens.kl`` returns the module object of its new home, :mod:`actlens.analysis.kl`, and warns once,
naming it. :data:`MOVED` is the one table of old -> new paths; :func:`install` puts the finder on
``sys.meta_path`` (the package face does it on import). Kept until actlens 0.3.
"""

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings

MOVED: dict[str, str] = {
    "actlens.types": "actlens.core.types",
    "actlens._validation": "actlens.core.validation",
    "actlens._schema": "actlens.core.schema",
    "actlens.positions": "actlens.core.positions",
    "actlens.prompts": "actlens.core.prompts",
    "actlens.chat": "actlens.core.chat",
    "actlens.sampling": "actlens.core.sampling",
    "actlens.metrics": "actlens.core.metrics",
    "actlens.corpora": "actlens.core.corpora",
    "actlens.model": "actlens.models.model",
    "actlens.tl_compat": "actlens.models.tl_compat",
    "actlens.embedded": "actlens.models.embedded",
    "actlens.local_gguf": "actlens.models.local_gguf",
    "actlens.cache": "actlens.models.cache",
    "actlens.tiny": "actlens.models.tiny",
    "actlens.readout": "actlens.models.readout",
    "actlens.activations": "actlens.models.activations",
    "actlens.steering_vector": "actlens.vectors.steering_vector",
    "actlens.chat_vectors": "actlens.vectors.chat",
    "actlens.interchange": "actlens.vectors.gguf",
    "actlens.pt_vectors": "actlens.vectors.pt",
    "actlens._importing": "actlens.vectors._importing",
    "actlens.intervene": "actlens.steering.intervene",
    "actlens.generation": "actlens.steering.generation",
    "actlens.batched": "actlens.steering.batched",
    "actlens.chunked": "actlens.steering.chunked",
    "actlens.norms": "actlens.analysis.norms",
    "actlens.cosine": "actlens.analysis.cosine",
    "actlens.logit_lens": "actlens.analysis.logit_lens",
    "actlens.kl": "actlens.analysis.kl",
    "actlens.klcurve": "actlens.analysis.klcurve",
    "actlens.propagation": "actlens.analysis.propagation",
    "actlens.sinks": "actlens.analysis.sinks",
    "actlens.steerability": "actlens.analysis.steerability",
    "actlens.calibrate": "actlens.analysis.calibrate",
    "actlens.ablation": "actlens.analysis.ablation",
    "actlens.grid": "actlens.experiments.grid",
    "actlens.sweeps": "actlens.experiments.sweeps",
    "actlens.distributed": "actlens.experiments.distributed",
    "actlens.evaluate": "actlens.experiments.evaluate",
    "actlens._store": "actlens.experiments.store",
    "actlens.figure_jobs": "actlens.figures.registry",
    "actlens.analysis_jobs": "actlens.figures.analysis_jobs",
    "actlens.diagnostic_jobs": "actlens.figures.diagnostic_jobs",
    "actlens.figure_compare": "actlens.figures.compare",
    "actlens.static_png": "actlens.figures.static_png",
    "actlens.demo": "actlens.cli.demo",
    "actlens.diagnose": "actlens.cli.diagnose",
}
"""Old module path -> new module path."""


class _Alias(importlib.abc.Loader):
    """Loads an old path as the module object of its new home."""

    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec):
        # stacklevel 2: the import statement that asked (warnings skips importlib's own bootstrap frames)
        warnings.warn(f"{spec.name} moved to {self.new}; import it from there ({spec.name} will be removed in "
                      "actlens 0.3)", DeprecationWarning, stacklevel=2)
        return importlib.import_module(self.new)

    def exec_module(self, module) -> None:  # already executed under its new name
        pass


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path=None, target=None):
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(new))


class _Face(types.ModuleType):
    """The package face, which keeps its API names when an old path of the same name is imported.

    Importing a module binds it on its parent package: ``import actlens.sinks`` (the old path) would replace the
    function ``actlens.sinks`` with the module. Before the move that bind happened once, while the face itself was
    importing, and the face's own ``from ... import sinks`` then won; an old path imported later must not undo it.
    """

    def __setattr__(self, name: str, value) -> None:
        if (isinstance(value, types.ModuleType) and f"{self.__name__}.{name}" in MOVED
                and not isinstance(self.__dict__.get(name, value), types.ModuleType)):
            return
        super().__setattr__(name, value)


def install(face: types.ModuleType) -> None:
    """Put the old-path finder on ``sys.meta_path`` (once) and guard the API names of ``face``."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    face.__class__ = _Face


__all__ = ["MOVED", "install"]
