"""Where things land in a batch: the row layout and every position mask actlens uses.

A batch is left-padded: row ``r``'s BOS sits at column ``starts[r]`` and its prompt has ``lengths[r]`` tokens (BOS
included). With a KV cache a block sees one *chunk* of absolute positions ``[past, past + seq)`` at a time (the
prompt at prefill, then one new token per step); a :class:`Layout` is that chunk together with the rows' starts and
prompt lengths.

Every "which positions?" question is answered here from a layout, as a ``[batch, seq]`` boolean mask built from a
few terms:

- :func:`real`: a real token, not left padding (and not BOS with ``skip_bos``): the
  ablation hooks and the analyses' summaries;
- :func:`injected`: where a steering vector lands: the ``k`` positions of a positional
  vector's window (:meth:`Placement.window`, ``align="front"/"mid"/"back"``) or every
  position after BOS (``align="all"``, generated tokens included);
- :func:`window_index`: for a window, also which of the vector's ``k`` rows each position gets.

Steering hooks (:mod:`actlens.steering.intervene`, :mod:`actlens.steering.batched`), the projection hook of
:mod:`actlens.analysis.ablation`, the analyses and :mod:`actlens.experiments.evaluate` all take their positions from
these functions. A hook keeps a placement's per-row numbers as device tensors (:class:`Bounds`), so that a compiled
decode step, whose chunk start is a 0-d device tensor, computes the same masks without reading a Python number
(which dynamo would bake into the graph, recompiling per step or per padding). A :class:`Scope`
(``phase="both"|"prompt"|"generation"``, a prompt ``span`` and ``include_bos``) narrows ``align="all"``: further
terms of :func:`injected` (``absolute < start + length`` for the prompt, ``>=`` for generated tokens, the span's
bounds per row) and of :meth:`Placement.first`.
"""

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from actlens.core import validation as _validation
from actlens.core.types import PHASES

NOWHERE = -(2**40)  # window start of a row a vector does not apply to: no position falls inside


@dataclass
class Positions:
    """What the model's blocks know about the chunk now flowing through them (one per model).

    ``past`` is the number of positions already in the KV cache (0 without one), recorded by each block before it
    runs; in a compiled decode step (a static KV cache under ``torch.compile``) it is a 0-d device tensor, so that
    nothing reads it on the host. ``starts``/``lengths`` give each row's first real position and prompt length in
    padded coordinates, set by :meth:`padded`, or ``None`` when unknown (then rows are taken as unpadded).
    """

    past: int | Tensor = 0
    starts: list[int] | None = None
    lengths: list[int] | None = None

    @contextlib.contextmanager
    def padded(self, starts: list[int] | None, lengths: list[int] | None) -> Iterator[None]:
        """Tell the hooks where each row of the coming batch starts and how long its prompt is."""
        saved = self.starts, self.lengths
        self.starts, self.lengths = starts, lengths
        try:
            yield
        finally:
            self.starts, self.lengths = saved


@dataclass(frozen=True)
class Layout:
    """Chunk ``[past, past + seq)`` of a batch whose row r has its BOS at ``starts[r]`` and a prompt of ``lengths[r]``.

    >>> Layout(starts=(1, 0), lengths=(2, 3), seq=3).absolute().tolist()
    [0, 1, 2]
    """

    starts: tuple[int, ...]
    lengths: tuple[int, ...]
    seq: int
    past: int | Tensor = 0

    @property
    def batch(self) -> int:
        return len(self.starts)

    def absolute(self, device: torch.device | str = "cpu") -> Int[Tensor, " seq"]:
        """The absolute positions of the chunk's columns."""
        return absolute(self.past, self.seq, device)

    def per_row(self, values: Sequence[int], device: torch.device | str = "cpu") -> Int[Tensor, "batch 1"]:
        # built on the CPU and copied without waiting (torch.tensor(..., device=cuda) waits for the stream)
        return torch.tensor(list(values)).to(device, non_blocking=True)[:, None]


