"""The bottom layer: types, input checks, prompts and positions, chat templates, sampling, text metrics, and the
shipped prompt sets and corpora (:mod:`~actlens.core.corpora`). Imports no other part of actlens, and no model."""
