"""Layer ablations: where does a steering vector act, and where is its effect carried?

- :func:`inject_each_layer` injects the same recipe (e.g. ActAdd " weddings" - " ") at each
  layer in turn and measures, on the given texts, the mean ``KL(P_steered ‖ P_unsteered)`` and
  the shift in log-probability mass on topic tokens, next to a norm-matched random vector.
- :func:`ablate_downstream` injects at one layer ``l`` and, at each chosen later layer ``j``,
  removes the component of the residual stream along a direction ``u_j`` at every position
  after BOS (``mode="zero"``) or replaces it by its mean over the unsteered run
  (``mode="mean"``). ``u_j`` is the injected vector's own direction (``"injected"``) or the
  mean steered - unsteered residual difference measured at layer ``j`` (``"measured"``). The
  same ablation is applied to the steered and the unsteered run, and the share of the effect
  that survives is ``KL(steered+abl ‖ unsteered+abl) / KL(steered ‖ unsteered)`` (and likewise
  for the topic-token shift). ``side_kl = KL(unsteered+abl ‖ unsteered)`` says how much the
  ablation alone disturbs the model.

The projection hook (:func:`remove_direction`) is scoped and pure like :func:`actlens.steer`.
Predictions at injected positions are excluded from every metric (as in
:mod:`actlens.experiments.evaluate`). The paper has no such ablation (§4 "what the paper lacks").
"""

import contextlib
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Literal, get_args

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import TransformerBridge

from actlens.analysis.kl import kl_divergence
from actlens.core import prompts
from actlens.core import validation as _validation
from actlens.core.metrics import WEDDING_WORDS
from actlens.core.positions import Positions, Tracker, real
from actlens.core.types import Align
from actlens.models.model import check_layer, hook_name, n_layers, state
from actlens.steering.batched import Request, forward_rows, min_length, scored_positions
from actlens.vectors import SteeringVector, random_like
from actlens.vectors.specs import VectorSpec

AblationMode = Literal["zero", "mean"]
Direction = Literal["injected", "measured"]


@contextlib.contextmanager
def remove_direction(
    model: TransformerBridge,
    directions: Mapping[int, Float[Tensor, " d_model"]],
    *,
    means: Mapping[int, float] | None = None,
) -> Iterator[TransformerBridge]:
    """At ``blocks.{j}.hook_resid_pre`` set the component along unit ``directions[j]`` to ``means[j]`` (0 by default).

    Applies at every position after each row's BOS (rows' starts come from
    :func:`actlens.models.model.padding`; unpadded otherwise). Hooks return a new tensor and are
    removed on exit.

    >>> from actlens.models.tiny import tiny_model
    >>> model = tiny_model()
    >>> u = torch.zeros(64); u[0] = 1.0
    >>> seen = {}
    >>> def keep(resid, hook): seen["x"] = resid
    >>> with torch.no_grad(), remove_direction(model, {2: u}), model.hooks(fwd_hooks=[(hook_name(2), keep)]):
    ...     _ = model(torch.tensor([[0, 40, 41]]))
    >>> float(seen["x"][0, 1:, 0].abs().max())
    0.0
    """
    means = dict(means or {})
    positions = state(model).positions
    hooks = []
    for layer, u in directions.items():
        check_layer(model, layer)
        u = u.detach().float().flatten()
        norm = torch.linalg.vector_norm(u)
        if u.shape[0] != int(model.cfg.d_model) or not torch.isfinite(norm) or norm == 0:
            raise ValueError(f"direction for layer {layer} must be a non-zero finite [d_model={model.cfg.d_model}] "
                             f"vector, got shape {tuple(u.shape)} and norm {float(norm)}")
        hooks.append((hook_name(layer), _projection_hook(u / norm, float(means.get(layer, 0.0)), positions)))
    with model.hooks(fwd_hooks=hooks):
        yield model


def _projection_hook(u: Tensor, mean: float, positions: Positions):
    tracker = Tracker(positions)

    def hook(resid: Tensor, *, hook) -> Tensor:
        after_bos = real(tracker.layout(*resid.shape[:2]), resid.device, skip_bos=True)  # BOS and left pads kept
        unit = u.to(device=resid.device, dtype=resid.dtype)
        coef = resid @ unit - mean
        coef = torch.where(after_bos, coef, torch.zeros_like(coef))
        return resid - coef[..., None] * unit

    return hook


def topic_tokens(model: TransformerBridge, words: Collection[str] = WEDDING_WORDS) -> list[int]:
    """First token of ``" " + word`` for each topic word (deduplicated, sorted)."""
    return sorted({prompts.encode(model, " " + w, prepend_bos=False)[0] for w in words})


def _prepare(model, texts, requests, max_tokens):
    texts = _validation.texts("texts", [texts] if isinstance(texts, str) else texts)
    ids = [prompts.encode(model, t)[:max_tokens] for t in texts]
    need = max(min_length(model, r) for r in requests)
    short = [i for i, r in enumerate(ids) if len(r) < need + 1]
    if short:
        raise ValueError(f"texts {short} are shorter than the injection ({need} positions) plus one token; "
                         "use longer texts")
    return ids, scored_positions(model, ids, requests)


def _measure(model, ids, scored, requests, targets, capture: Sequence[int] = ()):
    """Per request: scored logits [n_pos, vocab] (all texts concatenated), and captured residuals."""
    found: dict[int, Tensor] = {}

    def keep(layer):
        def hook(resid, *, hook):
            found[layer] = resid.detach().float().clone()
        return hook

    n = len(ids)
    with model.hooks(fwd_hooks=[(hook_name(j), keep(j)) for j in capture]):
        logits, batch = forward_rows(model, [r for _ in requests for r in ids], [q for q in requests for _ in ids])
    out, resid = [], []
    for k, _ in enumerate(requests):
        rows = range(k * n, (k + 1) * n)
        out.append(torch.cat([logits[r, [batch.starts[r] + p for p in scored[r - k * n]]].float() for r in rows]))
        resid.append({j: torch.cat([found[j][r, [batch.starts[r] + p for p in scored[r - k * n]]] for r in rows])
                      for j in capture})
    return out, resid


