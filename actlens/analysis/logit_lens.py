"""Logit lens of a steering vector: which tokens does it promote and suppress directly?

Each row of the vector (per layer, per position) is projected through the model's final
normalisation and unembedding ``W_U`` (the unembedding bias is left out: it does not
depend on the vector). How the final norm is treated is an explicit, recorded choice,
because a steering vector is not a residual:

* ``norm="residual"``: apply ``ln_final`` to the vector as if it were a residual: its own
  statistics (centre and divide by the std for LayerNorm, divide by the RMS for RMSNorm),
  then the weight (and LayerNorm's bias). Invariant to the coefficient.
* ``norm="scale"``: direction only: multiply by ``ln_final``'s gain (centring first for
  LayerNorm) without dividing by the vector's own norm; scores scale with the vector.
* ``norm="none"``: the raw ``v @ W_U``.

Correct for RMSNorm models (Llama, SmolLM2) and LayerNorm models (GPT-2, TL native LN) in
raw mode; in compatibility mode (folded LN) the gain is all ones and the same code applies.

A vector can steer without decoding to sensible tokens: a vector's direct logit effect is
only one route, and later layers can read it in other ways ("Steerable but Not Decodable",
arXiv 2604.02608). An empty-looking lens is not evidence that steering will fail.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import TransformerBridge

from actlens.core import prompts
from actlens.core import validation as _validation
from actlens.models.model import n_layers
from actlens.vectors import SteeringVector, actadd_vectors, check_vector

Norm = Literal["residual", "scale", "none"]
"""How the final normalisation is applied to the vector (module docstring)."""
NORMS: tuple[str, ...] = get_args(Norm)


@dataclass(frozen=True)
class FinalNorm:
    """The final normalisation's type and affine parameters (float32, CPU)."""

    kind: Literal["rms", "ln"]
    gain: Float[Tensor, " d_model"]
    bias: Float[Tensor, " d_model"] | None


def final_norm(model: TransformerBridge) -> FinalNorm:
    """``ln_final``'s kind and gain/bias, read from its parameters.

    Gemma-style RMSNorm (``x * (1 + weight)``) is recognised by class name.

    >>> from actlens.models.tiny import tiny_model
    >>> final_norm(tiny_model("gpt2")).kind, final_norm(tiny_model("llama")).kind
    ('ln', 'rms')
    """
    ln = model.ln_final
    inner = getattr(ln, "original_component", None)
    names = f"{type(ln).__name__} {type(inner).__name__}"
    norm_type = str(getattr(model.cfg, "normalization_type", "") or "")
    kind: Literal["rms", "ln"] = "rms" if ("RMS" in names or norm_type.upper().startswith("RMS")) else "ln"
    params = dict((inner if inner is not None else ln).named_parameters())
    d_model = int(model.cfg.d_model)
    weight = next((p for n, p in params.items() if n.split(".")[-1] in ("weight", "w")), None)
    bias = next((p for n, p in params.items() if n.split(".")[-1] in ("bias", "b")), None)
    gain = torch.ones(d_model) if weight is None else weight.detach().float().cpu()
    if "Gemma" in names:
        gain = 1.0 + gain
    return FinalNorm(kind, gain, None if bias is None else bias.detach().float().cpu())


def project(
    model: TransformerBridge, values: Float[Tensor, "n d_model"], norm: Norm = "residual"
) -> Float[Tensor, "n d_vocab"]:
    """Direct logit scores of each row of ``values`` (float32; ``W_U`` bias not added).

    >>> from actlens.models.tiny import tiny_model
    >>> model = tiny_model()
    >>> scores = project(model, model.W_U[:, 65][None].detach(), norm="none")
    >>> int(scores.argmax())
    65
    """
    _validation.choice("norm", norm, NORMS)
    if values.ndim != 2 or values.shape[-1] != int(model.cfg.d_model):
        raise ValueError(f"values must have shape [n, {int(model.cfg.d_model)}], got {tuple(values.shape)}")
    with torch.inference_mode():
        w_u = model.W_U.detach().float().cpu()
        x = values.detach().float().cpu()
        if norm == "residual":
            ln_dtype = next(model.ln_final.parameters()).dtype
            device = next(model.ln_final.parameters()).device
            x = model.ln_final(x.to(device=device, dtype=ln_dtype)[None])[0].float().cpu()
        elif norm == "scale":
            fn = final_norm(model)
            if fn.kind == "ln":
                x = x - x.mean(-1, keepdim=True)
            x = x * fn.gain
        return x @ w_u


