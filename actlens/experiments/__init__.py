"""Sweeps: the :class:`~actlens.experiments.grid.Grid` of settings, the row engine both backends share
(:mod:`~actlens.experiments.rows`), the local and Ray backends (:mod:`~actlens.experiments.sweeps`,
:mod:`~actlens.experiments.distributed`), the resumable results store, and offline evaluations (perplexity,
fact recall). May import core, models, vectors, steering and analysis."""
