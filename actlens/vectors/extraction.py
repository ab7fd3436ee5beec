"""Steering vectors: ActAdd's per-position pair difference and CAA-style mean differences.

Extraction at many layers takes one forward (:func:`actadd_vectors`, :func:`mean_diff_vectors`);
the one-layer functions use it. The vectors are :class:`SteeringVector` objects (immutable,
with their provenance; save / load, :func:`random_like`), defined in
:mod:`actlens.vectors.steering_vector` and re-exported here with :func:`from_values` and
:func:`check_vector`.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformer_lens import TransformerBridge

from actlens.core import prompts
from actlens.core import validation as _validation
from actlens.core.types import ReadPosition, Site
from actlens.models.activations import activations
from actlens.models.model import check_layer, check_site, n_layers
from actlens.vectors.steering_vector import FORMAT, SteeringVector, check_vector, from_values, random_like


def _layers(model: TransformerBridge, layers: Sequence[int]) -> list[int]:
    return _validation.layers(list(layers), n_layers(model))


def actadd_vector(
    model: TransformerBridge, plus: str, minus: str, layer: int, *, pad: str = "space", site: Site = "resid_pre"
) -> SteeringVector:
    """ActAdd (Turner et al. 2023, Algorithm 1): ``resid_pre(plus) - resid_pre(minus)`` per position.

    Both prompts get BOS; the shorter is right-padded at token level with the model's space
    token (``pad="space"``; see :func:`actlens.core.prompts.space_pad` for the fallback) or with
    EOS (``pad="eos"``, which the authors found works worse). ``site`` reads (and the vector
    will be added at) another hook point of the layer: ``resid_mid``, ``resid_post``,
    ``attn_out`` or ``mlp_out`` (README, "Sites").

    >>> from actlens.models.tiny import tiny_model
    >>> v = actadd_vector(tiny_model(), "Love", "Hate", layer=2)
    >>> v.k, bool(v.values[0].abs().max() == 0)   # BOS row cancels
    (5, True)
    """
    layer = check_layer(model, layer)
    return actadd_vectors(model, plus, minus, [layer], pad=pad, site=site)[layer]


def actadd_vectors(
    model: TransformerBridge, plus: str, minus: str, layers: Sequence[int], *, pad: str = "space",
    site: Site = "resid_pre",
) -> dict[int, SteeringVector]:
    """:func:`actadd_vector` at each of ``layers``, from one forward of the pair.

    >>> from actlens.models.tiny import tiny_model
    >>> model = tiny_model()
    >>> vs = actadd_vectors(model, "Love", "Hate", [1, 3])
    >>> vs[3] == actadd_vector(model, "Love", "Hate", 3)
    True
    """
    _validation.choice("pad", pad, ("space", "eos"))
    site = check_site(model, site)
    layers = _layers(model, layers)
    plus_s, minus_s = (_validation.texts(n, [t], allow_empty_string=True)[0] for n, t in (("plus", plus), ("minus", minus)))
    _validation.actadd_pair(plus_s, minus_s)
    plus_ids, minus_ids = prompts.encode(model, plus_s), prompts.encode(model, minus_s)
    fill = prompts.space_pad(model) if pad == "space" else prompts.SpacePad(int(model.tokenizer.eos_token_id), "eos_token")
    n = max(len(plus_ids), len(minus_ids))
    plus_ids += [fill.token_id] * (n - len(plus_ids))
    minus_ids += [fill.token_id] * (n - len(minus_ids))
    _validation.distinct_tokens(plus_s, minus_s, plus_ids, minus_ids)
    acts = activations(model, torch.tensor([plus_ids, minus_ids]), layers, site=site)
    return {layer: from_values(model, layer, acts[layer][0] - acts[layer][1], "actadd", bos_row=True, plus=(plus_s,),
                         minus=(minus_s,), plus_tokens=(tuple(plus_ids),), minus_tokens=(tuple(minus_ids),),
                         pad_token_id=fill.token_id, pad_source=fill.source, site=site)
            for layer in layers}


def _read(model, texts: list[str], layers: list[int], read_position: ReadPosition | int, batch_size: int,
          site: str = "resid_pre") -> tuple[dict[int, Tensor], list[list[int]]]:
    """One activation per text at ``read_position`` for each layer: {layer: [n, d_model]}, and the token ids."""
    rows = [prompts.encode(model, t) for t in texts]
    out: dict[int, list[Tensor]] = {layer: [] for layer in layers}
    for i in range(0, len(rows), batch_size):
        batch = prompts.left_pad(rows[i:i + batch_size], prompts.pad_token_id(model))
        acts = activations(model, batch.tokens, layers, batch.attention_mask, site=site)
        for row, start in enumerate(batch.starts):
            first = start + 1 if len(rows[i + row]) > 1 else start  # skip BOS (an empty text is read at it)
            n_real = batch.tokens.shape[1] - first
            if not isinstance(read_position, str) and not -n_real <= read_position < n_real:
                raise ValueError(
                    f"read_position {read_position} is outside text {texts[i + row]!r}, which has "
                    f"{n_real} tokens after BOS"
                )
            for layer in layers:
                real = acts[layer][row, first:]
                if read_position == "last":
                    out[layer].append(real[-1])
                elif read_position == "mean":
                    out[layer].append(real.mean(0))
                else:
                    out[layer].append(real[read_position])
    return {layer: torch.stack(found).float() for layer, found in out.items()}, rows


def read_texts(model: TransformerBridge, texts: Sequence[str], layer: int, *,
               read_position: ReadPosition | int = "last", batch_size: int = 16) -> Tensor:
    """One activation per text at ``blocks.{layer}.hook_resid_pre``, read as :func:`mean_diff_vector` reads them.

    >>> from actlens.models.tiny import tiny_model
    >>> tuple(read_texts(tiny_model(), ["I love it", "Great"], 1, read_position="mean").shape)
    (2, 64)
    """
    return read_texts_at(model, texts, [layer], read_position=read_position, batch_size=batch_size)[layer]


def read_texts_at(model: TransformerBridge, texts: Sequence[str], layers: Sequence[int], *,
                  read_position: ReadPosition | int = "last", batch_size: int = 16) -> dict[int, Tensor]:
    """:func:`read_texts` at each of ``layers``, from one pass over the texts: ``{layer: [n, d_model]}``.

    >>> from actlens.models.tiny import tiny_model
    >>> sorted(read_texts_at(tiny_model(), ["I love it", "Great"], [0, 2]))
    [0, 2]
    """
    layers = _layers(model, layers)
    if isinstance(read_position, str):
        _validation.choice("read_position", read_position, ("last", "mean"))
    texts = _validation.texts("texts", texts)
    return _read(model, texts, layers, read_position, _validation.positive_int("batch_size", batch_size))[0]


@dataclass(frozen=True)
class PairReads:
    """Both sides of contrast pairs read at one layer: ``[n_pairs, d_model]`` each, with texts and token ids."""

    positives: list[str]
    negatives: list[str]
    pos: Tensor
    neg: Tensor
    pos_ids: list[list[int]]
    neg_ids: list[list[int]]

    def mean_diff_norm(self) -> float:
        """The norm of the pairs' mean difference: the scale one-row directions (PCA, probe) are given, so their
        coefficients compare with the mean difference's. Zero leaves no scale or sign: an error."""
        scale = float(torch.linalg.vector_norm(self.pos.mean(0) - self.neg.mean(0)))
        if not scale > 0:
            raise ValueError("the pairs' mean difference is zero at this layer and read position, so there is no "
                             "scale (or sign) for a direction; use pairs whose texts differ at the read position")
        return scale

    def provenance(self, read_position: ReadPosition | int) -> dict:
        """The :func:`from_values` keywords that record where the vector came from."""
        return dict(bos_row=False, plus=tuple(self.positives), minus=tuple(self.negatives),
                    plus_tokens=tuple(map(tuple, self.pos_ids)), minus_tokens=tuple(map(tuple, self.neg_ids)),
                    read_position=str(read_position))


