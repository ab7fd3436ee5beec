"""Scoped, pure steering hooks on ``blocks.{L}.hook_resid_pre``.

``with steer(model, vector, coeff): ...`` adds ``coeff * vector`` inside the block and
removes every hook on exit, also when the body raises. Hooks return a new tensor and
never write into their input.

Positions are absolute within the (left-padded) sequence. Each hook learns where the
chunk it sees starts from the KV cache (0 without one): with a cache, generation calls it
once with the prompt (prefill) and then with one new token at a time, so positional
(``front``/``mid``/``back``) values land on the prompt once and generated tokens see them
through attention, exactly as in the authors' code; without a cache every step recomputes
the prompt and the values are re-added at the same positions, which is equivalent.
``align="all"`` adds at every position after BOS, generated tokens included.
"""

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from transformer_lens import TransformerBridge

from actlens.core import positions as positions_
from actlens.core import validation as _validation
from actlens.core.positions import NOWHERE, Bounds, Placement, Positions, Scope, Tracker
from actlens.core.types import ALIGNS, Align, Phase
from actlens.models.model import check_layer, check_site, state, write_hook_name
from actlens.steering.conditional import Gate, gate_for, gate_hooks
from actlens.vectors import SteeringVector


@dataclass(frozen=True)
class Addition:
    """One vector at one layer, coefficient applied, and where it goes."""

    delta: Tensor  # [k, d_model], float32 on the vector's device; cast per call
    placement: Placement
    origin: tuple | None = None  # (id of the source vector's values, row, coeff): equal origins, equal deltas
    source: Tensor | None = field(default=None, compare=False, repr=False)  # keeps that id from being reused
    gate: Gate | None = None  # conditional steering: rows whose prompt fails the condition get nothing

    @property
    def k(self) -> int:
        return int(self.delta.shape[0])

    def key(self) -> tuple:
        """Equal for additions with equal values and placement, so one hook term serves both.

        On the CPU the values themselves are compared. On other devices reading them would make the
        host wait for the device, so additions built from the same vector object and coefficient
        (:attr:`origin`) are equal, and otherwise an addition is only equal to itself (as on ``meta``,
        whose tensors have no values); a missed match only costs one more term in the hook.
        """
        delta = self.delta.detach()
        if delta.device.type == "cpu":
            content = delta.contiguous().numpy().tobytes()
        else:
            content = ("origin", self.origin) if self.origin is not None else ("id", id(delta))
        return (self.placement, tuple(delta.shape), str(delta.dtype), content, id(self.gate))


def make_hook(additions: list[Addition], positions: Positions, rows: list[list[bool]] | None = None):
    """The hook for one layer: adds every addition at its positions, returning a new tensor.

    ``rows[i]``, when given, says which rows of the batch addition i applies to (per-row
    steering, :func:`actlens.steering.batched.steer_rows`); then the batch must have that many rows.
    A call costs a fixed number of tensor operations whatever the batch size: each row's
    first position is computed once per batch layout (:mod:`actlens.core.positions`), a KV-cached
    decode step past every window returns at once, and ``align="all"`` decode steps add the
    vector by broadcasting.

    In a compiled decode step (``positions.past`` a device tensor) the hook is graph-safe: it reads
    only tensors (the chunk start, the :class:`~actlens.core.positions.Bounds` its eager prompt call
    made, the deltas) and branches on nothing they hold, so new coefficients, vector values or prompts
    of the same shape reuse the compiled graph, and each step adds what the eager path would.
    """
    cast: dict[tuple, tuple[list[Tensor], list[Tensor | None]]] = {}
    tracker = Tracker(positions)
    layout_of: tuple | None = None  # the (starts, lengths, device) the numbers below describe
    end = 0  # the last prompt's end: past it, a chunk is all generated tokens
    # per addition: (lowest, highest) first position of the rows it applies to, and its per-row bounds
    spans: list[tuple[int, int]] = []
    bounds: list[Bounds] = []
    n_rows = None if rows is None else len(rows[0])

    def relayout(layout, device) -> None:
        nonlocal layout_of, end
        spans.clear(), bounds.clear()
        end = max(s + n for s, n in zip(layout.starts, layout.lengths, strict=True))
        for i, add in enumerate(additions):
            first = add.placement.first(layout, None if rows is None else rows[i])
            used = [f for f in first if f != NOWHERE]
            spans.append((min(used, default=NOWHERE), max(used, default=NOWHERE)))
            bounds.append(positions_.bounds(add.placement, layout, device, first=first))
        layout_of = (layout.starts, layout.lengths, device)

    def hook(resid: Tensor, *, hook) -> Tensor:
        batch, seq, _ = resid.shape
        if n_rows is not None and n_rows != batch:
            raise ValueError(f"steer_rows was given {n_rows} row requests but the batch has {batch} rows; "
                             "pass one request (or None) per row")
        key = (resid.device, resid.dtype)
        if key not in cast:
            deltas = [a.delta.to(device=resid.device, dtype=resid.dtype, non_blocking=True) for a in additions]
            masks = ([None] * len(additions) if rows is None else
                     [torch.tensor(r, dtype=resid.dtype).to(resid.device, non_blocking=True)[:, None, None]
                      for r in rows])
            cast[key] = (deltas, masks)
        deltas, row_masks = cast[key]
        past = positions.past
        compiled = isinstance(past, Tensor)  # a compiled decode step: its prompt ran eagerly, through here
        if compiled and not (bounds and bounds[0].first.shape[0] == batch):  # reads no Python number of the layout
            raise RuntimeError("a compiled decode step reached a steering hook before its prompt did; actlens "
                               "compiles the decode steps only, with the prompt run eagerly (actlens.generate "
                               "with compile=True does this)")
        if not compiled:
            layout = tracker.layout(batch, seq)
            if layout_of != (layout.starts, layout.lengths, resid.device):
                relayout(layout, resid.device)
        at: Tensor | None = None  # the chunk's absolute positions, made when first needed
        total: Tensor | None = None  # built only when some position is touched
        for i, (add, delta, row_mask) in enumerate(zip(additions, deltas, row_masks, strict=True)):
            where = add.placement
            whole = False  # every position of the chunk gets the vector (broadcast, no mask)
            if compiled:
                pass  # nothing is skipped on a number: every step computes its (tiny) masks
            elif where.align == "all":
                if past + seq <= spans[i][0] or (past >= end and where.scope.phase == "prompt"):
                    continue  # before every row's first steered position, or generated tokens a prompt-only scope skips
                whole = past >= end  # generated tokens of every row only (a decode step)
            else:
                lowest, highest = spans[i]
                if past >= highest + add.k or past + seq <= lowest:
                    continue  # no window in this chunk (e.g. a KV-cached decode step)
            if whole:
                term = delta[0]
            else:
                if at is None:
                    at = positions_.absolute(past, seq, resid.device)
                term = _term(where, bounds[i], delta, at, resid.dtype)
            if row_mask is not None:
                term = term * row_mask
            if add.gate is not None:  # a device tensor set at the prompt: no host sync per step
                term = term * add.gate.rows(batch)
            total = term if total is None else total + term
        return resid if total is None else resid + total  # a [d_model] total broadcasts

    return hook