@dataclass(frozen=True)
class LogitLensResult:
    """Top promoted and suppressed tokens per layer and position.

    ``promoted_*[i, p, r]`` is the r-th highest score of row ``p`` at ``layers[i]``;
    ``suppressed_*`` the r-th lowest (most negative first). Zero rows (the BOS row of an
    ActAdd vector) have ids ``-1``, NaN scores and empty token strings.
    """

    layers: tuple[int, ...]
    norm: str
    top_k: int
    position_labels: tuple[str, ...]
    vector_norms: Float[Tensor, "layer pos"]
    promoted_ids: Int[Tensor, "layer pos top_k"]
    promoted_scores: Float[Tensor, "layer pos top_k"]
    suppressed_ids: Int[Tensor, "layer pos top_k"]
    suppressed_scores: Float[Tensor, "layer pos top_k"]
    promoted_tokens: tuple[tuple[tuple[str, ...], ...], ...]
    suppressed_tokens: tuple[tuple[tuple[str, ...], ...], ...]
    final_norm: str
    source: str
    model_name: str

    def top(self, layer: int, position: int, *, direction: Literal["promoted", "suppressed"] = "promoted"
            ) -> list[tuple[str, float]]:
        """``(token, score)`` pairs for one layer and position."""
        _validation.choice("direction", direction, ("promoted", "suppressed"))
        if layer not in self.layers:
            raise ValueError(f"layer {layer} is not in this result; its layers are {list(self.layers)}")
        i = self.layers.index(layer)
        tokens = (self.promoted_tokens if direction == "promoted" else self.suppressed_tokens)[i][position]
        scores = (self.promoted_scores if direction == "promoted" else self.suppressed_scores)[i, position]
        return list(zip(tokens, scores.tolist(), strict=True))

    def to_frame(self) -> pd.DataFrame:
        """One row per (layer, position, direction, rank); zero rows are left out."""
        records = []
        for i, layer in enumerate(self.layers):
            for p, label in enumerate(self.position_labels):
                if float(self.vector_norms[i, p]) == 0.0:
                    continue
                for direction, ids, scores, toks in (
                    ("promoted", self.promoted_ids, self.promoted_scores, self.promoted_tokens),
                    ("suppressed", self.suppressed_ids, self.suppressed_scores, self.suppressed_tokens),
                ):
                    for r in range(self.top_k):
                        records.append(dict(
                            layer=layer, position=p, position_label=label, direction=direction, rank=r + 1,
                            token_id=int(ids[i, p, r]), token=toks[i][p][r], score=float(scores[i, p, r]),
                            norm=self.norm,
                        ))
        return pd.DataFrame.from_records(records)


def _vectors(model: TransformerBridge, vector_or_pair: object, layers: Sequence[int] | None
             ) -> tuple[list[SteeringVector], str]:
    if isinstance(vector_or_pair, SteeringVector):
        vec = check_vector(model, vector_or_pair)
        if layers is not None and list(layers) != [vec.layer]:
            raise ValueError(f"this vector was extracted at layer {vec.layer}; pass layers=None (or "
                             f"[{vec.layer}]), or pass the (plus, minus) pair to extract at {list(layers)}")
        return [vec], vec.kind
    if isinstance(vector_or_pair, tuple) and len(vector_or_pair) == 2 and all(
            isinstance(p, str) for p in vector_or_pair):
        plus, minus = _validation.pair(vector_or_pair, name="vector_or_pair")
        wanted = _validation.layers(layers, n_layers(model))
        found = actadd_vectors(model, plus, minus, wanted)
        return [found[layer] for layer in wanted], f"actadd {plus!r} − {minus!r}"
    if isinstance(vector_or_pair, Sequence) and vector_or_pair and all(
            isinstance(v, SteeringVector) for v in vector_or_pair):
        if layers is not None:
            raise ValueError("a list of vectors carries its own layers; pass layers=None")
        vecs = [check_vector(model, v, name=f"vector_or_pair[{i}]") for i, v in enumerate(vector_or_pair)]
        if len({v.k for v in vecs}) != 1:
            raise ValueError(f"the vectors have different position counts {[v.k for v in vecs]}; pass vectors "
                             "of one pair (e.g. the same pair at several layers)")
        return vecs, vecs[0].kind
    raise TypeError(
        "vector_or_pair must be a SteeringVector, a list of them, or a (plus, minus) tuple of strings, "
        f"got {type(vector_or_pair).__name__}"
    )


