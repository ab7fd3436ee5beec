"""How large a steering vector is, per layer and position, against the residual stream it joins.

ActAdd adds ``coeff * Δ`` to ``blocks.{L}.hook_resid_pre``; whether that is a nudge or a
replacement depends on ``‖Δ‖`` relative to the residual stream's own norm, which grows
with depth (Turner et al. 2023, arXiv 2308.10248, appendix F: "Anger" − "Calm" has
``‖Δ‖/‖resid‖`` ≈ 0.7–1.3 at the first real position). So this module measures

* ``‖Δ[pos]‖₂`` at every layer (:func:`norm_profile`), and
* the *typical* residual norm at a layer (:func:`residual_scale`): the median per-token
  ``‖resid_pre‖₂`` over a set of neutral reference texts, positions after BOS (BOS and the
  first positions of some models carry very large activations; the median ignores them).

and expresses coefficients in **residual-norm units** (:func:`coeff_from_units`): ``units=1``
means the added vector at its largest position is as large as a typical residual at that
layer, whatever the layer or model, so sweeps are comparable across both.

The reference forward runs once per model (all layers at once) and is cached in-process,
keyed by the model object, its compatibility mode and the reference texts.

>>> from actlens.models.tiny import tiny_model
>>> model = tiny_model()
>>> profile = norm_profile(model, ("Love", "Hate"), layers=[1, 2])
>>> tuple(profile.norms.shape)          # [layer, position]: BOS + 4 byte tokens
(2, 5)
>>> float(profile.norms[0, 0])          # the BOS row cancels
0.0
"""

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import TransformerBridge

from actlens.core import positions, prompts
from actlens.core import validation as _validation
from actlens.models.activations import resid_pre
from actlens.models.model import check_layer, n_layers, state
from actlens.vectors import SteeringVector, actadd_vectors, check_vector

UnitsPosition = Literal["max"]
"""Which row of a vector :func:`coeff_from_units` matches to the residual norm: ``"max"`` is
the row with the largest norm (so no position exceeds ``units``), an ``int`` picks a row."""


