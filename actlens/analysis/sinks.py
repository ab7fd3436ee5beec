"""Attention sinks ("massive activations") and a sink-aware ActAdd vector.

Some positions carry a residual norm far above the rest of the sequence: BOS, and in many
models the first real token and a few delimiter-like tokens (Sun et al., "Massive Activations
in Large Language Models", arXiv 2402.17762). They act as attention sinks and are nearly
constant across inputs. In SmolLM2-135M, BOS sits at ~180x the median residual norm from
layer 2 on, and tokens such as ``"Love"`` at the first position, ``" the"`` and the single
space ``" "`` anywhere reach 4-10x at layers 3-9. A front-aligned ActAdd vector reads the
pair at exactly those positions, so ``Δ = h(plus) - h(minus)`` at a sink row is the
difference of two massive, content-free activations, and adding it overwrites the user
prompt's first positions rather than nudging them.

:func:`sinks` finds such positions: per layer, a position is flagged when its ``resid_pre``
norm is at least ``threshold`` times the layer's median over reference text (the same median
:func:`actlens.analysis.norms.residual_scales` uses: real tokens after BOS).

:func:`sink_aware_actadd` is the fix, in both reading and adding:

* **reading**: both prompts are read behind one shared prefix (default ``"\\n"``, which is not
  a sink in SmolLM2), at token level, so the pair's content sits at ordinary positions
  instead of the first-token sink; the prefix rows, BOS included, are then *exactly* zero
  (identical tokens, causal attention). The pad of the shorter prompt is the first candidate
  (space, the prefix token, EOS) whose padded positions are not sinks, because a space pad
  is itself a sink in SmolLM2. Any row where either prompt is still at a sink is zeroed.
* **adding**: the vector stays front-aligned, so its zero rows land on the user prompt's BOS
  and first token, the positions where this model's sinks sit, and only the content rows are
  added after them. Sinks later in a user prompt (``" the"``) are not detected at run time.

The result is an ordinary :class:`~actlens.SteeringVector` (its ``notes`` say what was done),
so ``steer``, ``generate`` and every analysis take it unchanged.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import TransformerBridge

from actlens.analysis.norms import default_reference_texts, residual_scales
from actlens.core import prompts
from actlens.core import validation as _validation
from actlens.models.activations import resid_pre
from actlens.models.model import check_layer, identity, n_layers
from actlens.vectors import SteeringVector

DEFAULT_THRESHOLD = 4.0
"""Norm / median ratio at which a position counts as a sink. Ordinary tokens stay below ~2.5
in SmolLM2 (measured: a double-space token at 2.6); its sinks reach 4-10x, BOS ~180x."""


def _threshold(value: object) -> float:
    value = _validation.finite("threshold", value)
    if value <= 1.0:
        raise ValueError(f"threshold must be > 1 (a multiple of the median residual norm), got {value}; try 4.0")
    return value


def _ratios(model: TransformerBridge, rows: Sequence[Sequence[int]], layers: Sequence[int],
            medians: Tensor) -> list[Float[Tensor, "layer _pos"]]:
    """``‖resid_pre‖ / median`` per layer and position for each token row (one forward per row group)."""
    out: list[Tensor] = []
    for i in range(0, len(rows), 16):
        batch = prompts.left_pad([list(r) for r in rows[i:i + 16]], prompts.pad_token_id(model))
        with torch.inference_mode():
            acts = resid_pre(model, batch.tokens, list(layers), batch.attention_mask)
        norms = torch.stack([torch.linalg.vector_norm(acts[layer].float(), dim=-1).cpu() for layer in layers], 1)
        if not bool(torch.isfinite(norms).all()):
            raise ValueError("the model returned non-finite residuals; check its weights and dtype "
                             "(float16 overflows in some models: try float32 or bfloat16)")
        for row, (start, length) in enumerate(zip(batch.starts, batch.lengths, strict=True)):
            out.append(norms[row, :, start:start + length] / medians[:, None])
    return out


@dataclass(frozen=True)
class SinkReport:
    """Residual norms relative to each layer's median, and the positions above ``threshold``.

    ``ratios[i]`` is ``[layer, pos]`` for text i (BOS = position 0); ``medians`` the per-layer
    median of reference text (positions after BOS).
    """

    texts: tuple[str, ...]
    layers: tuple[int, ...]
    threshold: float
    medians: Float[Tensor, " layer"]
    ratios: tuple[Float[Tensor, "layer _pos"], ...]  # texts differ in length: pos is not shared
    token_strings: tuple[tuple[str, ...], ...]
    model_name: str

    def to_frame(self) -> pd.DataFrame:
        """One row per flagged (text, layer, position): ``layer, position, token, ratio, norm, text``."""
        records = []
        for i, ratio in enumerate(self.ratios):
            for li, p in (ratio >= self.threshold).nonzero().tolist():
                records.append(dict(layer=self.layers[li], position=p, token=self.token_strings[i][p],
                                    ratio=float(ratio[li, p]), norm=float(ratio[li, p] * self.medians[li]), text=i))
        return pd.DataFrame.from_records(records, columns=["layer", "position", "token", "ratio", "norm", "text"])

    def max_ratio(self) -> Float[Tensor, "layer pos"]:
        """Largest ratio over texts per layer and position (positions beyond a text's end count as 0)."""
        width = max(r.shape[1] for r in self.ratios)
        padded = [torch.nn.functional.pad(r, (0, width - r.shape[1])) for r in self.ratios]
        return torch.stack(padded).amax(0)

    def profile(self) -> pd.DataFrame:
        """The heatmap behind the sinks figure, long form: one row per (layer, position) with the largest
        ratio over the texts that reach that position and whether it is at or above the threshold.

        Unlike :meth:`to_frame` it is never empty, so a model without sinks still shows its norm profile.

        >>> from actlens.models.tiny import tiny_model
        >>> sinks(tiny_model(), ["I think so"], threshold=1e9).profile().columns.tolist()
        ['layer', 'position', 'max_ratio', 'flagged']
        """
        ratio = self.max_ratio()
        records = [dict(layer=layer, position=p, max_ratio=float(ratio[li, p]),
                        flagged=bool(ratio[li, p] >= self.threshold))
                   for li, layer in enumerate(self.layers) for p in range(ratio.shape[1])]
        return pd.DataFrame.from_records(records, columns=["layer", "position", "max_ratio", "flagged"])

    def positions(self, *, min_share: float = 0.5) -> list[int]:
        """Positions flagged (at some layer) in at least ``min_share`` of the texts that reach them.

        >>> from actlens.models.tiny import tiny_model
        >>> sinks(tiny_model(), ["I think so", "The end"], threshold=1.01).positions(min_share=2.0)
        []
        """
        out = []
        width = max(r.shape[1] for r in self.ratios)
        for p in range(width):
            reach = [r for r in self.ratios if r.shape[1] > p]
            share = sum(bool((r[:, p] >= self.threshold).any()) for r in reach) / len(reach)
            if share >= min_share:
                out.append(p)
        return out

    def tokens(self) -> pd.DataFrame:
        """Per token string: how often it is flagged, where, and its largest ratio (position 0 left out)."""
        frame = self.to_frame()
        frame = frame[frame.position > 0]
        if frame.empty:
            return pd.DataFrame(columns=["token", "n_flags", "max_ratio", "positions"])
        grouped = frame.groupby("token")
        return pd.DataFrame(dict(n_flags=grouped.size(), max_ratio=grouped.ratio.max(),
                                 positions=grouped.position.agg(lambda s: sorted(set(s))))).reset_index(
        ).sort_values("max_ratio", ascending=False, ignore_index=True)


def sinks(
    model: TransformerBridge,
    texts: str | Sequence[str] | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    layers: Sequence[int] | None = None,
    reference_texts: Sequence[str] | None = None,
) -> SinkReport:
    """Massive-activation positions: ``‖resid_pre‖ >= threshold × median`` at a layer.

    Args:
        texts: texts to scan (default: the shipped reference texts).
        threshold: the ratio to the layer's median above which a position is a sink.
        layers: layers to scan (default: all).
        reference_texts: texts defining each layer's median (default: the shipped set).

    >>> from actlens.models.tiny import tiny_model
    >>> report = sinks(tiny_model(), ["I think so"], threshold=1.5)
    >>> report.to_frame().columns.tolist()[:4]
    ['layer', 'position', 'token', 'ratio']
    """
    threshold = _threshold(threshold)
    texts = list(default_reference_texts()) if texts is None else _validation.texts("texts", texts)
    total = n_layers(model)
    layers = list(range(total)) if layers is None else [check_layer(model, layer) for layer in layers]
    if not layers:
        raise ValueError(f"layers is empty; pass layers in [0, {total}) or None for all")
    medians = residual_scales(model, reference_texts)[layers]
    rows = [prompts.encode(model, t) for t in texts]
    ratios = _ratios(model, rows, layers, medians)
    strings = tuple(tuple(model.tokenizer.decode([i]) for i in r) for r in rows)
    return SinkReport(tuple(texts), tuple(layers), threshold, medians, tuple(ratios), strings, identity(model).name)


@dataclass(frozen=True)
class Touch:
    """A row of an ActAdd vector where the plus or minus prompt sits on a sink."""

    position: int
    plus_token: str
    minus_token: str
    plus_ratio: float
    minus_ratio: float
    row_ratio: float  # ‖Δ[position]‖ / median


def touched(model: TransformerBridge, vector: SteeringVector, *, threshold: float = DEFAULT_THRESHOLD
            ) -> list[Touch]:
    """Rows of an ActAdd-style vector (one pair, per-position) read at a sink, zero rows left out.

    >>> from actlens.models.tiny import tiny_model
    >>> from actlens.vectors import actadd_vector
    >>> model = tiny_model()
    >>> touched(model, actadd_vector(model, "Love", "Hate", layer=1), threshold=1e6)
    []
    """
    threshold = _threshold(threshold)
    vector.require_site(where="touched (it reads sinks in resid_pre)")
    if len(vector.plus_tokens) != 1 or len(vector.minus_tokens) != 1 or vector.k != len(vector.plus_tokens[0]):
        raise ValueError(f"touched() needs a per-position vector of one prompt pair (ActAdd); this one is "
                         f"{vector.kind} with k={vector.k}. For a one-row vector added at every position, see "
                         "sinks(model).tokens(): it is added to whatever sinks a prompt has")
    median = residual_scales(model)[vector.layer: vector.layer + 1]
    plus, minus = _ratios(model, [vector.plus_tokens[0], vector.minus_tokens[0]], [vector.layer], median)
    row = vector.norms() / float(median[0])
    decode = model.tokenizer.decode
    return [Touch(p, decode([vector.plus_tokens[0][p]]), decode([vector.minus_tokens[0][p]]), float(plus[0, p]),
                  float(minus[0, p]), float(row[p]))
            for p in range(vector.k)
            if float(row[p]) > 0 and max(float(plus[0, p]), float(minus[0, p])) >= threshold]


def sink_aware_actadd(
    model: TransformerBridge,
    plus: str,
    minus: str,
    layer: int,
    *,
    prefix: str = "\n",
    threshold: float = DEFAULT_THRESHOLD,
) -> SteeringVector:
    """ActAdd with sink positions left out when reading and when adding (see the module docstring).

    Returns a front-aligned vector ``[BOS, prefix..., pair content...]`` whose BOS and prefix
    rows are exactly zero and whose remaining sink rows are zeroed.

    >>> from actlens.models.tiny import tiny_model
    >>> model = tiny_model()
    >>> v = sink_aware_actadd(model, "Love", "Hate", layer=1)
    >>> v.k, float(v.norms()[:2].abs().max())     # BOS + "\\n" rows are zero, then 4 byte tokens
    (6, 0.0)
    """
    threshold = _threshold(threshold)
    layer = check_layer(model, layer)
    plus, minus = (_validation.texts(n, [t], allow_empty_string=True)[0] for n, t in (("plus", plus), ("minus", minus)))
    if not plus and not minus:
        raise ValueError("plus and minus are both empty; at least the plus prompt needs text")
    head = prompts.encode(model, prefix) if prefix else prompts.encode(model, "")
    if not prompts.encode(model, plus, prepend_bos=False) and not prompts.encode(model, minus, prepend_bos=False):
        raise ValueError(f"plus {plus!r} and minus {minus!r} have no tokens")
    p_ids = head + prompts.encode(model, plus, prepend_bos=False)
    m_ids = head + prompts.encode(model, minus, prepend_bos=False)
    n = max(len(p_ids), len(m_ids))
    median = residual_scales(model)[layer: layer + 1]
    space = prompts.space_pad(model)
    candidates = [(space.token_id, space.source), (head[-1], "prefix token"),
                  (int(model.tokenizer.eos_token_id), "eos_token")] if len(head) > 1 else [(space.token_id, space.source)]
    chosen = None
    for pad_id, source in candidates:
        rows = [p_ids + [pad_id] * (n - len(p_ids)), m_ids + [pad_id] * (n - len(m_ids))]
        ratio = _ratios(model, rows, [layer], median)
        padded = [(j, p) for j, r in enumerate(rows) for p in range(len(r)) if p >= len((p_ids, m_ids)[j])]
        if chosen is None or not any(float(ratio[j][0, p]) >= threshold for j, p in padded):
            chosen = (pad_id, source, rows, ratio)
            if not any(float(ratio[j][0, p]) >= threshold for j, p in padded):
                break
    pad_id, source, rows, ratio = chosen
    acts = resid_pre(model, torch.tensor(rows), [layer])[layer]
    values = (acts[0] - acts[1]).float()
    sink_rows = [p for p in range(len(head), n) if max(float(ratio[0][0, p]), float(ratio[1][0, p])) >= threshold]
    values[sink_rows] = 0.0
    if not bool(values.abs().sum() > 0):
        raise ValueError(
            f"every row of the sink-aware vector for {plus!r} - {minus!r} at layer {layer} is a sink or zero "
            f"(sink rows {sink_rows}); use another prefix, a longer pair, or a higher threshold (now {threshold})")
    return SteeringVector(
        _values=values.clone(), layer=layer, kind="actadd", model=identity(model),
        compatibility_mode=bool(getattr(model, "compatibility_mode", False)), bos_row=True,
        plus=(prefix + plus,), minus=(prefix + minus,), plus_tokens=(tuple(rows[0]),), minus_tokens=(tuple(rows[1]),),
        pad_token_id=pad_id, pad_source=source,
        notes=(f"sink-aware ActAdd: read behind the shared prefix {prefix!r} ({len(head) - 1} token(s) after BOS, rows "
               f"exactly zero); pad {source}; rows zeroed as sinks (ratio >= {threshold:g}): {sink_rows or 'none'}"),
    )


__all__ = ["DEFAULT_THRESHOLD", "SinkReport", "Touch", "sink_aware_actadd", "sinks", "touched"]
