"""How an injected vector travels through the network, and how well it transfers across layers.

:func:`propagation`: inject ``coeff * v`` at layer L and compare the steered residual
stream with the unsteered one at every layer and position: ``‖Δresid‖₂`` (absolute and
relative to the unsteered residual's norm) and the cosine of ``Δresid`` with the injected
direction (the sum of the vector's rows: the single row for a one-row vector, the non-BOS
row of a one-token ActAdd pair). Layers below L are untouched, so there ``Δresid`` is
exactly zero; at L it is ``coeff * v`` at the injection positions and zero elsewhere.

:func:`transfer_matrix`: extract the ActAdd vector of a pair at layer i, inject it at
layer j, and measure the effect on the next-token distributions with the masked mean KL
of :mod:`actlens.analysis.kl` (injection positions, BOS and pads excluded). The ActAdd paper only
ever injects a vector where it was extracted (Turner et al. 2023, arXiv 2308.10248).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor
from transformer_lens import TransformerBridge

from actlens.analysis.kl import masked_mean, run_masked
from actlens.core import positions, prompts
from actlens.core import validation as _validation
from actlens.core.types import Align, ShortPrompt
from actlens.models.model import n_layers
from actlens.steering import chunked
from actlens.steering.intervene import addition
from actlens.vectors import SteeringVector, actadd_vectors, check_vector

TransferMetric = Literal["kl", "flip_rate"]
"""``"kl"``: masked mean ``KL(steered ‖ unsteered)`` in nats; ``"flip_rate"``: share of
counted positions whose most likely next token changes."""
TRANSFER_METRICS: tuple[str, ...] = get_args(TransferMetric)


@dataclass(frozen=True)
class PropagationResult:
    """Steered minus unsteered ``resid_pre`` at every layer, per text and position.

    ``diff_norm[t, l, p] = ‖resid_steered − resid_unsteered‖₂`` at ``blocks.l.hook_resid_pre``;
    ``relative = diff_norm / ‖resid_unsteered‖``; ``cosine`` is with the injected direction
    (NaN where the difference is zero, and at pads). Pads hold 0 in the norm tensors.
    """

    texts: tuple[str, ...]
    token_strings: tuple[tuple[str, ...], ...]
    starts: tuple[int, ...]
    lengths: tuple[int, ...]
    layer: int
    coeff: float
    align: str
    injected: Bool[Tensor, "text pos"]
    real: Bool[Tensor, "text pos"]
    diff_norm: Float[Tensor, "text layer pos"]
    resid_norm: Float[Tensor, "text layer pos"]
    relative: Float[Tensor, "text layer pos"]
    cosine: Float[Tensor, "text layer pos"]
    model_name: str

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(range(self.diff_norm.shape[1]))

    def mean_over_texts(self, field: Literal["diff_norm", "relative", "cosine"] = "relative"
                        ) -> Float[Tensor, "layer pos"]:
        """``field`` averaged over texts with positions counted from each text's BOS (NaN-aware)."""
        _validation.choice("field", field, ("diff_norm", "relative", "cosine"))
        values = getattr(self, field)
        width = max(self.lengths)
        out = torch.full((len(self.texts), values.shape[1], width), float("nan"))
        for i, (s, n) in enumerate(zip(self.starts, self.lengths, strict=True)):
            out[i, :, :n] = values[i, :, s:s + n]
        return out.nanmean(0)

    def to_frame(self) -> pd.DataFrame:
        """One row per (text, layer, real position); ``position`` counts from BOS = 0."""
        records = []
        for i, (s, n) in enumerate(zip(self.starts, self.lengths, strict=True)):
            for layer in self.layers:
                for p in range(s, s + n):
                    records.append(dict(
                        text=i, layer=layer, position=p - s, token=self.token_strings[i][p - s],
                        injected=bool(self.injected[i, p]), diff_norm=float(self.diff_norm[i, layer, p]),
                        resid_norm=float(self.resid_norm[i, layer, p]), relative=float(self.relative[i, layer, p]),
                        cosine=float(self.cosine[i, layer, p]), injection_layer=self.layer,
                    ))
        return pd.DataFrame.from_records(records)


