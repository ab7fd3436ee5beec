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

from actlens.figures.build import (
           LIBRARIES,
           git_state,
           load,
           main,
           model_info,
           png_problem,
           readme,
           sample_size,
           selected,
           write_readmes,
)
from actlens.models.tiny import TINY

__all__ = ["LIBRARIES", "TINY", "git_state", "load", "main", "model_info", "png_problem", "readme", "sample_size",
           "selected", "write_readmes"]
