"""Steering vectors built inside the chat template (:mod:`actlens.core.chat`).

- :func:`chat_mean_diff_vector`: CAA's construction (Rimsky et al. 2023): the same user turn
  with contrasting assistant answers, the residual read at a chosen position of the answer,
  averaged over contrasts and differenced. The read is where the behaviour is expressed, in
  the format the model will be steered in.
- :func:`chat_actadd_vector`: an ActAdd pair as the content of a user turn. The rows cover
  the template's opening (identical for both prompts, so exactly zero) and the pair's tokens,
  so ``align="front"`` on a chat prompt with the same system prompt lands the difference on
  the first tokens of the user's own words.

Both record the absolute positions they read (``read_positions``) and the template's
fingerprint (``chat_template``) on the :class:`~actlens.vectors.steering_vector.SteeringVector`.
"""

from collections.abc import Sequence

import torch
from torch import Tensor
from transformer_lens import TransformerBridge

from actlens.core import chat, prompts
from actlens.core import validation as _validation
from actlens.core.types import ReadPosition
from actlens.models.activations import resid_pre
from actlens.models.model import check_layer
from actlens.vectors.steering_vector import SteeringVector, from_values

Contrast = tuple[chat.Conversation, str, str]
"""A user turn (or conversation), a positive and a negative assistant answer."""


def _vector(model, layer: int, values: Tensor, kind: str, **kw) -> SteeringVector:
    return from_values(model, layer, values.float(), kind, chat_template=chat.template_id(model), **kw)


def _answer_positions(start: int, end: int, read_position: ReadPosition | int, text: str) -> tuple[int, ...]:
    """Absolute positions of the answer tokens ``[start, end)`` that ``read_position`` names."""
    n = end - start
    if read_position == "last":
        return (end - 1,)
    if read_position == "mean":
        return tuple(range(start, end))
    if not -n <= read_position < n:
        raise ValueError(f"read_position {read_position} is outside the answer {text!r}, which has {n} tokens; "
                         f"pass an index in [{-n}, {n}) or 'last' / 'mean'")
    return (start + read_position % n,)


def _read(model, rows: list[list[int]], where: list[tuple[int, ...]], layer: int, batch_size: int) -> Tensor:
    """Mean residual over ``where[i]`` in each row i: [n, d_model] float32."""
    out = []
    for i in range(0, len(rows), batch_size):
        batch = prompts.left_pad(rows[i:i + batch_size], prompts.pad_token_id(model))
        acts = resid_pre(model, batch.tokens, [layer], batch.attention_mask)[layer]
        for row, start in enumerate(batch.starts):
            idx = torch.tensor(where[i + row]) + start
            out.append(acts[row, idx].float().mean(0).cpu())
    return torch.stack(out)


