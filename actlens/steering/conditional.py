"""Conditional steering (CAST: Lee et al., "Programming Refusal with Conditional Activation Steering", ICLR 2025).

A *condition* direction is read on each prompt, and the *behaviour* vector is added only to the
rows whose prompt passes a threshold: steer sentiment only on prompts about food, refusal only on
harmful requests. :func:`conditional` wraps the two vectors into a :class:`ConditionalVector`, a
:class:`~actlens.SteeringVector` (the behaviour's values and provenance) that :func:`actlens.steer`,
:func:`actlens.generate`, :func:`actlens.steered_logits` and sweep requests accept like any other.

How it runs. A hook at the condition's layer (``blocks.{condition.layer}.hook_resid_pre``, which must
not come after the behaviour's layer) sees each prompt before the behaviour is added. On the chunk
that holds the prompt (the prefill with a KV cache, every step without one), it reads each row's
prompt activation (``read_position="mean"``: the mean over the prompt's tokens after BOS, as CAST;
``"last"``: the last prompt token), scores it by its cosine similarity with the condition direction,
and keeps a per-row gate (``score > threshold``, or ``<`` with ``compare="less"``) as a tensor on the
model's device. The behaviour hook multiplies its addition by that gate. No value comes back to the
host during generation, and rows whose condition fails get ``resid + 0``: bit-identical to unsteered
rows. Other vectors composed at earlier layers do reach the condition's reading (it is taken on the
residual stream as it is at that layer); the behaviour vector itself never does.

Differences from CAST: the score is the signed cosine with the direction (CAST takes the cosine with
the projection onto the condition's subspace, which is its absolute value, through a tanh), so one
direction can select either side; :func:`pick_threshold` searches thresholds and both comparisons for
the best F1 on labelled prompts, as CAST's ``find_best_condition_point`` does.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import TransformerBridge

from actlens.core import validation as _validation
from actlens.core.positions import Positions, Tracker
from actlens.models.model import check_layer, hook_name
from actlens.vectors.extraction import mean_diff_vectors, read_texts, read_texts_at
from actlens.vectors.steering_vector import SteeringVector

Compare = Literal["greater", "less"]
COMPARES = ("greater", "less")
ConditionRead = Literal["mean", "last"]


@dataclass(frozen=True, eq=False)
class ConditionalVector(SteeringVector):
    """A behaviour vector gated per prompt by a condition (see :func:`conditional`)."""

    condition: SteeringVector | None = None
    threshold: float = 0.0
    compare: str = "greater"
    condition_read: str = "mean"

    def __post_init__(self) -> None:
        super().__post_init__()  # the vector's own checks (site, finite values, its largest value)
        cond = self.condition
        if not isinstance(cond, SteeringVector) or isinstance(cond, ConditionalVector):
            raise TypeError(f"condition must be a plain actlens SteeringVector, got {type(cond).__name__}")
        _validation.choice("compare", self.compare, COMPARES)
        _validation.choice("read_position", self.condition_read, ("mean", "last"))
        _validation.finite("threshold", self.threshold)
        if cond.k != 1:
            raise ValueError(f"the condition must be one direction (k=1), got k={cond.k}; use a mean_diff_vector / "
                             "pca_vector / probe_vector, or condition.at_position(i)")
        if cond.model != self.model or cond.compatibility_mode != self.compatibility_mode:
            raise ValueError(
                f"the condition vector comes from model {cond.model.name!r} (compatibility mode "
                f"{cond.compatibility_mode}) but the behaviour from {self.model.name!r} (compatibility mode "
                f"{self.compatibility_mode}); extract both on the model you steer")
        if cond.layer > self.layer:
            raise ValueError(
                f"the condition is read at layer {cond.layer}, after the behaviour's layer {self.layer}: it would see "
                "the residual stream already steered. Read the condition at a layer <= the behaviour's "
                f"(extract it at layer {self.layer} or earlier)")
        if not torch.linalg.vector_norm(cond.values) > 0:
            raise ValueError("the condition vector is zero, so it has no direction; extract it from pairs that differ")

    @property
    def behaviour(self) -> SteeringVector:
        """The behaviour vector alone (a plain :class:`SteeringVector`)."""
        return SteeringVector(**{f.name: getattr(self, f.name) for f in fields(SteeringVector)})

    def metadata(self) -> dict:
        return {**self.behaviour.metadata(), "condition": self.condition.metadata(), "threshold": self.threshold,
                "compare": self.compare, "condition_read": self.condition_read}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConditionalVector):
            return NotImplemented
        return (self.metadata() == other.metadata() and torch.equal(self._values, other._values)
                and torch.equal(self.condition._values, other.condition._values))

    __hash__ = None

    def __repr__(self) -> str:
        sign = ">" if self.compare == "greater" else "<"
        return (f"ConditionalVector({self.behaviour!r} if cos(resid at layer {self.condition.layer} "
                f"[{self.condition_read}], condition) {sign} {self.threshold:g})")

    def save(self, path: str | Path) -> Path:
        raise ValueError("a conditional vector is not one file: save its parts (cv.behaviour.save(...), "
                         "cv.condition.save(...)) and rebuild it with actlens.conditional(behaviour, condition, "
                         f"threshold={self.threshold!r}, compare={self.compare!r})")

    def to_gguf(self, path, **kw) -> Path:
        raise ValueError("a GGUF control vector has no condition; export the behaviour alone with "
                         "cv.behaviour.to_gguf(...) (it is then applied to every prompt)")


def conditional(
    behaviour: SteeringVector,
    condition: SteeringVector,
    threshold: float,
    *,
    compare: Compare = "greater",
    read_position: ConditionRead = "mean",
    layer: int | None = None,
) -> ConditionalVector:
    """``behaviour``, added only to prompts whose cosine with ``condition`` passes ``threshold``.

    Args:
        behaviour: the vector to add (any alignment; e.g. a sentiment mean difference).
        condition: a one-row direction read at ``condition.layer`` (e.g. a topic mean difference).
        threshold: the gate's threshold on the cosine similarity (:func:`pick_threshold` picks one).
        compare: ``"greater"`` steers rows with score > threshold, ``"less"`` rows below it.
        read_position: ``"mean"`` over the prompt's tokens after BOS (as CAST), or ``"last"``.
        layer: where the condition is read; must be ``condition.layer`` (``None``: that layer).

    >>> from actlens.models.tiny import tiny_model
    >>> from actlens.vectors import mean_diff_vector
    >>> model = tiny_model()
    >>> mood = mean_diff_vector(model, [("I love it", "I hate it")], layer=2)
    >>> food = mean_diff_vector(model, [("Pasta and bread", "Trains and roads")], layer=1)
    >>> cv = conditional(mood, food, threshold=0.1)
    >>> import actlens
    >>> with actlens.steer(model, cv, 4.0, align="all"):
    ...     logits = model(torch.tensor([[0, 40, 41, 42]]))
    >>> cv.layer, cv.condition.layer
    (2, 1)
    """
    if not isinstance(behaviour, SteeringVector) or isinstance(behaviour, ConditionalVector):
        raise TypeError(f"behaviour must be a plain actlens SteeringVector, got {type(behaviour).__name__}")
    if not isinstance(condition, SteeringVector):
        raise TypeError(f"condition must be an actlens SteeringVector, got {type(condition).__name__}")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise TypeError(f"threshold must be a real number, got {type(threshold).__name__} {threshold!r}")
    if threshold != threshold:
        raise ValueError("threshold is NaN, so no prompt would ever pass (or fail) it; pass a number, e.g. one "
                         "from actlens.steering.conditional.pick_threshold")
    if layer is not None and layer != condition.layer:
        raise ValueError(f"layer={layer} but the condition vector was extracted at layer {condition.layer}; "
                         f"extract the condition at layer {layer}, or pass layer={condition.layer}")
    return ConditionalVector(**{f.name: getattr(behaviour, f.name) for f in fields(SteeringVector)},
                             condition=condition, threshold=float(threshold), compare=compare,
                             condition_read=read_position)


# --- runtime: the gate a behaviour hook multiplies by ---------------------------------------
@dataclass(eq=False)
class Gate:
    """One conditional addition's gate: the unit condition direction, and the latest per-row values."""

    direction: Tensor  # [d_model] float32, unit
    layer: int
    threshold: float
    compare: str
    read: str
    value: Tensor | None = field(default=None, repr=False)  # [batch] in the residual's dtype, set at the prompt

    def rows(self, batch: int) -> Tensor:
        """The gate for a batch of ``batch`` rows, as ``[batch, 1, 1]`` (raises if no prompt was read)."""
        if self.value is None or self.value.shape[0] != batch:
            raise RuntimeError(
                f"the condition at layer {self.layer} has not been read on this batch of {batch} rows (a chunk "
                "past the prompt arrived before the prompt itself); run the prompt through the model first")
        return self.value[:, None, None]