def _term(where: Placement, b: Bounds, delta: Tensor, at: Tensor, dtype: torch.dtype) -> Tensor:
    """What one addition adds to a chunk at absolute positions ``at``: its values at its masked positions."""
    if where.align == "all":
        return positions_.mask(where, b, at)[..., None].to(dtype) * delta[0]
    index, inside = positions_.window(where, b, at)
    return delta[index] * inside[..., None].to(dtype)


Steering = SteeringVector | Sequence[tuple[SteeringVector, float]]


def additions(
    model: TransformerBridge,
    vector: Steering,
    coeff: float = 1.0,
    *,
    align: Align = "front",
    position: int | None = None,
    phase: Phase = "both",
    span: tuple[int, int | None] | None = None,
    include_bos: bool = False,
) -> dict[str, list[Addition]]:
    """Validate a steering request and group it by the hook point it is added at (each vector's layer and
    site, :func:`actlens.models.model.write_hook_name`); raises before anything changes."""
    _validation.choice("align", align, ALIGNS)
    scope = Scope(phase, span, include_bos)
    pairs = [(vector, coeff)] if isinstance(vector, SteeringVector) else list(vector)
    if not pairs:
        raise ValueError("no steering vectors given; pass a SteeringVector or a list of (vector, coeff) pairs")
    grouped: dict[str, list[Addition]] = {}
    for item in pairs:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], SteeringVector)):
            raise TypeError(f"expected a SteeringVector or (SteeringVector, coeff) pairs, got {item!r}")
        vec, c = item
        source = vec._values  # the vector's own tensor (immutable): its id names these values while kept alive
        c = _validation.finite("coeff", c)
        vec.check_model(model)
        check_layer(model, vec.layer)
        check_site(model, vec.site, name="vector.site")
        if align == "all" and vec.k > 1:
            if position is None:
                raise ValueError(
                    f"align='all' adds one vector at every position, but this vector has {vec.k} positions; "
                    f"pass position=i to use row i (e.g. position=1, the first token after BOS)"
                )
            vec = vec.at_position(position)
        _check_overflow(model, vec, c)
        values = vec.values.float() * c
        where = Placement(align, int(values.shape[0]), vec.bos_row, vec.prepend_bos, scope)
        origin = (id(source), position if align == "all" else None, c)
        grouped.setdefault(write_hook_name(vec.layer, vec.site), []).append(
            Addition(values, where, origin, source, gate_for(model, vec)))
    return grouped


