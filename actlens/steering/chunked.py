"""Forwards of a left-padded batch of texts, a few rows at a time, steered or not.

The analyses (:mod:`actlens.analysis.kl`, :mod:`actlens.analysis.propagation`) encode their texts once
(:func:`encode_texts`), then run the same rows unsteered and steered in :class:`Chunk` s
of ``batch_size`` rows with the chunk's leading all-pad columns dropped, reading either the
final residual (:func:`hidden`) or ``resid_pre`` at chosen layers (:func:`resid_all`).
"""

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import TransformerBridge

from actlens.core import prompts
from actlens.core import validation as _validation
from actlens.core.types import SHORT_PROMPTS, Align, ShortPrompt
from actlens.models.activations import resid_pre
from actlens.models.model import padding
from actlens.models.readout import final_hidden
from actlens.steering.intervene import Addition, steer
from actlens.vectors import SteeringVector


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
    """The batch in chunks of ``batch_size`` rows.

    >>> batch = prompts.left_pad([[0, 5], [0, 5, 6, 7], [0]], pad_id=2)
    >>> [(c.col, c.starts) for c in chunks(batch, 2)]
    [(0, [2, 0]), (3, [0])]
    """
    _validation.positive_int("batch_size", batch_size)
    for i in range(0, len(batch.starts), batch_size):
        rows = slice(i, min(i + batch_size, len(batch.starts)))
        col = min(batch.starts[rows])
        yield Chunk(rows, col, batch.tokens[rows, col:], batch.attention_mask[rows, col:],
                    [s - col for s in batch.starts[rows]], list(batch.lengths[rows]))


def real_index(chunk: Chunk, width: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Where the chunk's real (unpadded) positions are: ``(local, target)`` flat indices on ``device``.

    ``local`` indexes the chunk's own ``[rows, pos]`` positions row-major (what ``x[mask]`` would
    select, in the same order); ``target`` the same positions in the whole batch's ``[text, width]``
    layout. Built on the CPU from the chunk's mask and copied without waiting, so selecting and
    scattering by them (``index_select`` / ``index_copy_``) never waits on the device the way
    boolean indexing of a device tensor does (it counts the selected positions on the host).

    >>> batch = prompts.left_pad([[0, 5], [0, 5, 6]], pad_id=2)
    >>> [t.tolist() for t in real_index(next(chunks(batch, 2)), 3)]
    [[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]]
    """
    keep = chunk.attention_mask.cpu().bool()
    local = keep.flatten().nonzero().flatten()
    cols = keep.shape[1]
    target = (chunk.rows.start + local // cols) * width + chunk.col + local % cols
    return local.to(device, non_blocking=True), target.to(device, non_blocking=True)


@contextlib.contextmanager
def _running(model: TransformerBridge, chunk: Chunk, vector: SteeringVector | None, coeff: float, align: Align,
             position: int | None, scope: dict | None) -> Iterator[None]:
    """Inference mode, the chunk's layout, and the steering when ``vector`` is given.

    ``scope``: the ``phase`` / ``span`` / ``include_bos`` keyword arguments of :func:`actlens.steer`.
    """
    with torch.inference_mode(), padding(model, chunk.starts, chunk.lengths):
        if vector is None:
            yield
        else:
            with steer(model, vector, coeff, align=align, position=position, **(scope or {})):
                yield


def hidden(
    model: TransformerBridge, chunk: Chunk, vector: SteeringVector | None = None, coeff: float = 0.0,
    align: Align = "front", position: int | None = None, scope: dict | None = None,
) -> tuple[Float[Tensor, "batch pos d"], torch.nn.Module]:
    """:func:`actlens.models.readout.final_hidden` of one chunk, steered when ``vector`` is given (on the model's device)."""
    with _running(model, chunk, vector, coeff, align, position, scope):
        return final_hidden(model, chunk.tokens, chunk.attention_mask)


def resid_all(
    model: TransformerBridge, chunk: Chunk, layers: Sequence[int], vector: SteeringVector | None = None,
    coeff: float = 0.0, align: Align = "front", position: int | None = None, scope: dict | None = None,
) -> dict[int, Float[Tensor, "batch pos d_model"]]:
    """``resid_pre`` of one chunk at ``layers`` (steered residuals when ``vector`` is given).

    ``steer`` registers its hooks first, so the capture hooks at the injection layer see the sum.
    """
    with _running(model, chunk, vector, coeff, align, position, scope):
        return resid_pre(model, chunk.tokens, layers, chunk.attention_mask)


def to_host(t: Tensor) -> Tensor:
    """``t`` on the CPU as an ordinary tensor: the one copy at the end of a device loop run in inference mode.

    On the CPU ``.cpu()`` is a no-op, which would hand out the loop's inference tensors (they refuse autograd and
    in-place use outside inference mode), so those are cloned.
    """
    t = t.cpu()
    return t.clone() if t.is_inference() else t
