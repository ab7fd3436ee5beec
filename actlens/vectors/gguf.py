"""Vector interchange: llama.cpp / repeng GGUF control vectors, and how each format counts layers.

steering-vectors / CAA ``.pt`` files are read by :func:`actlens.vectors.pt.from_pt` (also
importable from here); the table below gives their layer numbering too.

Every format adds a vector to the residual stream *between* two decoder blocks, but each
counts that place differently. actlens counts the block the residual enters
(``blocks.{L}.hook_resid_pre``); the others count the block whose output it is:

=============================================  =============================  =================
the residual stream ...                        name                           example, L = 6
=============================================  =============================  =================
entering block L (actlens, TransformerLens)    ``blocks.{L}.hook_resid_pre``  ``blocks.6``
output of HF decoder layer L-1                 ``model.layers[L-1]`` output,  ``layers[5]``,
                                               ``hidden_states[L]``           ``hidden_states[6]``
llama.cpp ``--control-vector`` / repeng GGUF   ``direction.{L-1}``            ``direction.5``
CAA ``vec_layer_{i}``, steering-vectors        layer ``i = L-1``              ``5``
``layer_activations[i]`` (decoder block)
=============================================  =============================  =================

llama.cpp (``common_control_vector_load_one``, ``llama_adapter_cvec::apply_to``) puts
``direction.N`` into slot ``N`` and adds slot ``il`` to the output of its 0-based layer
``il`` (``cur = build_cvec(cur, il)`` at the end of each layer), so ``direction.N`` lands on
the output of layer ``N``, i.e. on ``blocks.{N+1}.hook_resid_pre``. repeng's
``ControlModule`` wraps ``model.layers[N]`` and adds ``direction.N`` to its output: the
same place. Two consequences:

* ``blocks.0.hook_resid_pre`` (the embeddings) has no GGUF name, and ``blocks.1`` would be
  ``direction.0``, which llama.cpp rejects ("invalid (zero) direction tensor layer index").
  :func:`to_gguf` therefore exports layers ``2 .. n_layers-1`` only.
* ``direction.{n_layers-1}`` (the last block's output) has no ``hook_resid_pre``;
  :func:`from_gguf` skips it with a warning.

llama.cpp's own ``cvector-generator`` *reads* the vector it names ``direction.N`` at the
output of layer ``N-1`` (one layer before the runtime adds it); files from it are imported
by where llama.cpp adds them.

A GGUF control vector is one direction per layer, added at every position of the prompt and
of the generated text (BOS included), with the strength given on the command line. An
ActAdd vector has one row per position of the prompt pair, so exporting it needs a
reduction (``reduce=``) and warns with :class:`LossyExportWarning`. Imported vectors are
``kind="imported"``, ``k == 1``; apply them with ``align="all"``.

>>> import tempfile, pathlib
>>> from actlens.models.tiny import tiny_model
>>> from actlens.vectors import mean_diff_vector
>>> model = tiny_model()
>>> v = mean_diff_vector(model, [("I love it", "I hate it")], layer=2)
>>> path = to_gguf(v, pathlib.Path(tempfile.mkdtemp()) / "love.gguf")
>>> back = from_gguf(path, model)
>>> list(back), bool((back[2].values == v.values).all())
([2], True)
"""

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor
from transformer_lens import TransformerBridge

from actlens.core import schema as _schema
from actlens.core import validation as _validation
from actlens.models.model import hook_name, identity
from actlens.vectors import _importing
from actlens.vectors.pt import CONVENTIONS, Convention, from_pt  # re-exported: the .pt importer moved there
from actlens.vectors.steering_vector import SteeringVector

ARCH = "controlvector"
PROVENANCE_KEY = "actlens.provenance"

Reduce = Literal["error", "sum", "mean", "position"]
"""How :func:`to_gguf` turns a per-position (``k > 1``) vector into one direction: refuse,
sum or average the rows after BOS, or take one row (``position=``)."""
REDUCES: tuple[str, ...] = get_args(Reduce)

class LossyExportWarning(UserWarning):
    """An export dropped information the target format cannot hold (e.g. positions)."""


def gguf_direction(layer: int) -> int:
    """The GGUF ``direction.N`` index for a vector at ``blocks.{layer}.hook_resid_pre``.

    >>> gguf_direction(6)
    5
    """
    return layer - 1


def resid_pre_layer(direction: int) -> int:
    """The actlens layer (``blocks.{L}.hook_resid_pre``) of GGUF ``direction.{direction}``.

    >>> resid_pre_layer(5)
    6
    """
    return direction + 1