def gate_for(model: TransformerBridge, vector: SteeringVector) -> Gate | None:
    """The :class:`Gate` a conditional vector needs on ``model`` (``None`` for other vectors)."""
    if not isinstance(vector, ConditionalVector):
        return None
    cond = vector.condition
    cond.check_model(model)
    check_layer(model, cond.layer)
    direction = cond.values[0].float()
    return Gate(direction / torch.linalg.vector_norm(direction), cond.layer, vector.threshold, vector.compare,
                vector.condition_read)


def _read_weights(layout, device) -> Tensor:
    """``[batch, seq]`` weights that average each row's prompt tokens after BOS (``mean``) or pick its last one."""
    at = layout.absolute(device)[None]
    starts, ends = layout.per_row(layout.starts, device), layout.per_row(
        [s + n for s, n in zip(layout.starts, layout.lengths, strict=True)], device)
    only_bos = layout.per_row([int(n <= 1) for n in layout.lengths], device).bool()
    mean = (at < ends) & ((at > starts) | (only_bos & (at == starts)))
    return mean.float() / mean.sum(1, keepdim=True).clamp(min=1)


def gate_hook(gates: Sequence[Gate], positions: Positions):
    """The hook at the condition's layer: on the chunk holding the prompt, sets each gate's per-row value.

    Returns the residual unchanged. A chunk past the prompt (a KV-cached decode step) keeps the values.
    """
    tracker = Tracker(positions)

    def hook(resid: Tensor, *, hook) -> Tensor:
        if isinstance(positions.past, Tensor) or positions.past > 0:  # a decode step (compiled ones hold a tensor)
            return resid
        batch, seq, _ = resid.shape
        layout = tracker.layout(batch, seq)
        device = resid.device
        mean_w = _read_weights(layout, device)
        last_w = (layout.absolute(device)[None] == layout.per_row(
            [s + n - 1 for s, n in zip(layout.starts, layout.lengths, strict=True)], device)).float()
        x = resid.float()
        read = {"mean": torch.einsum("bs,bsd->bd", mean_w, x), "last": torch.einsum("bs,bsd->bd", last_w, x)}
        for gate in gates:
            score = torch.nn.functional.cosine_similarity(read[gate.read], gate.direction.to(device)[None], dim=-1)
            passed = score > gate.threshold if gate.compare == "greater" else score < gate.threshold
            gate.value = passed.to(resid.dtype)
        return resid

    return hook