@cache
def default_reference_texts() -> tuple[str, ...]:
    """The shipped reference set (``actlens/data/reference_texts.txt``, ~40 neutral sentences)."""
    text = resources.files("actlens").joinpath("data/reference_texts.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


# model -> {(compatibility mode, reference texts): median norm per layer}
_SCALES: "weakref.WeakKeyDictionary[TransformerBridge, dict[tuple, Tensor]]" = weakref.WeakKeyDictionary()


def residual_scales(
    model: TransformerBridge, reference_texts: Sequence[str] | None = None, *, batch_size: int = 16
) -> Float[Tensor, " layer"]:
    """Typical ``‖resid_pre‖₂`` at every layer: the median over reference tokens after BOS.

    One batched forward over the reference texts captures every layer; the result is
    cached per model (and per reference set), so later calls are free.

    >>> from actlens.models.tiny import tiny_model
    >>> scales = residual_scales(tiny_model("gpt2"))
    >>> scales.shape[0], bool((scales > 0).all())
    (4, True)
    """
    state(model)  # type check with a clear error
    _validation.positive_int("batch_size", batch_size)
    texts = default_reference_texts() if reference_texts is None else tuple(
        _validation.texts("reference_texts", reference_texts))
    key = (bool(getattr(model, "compatibility_mode", False)), texts)
    per_model = _SCALES.setdefault(model, {})
    if key not in per_model:
        layers = list(range(n_layers(model)))
        found: dict[int, list[Tensor]] = {layer: [] for layer in layers}
        rows = [prompts.encode(model, t) for t in texts]
        with torch.inference_mode():
            for i in range(0, len(rows), batch_size):
                batch = prompts.left_pad(rows[i:i + batch_size], prompts.pad_token_id(model))
                keep = positions.real(batch.layout, skip_bos=True)
                acts = resid_pre(model, batch.tokens, layers, batch.attention_mask)
                for layer in layers:
                    found[layer].append(torch.linalg.vector_norm(acts[layer].float(), dim=-1).cpu()[keep])
            per_model[key] = torch.stack([torch.cat(found[layer]).median() for layer in layers])
    return per_model[key].clone()


def residual_scale(model: TransformerBridge, layer: int, reference_texts: Sequence[str] | None = None) -> float:
    """Typical residual norm entering block ``layer`` (see :func:`residual_scales`).

    >>> from actlens.models.tiny import tiny_model
    >>> residual_scale(tiny_model(), 2) > 0
    True
    """
    layer = check_layer(model, layer)
    return float(residual_scales(model, reference_texts)[layer])


def _row(vector: SteeringVector, position: UnitsPosition | int) -> tuple[int, float]:
    norms = vector.norms()
    if position == "max":
        row = int(norms.argmax())
    elif isinstance(position, int) and not isinstance(position, bool) and -vector.k <= position < vector.k:
        row = position % vector.k
    else:
        raise ValueError(f"position must be 'max' or a row index in [{-vector.k}, {vector.k}), got {position!r}")
    norm = float(norms[row])
    if norm == 0.0:
        raise ValueError(
            f"row {row} of this vector is zero (the BOS row of an ActAdd vector is), so no coefficient can "
            "give it a size; pass position='max' or another row"
        )
    return row, norm


def coeff_from_units(
    model: TransformerBridge,
    vector: SteeringVector,
    units: float,
    *,
    position: UnitsPosition | int = "max",
    reference_texts: Sequence[str] | None = None,
) -> float:
    """The coefficient with ``coeff * ‖vector[position]‖ == units * residual_scale(layer)``.

    ``position="max"`` uses the vector's largest row, so ``units=0.5`` means no injected
    position is more than half a typical residual at that layer.

    >>> from actlens.models.tiny import tiny_model
    >>> from actlens.vectors import actadd_vector
    >>> model = tiny_model()
    >>> v = actadd_vector(model, "Love", "Hate", layer=2)
    >>> c = coeff_from_units(model, v, 1.0)
    >>> round(c * float(v.norms().max()) / residual_scale(model, 2), 6)
    1.0
    """
    vector = check_vector(model, vector)
    units = _validation.finite("units", units)
    _, norm = _row(vector, position)
    return units * residual_scale(model, vector.layer, reference_texts) / norm


def units_from_coeff(
    model: TransformerBridge,
    vector: SteeringVector,
    coeff: float,
    *,
    position: UnitsPosition | int = "max",
    reference_texts: Sequence[str] | None = None,
) -> float:
    """The inverse of :func:`coeff_from_units`: ``coeff * ‖vector[position]‖ / residual_scale``.

    >>> from actlens.models.tiny import tiny_model
    >>> from actlens.vectors import actadd_vector
    >>> model = tiny_model()
    >>> v = actadd_vector(model, "Love", "Hate", layer=1)
    >>> round(units_from_coeff(model, v, coeff_from_units(model, v, 2.5)), 6)
    2.5
    """
    vector = check_vector(model, vector)
    coeff = _validation.finite("coeff", coeff)
    _, norm = _row(vector, position)
    return coeff * norm / residual_scale(model, vector.layer, reference_texts)


@dataclass(frozen=True)
class NormProfile:
    """Per-layer, per-position norms of an ActAdd vector, absolute and relative.

    ``norms[i, p] = ‖Δ_{layers[i]}[p]‖₂``; ``resid_scale[i]`` is the typical residual norm
    at ``layers[i]`` (:func:`residual_scales`); ``relative = norms / resid_scale``.
    """

    pair: tuple[str, str]
    layers: tuple[int, ...]
    plus_tokens: tuple[str, ...]
    minus_tokens: tuple[str, ...]
    norms: Float[Tensor, "layer pos"]
    resid_scale: Float[Tensor, " layer"]
    relative: Float[Tensor, "layer pos"]
    model_name: str
    compatibility_mode: bool
    n_reference_texts: int

    @property
    def k(self) -> int:
        return int(self.norms.shape[1])

    def position_labels(self) -> list[str]:
        """``"p: plus/minus"`` per position, e.g. ``"1: Love/Hate"``."""
        return [f"{p}: {a!r}/{b!r}" for p, (a, b) in enumerate(zip(self.plus_tokens, self.minus_tokens, strict=True))]

    def to_frame(self) -> pd.DataFrame:
        """One row per (layer, position): ``norm``, ``resid_scale``, ``relative`` and the tokens."""
        records = [
            dict(layer=layer, position=p, plus_token=self.plus_tokens[p], minus_token=self.minus_tokens[p],
                 norm=float(self.norms[i, p]), resid_scale=float(self.resid_scale[i]),
                 relative=float(self.relative[i, p]))
            for i, layer in enumerate(self.layers) for p in range(self.k)
        ]
        return pd.DataFrame.from_records(records)


def norm_profile(
    model: TransformerBridge,
    pair: tuple[str, str],
    *,
    layers: Sequence[int] | None = None,
    reference_texts: Sequence[str] | None = None,
) -> NormProfile:
    """The ActAdd vector of ``pair`` at every layer: its norm per position, absolute and
    relative to the typical residual norm at that layer.

    Args:
        pair: ``(plus, minus)`` prompts, e.g. ``("Love", "Hate")``; space-padded as in
            :func:`actlens.actadd_vector`.
        layers: layers to extract at (default: all); one forward of the pair covers them.
        reference_texts: texts defining the typical residual norm (default: the shipped
            neutral set, :func:`default_reference_texts`).

    >>> from actlens.models.tiny import tiny_model
    >>> p = norm_profile(tiny_model("gpt2"), ("Love", "Hate"))
    >>> p.to_frame().columns.tolist()[:4]
    ['layer', 'position', 'plus_token', 'minus_token']
    """
    plus, minus = _validation.pair(pair)
    layers = _validation.layers(layers, n_layers(model))
    scales = residual_scales(model, reference_texts)[layers]
    with torch.inference_mode():
        vectors = actadd_vectors(model, plus, minus, layers)
    norms = torch.stack([vectors[layer].norms() for layer in layers]).cpu()  # ordinary tensors, not inference ones
    first = vectors[layers[0]]
    n_ref = len(default_reference_texts() if reference_texts is None else list(reference_texts))
    return NormProfile(
        pair=(plus, minus), layers=tuple(layers),
        plus_tokens=tuple(prompts.token_strings(model, first.plus_tokens[0])),
        minus_tokens=tuple(prompts.token_strings(model, first.minus_tokens[0])),
        norms=norms, resid_scale=scales, relative=norms / scales[:, None],
        model_name=first.model.name, compatibility_mode=first.compatibility_mode, n_reference_texts=n_ref,
    )


__all__ = [
    "NormProfile", "coeff_from_units", "default_reference_texts", "norm_profile", "residual_scale",
    "residual_scales", "units_from_coeff",
]
