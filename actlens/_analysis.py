"""Private helpers shared by the analysis modules (norms, cosine, logit lens, KL, propagation).

Extraction at many layers in one forward, validation of analysis arguments, where a
steering request lands in a padded batch, and steered / unsteered forwards over row chunks.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import TransformerBridge

from actlens import _validation, prompts
from actlens.activations import resid_pre
from actlens.intervene import Addition, additions, steer
from actlens.model import n_layers, padding
from actlens.readout import final_hidden
from actlens.types import SHORT_PROMPTS, Align, ShortPrompt
from actlens.vectors import SteeringVector


def layer_list(model: TransformerBridge, layers: Sequence[int] | None, *, name: str = "layers") -> list[int]:
    """``layers`` validated (None means every layer), in the order given, without repeats."""
    total = n_layers(model)
    if layers is None:
        return list(range(total))
    if isinstance(layers, int | str) or not isinstance(layers, Sequence | range):
        raise TypeError(f"{name} must be a list of ints (or None for all {total} layers), got {layers!r}")
    out = [_validation.layer(layer, total, name=f"{name}[{i}]") for i, layer in enumerate(layers)]
    if not out:
        raise ValueError(f"{name} is empty; pass at least one layer in [0, {total}) or None for all")
    if len(set(out)) != len(out):
        raise ValueError(f"{name} has repeated layers {out}; pass each layer once")
    return out


def pair_arg(pair: object, *, name: str = "pair") -> tuple[str, str]:
    """A ``(plus, minus)`` pair of strings (the minus prompt may be empty, as in " weddings" - "")."""
    if not (isinstance(pair, tuple | list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
        raise TypeError(f"{name} must be a (plus, minus) tuple of two strings such as ('Love', 'Hate'), got {pair!r}")
    plus, minus = pair
    if not plus and not minus:
        raise ValueError(f"{name} has two empty strings; at least the plus prompt needs text")
    return str(plus), str(minus)


def vector_arg(model: TransformerBridge, vector: object, *, name: str = "vector") -> SteeringVector:
    if not isinstance(vector, SteeringVector):
        raise TypeError(
            f"{name} must be an actlens SteeringVector, got {type(vector).__name__}; build one with "
            "actlens.actadd_vector(model, plus, minus, layer)"
        )
    vector.check_model(model)
    _validation.layer(vector.layer, n_layers(model), name=f"{name}.layer")
    return vector


# --- where a steering request lands -------------------------------------------------------
def steering_addition(
    model: TransformerBridge, vector: SteeringVector, coeff: float, align: Align, position: int | None,
    scope: dict | None = None,
) -> Addition:
    """The single :class:`Addition` a one-vector request makes (validates align/position/coeff/scope).

    ``scope``: ``phase`` / ``span`` / ``include_bos`` keyword arguments of :func:`actlens.steer`.
    """
    grouped = additions(model, vector, coeff, align=align, position=position, **(scope or {}))
    return next(iter(grouped.values()))[0]



def encode_texts(
    model: TransformerBridge, texts: object, add: Addition | None, short_prompt: ShortPrompt = "error"
) -> tuple[list[str], prompts.Batch]:
    """Validate and left-pad ``texts``; a text shorter than the injection raises (or is padded)."""
    _validation.choice("short_prompt", short_prompt, SHORT_PROMPTS)
    texts = _validation.texts("texts", texts)
    need = 1 if add is None else add.placement.min_length
    return texts, prompts.encode_batch(model, texts, min_length=need, short_prompt=short_prompt)


@dataclass(frozen=True)
class Chunk:
    """Rows ``rows`` of a batch with leading all-pad columns dropped (from column ``col``)."""

    rows: slice
    col: int
    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    starts: list[int]
    lengths: list[int]


def chunks(batch: prompts.Batch, batch_size: int) -> Iterator[Chunk]:
    _validation.positive_int("batch_size", batch_size)
    for i in range(0, len(batch.starts), batch_size):
        rows = slice(i, min(i + batch_size, len(batch.starts)))
        col = min(batch.starts[rows])
        yield Chunk(rows, col, batch.tokens[rows, col:], batch.attention_mask[rows, col:],
                    [s - col for s in batch.starts[rows]], list(batch.lengths[rows]))


def hidden(
    model: TransformerBridge, chunk: Chunk, vector: SteeringVector | None = None, coeff: float = 0.0,
    align: Align = "front", position: int | None = None, scope: dict | None = None,
) -> tuple[Float[Tensor, "batch pos d"], torch.nn.Module]:
    """:func:`actlens.readout.final_hidden` of one chunk, steered when ``vector`` is given (on the model's device)."""
    with torch.inference_mode(), padding(model, chunk.starts, chunk.lengths):
        if vector is None:
            return final_hidden(model, chunk.tokens, chunk.attention_mask)
        with steer(model, vector, coeff, align=align, position=position, **(scope or {})):
            return final_hidden(model, chunk.tokens, chunk.attention_mask)


def resid_all(
    model: TransformerBridge, chunk: Chunk, layers: Sequence[int], vector: SteeringVector | None = None,
    coeff: float = 0.0, align: Align = "front", position: int | None = None,
) -> dict[int, Float[Tensor, "batch pos d_model"]]:
    """``resid_pre`` of one chunk at ``layers`` (steered residuals when ``vector`` is given)."""
    with torch.inference_mode(), padding(model, chunk.starts, chunk.lengths):
        if vector is None:
            return resid_pre(model, chunk.tokens, layers, chunk.attention_mask)
        # steer() registers first, so the capture hooks at the injection layer see the sum.
        with steer(model, vector, coeff, align=align, position=position):
            return resid_pre(model, chunk.tokens, layers, chunk.attention_mask)


def token_strings(model: TransformerBridge, ids: Sequence[int]) -> list[str]:
    return [model.tokenizer.decode([int(i)]) for i in ids]
