"""Steering vectors: the :class:`SteeringVector` type, the ways to make one, and its exchange formats.

- :mod:`~actlens.vectors.steering_vector`: the immutable type with its provenance, safetensors save / load and checks
- :mod:`~actlens.vectors.extraction`: ActAdd's per-position pair difference and CAA-style mean differences
- :mod:`~actlens.vectors.pca` and :mod:`~actlens.vectors.probe`: PCA (repeng's recipe) and logistic-probe directions
- :mod:`~actlens.vectors.chat`: the same, read through a chat template
- :mod:`~actlens.vectors.specs`: recipes that build a vector at any layer (what sweeps and layer studies cross)
- :mod:`~actlens.vectors.gguf` and :mod:`~actlens.vectors.pt`: llama.cpp / repeng GGUF and CAA / steering-vectors .pt

May import :mod:`actlens.core` and :mod:`actlens.models`. This face re-exports what ``actlens.vectors`` offered
before it became a package, and registers the exchange formats with the type, explicitly, here.
"""

from actlens.vectors import gguf
from actlens.vectors.extraction import actadd_vector, actadd_vectors, mean_diff_vector, mean_diff_vectors
from actlens.vectors.steering_vector import (
    FORMAT,
    Codec,
    SteeringVector,
    check_vector,
    from_values,
    random_like,
    register_codec,
)

register_codec("gguf", Codec(write=gguf.to_gguf, read=gguf.from_gguf))

__all__ = [
    "FORMAT",
    "SteeringVector",
    "actadd_vector",
    "actadd_vectors",
    "check_vector",
    "from_values",
    "mean_diff_vector",
    "mean_diff_vectors",
    "random_like",
]