def _effects(cond: Tensor, base: Tensor, targets: list[int]) -> tuple[float, float]:
    kl = float(kl_divergence(cond, base).mean())
    if not targets:
        return kl, float("nan")

    def mass(logits: Tensor) -> Tensor:
        return torch.logsumexp(torch.log_softmax(logits, -1)[:, targets], -1)

    return kl, float((mass(cond) - mass(base)).mean())


def inject_each_layer(
    model: TransformerBridge, spec: VectorSpec, texts: str | Sequence[str], coeff: float, *,
    layers: Sequence[int] | None = None, topic: Collection[str] = WEDDING_WORDS, control_seed: int = 0,
    max_tokens: int = 64,
) -> pd.DataFrame:
    """Mean KL and topic-token log-mass shift when ``spec`` is injected at each layer, with a random control.

    Returns one row per (layer, condition) with ``condition`` in {"steered", "random"} and
    columns ``kl``, ``topic_shift``.
    """
    coeff = _validation.finite("coeff", coeff)
    layers = list(range(n_layers(model))) if layers is None else [check_layer(model, j) for j in layers]
    if not layers:
        raise ValueError("layers is empty; pass at least one layer")
    targets = topic_tokens(model, topic) if topic else []
    rows = []
    for layer in layers:
        vector = spec.build(model, layer)
        reqs = [Request(vector, coeff, spec.align, spec.position),
                Request(random_like(vector, seed=control_seed), coeff, spec.align, spec.position)]
        ids, scored = _prepare(model, texts, reqs, max_tokens)
        (base, steered, rand), _ = _measure(model, ids, scored, [None, *reqs], targets)
        for name, logits in (("steered", steered), ("random", rand)):
            kl, shift = _effects(logits, base, targets)
            rows.append(dict(layer=layer, condition=name, kl=kl, topic_shift=shift))
    return pd.DataFrame(rows, columns=["layer", "condition", "kl", "topic_shift"])


def ablate_downstream(
    model: TransformerBridge, vector: SteeringVector, coeff: float, texts: str | Sequence[str], *,
    align: Align = "front", position: int | None = None, layers: Sequence[int] | None = None,
    modes: Sequence[AblationMode] = ("zero", "mean"), directions: Sequence[Direction] = ("injected", "measured"),
    topic: Collection[str] = WEDDING_WORDS, max_tokens: int = 64,
) -> pd.DataFrame:
    """Share of the steering effect that survives ablating a direction at each later layer.

    Returns one row per (ablated layer, mode, direction): ``kl_full``, ``kl_ablated``,
    ``kl_retained`` (their ratio), ``topic_full``, ``topic_ablated``, ``topic_retained`` and
    ``side_kl`` (what the ablation alone does to the unsteered model).

    >>> from actlens.models.tiny import tiny_model
    >>> from actlens.vectors import actadd_vector
    >>> model = tiny_model()
    >>> f = ablate_downstream(model, actadd_vector(model, "Love", "Hate", 1), 4.0, ["The weather today is"])
    >>> sorted(set(f.layer)), len(f)
    ([2, 3], 8)
    """
    coeff = _validation.finite("coeff", coeff)
    for m in modes:
        _validation.choice("modes[]", m, get_args(AblationMode))
    for d in directions:
        _validation.choice("directions[]", d, get_args(Direction))
    injected_at = vector.require_site(where="ablate_downstream (it ablates resid_pre after the injection)").layer
    later = list(range(injected_at + 1, n_layers(model))) if layers is None else [check_layer(model, j) for j in layers]
    if not later or any(j <= injected_at for j in later):
        raise ValueError(f"ablated layers must be after the injection layer {injected_at} and at most "
                         f"{n_layers(model) - 1}, got {later}")
    if not modes or not directions:
        raise ValueError("modes and directions must be non-empty")
    request = Request(vector, coeff, align, position)
    targets = topic_tokens(model, topic) if topic else []
    ids, scored = _prepare(model, texts, [request], max_tokens)
    (base, steered), (base_res, steered_res) = _measure(model, ids, scored, [None, request], targets, capture=later)
    kl_full, topic_full = _effects(steered, base, targets)
    injected = vector.values.float().sum(0)
    rows = []
    for j in later:
        for direction in directions:
            u = injected if direction == "injected" else (steered_res[j] - base_res[j]).mean(0)
            u = u / torch.linalg.vector_norm(u).clamp_min(1e-12)
            for mode in modes:
                mean = float((base_res[j] @ u).mean()) if mode == "mean" else 0.0
                with remove_direction(model, {j: u}, means={j: mean}):
                    (base_a, steered_a), _ = _measure(model, ids, scored, [None, request], targets)
                kl_a, topic_a = _effects(steered_a, base_a, targets)
                side, _ = _effects(base_a, base, [])
                nan = float("nan")
                rows.append({"layer": j, "mode": mode, "direction": direction, "injected_at": injected_at,
                             "kl_full": kl_full, "kl_ablated": kl_a, "kl_retained": kl_a / kl_full if kl_full else nan,
                             "topic_full": topic_full, "topic_ablated": topic_a,
                             "topic_retained": topic_a / topic_full if topic_full else nan, "side_kl": side})
    return pd.DataFrame(rows)


__all__ = ["AblationMode", "Direction", "ablate_downstream", "inject_each_layer", "remove_direction", "topic_tokens"]