# --- export -------------------------------------------------------------------------------
def _one_direction(vector: SteeringVector, reduce: str, position: int | None) -> tuple[Tensor, str]:
    """One row for ``vector``, and a description of the reduction ("" when none was needed)."""
    values = vector.values.detach().float().cpu()  # vectors from a model split over GPUs live on its devices
    if vector.k == 1:
        return values[0], ""
    if reduce == "error":
        raise ValueError(
            f"the vector at layer {vector.layer} has k={vector.k} per-position rows, but a llama.cpp control "
            "vector holds one direction per layer, added at every position. Pass reduce='mean' (average of the "
            "rows after BOS), reduce='sum', or reduce='position' with position=i (row i, e.g. 1: the first "
            "token after BOS)"
        )
    rows = values[1:] if vector.bos_row else values  # ActAdd's BOS row is zero by construction
    if reduce == "sum":
        return rows.sum(0), f"the sum of {rows.shape[0]} rows"
    if reduce == "mean":
        return rows.mean(0), f"the mean of {rows.shape[0]} rows"
    if position is None:
        raise ValueError("reduce='position' needs position=i, the row to export (e.g. position=1)")
    if isinstance(position, bool) or not isinstance(position, int) or not -vector.k <= position < vector.k:
        raise ValueError(
            f"position must be an int in [{-vector.k}, {vector.k}) for this k={vector.k} vector, got {position!r}"
        )
    return values[position], f"row {position % vector.k} of {vector.k}"


def to_gguf(
    vector: SteeringVector | Sequence[SteeringVector],
    path: str | os.PathLike,
    *,
    reduce: Reduce = "error",
    position: int | None = None,
    model_hint: str | None = None,
) -> Path:
    """Write a llama.cpp control-vector GGUF file (one direction per layer).

    A vector at ``blocks.{L}.hook_resid_pre`` becomes ``direction.{L-1}``, which llama.cpp
    adds to the output of its layer ``L-1``, the residual that enters block ``L`` (see the
    module docstring). Directions are float32 and unscaled: give the coefficient to
    llama.cpp (``--control-vector-scaled FILE:COEFF``).

    Args:
        vector: a vector, or a list of vectors at distinct layers (one multi-layer file).
        path: the file to write (conventionally ``*.gguf``).
        reduce: how a per-position vector (``k > 1``, e.g. ActAdd) becomes one direction:
            ``"error"`` (default) refuses; ``"mean"`` / ``"sum"`` average or add the rows
            after BOS; ``"position"`` exports row ``position``. Reductions warn with
            :class:`LossyExportWarning`, since the positions are lost.
        position: the row for ``reduce="position"``.
        model_hint: the file's ``controlvector.model_hint`` (default: the model name the
            vector records). llama.cpp does not check it; repeng stores the HF ``model_type``
            there (e.g. ``"llama"``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: layers 0 or 1 (no llama.cpp equivalent), duplicate layers, vectors from
            different models or from compatibility mode, non-finite values, an unknown
            ``reduce``, or a ``k > 1`` vector with ``reduce="error"``.
    """
    import gguf

    _validation.choice("reduce", reduce, REDUCES)
    if position is not None and reduce != "position":
        raise ValueError(f"position={position} is only used with reduce='position', got reduce={reduce!r}")
    vectors = [vector] if isinstance(vector, SteeringVector) else list(vector)
    if not vectors:
        raise ValueError("no vectors given; pass a SteeringVector or a list of them (one per layer)")
    for i, vec in enumerate(vectors):
        if not isinstance(vec, SteeringVector):
            raise TypeError(f"vector[{i}] must be a SteeringVector, got {type(vec).__name__}")
    first = vectors[0]
    directions: dict[int, np.ndarray] = {}
    provenance = []
    for vec in vectors:
        mismatch = first.model.shape_mismatch(vec.model)
        if mismatch:
            raise ValueError(
                f"vectors come from different models ({first.model.name!r} vs {vec.model.name!r}: {mismatch}); "
                "a control-vector file is for one model"
            )
        if vec.compatibility_mode:
            raise ValueError(
                f"the vector at layer {vec.layer} was extracted with TransformerLens compatibility mode on "
                "(processed weights, whose residual stream differs from the raw checkpoint's), but llama.cpp runs "
                "the raw checkpoint; extract it again on a model loaded without compatibility mode"
            )
        if vec.layer < 2:
            raise ValueError(
                f"a vector at blocks.{vec.layer}.hook_resid_pre cannot be a llama.cpp control vector: "
                + ("that is the embedding output, which has no direction.N"
                   if vec.layer == 0 else "it would be direction.0 (the output of layer 0), which llama.cpp rejects")
                + f"; use a layer in [2, {vec.model.n_layers})"
            )
        if gguf_direction(vec.layer) in directions:
            raise ValueError(
                f"two vectors at layer {vec.layer}; a file holds one direction per layer. Add them first "
                "(a.with_values(a.values + b.values)) or write two files (llama.cpp sums several "
                "--control-vector files)"
            )
        row, how = _one_direction(vec, reduce, position)
        if not torch.isfinite(row).all():
            raise ValueError(
                f"the vector at layer {vec.layer} has non-finite values (nan or inf); it cannot be exported"
            )
        if how:
            warnings.warn(
                f"exporting the k={vec.k} vector at layer {vec.layer} as {how} (reduce={reduce!r}); the per-position "
                "structure is lost: llama.cpp adds this one direction at every position of the prompt and of the "
                "generated text (BOS included), like align='all', not in a front/mid/back window, so the useful "
                "coefficient will differ",
                LossyExportWarning,
                stacklevel=2,
            )
        directions[gguf_direction(vec.layer)] = row.numpy().astype(np.float32)
        provenance.append({
            "direction": gguf_direction(vec.layer), "layer": vec.layer, "hook_name": vec.hook_name,
            "kind": vec.kind, "k": vec.k, "reduce": how or None, "plus": list(vec.plus), "minus": list(vec.minus),
        })
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the directory {path.parent} does not exist")
    writer = gguf.GGUFWriter(path, ARCH)
    writer.add_string(f"{ARCH}.model_hint", model_hint if model_hint is not None else first.model.name)
    # llama.cpp's cvector-generator writes the number of steerable layer outputs; its loader ignores the key.
    writer.add_uint32(f"{ARCH}.layer_count", first.model.n_layers - 1)
    writer.add_string(PROVENANCE_KEY, json.dumps({
        "model": {"name": first.model.name, "d_model": first.model.d_model,
                  "n_layers": first.model.n_layers, "d_vocab": first.model.d_vocab},
        "directions": provenance,
    }))
    for direction in sorted(directions):
        writer.add_tensor(f"direction.{direction}", directions[direction])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# --- import -------------------------------------------------------------------------------
