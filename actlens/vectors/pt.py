"""Steering-vectors / CAA mean-difference vectors saved with ``torch.save`` (``.pt``), imported.

CAA (``vec_layer_{i}_*.pt``) and steering-vectors (``layer_activations[i]``) count a vector
by the Hugging Face decoder layer ``i`` whose *output* it is added to; that residual enters
block ``i+1``, so actlens puts it at ``blocks.{i+1}.hook_resid_pre``
(``convention="hf_output"``, the default). ``convention="resid_pre"`` takes ``i`` as an
actlens layer. The table of every format's numbering is in :mod:`actlens.vectors.gguf`, which
also re-exports :func:`from_pt`.
"""

import os
from collections.abc import Mapping
from typing import Literal, get_args

import torch
from torch import Tensor
from transformer_lens import TransformerBridge

from actlens.core import validation as _validation
from actlens.models.model import identity
from actlens.vectors import _importing
from actlens.vectors.steering_vector import SteeringVector

Convention = Literal["hf_output", "resid_pre"]
"""What a ``.pt`` file's layer index means: the output of Hugging Face decoder layer ``i``
(CAA, steering-vectors; ``blocks.{i+1}.hook_resid_pre``), or actlens's own
``blocks.{i}.hook_resid_pre``."""
CONVENTIONS: tuple[str, ...] = get_args(Convention)


def _layer_key(key: object) -> int | None:
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    if isinstance(key, str) and key.isdigit():
        return int(key)
    return None


def from_pt(
    path: str | os.PathLike,
    model: TransformerBridge,
    *,
    layer: int,
    convention: Convention = "hf_output",
) -> SteeringVector:
    """Import a mean-difference vector saved with ``torch.save`` (CAA, steering-vectors).

    The file may hold one tensor ``[d_model]`` (CAA's ``vec_layer_{i}_*.pt``; the layer is
    in the file name) or a dict ``{layer: tensor}`` (e.g. ``torch.save(sv.layer_activations,
    path)`` for a steering-vectors ``SteeringVector``). It is read with
    ``torch.load(..., weights_only=True)``, so pickled objects are refused.

    Args:
        path: the ``.pt`` file.
        model: the model the vector is for.
        layer: the layer as the file counts it: for a dict, the key to import; for a single
            tensor, the layer it was extracted at.
        convention: ``"hf_output"`` (default; CAA and steering-vectors hook the *output* of
            Hugging Face decoder layer ``layer``, which is ``blocks.{layer+1}.hook_resid_pre``)
            or ``"resid_pre"`` (``layer`` already counts actlens layers).

    Returns:
        A ``kind="imported"`` vector with ``k == 1``; apply it with ``align="all"``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: an unreadable or pickled file, a layer not in the dict or outside the
            model, a shape other than ``[d_model]``, non-finite values, or a model in
            compatibility mode.

    >>> import tempfile, pathlib, torch
    >>> from actlens.models.tiny import tiny_model
    >>> model = tiny_model()
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "vec_layer_1.pt"
    >>> torch.save(torch.ones(64), path)
    >>> from_pt(path, model, layer=1).hook_name   # output of HF layer 1 enters block 2
    'blocks.2.hook_resid_pre'
    """
    _validation.choice("convention", convention, CONVENTIONS)
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"layer must be an int, got {layer!r}")
    if layer < 0:
        raise ValueError(f"layer must be >= 0 (counted from the first layer, as the file counts it), got {layer}")
    path = _importing.check_file(path, ".pt vector")
    _importing.check_model(model)
    target = identity(model)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for pickled objects, RuntimeError / EOFError for corrupt files
        raise ValueError(
            f"{path} cannot be read with torch.load(weights_only=True) ({type(err).__name__}: {err}). Save plain "
            "tensors instead of objects, e.g. torch.save(sv.layer_activations, path) for a steering-vectors vector"
        ) from err
    if isinstance(obj, Mapping):
        by_layer = {_layer_key(k): v for k, v in obj.items()}
        if None in by_layer:
            raise ValueError(f"{path} holds a dict whose keys are not all layer numbers: {list(obj)[:8]}")
        if layer not in by_layer:
            raise ValueError(f"{path} has no vector for layer {layer}; it has layers {sorted(by_layer)}")
        tensor = by_layer[layer]
    else:
        tensor = obj
    if not isinstance(tensor, Tensor) or not torch.is_floating_point(tensor):
        raise ValueError(
            f"{path}: expected a float tensor (or a dict of them), got {type(tensor).__name__}"
            + (f" of dtype {tensor.dtype}" if isinstance(tensor, Tensor) else "")
        )
    if tensor.ndim == 2 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tuple(tensor.shape) != (target.d_model,):
        raise ValueError(
            f"{path}: the vector has shape {tuple(tensor.shape)} but the model needs [{target.d_model}] (d_model); "
            "it was made for another model, or holds several rows (save a dict {layer: tensor} instead)"
        )
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{path}: the vector for layer {layer} holds non-finite values (nan or inf)")
    tl_layer = layer + 1 if convention == "hf_output" else layer
    if not 0 <= tl_layer < target.n_layers:
        last = (" (the output of the last decoder layer, which no hook_resid_pre sees)"
                if tl_layer == target.n_layers else "")
        valid = f"[0, {target.n_layers - 1})" if convention == "hf_output" else f"[0, {target.n_layers})"
        raise ValueError(
            f"layer {layer} with convention={convention!r} is blocks.{tl_layer}.hook_resid_pre{last}; for this "
            f"{target.n_layers}-layer model the layer must be in {valid}"
        )
    return _importing.imported(model, tl_layer, tensor.detach(),
                               f"imported from {path.name}, layer {layer} ({convention})")


__all__ = ["CONVENTIONS", "Convention", "from_pt"]
