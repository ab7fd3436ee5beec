"""What the vector importers share: the file and model checks, and the imported vector.

Used by :func:`actlens.vectors.gguf.from_gguf` (llama.cpp / repeng GGUF) and
:func:`actlens.vectors.pt.from_pt` (CAA / steering-vectors ``.pt``). Imported vectors live in
the raw checkpoint's residual stream, have one row (``k == 1``) and ``kind="imported"``.
"""

import os
from pathlib import Path

from torch import Tensor
from transformer_lens import TransformerBridge

from actlens.models.model import identity
from actlens.vectors.steering_vector import SteeringVector, from_values


def check_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} file at {path}; check the path")
    return path


def check_model(model: TransformerBridge) -> None:
    identity(model)  # raises TypeError for anything but a bridge
    if getattr(model, "compatibility_mode", False):
        raise ValueError(
            "this model has TransformerLens compatibility mode on (processed weights), but imported vectors live "
            "in the raw checkpoint's residual stream; import onto a model loaded without compatibility mode"
        )


def imported(model: TransformerBridge, layer: int, row: Tensor, source: str) -> SteeringVector:
    return from_values(model, layer, row.float()[None], "imported", bos_row=False, notes=source)