def _field(reader, key: str):
    field = reader.get_field(key)
    return None if field is None else field.contents()


def _provenance(path: Path, text: object) -> tuple[dict | None, set[int] | None]:
    """The exporting model and the direction numbers recorded by :func:`to_gguf`, checked against
    its schema (files from other tools have no provenance: ``(None, None)``)."""
    if text is None:
        return None, None
    prov = _schema.Fields(path, PROVENANCE_KEY, _schema.parse_json(path, PROVENANCE_KEY, text))
    m = _schema.Fields(path, f"{PROVENANCE_KEY}['model']",
                       prov.get("model", lambda v: isinstance(v, dict), "an object"))
    made_for = {"name": m.text("name"), **{key: m.integer(key, low=1) for key in ("d_model", "n_layers", "d_vocab")}}
    m.no_others()
    entries = prov.get("directions", lambda v: isinstance(v, list) and 0 < len(v) <= _schema.MAX_ITEMS,
                       "a non-empty list of objects")
    prov.no_others()
    directions = set()
    for i, entry in enumerate(entries):
        e = _schema.Fields(path, f"{PROVENANCE_KEY}['directions'][{i}]", entry)
        layer = e.integer("layer", high=made_for["n_layers"])
        if e.integer("direction") != gguf_direction(layer) or e.text("hook_name") != hook_name(layer):
            raise ValueError(f"{path}: {PROVENANCE_KEY}['directions'][{i}] has direction {entry['direction']} and "
                             f"hook_name {entry['hook_name']!r}, inconsistent with its layer {layer}")
        e.text("kind"), e.integer("k", low=1), e.text("reduce", none=True), e.strings("plus"), e.strings("minus")
        e.no_others()
        directions.add(entry["direction"])
    return made_for, directions