def read_pairs(model: TransformerBridge, pairs: Sequence[tuple[str, str]], layer: int, *,
               read_position: ReadPosition | int = "last", batch_size: int = 16, min_pairs: int = 1,
               method: str = "this method") -> PairReads:
    """Read each pair's two texts at ``read_position`` (as :func:`mean_diff_vector` does) for methods that
    need the pairs one by one (PCA, probes): at least ``min_pairs`` pairs, no pair with the same text twice.

    >>> from actlens.models.tiny import tiny_model
    >>> r = read_pairs(tiny_model(), [("I love it", "I hate it"), ("Great", "Awful")], 1)
    >>> tuple(r.pos.shape) == tuple(r.neg.shape) == (2, 64)
    True
    """
    layer = check_layer(model, layer)
    if isinstance(pairs, str) or not isinstance(pairs, Sequence):
        raise TypeError(f"pairs must be a list of (positive, negative) strings, got {type(pairs).__name__}")
    pairs = [_validation.pair(p, name=f"pairs[{i}]") for i, p in enumerate(pairs)]
    if len(pairs) < min_pairs:
        raise ValueError(f"{method} needs at least {min_pairs} pairs, got {len(pairs)}; add pairs (or use "
                         "actlens.mean_diff_vector, which works from one)")
    same = [i for i, (p, n) in enumerate(pairs) if p == n]
    if same:
        raise ValueError(f"pairs {same} have the same text on both sides (e.g. {pairs[same[0]][0]!r}); a pair "
                         "contrasts two different texts: fix or drop them")
    batch_size = _validation.positive_int("batch_size", batch_size)
    if isinstance(read_position, str):
        _validation.choice("read_position", read_position, ("last", "mean"))
    pos = _validation.texts("positives", [p for p, _ in pairs])
    neg = _validation.texts("negatives", [n for _, n in pairs], allow_empty_string=True)
    pos_acts, pos_ids = _read(model, pos, [layer], read_position, batch_size)
    neg_acts, neg_ids = _read(model, neg, [layer], read_position, batch_size)
    return PairReads(pos, neg, pos_acts[layer], neg_acts[layer], pos_ids, neg_ids)