def _check_overflow(model: TransformerBridge, vector: SteeringVector, coeff: float) -> None:
    """Refuse ``coeff * vector`` when the steered residual would overflow the model's numbers.

    Two limits: each added entry must be representable in the model's dtype (with room for the
    residual itself), and the residual's squared norm, which the normalisation layers compute in
    float32, must stay finite; past either, the model yields NaN or inf and empty completions.
    """
    peak = vector.peak * abs(coeff)  # read when the vector was made: no device sync here
    dtype = next(model.parameters()).dtype
    limit = min(torch.finfo(dtype).max / 2 if dtype.is_floating_point else math.inf,
                math.sqrt(torch.finfo(torch.float32).max / vector.d_model) / 2)
    if not peak < limit:
        raise ValueError(
            f"coeff {coeff:g} times the vector's largest entry {peak / abs(coeff) if coeff else 0:.3g} adds "
            f"{peak:.3g} to a residual entry, which overflows the model's numbers ({dtype}: the steered "
            f"residual's squared norm must stay finite, so an entry must stay below {limit:.3g}); pass a smaller "
            "coeff or a vector with sensible values (ActAdd coefficients are typically 1-20)")


def addition(
    model: TransformerBridge, vector: SteeringVector, coeff: float, align: Align, position: int | None,
    scope: dict | None = None,
) -> Addition:
    """The single :class:`Addition` a one-vector request makes (validates align/position/coeff/scope).

    ``scope``: ``phase`` / ``span`` / ``include_bos`` keyword arguments of :func:`actlens.steer`.
    """
    grouped = additions(model, vector, coeff, align=align, position=position, **(scope or {}))
    return next(iter(grouped.values()))[0]


def needed_length(
    model: TransformerBridge, vector: Steering | None, coeff: float = 1.0, *, align: Align = "front",
    position: int | None = None, **scope,
) -> int:
    """Prompt positions (BOS included) a steering request needs; validates the request too.

    ``scope``: ``phase``, ``span``, ``include_bos`` as in :func:`steer`.
    """
    if vector is None:
        return 1
    grouped = additions(model, vector, coeff, align=align, position=position, **scope)
    return max(a.placement.min_length for adds in grouped.values() for a in adds)


@contextlib.contextmanager
def steer(
    model: TransformerBridge,
    vector: Steering,
    coeff: float = 1.0,
    *,
    align: Align = "front",
    position: int | None = None,
    phase: Phase = "both",
    span: tuple[int, int | None] | None = None,
    include_bos: bool = False,
) -> Iterator[TransformerBridge]:
    """Add ``coeff * vector`` to ``blocks.{vector.layer}.hook_{vector.site}`` (``resid_pre`` unless the vector
    was read at another site) inside the block.

    Args:
        vector: a :class:`SteeringVector`, or a list of ``(vector, coeff)`` pairs to compose
            (then ``coeff`` is ignored).
        align: ``"front"``/``"mid"``/``"back"`` place the k per-position values at positions
            ``[a, a+k)`` of each prompt (front: a = 0 for ActAdd vectors, whose row 0 is BOS);
            ``"all"`` adds one vector at every position after BOS and at every generated token.
        position: which row of a multi-position vector ``align="all"`` uses.
        phase: for ``align="all"``: ``"both"`` (prompt and generated tokens), ``"prompt"``, or
            ``"generation"`` (generated tokens only: the prompt, and so the first new token's
            distribution, is unsteered). Positional alignments live in the prompt:
            ``"generation"`` is an error for them.
        span: for ``align="all"``: ``(start, stop)``, steer only prompt positions
            ``[start, stop)`` of each row (BOS = 0; negative ``stop`` from the prompt's end,
            ``None`` to it); e.g. :func:`actlens.core.chat.user_span` gives the user's turn.
        include_bos: for ``align="all"``: add at BOS too, as llama.cpp control vectors do.

    Generated tokens are known as such inside :func:`actlens.generate` (cached or not) and
    in KV-cached decoding; an uncached loop of your own recomputes the whole sequence, which
    the hooks see as one longer prompt.

    Padded batches: run them through :func:`actlens.forward` / :func:`actlens.generate`,
    which tell the hooks where each row starts. A plain ``model(tokens)`` inside the block is
    treated as unpadded.

    >>> from actlens.models.tiny import tiny_model
    >>> from actlens.vectors import actadd_vector
    >>> model = tiny_model()
    >>> v = actadd_vector(model, "Love", "Hate", layer=1)
    >>> with steer(model, v, 4.0):
    ...     logits = model(torch.tensor([[0, 40, 41, 42, 43, 44]]))
    >>> logits.shape[-1] == model.cfg.d_vocab
    True
    """
    grouped = additions(model, vector, coeff, align=align, position=position, phase=phase, span=span,
                        include_bos=include_bos)
    st = state(model)  # its blocks record the KV-cache length on the bridge path; the fast tree records its own
    hooks = [(name, make_hook(adds, st.positions)) for name, adds in grouped.items()]
    # conditions are read before anything is added at their layer: their hooks go first
    hooks = gate_hooks([a for adds in grouped.values() for a in adds], st.positions) + hooks
    with model.hooks(fwd_hooks=hooks):
        yield model