def propagation(
    model: TransformerBridge,
    vector: SteeringVector,
    coeff: float,
    texts: str | Sequence[str],
    *,
    align: Align = "front",
    position: int | None = None,
    batch_size: int = 8,
    short_prompt: ShortPrompt = "error",
) -> PropagationResult:
    """Norm and direction of (steered − unsteered) residuals at every layer and position.

    Args:
        vector: a :class:`actlens.SteeringVector`; it is injected at ``vector.layer``.
        coeff: the coefficient, as in :func:`actlens.steer`.
        align: how the vector is placed, as in :func:`actlens.steer`.
        position: which row ``align="all"`` uses, as in :func:`actlens.steer`.
        texts: texts to run (each at least as long as the injection).

    >>> from actlens.models.tiny import tiny_model
    >>> from actlens.vectors import actadd_vector
    >>> model = tiny_model()
    >>> v = actadd_vector(model, "Love", "Hate", layer=2)
    >>> r = propagation(model, v, 4.0, ["I think that you are"])
    >>> bool((r.diff_norm[:, :2] == 0).all()), bool((r.diff_norm[:, 3] > 0).any())
    (True, True)
    """
    vector = check_vector(model, vector).require_site(where="propagation (it compares resid_pre across layers)")
    coeff = _validation.finite("coeff", coeff)
    add = addition(model, vector, coeff, align, position)
    texts, batch = chunked.encode_texts(model, texts, add, short_prompt)
    injected = positions.injected(add.placement, batch.layout)
    real = positions.real(batch.layout, skip_bos=False)
    layers = list(range(n_layers(model)))
    direction = vector.values.float().sum(0)
    if align == "all" and vector.k > 1 and position is not None:
        direction = vector.values.float()[position]
    shape = (len(texts), len(layers), batch.tokens.shape[1])
    unit = direction / torch.linalg.vector_norm(direction) if bool(direction.any()) else None
    out = None  # (diff_norm, resid_norm, cosine) on the residuals' device; copied to the CPU once, after the loop
    with torch.inference_mode():
        for chunk in chunked.chunks(batch, batch_size):
            base = chunked.resid_all(model, chunk, layers)
            steered = chunked.resid_all(model, chunk, layers, vector, coeff, align, position)
            if out is None:
                device = base[layers[0]].device
                out = (torch.zeros(shape, device=device), torch.zeros(shape, device=device),
                       torch.full(shape, float("nan"), device=device))
                unit_d = None if unit is None else unit.to(device, non_blocking=True)
            diff_norm, resid_norm, cosine = out
            keep = chunk.attention_mask.bool().to(device, non_blocking=True)
            for layer in layers:
                # layers may sit on several devices (device_map): gather them where the results live
                b = base[layer].float().to(device, non_blocking=True)
                s = steered[layer].float().to(device, non_blocking=True)
                diff = s - b
                norm = torch.linalg.vector_norm(diff, dim=-1)
                diff_norm[chunk.rows, layer, chunk.col:] = torch.where(keep, norm, 0.0)
                resid_norm[chunk.rows, layer, chunk.col:] = torch.where(
                    keep, torch.linalg.vector_norm(b, dim=-1), 0.0)
                if unit_d is not None:
                    cos = (diff @ unit_d) / norm
                    cosine[chunk.rows, layer, chunk.col:] = torch.where(keep & (norm > 0), cos, float("nan"))
    diff_norm, resid_norm, cosine = (chunked.to_host(t) for t in out)
    relative = torch.where(resid_norm > 0, diff_norm / resid_norm, torch.zeros_like(diff_norm))
    token_strings = tuple(
        tuple(prompts.token_strings(model, batch.tokens[i, s:s + n].tolist()))
        for i, (s, n) in enumerate(zip(batch.starts, batch.lengths, strict=True))
    )
    return PropagationResult(
        texts=tuple(texts), token_strings=token_strings, starts=tuple(batch.starts), lengths=tuple(batch.lengths),
        layer=vector.layer, coeff=coeff, align=align, injected=injected, real=real, diff_norm=diff_norm,
        resid_norm=resid_norm, relative=relative, cosine=cosine, model_name=vector.model.name,
    )