def mean_diff_vector(
    model: TransformerBridge,
    pairs: Sequence[tuple[str, str]],
    layer: int,
    *,
    read_position: ReadPosition | int = "last",
    centre: Sequence[str] | None = None,
    batch_size: int = 16,
    site: Site = "resid_pre",
) -> SteeringVector:
    """Mean difference over contrast pairs (CAA-style): ``mean(resid(pos)) - mean(resid(neg))``.

    Each text is read at ``read_position`` (the last real token, the mean over tokens after
    BOS, or an index counted after BOS). With ``centre`` (a list of reference texts), the
    vector is instead mean-centred (Jorgensen et al. 2023): ``mean(resid(pos)) -
    mean(resid(centre))``, and the negatives may be empty strings. The result has one row;
    apply it with ``align="all"``. ``site`` reads another hook point of the layer (as in :func:`actadd_vector`).

    >>> from actlens.models.tiny import tiny_model
    >>> v = mean_diff_vector(tiny_model(), [("I love it", "I hate it"), ("Great", "Awful")], layer=1)
    >>> v.k
    1
    """
    layer = check_layer(model, layer)
    return mean_diff_vectors(model, pairs, [layer], read_position=read_position, centre=centre,
                             batch_size=batch_size, site=site)[layer]


def mean_diff_vectors(
    model: TransformerBridge,
    pairs: Sequence[tuple[str, str]],
    layers: Sequence[int],
    *,
    read_position: ReadPosition | int = "last",
    centre: Sequence[str] | None = None,
    batch_size: int = 16,
    site: Site = "resid_pre",
) -> dict[int, SteeringVector]:
    """:func:`mean_diff_vector` at each of ``layers``, from one pass over the texts.

    >>> from actlens.models.tiny import tiny_model
    >>> model = tiny_model()
    >>> vs = mean_diff_vectors(model, [("I love it", "I hate it")], [0, 2])
    >>> torch.allclose(vs[2].values, mean_diff_vector(model, [("I love it", "I hate it")], 2).values)
    True
    """
    site = check_site(model, site)
    layers = _layers(model, layers)
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs is empty; pass a list of (positive, negative) strings")
    batch_size = _validation.positive_int("batch_size", batch_size)
    pos = _validation.texts("positives", [p for p, _ in pairs])
    if isinstance(read_position, str):
        _validation.choice("read_position", read_position, ("last", "mean"))
    pos_acts, pos_ids = _read(model, pos, layers, read_position, batch_size, site)
    if centre is not None:
        neg = _validation.texts("centre", centre)
        kind = "mean_centred"
    else:
        # An empty negative (e.g. " weddings" vs "") is read at its BOS, as ActAdd pads it.
        neg = _validation.texts("negatives", [n for _, n in pairs], allow_empty_string=True)
        kind = "mean_diff"
    neg_acts, neg_ids = _read(model, neg, layers, read_position, batch_size, site)
    return {layer: from_values(model, layer, (pos_acts[layer].mean(0) - neg_acts[layer].mean(0))[None], kind,
                         bos_row=False, plus=tuple(pos), minus=tuple(neg), plus_tokens=tuple(map(tuple, pos_ids)),
                         minus_tokens=tuple(map(tuple, neg_ids)), read_position=str(read_position), site=site)
            for layer in layers}

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