def chat_mean_diff_vector(
    model: TransformerBridge,
    contrasts: Sequence[Contrast],
    layer: int,
    *,
    system: str | None = None,
    read_position: ReadPosition | int = "last",
    batch_size: int = 16,
) -> SteeringVector:
    """CAA-style mean difference from chat-formatted contrasts.

    Each contrast is ``(user_turn, positive_answer, negative_answer)``: the user turn (a
    string, or a list of messages ending with a user turn) is rendered with the template and
    its generation prompt, the answer follows (its turn left open, as CAA does), and the
    residual entering ``layer`` is read at ``read_position`` of the answer's tokens
    (``"last"``, ``"mean"`` over them, or an index into them: 0 = the answer's first token).
    The result has one row; apply it with ``align="all"`` to a chat prompt.

    >>> from actlens.models.tiny import tiny_model
    >>> v = chat_mean_diff_vector(tiny_model(), [("How was it?", "Lovely.", "Awful.")], layer=1)
    >>> v.k, v.read_positions
    (1, ((36,), (35,)))
    """
    layer = check_layer(model, layer)
    _validation.positive_int("batch_size", batch_size)
    contrasts = list(contrasts)
    if not contrasts:
        raise ValueError("contrasts is empty; pass (user_turn, positive_answer, negative_answer) triples")
    for i, item in enumerate(contrasts):
        if not (isinstance(item, tuple | list) and len(item) == 3):
            raise TypeError(f"contrasts[{i}] must be (user_turn, positive_answer, negative_answer), got {item!r}")
    if isinstance(read_position, str):
        _validation.choice("read_position", read_position, ("last", "mean"))
    elif isinstance(read_position, bool) or not isinstance(read_position, int):
        raise TypeError(f"read_position must be 'last', 'mean' or an int, got {read_position!r}")
    sides: list[tuple[list[list[int]], list[tuple[int, ...]], list[str]]] = []
    for side in (1, 2):
        rows, where, texts = [], [], []
        for turn, *answers in contrasts:
            ids, start = chat.answer_prefix(model, turn, answers[side - 1], system=system)
            rows.append(ids)
            where.append(_answer_positions(start, len(ids), read_position, answers[side - 1]))
            texts.append(model.tokenizer.decode(ids))
        sides.append((rows, where, texts))
    (plus_rows, plus_at, plus_texts), (minus_rows, minus_at, minus_texts) = sides
    values = (_read(model, plus_rows, plus_at, layer, batch_size).mean(0)
              - _read(model, minus_rows, minus_at, layer, batch_size).mean(0))[None]
    return _vector(
        model, layer, values, "mean_diff", bos_row=False, plus=tuple(plus_texts), minus=tuple(minus_texts),
        plus_tokens=tuple(map(tuple, plus_rows)), minus_tokens=tuple(map(tuple, minus_rows)),
        read_position=f"chat answer {read_position}", read_positions=tuple(plus_at + minus_at),
        notes="chat-formatted contrasts: same user turn, contrasting assistant answers (CAA)",
    )


def chat_actadd_vector(
    model: TransformerBridge, plus: str, minus: str, layer: int, *, system: str | None = None,
    history: Sequence[chat.Message] = (),
) -> SteeringVector:
    """ActAdd inside the template: the pair as the (start of the) user's turn.

    Both prompts are rendered as a user turn after ``history`` (earlier messages) and
    ``system``; the vector keeps the template's opening (its rows are exactly zero: the tokens
    are the same) and the pair's tokens, the shorter right-padded with the space token as in
    :func:`actlens.actadd_vector`. ``align="front"`` then adds the difference at the first
    tokens of a chat prompt's user turn, when the prompt has the same system prompt and history.

    >>> from actlens.models.tiny import tiny_model
    >>> v = chat_actadd_vector(tiny_model(), "Love", "Hate", layer=1)
    >>> v.k, float(v.values[:6].abs().max())   # "<bos>user\\n": 6 tokens before the words
    (10, 0.0)
    """
    layer = check_layer(model, layer)
    pair = [_validation.texts(name, [t])[0] for name, t in (("plus", plus), ("minus", minus))]
    _validation.actadd_pair(*pair)
    marker = "\x00actlens\x00"
    before = chat.render(model, [*history, {"role": "user", "content": marker}], system=system).partition(marker)[0]
    head = chat.token_ids(model, before)
    contents = [chat.token_ids(model, t) for t in pair]
    fill = prompts.space_pad(model)
    n = max(map(len, contents))
    rows = [head + c + [fill.token_id] * (n - len(c)) for c in contents]
    _validation.distinct_tokens(*pair, rows[0], rows[1])
    for text, c in zip(pair, contents, strict=True):
        full = chat.encode(model, [*history, {"role": "user", "content": text}], system=system)
        if full[:len(head) + len(c)] != head + c:
            raise ValueError(f"the template tokenises {text!r} differently inside the user turn than on its own, "
                             "so its positions would not line up; use actlens.chat_mean_diff_vector instead")
    acts = resid_pre(model, torch.tensor(rows), [layer])[layer]
    read = tuple(range(len(rows[0])))
    return _vector(
        model, layer, acts[0] - acts[1], "actadd", bos_row=True, plus=(pair[0],), minus=(pair[1],),
        plus_tokens=(tuple(rows[0]),), minus_tokens=(tuple(rows[1]),), pad_token_id=fill.token_id,
        pad_source=fill.source, read_positions=(read, read),
        notes=f"chat-formatted ActAdd: the pair's tokens start at position {len(head)}, after the template's opening",
    )


__all__ = ["Contrast", "chat_actadd_vector", "chat_mean_diff_vector"]