@dataclass(frozen=True)
class TransferResult:
    """Effect of the vector extracted at ``layers[i]`` when injected at ``layers[j]``.

    ``kl[i, j]``: masked mean KL (nats); ``flip_rate[i, j]``: share of counted positions whose
    top-1 token changes; ``values`` is the one named by ``metric``. The diagonal is ordinary
    ActAdd. ``vector_norms[i]`` is the largest row norm of the vector extracted at ``layers[i]``.
    """

    pair: tuple[str, str]
    layers: tuple[int, ...]
    coeff: float
    metric: str
    kl: Float[Tensor, "source target"]
    flip_rate: Float[Tensor, "source target"]
    vector_norms: Float[Tensor, " source"]
    n_positions: int
    texts: tuple[str, ...]
    align: str
    model_name: str

    @property
    def values(self) -> Float[Tensor, "source target"]:
        return self.kl if self.metric == "kl" else self.flip_rate

    def to_frame(self) -> pd.DataFrame:
        """One row per (source layer, target layer)."""
        return pd.DataFrame.from_records([
            dict(source_layer=a, target_layer=b, kl=float(self.kl[i, j]), flip_rate=float(self.flip_rate[i, j]),
                 source_norm=float(self.vector_norms[i]), coeff=self.coeff)
            for i, a in enumerate(self.layers) for j, b in enumerate(self.layers)
        ])


def transfer_matrix(
    model: TransformerBridge,
    pair: tuple[str, str],
    layers: Sequence[int],
    coeff: float,
    texts: str | Sequence[str],
    *,
    metric: TransferMetric = "kl",
    align: Align = "front",
    batch_size: int = 8,
    short_prompt: ShortPrompt = "error",
) -> TransferResult:
    """Extract the ActAdd vector of ``pair`` at each layer i and inject it at each layer j.

    One forward of the pair extracts every layer; the unsteered pass over ``texts`` runs
    once per chunk and serves all ``len(layers)²`` steered passes. The same ``coeff`` is
    used everywhere (residual norms grow with depth, see :func:`actlens.analysis.norms.residual_scales`).

    >>> from actlens.models.tiny import tiny_model
    >>> r = transfer_matrix(tiny_model(), ("Love", "Hate"), [1, 2], 4.0, ["I think that you are"])
    >>> tuple(r.kl.shape), bool((r.kl > 0).all())
    ((2, 2), True)
    """
    plus, minus = _validation.pair(pair)
    layers = _validation.layers(layers, n_layers(model))
    coeff = _validation.finite("coeff", coeff)
    _validation.choice("metric", metric, TRANSFER_METRICS)
    _validation.texts("texts", texts)
    with torch.inference_mode():
        extracted = actadd_vectors(model, plus, minus, layers)
    vectors = [
        extracted[src].at_layer(dst, notes=f"extracted at layer {src}, injected at layer {dst}")
        for src in layers for dst in layers
    ]
    texts, _, _, counted, _, _, outputs = run_masked(
        model, texts, vectors, coeff, align=align, position=None, batch_size=batch_size, short_prompt=short_prompt)
    n = len(layers)
    kl = torch.tensor([masked_mean(o["kl"], counted) for o in outputs]).reshape(n, n)
    flips = torch.tensor([masked_mean(o["flip"].float(), counted) for o in outputs]).reshape(n, n)
    return TransferResult(
        pair=(plus, minus), layers=tuple(layers), coeff=coeff, metric=metric, kl=kl, flip_rate=flips,
        vector_norms=torch.stack([extracted[layer].norms().max() for layer in layers]),
        n_positions=int(counted.sum()), texts=tuple(texts), align=align,
        model_name=extracted[layers[0]].model.name,
    )


__all__ = ["PropagationResult", "TransferMetric", "TransferResult", "propagation", "transfer_matrix"]
