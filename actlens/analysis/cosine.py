"""Cosine similarity of steering vectors across layers, pairs and extraction methods.

The ActAdd paper does not compare its vectors across layers or prompts (Turner et al.
2023, arXiv 2308.10248; see ``actadd-paper.md`` §4). :func:`cosine_across_layers` extracts
each contrast at every requested layer from **one forward per prompt** (all layers hooked
at once) and returns the cosine between every pair of (contrast, layer[, position]) items,
computed in float32.

ActAdd vectors are per-position (``[k, d_model]``, row 0 = BOS = 0). How they become one
vector is the ``reduce`` option, chosen by the user:

* ``"sum"``: the sum of the rows, i.e. the total the vector adds over its positions
  (for a one-token pair such as "Love" / "Hate" this is the single non-BOS row);
* ``"last"``: the last row (the final position of the space-padded pair);
* ``"per_position"``: no reduction; every non-BOS row is its own item, so the matrix
  also compares positions (e.g. a real token against a pad row).

Mean-difference vectors (``method="mean_diff"``, CAA-style: last real token, positives
minus negatives, averaged over the pairs of the contrast) have one row, which every
``reduce`` keeps as it is.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import TransformerBridge

from actlens.core import validation as _validation
from actlens.models.model import n_layers
from actlens.vectors import SteeringVector, actadd_vectors, mean_diff_vectors

Method = Literal["actadd", "mean_diff"]
"""``"actadd"``: the per-position pair difference (one pair per contrast); ``"mean_diff"``: the
mean difference of the last real token's residual over the contrast's pairs."""
METHODS: tuple[str, ...] = get_args(Method)
Reduce = Literal["sum", "last", "per_position"]
"""How a per-position vector becomes the vector compared (see the module docstring)."""
REDUCES: tuple[str, ...] = get_args(Reduce)

Contrast = tuple[str, str] | Sequence[tuple[str, str]]
"""A ``(plus, minus)`` pair, or (``mean_diff`` only) a list of pairs averaged into one vector."""


@dataclass(frozen=True)
class CosineResult:
    """Cosines between every pair of items; an item is ``(contrast, layer, position)``.

    ``position`` is ``None`` for reduced vectors (``reduce="sum"``/``"last"`` and every
    mean-difference vector) and a row index for ``reduce="per_position"``. For one contrast
    and a reducing option, ``matrix`` is simply the layer × layer matrix. Items whose vector
    is zero have NaN cosines.
    """

    labels: tuple[str, ...]
    methods: tuple[str, ...]
    layers: tuple[int, ...]
    reduce: str
    items: tuple[tuple[int, int, int | None], ...]
    vectors: Float[Tensor, "item d_model"]
    matrix: Float[Tensor, "item item"]
    model_name: str

    def item_labels(self) -> list[str]:
        """Readable item names, e.g. ``"Love − Hate (actadd) L6"`` (``"L6 p1"`` per position)."""
        many = len(self.labels) > 1
        out = []
        for c, layer, pos in self.items:
            name = f"{self.labels[c]} " if many else ""
            out.append(f"{name}L{layer}" + ("" if pos is None else f" p{pos}"))
        return out

    def block(self, a: int = 0, b: int | None = None, *, position: int | None = None) -> Float[Tensor, "layer layer"]:
        """The layer × layer cosines between contrast ``a`` and contrast ``b`` (default ``a``).

        With ``reduce="per_position"`` pass ``position`` (a row index used by both contrasts).
        """
        b = a if b is None else b
        for name, c in (("a", a), ("b", b)):
            if not 0 <= c < len(self.labels):
                raise ValueError(f"{name} must be a contrast index in [0, {len(self.labels)}), got {c}")
        if self.reduce == "per_position" and position is None and any(p is not None for *_, p in self.items):
            raise ValueError("reduce='per_position': pass position=row to pick the row compared")

        def rows(c: int) -> list[int]:
            found = {layer: i for i, (ci, layer, pos) in enumerate(self.items)
                     if ci == c and (pos is None or pos == position)}
            if len(found) != len(self.layers):
                raise ValueError(f"contrast {c} has no row {position}; its rows are "
                                 f"{sorted({p for ci, _, p in self.items if ci == c}, key=str)}")
            return [found[layer] for layer in self.layers]

        return self.matrix[rows(a)][:, rows(b)]

    def to_frame(self) -> pd.DataFrame:
        """One row per ordered item pair: both items' contrast, method, layer, position, and the cosine."""
        n = len(self.items)
        a_idx = torch.arange(n).repeat_interleave(n).tolist()
        b_idx = torch.arange(n).repeat(n).tolist()
        values = self.matrix.reshape(-1).tolist()

        def cols(prefix: str, idx: list[int]) -> dict:
            its = [self.items[i] for i in idx]
            return {
                f"{prefix}_contrast": [self.labels[c] for c, _, _ in its],
                f"{prefix}_method": [self.methods[c] for c, _, _ in its],
                f"{prefix}_layer": [layer for _, layer, _ in its],
                f"{prefix}_position": pd.array([p for *_, p in its], dtype="Int64"),
            }

        return pd.DataFrame({**cols("a", a_idx), **cols("b", b_idx), "cosine": values})


def cosine_matrix(vectors: Float[Tensor, "n d"]) -> Float[Tensor, "n n"]:
    """Pairwise cosine similarity in float32, symmetric, NaN for zero vectors.

    >>> m = cosine_matrix(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]))
    >>> [round(x, 4) for x in m[0].tolist()[:2]], bool(m[2, 2].isnan())
    ([1.0, 0.7071], True)
    """
    x = vectors.float()
    norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    unit = torch.where(norms > 0, x / norms, torch.full_like(x, float("nan")))
    sims = unit @ unit.T
    return ((sims + sims.T) / 2).clamp(-1.0, 1.0)


