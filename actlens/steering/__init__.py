"""Intervening with a vector: scoped hooks (:mod:`~actlens.steering.intervene`), steered generation
(:mod:`~actlens.steering.generation`), rows with different settings in one batch (:mod:`~actlens.steering.batched`)
and chunked forwards (:mod:`~actlens.steering.chunked`). May import core, models and vectors."""
