"""Will a direction steer? Pair consistency, held-out separation and anti-steerable prompts.

Evidence on what predicts steerability (Braun et al., "Understanding (Un)Reliability of Steering
Vectors in Language Models", arXiv 2505.22637): a mean-difference vector steers well when the
pair differences point the same way (their cosine to the mean difference) and when positives and
negatives separate along it. And steering is unreliable per input: on some datasets close to
half of the inputs move the wrong way (Tan et al., "Analyzing the Generalization and Reliability
of Steering Vectors", arXiv 2407.12404). :func:`steerability` measures all three for one layer:

* ``consistency``: mean over pairs of ``cos(pos_i - neg_i, mean difference)``, reading each text's
  last token at ``blocks.{layer}.hook_resid_pre`` (as :func:`actlens.mean_diff_vector` does);
* ``separation``: AUROC of held-out positives against held-out negatives projected on the mean
  difference of the *other* pairs (k-fold over pairs, k = min(5, pairs); each fold's scores are
  centred on its training midpoint before pooling);
* with ``prompts``: the share of prompts whose ``metric`` moves *against* the vector when the mean
  difference is added at every position with ``coeff`` (default: one typical residual norm). The
  default metric is the log-odds of the pairs' contrasting tokens (the first token where each
  positive and negative differ, e.g. " love" / " hate") for the next token after the prompt.

The verdict's thresholds (AUROC 0.7, consistency 0.2) are heuristics of this module, not values
from the papers, which report correlations.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import TransformerBridge

from actlens.analysis.norms import coeff_from_units
from actlens.core import prompts as _prompts
from actlens.core import validation as _validation
from actlens.models.activations import resid_pre
from actlens.models.model import check_layer
from actlens.steering.generation import steered_logits
from actlens.vectors import SteeringVector, mean_diff_vector

Metric = Callable[[Float[Tensor, "prompt d_vocab"]], Float[Tensor, " prompt"]]
"""Next-token logits after each prompt -> one score per prompt (higher = more like the positives)."""


def check_pairs(pairs: object) -> list[tuple[str, str]]:
    """At least two (positive, negative) pairs of non-empty, different strings."""
    if isinstance(pairs, str) or not isinstance(pairs, Sequence):
        raise TypeError(f"pairs must be a list of (positive, negative) string pairs, got {type(pairs).__name__}")
    if not pairs:
        raise ValueError("pairs is empty; pass at least two (positive, negative) pairs, e.g. "
                         "[('I love it', 'I hate it'), ('Great day', 'Awful day')]")
    out = []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, tuple | list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise TypeError(f"pairs[{i}] must be a (positive, negative) pair of strings, got {pair!r}")
        pos, neg = pair
        if not pos.strip() or not neg.strip():
            raise ValueError(f"pairs[{i}] is one-sided ({pos!r}, {neg!r}): both the positive and the negative need "
                             "text; for a topic without an opposite, contrast it with another topic")
        if pos == neg:
            raise ValueError(f"pairs[{i}] has the same text on both sides ({pos!r}); a pair must differ")
        out.append((pos, neg))
    if len(out) < 2:
        raise ValueError(f"need at least 2 pairs (separation is measured on held-out pairs), got {len(out)}")
    return out


def last_token_reads(model: TransformerBridge, texts: Sequence[str], layers: Sequence[int], *, batch_size: int = 16
                     ) -> dict[int, Float[Tensor, "text d_model"]]:
    """The last token's ``resid_pre`` of each text at each layer, in float32 on the CPU.

    >>> from actlens.models.tiny import tiny_model
    >>> tuple(last_token_reads(tiny_model(), ["a b", "c"], [1])[1].shape)
    (2, 64)
    """
    rows = [_prompts.encode(model, t) for t in texts]
    found: dict[int, list[Tensor]] = {layer: [] for layer in layers}
    for i in range(0, len(rows), batch_size):
        batch = _prompts.left_pad(rows[i:i + batch_size], _prompts.pad_token_id(model))
        acts = resid_pre(model, batch.tokens, list(layers), batch.attention_mask)
        for layer in layers:
            found[layer].append(acts[layer][:, -1].float().cpu())  # left-padded: the last column is real
    out = {layer: torch.cat(parts) for layer, parts in found.items()}
    if not all(bool(torch.isfinite(v).all()) for v in out.values()):
        raise ValueError("the model returned non-finite residuals for these texts; check its weights and dtype")
    return out


def auroc(pos: Tensor, neg: Tensor) -> float:
    """P(a positive scores above a negative), ties counting half.

    >>> auroc(torch.tensor([2.0, 3.0]), torch.tensor([1.0, 2.0]))
    0.875
    """
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).float() + 0.5 * (diff == 0).float()).mean())


def _separation(pos: Tensor, neg: Tensor, folds: int) -> float:
    n = pos.shape[0]
    scores_p, scores_n = [], []
    for f in range(folds):
        held = [i for i in range(n) if i % folds == f]
        train = [i for i in range(n) if i % folds != f]
        direction = (pos[train] - neg[train]).mean(0)
        direction = direction / direction.norm().clamp_min(1e-12)
        mid = 0.5 * ((pos[train] @ direction).mean() + (neg[train] @ direction).mean())
        scores_p.append(pos[held] @ direction - mid)
        scores_n.append(neg[held] @ direction - mid)
    return auroc(torch.cat(scores_p), torch.cat(scores_n))


def contrast_metric(model: TransformerBridge, pairs: Sequence[tuple[str, str]]) -> Metric:
    """Mean over pairs of ``log p(positive token) - log p(negative token)`` for the next token.

    The tokens are each pair's first differing tokens (without BOS); pairs whose texts differ only
    in length contribute nothing.
    """
    tokens = []
    for pos, neg in pairs:
        a, b = _prompts.encode(model, pos, prepend_bos=False), _prompts.encode(model, neg, prepend_bos=False)
        first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
        if first is not None:
            tokens.append((a[first], b[first]))
    if not tokens:
        raise ValueError("no pair has a differing token to contrast; pass metric= yourself")
    plus = torch.tensor([t for t, _ in tokens])
    minus = torch.tensor([t for _, t in tokens])

    def metric(logits: Tensor) -> Tensor:
        lp = torch.log_softmax(logits.float(), dim=-1)
        return (lp[:, plus.to(lp.device)] - lp[:, minus.to(lp.device)]).mean(-1).cpu()

    return metric


@dataclass(frozen=True)
class Steerability:
    """The report of :func:`steerability`; ``to_frame()`` is one row."""

    layer: int
    n_pairs: int
    consistency: float
    pair_cosines: Float[Tensor, " pair"]
    separation: float
    folds: int
    coeff: float | None
    prompt_shifts: Float[Tensor, " prompt"] | None
    anti_steerable: float | None
    verdict: str

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([dict(layer=self.layer, n_pairs=self.n_pairs, consistency=self.consistency,
                                  separation=self.separation, coeff=self.coeff, anti_steerable=self.anti_steerable,
                                  mean_shift=None if self.prompt_shifts is None else float(self.prompt_shifts.mean()),
                                  verdict=self.verdict)])

    def __str__(self) -> str:
        return self.verdict


def _verdict(consistency: float, separation: float, anti: float | None, n_prompts: int, coeff: float | None) -> str:
    if separation < 0.7:
        head = f"unlikely to steer: held-out pairs barely separate along the direction (AUROC {separation:.2f})"
    elif consistency < 0.2:
        head = (f"weak: positives and negatives separate (AUROC {separation:.2f}) but the pair differences disagree "
                f"(consistency {consistency:.2f})")
    else:
        head = f"promising: consistent pair differences ({consistency:.2f}) that separate held-out pairs (AUROC {separation:.2f})"
    if anti is not None:
        head += f"; {round(anti * n_prompts)} of {n_prompts} prompts ({anti:.0%}) move against it at coeff {coeff:.3g}"
    return head


def steerability(
    model: TransformerBridge,
    pairs: Sequence[tuple[str, str]],
    layer: int,
    *,
    prompts: Sequence[str] | None = None,
    metric: Metric | None = None,
    coeff: float | None = None,
) -> Steerability:
    """Consistency, held-out separation and (with ``prompts``) the anti-steerable share at ``layer``.

    >>> from actlens.models.tiny import tiny_model
    >>> pairs = [("I love it", "I hate it"), ("a good day", "a bad day"), ("so happy", "so sad")]
    >>> report = steerability(tiny_model(), pairs, layer=2, prompts=["The film was", "My day"])
    >>> 0 <= report.separation <= 1, report.anti_steerable in (0.0, 0.5, 1.0)
    (True, True)
    """
    pairs = check_pairs(pairs)
    layer = check_layer(model, layer)
    reads = last_token_reads(model, [p for p, _ in pairs] + [n for _, n in pairs], [layer])[layer]
    pos, neg = reads[:len(pairs)], reads[len(pairs):]
    diffs = pos - neg
    mean = diffs.mean(0)
    cosines = torch.nn.functional.cosine_similarity(diffs, mean[None], dim=-1)
    folds = min(5, len(pairs))
    separation = _separation(pos, neg, folds)
    shifts = anti = None
    if prompts is not None:
        prompts = _validation.texts("prompts", prompts)
        vector = mean_diff_vector(model, pairs, layer)
        coeff = coeff_from_units(model, vector, 1.0) if coeff is None else _validation.finite("coeff", coeff)
        shifts = prompt_shifts(model, vector, coeff, prompts, metric or contrast_metric(model, pairs))
        anti = float((shifts < 0).float().mean())
    elif metric is not None or coeff is not None:
        raise ValueError("metric= and coeff= measure prompts; pass prompts=[...] as well")
    return Steerability(layer, len(pairs), float(cosines.mean()), cosines, separation, folds, coeff, shifts, anti,
                        _verdict(float(cosines.mean()), separation, anti, len(prompts or []), coeff))


def prompt_shifts(model: TransformerBridge, vector: SteeringVector, coeff: float, prompts: Sequence[str],
                  metric: Metric) -> Float[Tensor, " prompt"]:
    """``metric(steered) - metric(unsteered)`` per prompt, next-token logits, the vector added at every position."""
    align = "all" if vector.k == 1 else "front"
    base, _ = steered_logits(model, list(prompts))
    steered, _ = steered_logits(model, list(prompts), vector, coeff, align=align)
    shifts = torch.as_tensor(metric(steered[:, -1]), dtype=torch.float32) - torch.as_tensor(
        metric(base[:, -1]), dtype=torch.float32)
    if shifts.shape != (len(prompts),):
        raise ValueError(f"metric must return one score per prompt, shape ({len(prompts)},); got {tuple(shifts.shape)}")
    if not bool(torch.isfinite(shifts).all()):
        raise ValueError("the metric is not finite for some prompts (the steered model gave NaN/inf logits?); "
                         "try a smaller coeff")
    return shifts


__all__ = ["Metric", "Steerability", "auroc", "check_pairs", "contrast_metric", "last_token_reads", "prompt_shifts",
           "steerability"]
