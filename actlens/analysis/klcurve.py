"""Mean per-token KL against the steering coefficient, at little more than the cost of one forward.

``kl_curve(model, texts, vector, coeffs)`` gives, for every coefficient, the number
``kl_per_token(model, texts, vector, c, control=False).summary().mean_kl`` gives for that
coefficient alone: the mean of ``KL(steered ‖ unsteered)`` of the next-token distribution over
the positions :func:`actlens.kl_per_token` counts (real tokens, not BOS, not an injection
position unless ``align="all"``). It is cheaper in three ways:

* the unsteered forward runs once per chunk of texts, and the same pass keeps the residual
  entering the vector's layer L (``blocks.L.hook_resid_pre``);
* each steered run starts the fast tree *at layer L* from that cached residual plus the
  addition (layers below L cannot see the vector, so recomputing them per coefficient is waste);
* coefficients share the batch dimension: a group of coefficients is one forward of
  ``len(group) × texts`` rows.

Starting at layer L is done on the Hugging Face fast tree (:func:`actlens.models.model.decoder_layers`):
the layers below L return their input unchanged and layer L's input is replaced by the steered
residual. As :mod:`actlens.models.readout` does for its split, this is used only where it is exact:
on first use per model and layer the resumed forward is compared with a full forward, and a
model where they differ (or that has no fast tree: compatibility mode, native models) gets one
full steered forward per coefficient instead, still with the unsteered run shared.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor
from transformer_lens import TransformerBridge

from actlens.analysis.kl import block_rows, kl_from_log_probs, log_probs, masked_mean
from actlens.core import positions
from actlens.core import validation as _validation
from actlens.core.types import Align, ShortPrompt
from actlens.models.model import hook_name, padding
from actlens.models.resume import resumable, resumed
from actlens.steering import chunked
from actlens.steering.intervene import addition, make_hook
from actlens.vectors import SteeringVector, check_vector

RESID_BUDGET = 256 * 2**20  # bytes of [rows, pos, d_model] residual per grouped forward


@dataclass(frozen=True)
class KLCurve:
    """Mean per-token KL(steered ‖ unsteered) per coefficient; ``per_text[j, i]`` is text i's mean at ``coeffs[j]``."""

    coeffs: tuple[float, ...]
    mean_kl: Float[Tensor, " coeff"]
    per_text: Float[Tensor, "coeff text"]
    counted: Bool[Tensor, "text pos"]
    texts: tuple[str, ...]
    layer: int
    align: str
    position: int | None
    resumed: bool  # True when steered runs started at the vector's layer
    model_name: str

    def to_frame(self) -> pd.DataFrame:
        """One row per coefficient: ``coeff``, ``mean_kl``, ``n_positions``."""
        n = int(self.counted.sum())
        return pd.DataFrame(dict(coeff=list(self.coeffs), mean_kl=self.mean_kl.tolist(), n_positions=n))

    def per_text_frame(self) -> pd.DataFrame:
        """One row per (coefficient, text): ``coeff``, ``text``, ``mean_kl``."""
        return pd.DataFrame([dict(coeff=c, text=i, mean_kl=float(self.per_text[j, i]))
                             for j, c in enumerate(self.coeffs) for i in range(len(self.texts))])


def _coeffs(coeffs: object) -> list[float]:
    if isinstance(coeffs, str) or not isinstance(coeffs, Sequence | range | Tensor):
        raise TypeError(f"coeffs must be a list of numbers such as [0.5, 1, 2, 4], got {coeffs!r}")
    out = [_validation.finite(f"coeffs[{i}]", float(c) if isinstance(c, Tensor) else c) for i, c in enumerate(coeffs)]
    if not out:
        raise ValueError("coeffs is empty; pass at least one coefficient, e.g. [0.5, 1, 2, 4]")
    return out