def from_gguf(path: str | os.PathLike, model: TransformerBridge) -> dict[int, SteeringVector]:
    """Read a llama.cpp / repeng control-vector file as one vector per layer.

    ``direction.N`` becomes a vector at ``blocks.{N+1}.hook_resid_pre`` (where llama.cpp and
    repeng add it; see the module docstring). ``direction.{n_layers-1}``, the last block's
    output, has no ``hook_resid_pre`` and is skipped with a warning.

    Args:
        path: a GGUF file with ``general.architecture = "controlvector"``.
        model: the model the vectors are for; ``d_model`` and the layer count must fit.

    Returns:
        ``{layer: SteeringVector}`` sorted by layer; each vector has ``kind="imported"``,
        ``k == 1`` and is applied with ``align="all"``, e.g.
        ``steer(model, [(v, coeff) for v in vectors.values()], align="all")``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a GGUF file, not a control vector, tensors that are not 1-D float
            ``direction.N``, a ``d_model`` or layer count that does not match ``model``,
            non-finite values, or a model in compatibility mode.
    """
    from gguf import GGMLQuantizationType, GGUFReader

    path = _importing.check_file(path, "control-vector")
    _importing.check_model(model)
    target = identity(model)
    try:
        reader = GGUFReader(path)
    except Exception as err:  # the reader raises ValueError, OSError, IndexError ... on foreign or truncated files
        raise ValueError(
            f"{path} is not a readable GGUF file ({type(err).__name__}: {err}); it may be truncated or another format"
        ) from err
    arch = _field(reader, "general.architecture")
    if arch != ARCH:
        raise ValueError(
            f"{path} is a GGUF file with general.architecture={arch!r}, not a control vector "
            f"(expected {ARCH!r}); a model checkpoint cannot be imported as a steering vector"
        )
    layer_count = _field(reader, f"{ARCH}.layer_count")
    if isinstance(layer_count, int) and layer_count > target.n_layers:
        raise ValueError(
            f"{path} says controlvector.layer_count={layer_count}, more than this model's {target.n_layers} layers; "
            f"it was made for a deeper model than {target.name!r}"
        )
    made_for, prov_directions = _provenance(path, _field(reader, PROVENANCE_KEY))
    if made_for:
        mismatch = ", ".join(
            f"{key} {made_for[key]} vs {getattr(target, key)}" for key in ("d_model", "n_layers", "d_vocab")
            if key in made_for and made_for[key] != getattr(target, key)
        )
        if mismatch:
            raise ValueError(
                f"{path} was exported from model {made_for.get('name')!r}, which does not fit {target.name!r} "
                f"({mismatch}); import it onto the model it came from"
            )
    rows: dict[int, np.ndarray] = {}
    for tensor in reader.tensors:
        prefix, _, index = tensor.name.partition(".")
        if prefix != "direction" or not index.isdigit():
            raise ValueError(
                f"{path} holds a tensor named {tensor.name!r}; a control vector holds only direction.N tensors "
                "(N a layer number)"
            )
        if tensor.tensor_type not in (GGMLQuantizationType.F32, GGMLQuantizationType.F16) or len(tensor.shape) != 1:
            raise ValueError(
                f"{path}: {tensor.name} is a {tensor.tensor_type.name} tensor of shape {list(tensor.shape)}; "
                "expected a 1-D F32 (or F16) vector of length d_model"
            )
        rows[int(index)] = np.array(tensor.data, dtype=np.float32)  # copy out of the memory map
    if not rows:
        raise ValueError(f"{path} is a control-vector file without direction.N tensors; nothing to import")
    if prov_directions is not None and prov_directions != set(rows):
        raise ValueError(f"{path}: {PROVENANCE_KEY} lists directions {sorted(prov_directions)} but the file holds "
                         f"direction tensors {sorted(rows)}; the file was edited after export")
    out: dict[int, SteeringVector] = {}
    for direction in sorted(rows):
        row = torch.from_numpy(rows[direction])
        if row.shape[0] != target.d_model:
            raise ValueError(
                f"{path}: direction.{direction} has {row.shape[0]} values but the model has d_model={target.d_model}; "
                "the file was made for another model"
            )
        if direction >= target.n_layers:
            raise ValueError(
                f"{path} has direction.{direction}, but this model has only {target.n_layers} layers "
                f"(direction.0 .. direction.{target.n_layers - 1}); the file was made for a deeper model"
            )
        if not torch.isfinite(row).all():
            raise ValueError(f"{path}: direction.{direction} holds non-finite values (nan or inf)")
        layer = resid_pre_layer(direction)
        if layer >= target.n_layers:
            warnings.warn(
                f"{path}: skipped direction.{direction}, which adds to the output of the last block; actlens steers "
                f"the residual entering blocks 0..{target.n_layers - 1} only",
                stacklevel=2,
            )
            continue
        out[layer] = _importing.imported(model, layer, row, f"imported from {path.name}, direction.{direction}")
    if not out:
        raise ValueError(f"{path} holds only a direction for the last block's output, which actlens cannot steer")
    return out


__all__ = [
    "ARCH",
    "CONVENTIONS",
    "PROVENANCE_KEY",
    "REDUCES",
    "Convention",
    "LossyExportWarning",
    "Reduce",
    "from_gguf",
    "from_pt",
    "gguf_direction",
    "resid_pre_layer",
    "to_gguf",
]
