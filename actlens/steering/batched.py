"""Many steering settings in one batch: per-row steering and batch-independent sampling.

Sweeps put settings on the batch dimension: row ``r`` of a batch gets its own steering
:class:`Request` (vector, coefficient, alignment) or none. :func:`steer_rows` is the per-row
generalisation of :func:`actlens.steer`: one hook per layer that any row steers, adding each
row's values only to that row, at the positions :mod:`actlens.core.positions` gives
(front/mid/back) or at every position after BOS (``all``). Like ``steer`` it is scoped (all
hooks go on exit, also on error) and pure (hooks return a new tensor).

Sampling is *keyed per row*: each row draws one uniform number per step from its own
generator, seeded from the row's key (for sweeps: the seed and the prompt), and picks its
token by inverse-CDF sampling (:class:`actlens.core.sampling.KeyedSample`). This samples from the
same distribution as the paper's settings (temperature, frequency penalty, top-p, with
:mod:`actlens.core.sampling`'s processors), but a row's tokens depend only
on its prompt, request and key, never on the other rows of its batch. So a batched sweep and
a one-setting-at-a-time run give the same tokens, and the unsteered and steered completions
of one key share their random numbers (paired comparisons). These samples differ from
:func:`actlens.generate`'s, which share one random stream per batch.
"""

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import TransformerBridge

from actlens.core import prompts, sampling
from actlens.core import validation as _validation
from actlens.core.positions import Positions, injected_at
from actlens.core.sampling import Sampling
from actlens.core.types import ALIGNS, SHORT_PROMPTS, Align, Phase, ShortPrompt
from actlens.models.model import device_of, fast_tree, forward, padding, state
from actlens.steering.conditional import gate_hooks
from actlens.steering.intervene import Addition, Steering, additions, make_hook, needed_length


@dataclass(frozen=True)
class Request:
    """One row's steering: as the arguments of :func:`actlens.steer`."""

    vector: Steering
    coeff: float = 1.0
    align: Align = "front"
    position: int | None = None
    phase: Phase = "both"
    span: tuple[int, int | None] | None = None
    include_bos: bool = False

    def __post_init__(self) -> None:
        _validation.choice("align", self.align, ALIGNS)
        _validation.finite("coeff", self.coeff)

    @property
    def where(self) -> dict:
        """The placement arguments of :func:`actlens.steer` (align, position, phase, span, include_bos)."""
        return dict(align=self.align, position=self.position, phase=self.phase, span=self.span,
                    include_bos=self.include_bos)


def _row_additions(model: TransformerBridge, requests: Sequence[Request | None]) -> list[dict[str, list[Addition]]]:
    """Validated additions per row, grouped by hook point (validation runs once per distinct request)."""
    seen: dict[tuple, dict[str, list[Addition]]] = {}
    out = []
    for req in requests:
        if req is None:
            out.append({})
            continue
        if not isinstance(req, Request):
            raise TypeError(f"each row needs an actlens.steering.batched.Request or None, got {type(req).__name__}")
        # rows of a sweep share vector objects: validate each (vector, coeff, placement) once
        key = (id(req.vector), req.coeff, repr(sorted(req.where.items())))
        if key not in seen:
            seen[key] = additions(model, req.vector, req.coeff, **req.where)
        out.append(seen[key])
    return out


def min_length(model: TransformerBridge, request: Request | None) -> int:
    """Prompt positions (BOS included) that ``request`` needs: 1 without a positional vector."""
    if request is None:
        return 1
    return needed_length(model, request.vector, request.coeff, **request.where)


def injected_positions(model: TransformerBridge, request: Request | None, length: int) -> set[int]:
    """Positions (BOS = 0) a positional ``request`` adds to in an unpadded text of ``length`` tokens.

    Empty for ``align="all"`` (every position after BOS) and for no request: scoring leaves
    out the predictions at these positions for every condition alike.
    """
    if request is None or request.align == "all":
        return set()
    grouped = additions(model, request.vector, request.coeff, **request.where)
    return {p for adds in grouped.values() for add in adds for p in injected_at(add.placement, length)}