def logit_lens(
    model: TransformerBridge,
    vector_or_pair: SteeringVector | Sequence[SteeringVector] | tuple[str, str],
    *,
    layers: Sequence[int] | None = None,
    norm: Norm = "residual",
    top_k: int = 10,
) -> LogitLensResult:
    """Project a steering vector, per layer and per position, through ``ln_final`` and ``W_U``.

    Args:
        vector_or_pair: a :class:`SteeringVector` (its own layer), a list of vectors, or a
            ``(plus, minus)`` pair, extracted with ActAdd at every layer of ``layers``
            (default all) in one forward.
        norm: ``"residual"`` | ``"scale"`` | ``"none"`` (module docstring); recorded in the result.
        top_k: tokens kept per direction.

    >>> from actlens.models.tiny import tiny_model
    >>> lens = logit_lens(tiny_model(), ("Love", "Hate"), layers=[1, 3], top_k=3)
    >>> tuple(lens.promoted_ids.shape), int(lens.promoted_ids[0, 0, 0])   # BOS row is zero
    ((2, 5, 3), -1)
    """
    _validation.choice("norm", norm, NORMS)
    d_vocab = int(model.cfg.d_vocab)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= d_vocab:
        raise ValueError(f"top_k must be an int in [1, {d_vocab}], got {top_k!r}")
    with torch.inference_mode():
        vecs, source = _vectors(model, vector_or_pair, layers)
    values = torch.stack([v.values.float().cpu() for v in vecs])  # [layer, pos, d_model]
    n_layer, k, d = values.shape
    scores = project(model, values.reshape(-1, d), norm).reshape(n_layer, k, -1)
    norms = torch.linalg.vector_norm(values, dim=-1)
    zero = (norms == 0)[..., None]
    top = scores.topk(top_k, dim=-1)
    bottom = scores.topk(top_k, dim=-1, largest=False)
    nan = torch.tensor(float("nan"))
    p_ids = top.indices.masked_fill(zero, -1)
    s_ids = bottom.indices.masked_fill(zero, -1)
    p_scores = torch.where(zero, nan, top.values)
    s_scores = torch.where(zero, nan, bottom.values)

    def decode(ids: Tensor) -> tuple:
        return tuple(tuple(tuple(model.tokenizer.decode([t]) if t >= 0 else "" for t in row) for row in pos)
                     for pos in ids.tolist())

    first = vecs[0]
    if first.kind == "actadd" and first.plus_tokens:
        plus = prompts.token_strings(model, first.plus_tokens[0])
        minus = prompts.token_strings(model, first.minus_tokens[0])
        labels = tuple(f"{p}: {a!r}/{b!r}" for p, (a, b) in enumerate(zip(plus, minus, strict=True)))
    else:
        labels = tuple(str(p) for p in range(k))
    return LogitLensResult(
        layers=tuple(v.layer for v in vecs), norm=norm, top_k=top_k, position_labels=labels, vector_norms=norms,
        promoted_ids=p_ids, promoted_scores=p_scores, suppressed_ids=s_ids, suppressed_scores=s_scores,
        promoted_tokens=decode(p_ids), suppressed_tokens=decode(s_ids), final_norm=final_norm(model).kind,
        source=source, model_name=first.model.name,
    )


__all__ = ["FinalNorm", "LogitLensResult", "Norm", "final_norm", "logit_lens", "project"]
