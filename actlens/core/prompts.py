"""Tokenisation with an explicit BOS and padding policy.

actlens tokenises every text itself (``BOS + tokens``, no other special tokens) so that
extraction and application agree on positions, whatever the tokenizer's own settings.
"""

from dataclasses import dataclass

import torch
from transformer_lens import TransformerBridge

from actlens.core import validation as _validation
from actlens.core.positions import Layout, of_batch


def bos_id(model: TransformerBridge) -> int | None:
    return model.tokenizer.bos_token_id


def encode(model: TransformerBridge, text: str, *, prepend_bos: bool = True) -> list[int]:
    """Token ids of ``text``, with BOS first when ``prepend_bos``."""
    ids = list(model.tokenizer(text, add_special_tokens=False)["input_ids"])
    bos = bos_id(model)
    if prepend_bos:
        if bos is None:
            raise ValueError("this tokenizer has no BOS token; pass prepend_bos=False")
        ids = [bos, *ids]
    return ids


@dataclass(frozen=True)
class SpacePad:
    """The token ActAdd pads with, and where it came from."""

    token_id: int
    source: str  # "space" (the model's single " " token) or the fallback used


def space_pad(model: TransformerBridge) -> SpacePad:
    """The model's single-token space (the ActAdd authors' pad), with documented fallbacks.

    If ``" "`` is not one token, fall back to the tokenizer's pad token when it differs
    from BOS, else to EOS (what the authors' code used without ``custom_pad_id``).
    """
    ids = model.tokenizer(" ", add_special_tokens=False)["input_ids"]
    if len(ids) == 1:
        return SpacePad(int(ids[0]), "space")
    tok = model.tokenizer
    if tok.pad_token_id is not None and tok.pad_token_id != tok.bos_token_id:
        return SpacePad(int(tok.pad_token_id), "pad_token (no single-token space)")
    return SpacePad(int(tok.eos_token_id), "eos_token (no single-token space, no distinct pad)")


def pad_token_id(model: TransformerBridge) -> int:
    tok = model.tokenizer
    for candidate in (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


@dataclass(frozen=True)
class Batch:
    """A left-padded batch: ``starts[i]`` is row i's first real position."""

    tokens: torch.Tensor  # [batch, pos]
    attention_mask: torch.Tensor  # [batch, pos]
    starts: list[int]
    lengths: list[int]

    @property
    def layout(self) -> Layout:
        """The batch's row layout (:mod:`actlens.core.positions`)."""
        return of_batch(self.starts, self.lengths, int(self.tokens.shape[1]))


def token_strings(model: TransformerBridge, ids) -> list[str]:
    """Each token id decoded on its own."""
    return [model.tokenizer.decode([int(i)]) for i in ids]


def left_pad(rows: list[list[int]], pad_id: int) -> Batch:
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row):] = 1
    return Batch(tokens, mask, [width - len(r) for r in rows], [len(r) for r in rows])


def encode_batch(
    model: TransformerBridge,
    texts: list[str],
    *,
    prepend_bos: bool = True,
    min_length: int = 0,
    short_prompt: str = "error",
    max_new_tokens: int = 0,
) -> Batch:
    """Encode and left-pad ``texts``; check lengths against a vector and the context.

    ``min_length`` is the number of positions a positional vector needs. A shorter prompt
    raises, or, with ``short_prompt="pad"``, gets space tokens inserted after BOS (the
    authors' ``injection_mode="pad"``) so that the vector never overlaps missing text.
    """
    texts = _validation.texts("prompts", texts)
    rows = [encode(model, t, prepend_bos=prepend_bos) for t in texts]
    return pad_rows(model, rows, texts, prepend_bos=prepend_bos, min_length=min_length, short_prompt=short_prompt,
                    max_new_tokens=max_new_tokens)


def pad_rows(
    model: TransformerBridge,
    rows: list[list[int]],
    texts: list[str],
    *,
    prepend_bos: bool = True,
    min_length: int = 0,
    short_prompt: str = "error",
    max_new_tokens: int = 0,
) -> Batch:
    """Left-pad already-encoded rows (e.g. chat-templated, :mod:`actlens.core.chat`) after the checks of :func:`encode_batch`."""
    rows = [list(r) for r in rows]
    for text, row in zip(texts, rows, strict=True):
        if len(row) < min_length:
            if short_prompt == "pad":
                fill = [space_pad(model).token_id] * (min_length - len(row))
                row[int(prepend_bos):int(prepend_bos)] = fill
            else:
                raise ValueError(
                    f"prompt {text!r} has {len(row)} tokens (BOS included) but the steering vector "
                    f"covers {min_length} positions; use a longer prompt, pass short_prompt='pad' to "
                    f"front-pad it with space tokens, or use align='all'"
                )
    n_ctx = int(model.cfg.n_ctx) if getattr(model.cfg, "n_ctx", None) else None
    longest = max(len(r) for r in rows)
    if n_ctx and longest + max_new_tokens > n_ctx:
        raise ValueError(
            f"a prompt has {longest} tokens and {max_new_tokens} new tokens were asked for, but the "
            f"model's context is {n_ctx}; shorten the prompt or ask for fewer tokens"
        )
    return left_pad(rows, pad_token_id(model))