def scored_positions(model: TransformerBridge, rows: Sequence[Sequence[int]],
                     requests: Sequence[Request | None]) -> list[list[int]]:
    """Per token row, the prediction positions that no request injects at (the last one excluded: no target)."""
    out = []
    for row in rows:
        excluded = set().union(*(injected_positions(model, r, len(row)) for r in requests))
        out.append([p for p in range(len(row) - 1) if p not in excluded])
    return out


def _row_hook(rows: list[list[Addition]], positions: Positions):
    """Hook for one layer: row r gets ``rows[r]`` (possibly nothing); returns a new tensor.

    Each distinct addition (equal values and placement: :meth:`Addition.key`, however many
    request objects carry it) is applied once, masked to the rows that ask for it
    (:func:`actlens.steering.intervene.make_hook` with ``rows``).
    """
    memo: dict[int, tuple] = {}  # rows share Addition objects: read each one's values once

    def key_of(add: Addition) -> tuple:
        if id(add) not in memo:
            memo[id(add)] = add.key()
        return memo[id(add)]

    keys = [[key_of(add) for add in adds] for adds in rows]
    distinct = {key: add for adds, row_keys in zip(rows, keys, strict=True) for key, add in zip(row_keys, adds,
                                                                                                 strict=True)}
    masks = [[key in row_keys for row_keys in keys] for key in distinct]
    return make_hook(list(distinct.values()), positions, masks)


@contextlib.contextmanager
def steer_rows(model: TransformerBridge, requests: Sequence[Request | None]) -> Iterator[TransformerBridge]:
    """Steer row ``r`` of every batch run inside the block with ``requests[r]`` (``None``: unsteered).

    Run padded batches through :func:`actlens.forward` inside :func:`actlens.models.model.padding`
    (as :func:`forward_rows` and :func:`generate_rows` do) so the hooks know where rows start.

    >>> from actlens.models.tiny import tiny_model
    >>> from actlens.vectors import actadd_vector
    >>> model = tiny_model()
    >>> v = actadd_vector(model, "Love", "Hate", layer=1)
    >>> tokens = torch.tensor([[0, 40, 41, 42, 43, 44]] * 2)
    >>> with steer_rows(model, [None, Request(v, 4.0)]):
    ...     logits = model(tokens)
    >>> bool(torch.equal(logits[0], model(tokens)[0])), bool(torch.equal(logits[1], model(tokens)[1]))
    (True, False)
    """
    per_row = _row_additions(model, requests)
    names = sorted({name for grouped in per_row for name in grouped})  # hook points: each vector's layer and site
    st = state(model)  # its blocks record the KV-cache length on the bridge path; the fast tree records its own
    hooks = [(name, _row_hook([g.get(name, []) for g in per_row], st.positions)) for name in names]
    hooks = gate_hooks([a for g in per_row for adds in g.values() for a in adds], st.positions) + hooks
    with model.hooks(fwd_hooks=hooks):
        yield model


def encode_rows(
    model: TransformerBridge, texts: Sequence[str], requests: Sequence[Request | None], *,
    short_prompt: ShortPrompt = "error", max_new_tokens: int = 0,
) -> list[list[int]]:
    """BOS + tokens per row, long enough for the row's request (or padded, ``short_prompt="pad"``)."""
    _validation.choice("short_prompt", short_prompt, SHORT_PROMPTS)
    if len(texts) != len(requests):
        raise ValueError(f"got {len(texts)} texts but {len(requests)} requests; pass one request (or None) per text")
    need = {id(r): min_length(model, r) for r in requests}
    return [prompts.encode_batch(model, [t], min_length=need[id(r)], short_prompt=short_prompt,
                                 max_new_tokens=max_new_tokens).tokens[0].tolist()
            for t, r in zip(texts, requests, strict=True)]