def absolute(past: int | Tensor, seq: int, device: torch.device | str = "cpu") -> Int[Tensor, " seq"]:
    """Positions ``[past, past + seq)``; ``past`` may be a 0-d device tensor (a compiled decode step).

    >>> absolute(2, 3).tolist(), absolute(torch.tensor(2), 3).tolist()
    ([2, 3, 4], [2, 3, 4])
    """
    return torch.arange(seq, device=device) + past


def of_batch(starts: Sequence[int], lengths: Sequence[int], seq: int) -> Layout:
    """The layout of a whole left-padded batch (no KV cache)."""
    return Layout(tuple(int(s) for s in starts), tuple(int(n) for n in lengths), int(seq), 0)


class Tracker:
    """Gives a hook the layout of each chunk it sees; one per hook.

    Uses what :meth:`Positions.padded` set; otherwise rows are unpadded and the prompt
    length is the last prefill's (kept here), so a KV-cached decode step still knows where
    the prompt ended.
    """

    def __init__(self, positions: Positions):
        self.positions = positions
        self._prompt: list[int] = []

    def layout(self, batch: int, seq: int) -> Layout:
        p = self.positions
        if p.starts is not None and p.lengths is not None and len(p.starts) == batch:
            return Layout(tuple(p.starts), tuple(p.lengths), seq, p.past)
        if p.past == 0:
            self._prompt = [seq] * batch
        lengths = self._prompt if len(self._prompt) == batch else [p.past + seq] * batch
        return Layout((0,) * batch, tuple(lengths), seq, p.past)


@dataclass(frozen=True)
class Scope:
    """Which positions all-position steering reaches: a phase, a span of the prompt, and BOS.

    ``phase``: ``"both"`` (prompt and generated tokens), ``"prompt"`` or ``"generation"``.
    ``span=(start, stop)``: prompt positions ``[start, stop)`` only (BOS = 0; slice rules: a
    negative ``stop`` counts from the prompt's end, ``None`` runs to it), per row, so one span
    serves a batch of prompts that share a head and a tail (e.g. :func:`actlens.core.chat.user_span`);
    generated tokens still follow ``phase``. ``include_bos=True`` adds at BOS too (llama.cpp's
    control vectors do); by default BOS, an attention sink in most models, is left alone.

    >>> Scope(span=(2, -1)).prompt_range(6)
    (2, 5)
    >>> Scope("generation").prompt_range(6)
    (6, 6)
    """

    phase: str = "both"
    span: tuple[int, int | None] | None = None
    include_bos: bool = False

    def __post_init__(self) -> None:
        _validation.choice("phase", self.phase, PHASES)
        if not isinstance(self.include_bos, bool):
            raise TypeError(f"include_bos must be True or False, got {self.include_bos!r}")
        if self.phase == "generation" and (self.span is not None or self.include_bos):
            raise ValueError("phase='generation' steers generated tokens only, so span= and include_bos=True (which "
                             "choose prompt positions) would do nothing; use phase='both' or 'prompt' with them")
        if self.span is None:
            return
        span = self.span
        if (not isinstance(span, tuple | list) or len(span) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in (span[0],))
                or not (span[1] is None or (isinstance(span[1], int) and not isinstance(span[1], bool)))):
            raise TypeError(f"span must be (start, stop) with an int start and an int or None stop, got {span!r}")
        start, stop = span
        if start < 0:
            raise ValueError(f"span start must be >= 0 (BOS = 0), got {start}; a negative start is not supported")
        if start == 0 and not self.include_bos:
            raise ValueError("span starts at 0, which is BOS; start it at 1, or pass include_bos=True to steer BOS too")
        if stop is not None and 0 <= stop <= start:
            raise ValueError(f"span {tuple(span)} is empty; stop must be greater than start (or negative: from the "
                             "prompt's end)")
        object.__setattr__(self, "span", (start, stop))

    @property
    def default(self) -> bool:
        return self.phase == "both" and self.span is None and not self.include_bos

    def prompt_range(self, length: int, prepend_bos: bool = True) -> tuple[int, int]:
        """Steered prompt positions ``[lo, hi)`` of a prompt of ``length`` tokens (BOS = 0)."""
        if self.phase == "generation":
            return length, length
        lo = 0 if self.include_bos or not prepend_bos else 1
        if self.span is None:
            return lo, length
        start, stop = self.span
        hi = length if stop is None else stop if stop >= 0 else length + stop
        if not start < hi <= length:
            raise ValueError(f"span {self.span} is outside a prompt of {length} tokens (BOS included): it covers "
                             f"[{start}, {hi}); pass a span inside every prompt, e.g. (1, {length})")
        return start, hi