def _contrasts(pairs: object) -> list[tuple[str, str] | list[tuple[str, str]]]:
    if isinstance(pairs, tuple) and len(pairs) == 2 and all(isinstance(p, str) for p in pairs):
        return [_validation.pair(pairs)]
    if isinstance(pairs, str) or not isinstance(pairs, Sequence) or not pairs:
        raise TypeError(
            "pairs must be a (plus, minus) tuple or a non-empty list of them (a list of pairs inside the "
            f"list is one mean_diff contrast), got {pairs!r}"
        )
    out: list = []
    for i, item in enumerate(pairs):
        if isinstance(item, tuple) and len(item) == 2 and all(isinstance(p, str) for p in item):
            out.append(_validation.pair(item, name=f"pairs[{i}]"))
        elif isinstance(item, Sequence) and not isinstance(item, str) and item:
            out.append([_validation.pair(p, name=f"pairs[{i}][{j}]") for j, p in enumerate(item)])
        else:
            raise TypeError(f"pairs[{i}] must be a (plus, minus) tuple or a non-empty list of them, got {item!r}")
    return out


def _label(contrast: tuple[str, str] | list[tuple[str, str]], method: str) -> str:
    if isinstance(contrast, tuple):
        return f"{contrast[0]!r} − {contrast[1]!r} ({method})"
    return f"{len(contrast)} pairs ({method})"


def cosine_across_layers(
    model: TransformerBridge,
    pairs: Contrast | Sequence[Contrast],
    *,
    layers: Sequence[int] | None = None,
    reduce: Reduce = "sum",
    method: Method | Sequence[Method] = "actadd",
    batch_size: int = 16,
) -> CosineResult:
    """Cosine similarity of steering vectors extracted at every layer (and across contrasts).

    Args:
        pairs: one ``(plus, minus)`` pair (gives the layer × layer matrix), or a list of
            contrasts to compare, e.g. ``[("Love", "Hate"), ("Joy", "Sadness"),
            (" weddings", "")]``. With ``method="mean_diff"`` a contrast may also be a list of
            pairs, averaged into one vector.
        layers: layers to extract at (default: all).
        reduce: how per-position ActAdd vectors are reduced: ``"sum"`` | ``"last"`` |
            ``"per_position"`` (module docstring).
        method: ``"actadd"`` or ``"mean_diff"`` for every contrast, or one method per contrast;
            compare methods on one pair with ``pairs=[p, p], method=["actadd", "mean_diff"]``.
        batch_size: rows per forward for mean-difference sets.

    >>> from actlens.models.tiny import tiny_model
    >>> r = cosine_across_layers(tiny_model(), ("Love", "Hate"))
    >>> tuple(r.matrix.shape), round(float(r.matrix[2, 2]), 5)
    ((4, 4), 1.0)
    >>> r2 = cosine_across_layers(tiny_model(), [("Love", "Hate"), ("Love", "Hate")], layers=[1, 2],
    ...                           method=["actadd", "mean_diff"])
    >>> tuple(r2.block(0, 1).shape)
    (2, 2)
    """
    _validation.choice("reduce", reduce, REDUCES)
    contrasts = _contrasts(pairs)
    methods = [method] * len(contrasts) if isinstance(method, str) else list(method)
    if len(methods) != len(contrasts):
        raise ValueError(f"method has {len(methods)} entries but there are {len(contrasts)} contrasts; "
                         "pass one method, or one per contrast")
    for i, (m, c) in enumerate(zip(methods, contrasts, strict=True)):
        _validation.choice(f"method[{i}]", m, METHODS)
        if m == "actadd" and isinstance(c, list):
            raise ValueError(f"pairs[{i}] is a list of {len(c)} pairs, but ActAdd uses one pair; "
                             "pass method='mean_diff' for it, or one (plus, minus) tuple")
    layers = _validation.layers(layers, n_layers(model))
    _validation.positive_int("batch_size", batch_size)

    items: list[tuple[int, int, int | None]] = []
    rows: list[Tensor] = []
    name = ""
    with torch.inference_mode():
        for ci, (m, c) in enumerate(zip(methods, contrasts, strict=True)):
            if isinstance(c, tuple) and m == "actadd":
                vectors = actadd_vectors(model, c[0], c[1], layers)
            else:
                vectors = mean_diff_vectors(model, [c] if isinstance(c, tuple) else c, layers, batch_size=batch_size)
            for layer in layers:
                vec: SteeringVector = vectors[layer]
                name = vec.model.name
                for pos, row in _reduced(vec, reduce):
                    items.append((ci, layer, pos))
                    rows.append(row)
    stacked = torch.stack(rows).float().cpu()  # outside inference mode: results are ordinary tensors
    matrix = cosine_matrix(stacked)
    return CosineResult(
        labels=tuple(_label(c, m) for c, m in zip(contrasts, methods, strict=True)), methods=tuple(methods),
        layers=tuple(layers), reduce=reduce, items=tuple(items), vectors=stacked, matrix=matrix, model_name=name,
    )


def _reduced(vector: SteeringVector, reduce: str) -> list[tuple[int | None, Tensor]]:
    values = vector.values.float()
    if vector.k == 1:
        return [(None, values[0])]
    if reduce == "sum":
        return [(None, values.sum(0))]
    if reduce == "last":
        return [(None, values[-1])]
    first = 1 if vector.bos_row else 0
    return [(p, values[p]) for p in range(first, vector.k)]


__all__ = ["CosineResult", "Method", "Reduce", "cosine_across_layers", "cosine_matrix"]