def gate_hooks(additions: Sequence, positions: Positions) -> list[tuple[str, object]]:
    """One condition hook per layer that some addition's gate reads (install these before the steering hooks)."""
    by_layer: dict[int, list[Gate]] = {}
    seen: set[int] = set()
    for add in additions:
        gate = getattr(add, "gate", None)
        if gate is not None and id(gate) not in seen:
            seen.add(id(gate))
            by_layer.setdefault(gate.layer, []).append(gate)
    return [(hook_name(layer), gate_hook(gates, positions)) for layer, gates in sorted(by_layer.items())]


# --- choosing the threshold -------------------------------------------------------------------
def condition_scores(
    model: TransformerBridge, condition: SteeringVector, texts: Sequence[str], *,
    read_position: ConditionRead = "mean", batch_size: int = 16,
) -> Float[Tensor, " n"]:
    """Each text's cosine similarity with ``condition`` at its layer, read as the gate reads it (unsteered).

    >>> from actlens.models.tiny import tiny_model
    >>> from actlens.vectors import mean_diff_vector
    >>> model = tiny_model()
    >>> food = mean_diff_vector(model, [("Pasta and bread", "Trains and roads")], layer=1)
    >>> condition_scores(model, food, ["Soup", "A bus"]).shape
    torch.Size([2])
    """
    if not isinstance(condition, SteeringVector) or condition.k != 1:
        raise ValueError("condition must be a one-row actlens SteeringVector (e.g. a mean_diff_vector)")
    condition.check_model(model)
    _validation.choice("read_position", read_position, ("mean", "last"))
    acts = read_texts(model, texts, condition.layer, read_position=read_position, batch_size=batch_size)
    return _cosine(acts, condition)