@dataclass(frozen=True)
class Placement:
    """Where a vector of ``k`` positions goes: its alignment, whether row 0 is BOS's, and its :class:`Scope`.

    Positional alignments (front/mid/back) live in the prompt, so their scope is phase
    ``"both"`` or ``"prompt"`` (the same thing for them) without span or BOS options.
    """

    align: str
    k: int
    bos_row: bool
    prepend_bos: bool
    scope: Scope = Scope()

    def __post_init__(self) -> None:
        scope = self.scope
        if self.align == "all" or scope.default or (scope.phase == "prompt" and scope.span is None
                                                    and not scope.include_bos):
            return
        if scope.phase == "generation":
            raise ValueError(
                f"align={self.align!r} places the vector's {self.k} rows on prompt positions, and phase='generation' "
                "steers generated tokens only, so nothing would be added (generated tokens already see a "
                "positional addition through attention). Use phase='both', or align='all' (with position=i for "
                "an ActAdd vector) to add at generated tokens"
            )
        raise ValueError(f"span= and include_bos= choose positions for align='all'; align={self.align!r} already "
                         "has its window (and an ActAdd vector's row 0 is BOS's); drop them or use align='all'")

    @property
    def min_length(self) -> int:
        """Prompt positions (BOS included) this placement needs: 1 for ``align="all"``."""
        if self.align == "all":
            return 1
        return self.k + self._front

    @property
    def _front(self) -> int:
        return 0 if self.bos_row or not self.prepend_bos else 1

    def window(self, start: int, length: int) -> int:
        """First absolute position of a positional vector in a row whose BOS is at ``start``.

        >>> Placement("back", 2, False, True).window(3, 5)
        6
        """
        k = self.k
        if self.align == "front":
            offset = self._front
        elif self.align == "mid":  # the authors' centring: middle of the prompt minus half the vector
            offset = length // 2 - k // 2
        else:  # back
            offset = length - k
        if offset < 0 or offset + k > length:
            raise ValueError(
                f"the prompt has {length} tokens (BOS included) but the steering vector covers {k} "
                f"positions with align={self.align!r}; use a longer prompt, pass short_prompt='pad' to "
                "actlens.generate / actlens.steered_logits, or use align='all'"
            )
        return start + offset

    def first(self, layout: Layout, use: Sequence[bool] | None = None) -> list[int]:
        """Per row, the first absolute position the vector touches (:data:`NOWHERE` where ``use`` is False)."""
        use = [True] * layout.batch if use is None else use
        if self.align == "all":
            return [s + self.scope.prompt_range(n, self.prepend_bos)[0] if u else NOWHERE
                    for s, n, u in zip(layout.starts, layout.lengths, use, strict=True)]
        return [self.window(s, n) if u else NOWHERE
                for s, n, u in zip(layout.starts, layout.lengths, use, strict=True)]


def real(layout: Layout, device: torch.device | str = "cpu", *, skip_bos: bool = True) -> Bool[Tensor, "batch seq"]:
    """True at real tokens (left pads excluded), BOS excluded when ``skip_bos``.

    >>> real(of_batch([1, 0], [2, 3], 3)).tolist()
    [[False, False, True], [False, True, True]]
    """
    return layout.absolute(device)[None] >= layout.per_row([s + int(skip_bos) for s in layout.starts], device)