def kl_curve(
    model: TransformerBridge,
    texts: str | Sequence[str],
    vector: SteeringVector,
    coeffs: Sequence[float],
    *,
    align: Align = "front",
    position: int | None = None,
    batch_size: int = 8,
    short_prompt: ShortPrompt = "error",
) -> KLCurve:
    """Mean per-token ``KL(steered ‖ unsteered)`` for every coefficient (see the module docstring).

    >>> from actlens.models.tiny import tiny_model
    >>> from actlens.vectors import actadd_vector
    >>> model = tiny_model()
    >>> v = actadd_vector(model, "Love", "Hate", layer=1)
    >>> curve = kl_curve(model, ["I think that you are", "The weather is"], v, [0.0, 2.0, 8.0])
    >>> curve.to_frame().columns.tolist()[:2], bool(curve.mean_kl[0] < 1e-6 < curve.mean_kl[1] < curve.mean_kl[2])
    (['coeff', 'mean_kl'], True)
    """
    vector = check_vector(model, vector).require_site(where="kl_curve (it resumes the forward at resid_pre)")
    coeffs = _coeffs(coeffs)
    adds = [addition(model, vector, c, align, position) for c in coeffs]
    texts, batch = chunked.encode_texts(model, texts, adds[0], short_prompt)
    injected = positions.injected(adds[0].placement, batch.layout)
    real = positions.real(batch.layout, skip_bos=True)
    counted = real & ~injected if align != "all" else real
    layer = vector.layer
    fast = resumable(model, layer)
    kl = None  # [coeff, text, pos] on the final residual's device; copied to the CPU once, after the loop
    width = batch.tokens.shape[1]
    with torch.inference_mode():
        for chunk in chunked.chunks(batch, batch_size):
            got: list[Tensor] = []
            capture = [(hook_name(layer), lambda r, hook: got.append(r))] if fast else []
            with model.hooks(fwd_hooks=capture):
                base, head = chunked.hidden(model, chunk)
            local, target = chunked.real_index(chunk, width, base.device)
            if kl is None:
                kl = torch.zeros(len(coeffs), *batch.tokens.shape, device=base.device)
            base = base.flatten(0, 1).index_select(0, local)
            rows = len(chunk.starts)
            per_coeff = rows * chunk.tokens.shape[1] * int(model.cfg.d_model) * 4
            group = max(1, min(len(coeffs), RESID_BUDGET // max(per_coeff, 1))) if fast else 1
            for g in range(0, len(coeffs), group):
                part = list(range(g, min(g + group, len(coeffs))))
                if fast:
                    steered = _steered_from(model, layer, got[-1], chunk, [adds[j] for j in part])
                    runs = [steered[k * rows:(k + 1) * rows].flatten(0, 1).index_select(0, local)
                            for k in range(len(part))]
                else:
                    runs = [chunked.hidden(model, chunk, vector, coeffs[j], align, position)[0].flatten(0, 1)
                            .index_select(0, local) for j in part]
                # A non-finite steered residual gives NaN log-probabilities, and NaN stays NaN through the KL
                # (kl.py's 0·log 0 convention masks p = 0 only), so the check after the loop catches it.
                blocks = _block_kl(head, base, runs, block_rows(base.device, model.cfg.d_vocab))
                for j, values in zip(part, blocks, strict=True):
                    kl[j].view(-1).index_copy_(0, target, values)
    kl = chunked.to_host(kl)
    if not bool(torch.isfinite(kl).all()):
        bad = [c for j, c in enumerate(coeffs) if not bool(torch.isfinite(kl[j]).all())]
        raise ValueError(f"the model produced non-finite activations or KL at coefficients {bad}; the steered "
                         "forward overflowed or gave NaN (try smaller coefficients, or float32 weights)")
    n_text = counted.sum(1).clamp_min(1)
    per_text = (kl * counted).sum(-1) / n_text
    mean = torch.tensor([masked_mean(kl[j], counted) for j in range(len(coeffs))])
    return KLCurve(tuple(coeffs), mean, per_text, counted, tuple(texts), layer, align, position, fast,
                   vector.model.name)


def _steered_from(model: TransformerBridge, layer: int, resid: Tensor, chunk, adds) -> Tensor:
    """Final hidden states of ``len(adds)`` steered copies of a chunk, stacked on the batch dimension."""
    pos = positions.Positions(past=0, starts=list(chunk.starts), lengths=list(chunk.lengths))
    inputs = torch.cat([make_hook([add], pos)(resid, hook=None) for add in adds])  # the steering hook's own sum
    n = len(adds)
    tokens, mask = chunk.tokens.repeat(n, 1), chunk.attention_mask.repeat(n, 1)
    with padding(model, list(chunk.starts) * n, list(chunk.lengths) * n):
        out = resumed(model, layer, inputs, tokens, mask)
    if out is None:
        raise RuntimeError("the resumed forward did not reach the unembedding (it did when actlens checked it)")
    return out


def _block_kl(head, base: Float[Tensor, "n d"], runs: Sequence[Float[Tensor, "n d"]], rows: int
              ) -> list[Float[Tensor, " n"]]:
    """Per-position KL(run ‖ base) for each run, ``rows`` positions at a time
    (:func:`actlens.analysis.kl.block_rows`), as kl_per_token computes it; a block's unsteered log-probabilities
    are computed once for all runs."""
    n = base.shape[0]
    out = [torch.empty(n, device=base.device) for _ in runs]  # stays on the device: no copy per block
    for a in range(0, n, rows):
        b = min(a + rows, n)
        lb = log_probs(head(base[a:b]))
        for run, values in zip(runs, out, strict=True):
            values[a:b] = kl_from_log_probs(log_probs(head(run[a:b])), lb)
    return out


__all__ = ["KLCurve", "kl_curve", "resumable"]