def forward_rows(
    model: TransformerBridge, rows: Sequence[Sequence[int]], requests: Sequence[Request | None]
) -> tuple[Float[Tensor, "batch pos d_vocab"], prompts.Batch]:
    """Logits of left-padded token rows, row ``r`` steered by ``requests[r]``.

    >>> from actlens.models.tiny import tiny_model
    >>> logits, batch = forward_rows(tiny_model(), [[0, 40, 41], [0, 40]], [None, None])
    >>> tuple(logits.shape[:2]), batch.starts
    ((2, 3), [0, 1])
    """
    if len(rows) != len(requests) or not rows:
        raise ValueError(f"need one request per row and at least one row, got {len(rows)} rows and "
                         f"{len(requests)} requests")
    batch = prompts.left_pad([list(r) for r in rows], prompts.pad_token_id(model))
    with torch.inference_mode(), padding(model, batch.starts, batch.lengths), steer_rows(model, requests):
        logits = forward(model, batch.tokens, batch.attention_mask)
    return logits, batch


def generate_rows(
    model: TransformerBridge,
    rows: Sequence[Sequence[int]],
    requests: Sequence[Request | None],
    seeds: Sequence[int],
    settings: Sampling = Sampling(),
    compile: sampling.CompileSetting = False,
) -> list[list[int]]:
    """New token ids per row (EOS and what follows removed), one batch, keyed sampling.

    ``rows`` are token ids with BOS (see :func:`encode_rows`); ``seeds[r]`` seeds row r's noise
    (see :func:`actlens.core.sampling.key_seed`). ``settings.temperature=0`` is greedy.

    >>> from actlens.models.tiny import tiny_model
    >>> model = tiny_model()
    >>> a = generate_rows(model, [[0, 40, 41], [0, 50]], [None, None], [7, 8], Sampling(max_new_tokens=4))
    >>> b = generate_rows(model, [[0, 50]], [None], [8], Sampling(max_new_tokens=4))
    >>> a[1] == b[0]   # a row does not depend on the others
    True
    """
    if not (len(rows) == len(requests) == len(seeds)) or not rows:
        raise ValueError(f"need as many requests and seeds as rows (at least one), got {len(rows)}, "
                         f"{len(requests)}, {len(seeds)}")
    if not isinstance(settings, Sampling):
        raise TypeError(f"settings must be an actlens.core.sampling.Sampling, got {type(settings).__name__}")
    eos = model.tokenizer.eos_token_id if settings.stop_at_eos else None
    from actlens.steering.generation import compiled

    compile_with = compiled(model, compile)  # static KV cache + torch.compile (actlens.generate's compile=)
    if fast_tree(model) is None:  # no KV cache: recompute; group equal lengths so no row is padded
        out: list[list[int]] = [[] for _ in rows]
        for length in sorted({len(r) for r in rows}):
            idx = [i for i, r in enumerate(rows) if len(r) == length]
            tokens = torch.tensor([list(rows[i]) for i in idx], dtype=torch.long, device=device_of(model))
            procs = sampling.processors(settings, torch.zeros(len(idx), dtype=torch.long), [seeds[i] for i in idx])
            with (torch.inference_mode(), padding(model, [0] * len(idx), [length] * len(idx)),
                  steer_rows(model, [requests[i] for i in idx])):
                new = sampling.decode_loop(lambda t: forward(model, t)[:, -1], tokens, procs,
                                           max_new_tokens=settings.max_new_tokens, sample=False, eos=eos)
            for i, row in zip(idx, new.tolist(), strict=True):
                out[i] = sampling.until_eos(row, eos)
        return out
    batch = prompts.left_pad([list(r) for r in rows], prompts.pad_token_id(model))
    config = sampling.generation_config(settings, sample=False, eos=eos, pad_token_id=prompts.pad_token_id(model),
                                        compile=compile_with)
    procs = sampling.processors(settings, torch.tensor(batch.starts), seeds)
    device = device_of(model)
    with torch.inference_mode(), padding(model, batch.starts, batch.lengths), steer_rows(model, requests):
        new = sampling.hf_generate(fast_tree(model), batch.tokens.to(device), batch.attention_mask.to(device),
                                   config, procs)
    return [sampling.until_eos(row, eos) for row in new.tolist()]


__all__ = ["Request", "encode_rows", "forward_rows", "generate_rows", "injected_positions", "min_length",
           "scored_positions", "steer_rows"]