@dataclass(frozen=True)
class Bounds:
    """A placement's per-row numbers in one batch layout, as ``[batch, 1]`` device tensors.

    ``first``: the first position the vector touches (:data:`NOWHERE` in rows it does not apply to);
    ``end``/``stop``: the prompt's end and the span's stop, only where an ``align="all"`` scope cuts the
    prompt (a span, or ``phase="prompt"``). Made once per layout, read by every chunk of it.
    """

    first: Tensor
    end: Tensor | None = None
    stop: Tensor | None = None


def bounds(placement: Placement, layout: Layout, device: torch.device | str = "cpu", *,
           first: Sequence[int] | None = None) -> Bounds:
    """The :class:`Bounds` of ``placement`` in ``layout`` (``first``: :meth:`Placement.first`, when known)."""
    first = placement.first(layout) if first is None else first
    scope = placement.scope
    if placement.align != "all" or not (scope.span is not None or scope.phase == "prompt"):
        return Bounds(layout.per_row(first, device))
    pairs = list(zip(layout.starts, layout.lengths, strict=True))
    return Bounds(layout.per_row(first, device), layout.per_row([s + n for s, n in pairs], device),
                  layout.per_row([s + scope.prompt_range(n, placement.prepend_bos)[1] for s, n in pairs], device))


def window(placement: Placement, b: Bounds, at: Int[Tensor, " seq"]
           ) -> tuple[Int[Tensor, "batch seq"], Bool[Tensor, "batch seq"]]:
    """For a positional placement at absolute positions ``at``: which vector row each position gets
    (clamped), and whether it is inside the window."""
    rel = at[None] - b.first  # position within the window
    return rel.clamp(0, placement.k - 1), (rel >= 0) & (rel < placement.k)


def mask(placement: Placement, b: Bounds, at: Int[Tensor, " seq"]) -> Bool[Tensor, "batch seq"]:
    """True where ``placement`` adds its vector among the absolute positions ``at`` (see :func:`injected`)."""
    if placement.align != "all":
        return window(placement, b, at)[1]
    inside = at[None] >= b.first
    if b.end is not None:  # cut the prompt at the span's stop / its end
        in_prompt = at[None] < b.stop
        inside &= in_prompt | (at[None] >= b.end) if placement.scope.phase == "both" else in_prompt
    return inside


def window_index(
    placement: Placement, first: Sequence[int], layout: Layout, device: torch.device | str = "cpu"
) -> tuple[Int[Tensor, "batch seq"], Bool[Tensor, "batch seq"]]:
    """For a positional placement: which vector row each position gets (clamped), and whether it is inside."""
    return window(placement, Bounds(layout.per_row(first, device)), layout.absolute(device))


def injected(
    placement: Placement, layout: Layout, device: torch.device | str = "cpu", *, first: Sequence[int] | None = None
) -> Bool[Tensor, "batch seq"]:
    """True at every position the vector is added to (the zero BOS row of an ActAdd vector included).

    ``first`` is :meth:`Placement.first` of this layout when the caller keeps it.

    >>> injected(Placement("front", 2, True, True), of_batch([1, 0], [3, 4], 4)).int().tolist()
    [[0, 1, 1, 0], [1, 1, 0, 0]]
    >>> injected(Placement("all", 1, False, True), of_batch([1, 0], [3, 4], 4)).int().tolist()
    [[0, 0, 1, 1], [0, 1, 1, 1]]
    """
    return mask(placement, bounds(placement, layout, device, first=first), layout.absolute(device))


def injected_at(placement: Placement, length: int) -> list[int]:
    """Positions (BOS = 0) of one unpadded prompt of ``length`` tokens that the vector is added to.

    >>> injected_at(Placement("mid", 2, False, True), 6)
    [2, 3]
    """
    return injected(placement, of_batch([0], [length], length))[0].nonzero().flatten().tolist()


__all__ = ["Bounds", "Layout", "Placement", "Positions", "Scope", "Tracker", "absolute", "bounds", "injected",
           "injected_at", "mask", "of_batch", "real", "window", "window_index"]
