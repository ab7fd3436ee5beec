"""The figures: what each one computes, the list that orders them, and ``actlens figures``, which writes them.

- :mod:`~actlens.figures.jobs`: the :class:`~actlens.figures.jobs.Job` context and :class:`~actlens.figures.jobs.Output`
- :mod:`~actlens.figures.paper_jobs`, :mod:`~actlens.figures.analysis_jobs`, :mod:`~actlens.figures.diagnostic_jobs`:
  the figures themselves
- :mod:`~actlens.figures.registry`: every figure id in run order (the one list)
- :mod:`~actlens.figures.build`: the ``actlens figures`` command (files, manifest, README)
- :mod:`~actlens.figures.compare`: the cross-model table; :mod:`~actlens.figures.static_png`: PNG export

May import everything below it (core ... experiments, and :mod:`actlens.plots`). Before this became a package,
``actlens.figures`` was the command's module: its names stay here.
"""

import importlib

# Resolved on first use (PEP 562), so that importing one submodule (``actlens.figures.static_png``) does not import
# the whole build and every figure job.
_LAZY = {name: "actlens.figures.build" for name in ("LIBRARIES", "git_state", "load", "main", "model_info",
                                                      "png_problem", "readme", "sample_size", "selected",
                                                      "write_readmes")} | {"TINY": "actlens.models.tiny"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'actlens.figures' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


__all__ = ["LIBRARIES", "TINY", "git_state", "load", "main", "model_info", "png_problem", "readme", "sample_size",
           "selected", "write_readmes"]