def _cosine(acts: Tensor, condition: SteeringVector) -> Tensor:
    return torch.nn.functional.cosine_similarity(acts, condition.values[0].float().to(acts.device)[None], dim=-1)


@dataclass(frozen=True)
class ThresholdChoice:
    """The threshold and comparison with the best F1 on labelled prompts, and how well they separate them."""

    threshold: float
    compare: str
    f1: float
    accuracy: float
    scores: tuple[float, ...]
    labels: tuple[bool, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def _f1(pred: Tensor, labels: Tensor) -> float:
    tp = int((pred & labels).sum())
    fp, fn = int((pred & ~labels).sum()), int((~pred & labels).sum())
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def pick_threshold(
    model: TransformerBridge, condition: SteeringVector, texts: Sequence[str], labels: Sequence[bool], *,
    compare: Compare | None = None, read_position: ConditionRead = "mean", batch_size: int = 16,
) -> ThresholdChoice:
    """The threshold (and comparison, unless given) whose gate best separates ``labels`` (True: steer), by F1.

    Candidates are the midpoints between consecutive distinct scores, as CAST's grid search tries
    thresholds between observed similarities; ties go to the higher accuracy, then the first found.

    >>> from actlens.models.tiny import tiny_model
    >>> from actlens.vectors import mean_diff_vector
    >>> model = tiny_model()
    >>> food = mean_diff_vector(model, [("Pasta and bread", "Trains and roads")], layer=1)
    >>> choice = pick_threshold(model, food, ["Pasta", "Bread", "A bus", "Roads"], [True, True, False, False])
    >>> 0 <= choice.accuracy <= 1
    True
    """
    texts, labels, compares = _labelled(texts, labels, compare)
    scores = condition_scores(model, condition, texts, read_position=read_position, batch_size=batch_size)
    return _choose(scores, labels, compares)


def _labelled(texts: Sequence[str], labels: Sequence[bool], compare: Compare | None
              ) -> tuple[list[str], list[bool], tuple[str, ...]]:
    """Checked texts, labels (one bool per text, both kinds present) and the comparisons to try."""
    texts = _validation.texts("texts", texts)
    labels = list(labels)
    if len(labels) != len(texts) or not all(isinstance(x, bool) for x in labels):
        raise ValueError(f"labels must be one True/False per text: got {len(labels)} labels for {len(texts)} texts")
    if all(labels) or not any(labels):
        raise ValueError("labels must hold both True (prompts to steer) and False (prompts to leave alone) "
                         "examples to choose a threshold between them")
    return texts, labels, COMPARES if compare is None else (_validation.choice("compare", compare, COMPARES),)


def _choose(scores: Tensor, labels: list[bool], compares: tuple[str, ...]) -> ThresholdChoice:
    """The threshold and comparison with the best F1 on ``scores`` (then accuracy, then the first found)."""
    scores = scores.double()
    truth = torch.tensor(labels)
    distinct = torch.unique(scores)
    candidates = torch.cat([distinct[:1] - 1e-6, (distinct[1:] + distinct[:-1]) / 2, distinct[-1:] + 1e-6])
    best: tuple | None = None
    for how in compares:
        for t in candidates.tolist():
            pred = scores > t if how == "greater" else scores < t
            key = (_f1(pred, truth), float((pred == truth).double().mean()))
            if best is None or key > best[0]:
                best = (key, t, how)
    (f1, accuracy), threshold, how = best
    return ThresholdChoice(float(threshold), how, f1, accuracy, tuple(scores.tolist()), tuple(labels))


@dataclass(frozen=True)
class ConditionChoice:
    """The condition direction, read at the layer whose gate separates labelled prompts best, and its threshold.

    ``by_layer``: ``(layer, F1, accuracy)`` of the best threshold at every layer searched.
    """

    condition: SteeringVector
    choice: ThresholdChoice
    by_layer: tuple[tuple[int, float, float], ...]

    @property
    def layer(self) -> int:
        return self.condition.layer


def pick_condition(
    model: TransformerBridge, pairs: Sequence[tuple[str, str]], texts: Sequence[str], labels: Sequence[bool],
    layers: Sequence[int], *, compare: Compare | None = None, read_position: ConditionRead = "mean",
    batch_size: int = 16,
) -> ConditionChoice:
    """CAST's grid search over layers: at each of ``layers``, the mean difference of ``pairs`` (a condition
    direction) and its best threshold on the labelled ``texts`` (:func:`pick_threshold`); the layer with the best
    F1, then accuracy, then the earliest. Topics can be unreadable early in the network and plain later (the
    food prompts of ``actlens figures`` on SmolLM2: accuracy 0.56 at 30 % of the depth), hence the search; the
    choice is in-sample, so judge it on other prompts before trusting it. A condition read after the behaviour's
    layer cannot gate it (:func:`conditional`): search layers up to the behaviour's.

    >>> from actlens.models.tiny import tiny_model
    >>> model = tiny_model()
    >>> texts, labels = ["Pasta", "Bread", "A bus", "Roads"], [True, True, False, False]
    >>> got = pick_condition(model, [("Pasta and bread", "Trains and roads")], texts, labels, layers=[1, 2])
    >>> got.layer in (1, 2), [layer for layer, _, _ in got.by_layer]
    (True, [1, 2])
    """
    layers = list(layers)
    if not layers:
        raise ValueError("layers is empty; pass the layers to search, e.g. range(4, 12)")
    texts, labels, compares = _labelled(texts, labels, compare)
    _validation.choice("read_position", read_position, ("mean", "last"))
    vectors = mean_diff_vectors(model, pairs, layers, batch_size=batch_size)
    acts = read_texts_at(model, texts, layers, read_position=read_position, batch_size=batch_size)  # one pass
    best, by_layer = None, []
    for layer in layers:
        choice = _choose(_cosine(acts[layer], vectors[layer]), labels, compares)  # as pick_threshold at this layer
        by_layer.append((layer, choice.f1, choice.accuracy))
        if best is None or (choice.f1, choice.accuracy) > (best[1].f1, best[1].accuracy):
            best = (vectors[layer], choice)
    return ConditionChoice(best[0], best[1], tuple(by_layer))


__all__ = ["COMPARES", "ConditionChoice", "ConditionalVector", "Gate", "ThresholdChoice", "condition_scores",
           "conditional", "gate_for", "gate_hooks", "pick_condition", "pick_threshold"]
