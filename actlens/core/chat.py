"""Chat prompts: conversations in the tokenizer's chat template, as people use instruct models.

A conversation is a string (one user turn) or a list of ``{"role", "content"}`` messages
(roles ``system``, ``user``, ``assistant``; the last one a user turn). :func:`encode` renders
it with the tokenizer's own template and the generation prompt (the opening of the
assistant's turn) and tokenises the result as it is, special tokens included, so the
template decides what comes first (SmolLM2: ``<|im_start|>``, which is also its BOS).

Steering built on raw text and applied to a templated prompt (or the reverse) is a known
failure (RepE #59); :mod:`actlens.vectors.chat` builds vectors inside the template.

>>> from actlens.models.tiny import tiny_model
>>> model = tiny_model()
>>> render(model, "Hi")
'<bos>user\\nHi<eos>\\n<bos>assistant\\n'
"""

import hashlib
from collections.abc import Mapping, Sequence
from typing import Literal, get_args

from transformer_lens import TransformerBridge

from actlens.core import validation as _validation

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = get_args(Role)
Message = Mapping[str, str]
Conversation = str | Sequence[Message]
"""One user turn (a string), or a list of ``{"role": ..., "content": ...}`` messages."""


def template(model: TransformerBridge) -> str:
    """The tokenizer's chat template; a clear error when it has none."""
    tok = model.tokenizer
    found = getattr(tok, "chat_template", None)
    if not found:
        name = getattr(getattr(model, "cfg", None), "model_name", None) or type(tok).__name__
        raise ValueError(
            f"chat=True needs a chat template, but the tokenizer of {name!r} has none (a base model, or a "
            "tokenizer saved without one); pass chat=False to use raw text, or set "
            "model.tokenizer.chat_template to a Jinja template"
        )
    if not isinstance(found, str):
        raise ValueError(f"the tokenizer holds several chat templates ({sorted(found)}); set "
                         "model.tokenizer.chat_template to the one string to use")
    return found


def template_id(model: TransformerBridge) -> str:
    """A short fingerprint of the chat template (recorded on chat-formatted vectors)."""
    return hashlib.sha256(template(model).encode()).hexdigest()[:16]


def messages(conversation: Conversation, *, system: str | None = None) -> list[dict[str, str]]:
    """Validated messages: a string becomes one user turn; ``system`` is prepended.

    >>> messages("Hi", system="Be brief.")
    [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hi'}]
    """
    if isinstance(conversation, str):
        conversation = [{"role": "user", "content": conversation}]
    if isinstance(conversation, Mapping) or not isinstance(conversation, Sequence):
        raise TypeError(f"a chat prompt must be a string or a list of {{'role', 'content'}} messages, "
                        f"got {type(conversation).__name__} {conversation!r}")
    out = []
    for i, msg in enumerate(conversation):
        if not isinstance(msg, Mapping) or set(msg) != {"role", "content"}:
            raise ValueError(f"message {i} must be a dict with exactly the keys 'role' and 'content', got {msg!r}")
        role, content = msg["role"], msg["content"]
        _validation.choice(f"message {i}'s role", role, ROLES)
        if not isinstance(content, str) or not content.strip():
            raise ValueError(f"message {i} ({role}) has empty content {content!r}; every message needs some text")
        _validation.encodable(f"message {i}'s content", content)
        out.append({"role": role, "content": content})
    if system is not None:
        if not isinstance(system, str) or not system.strip():
            raise ValueError(f"system must be a non-empty string or None, got {system!r}")
        _validation.encodable("system", system)
        if any(m["role"] == "system" for m in out):
            raise ValueError("system= was given but the messages already hold a system message; pass one of the two")
        out.insert(0, {"role": "system", "content": system})
    if not out:
        raise ValueError("a chat prompt needs at least one message; pass a string or a list with a user turn")
    if out[-1]["role"] != "user":
        raise ValueError(f"the last message must be a user turn (the model answers it), got role "
                         f"{out[-1]['role']!r}; end the conversation with {{'role': 'user', 'content': ...}}")
    if any(m["role"] == "system" for m in out[1:]):
        raise ValueError("a system message may only come first; move it to the start or pass it as system=")
    return out


def conversations(prompts: Conversation | Sequence[Conversation]) -> list[Conversation]:
    """Split ``generate``'s prompts into conversations: a string or a message list is one.

    >>> len(conversations(["Hi", [{"role": "user", "content": "Yo"}]]))
    2
    """
    if isinstance(prompts, str):
        return [prompts]
    items = list(prompts)
    if items and all(isinstance(m, Mapping) for m in items):
        return [items]  # one conversation given as its messages
    if not items:
        raise ValueError("prompts is empty; pass at least one string or conversation")
    return items


def render(model: TransformerBridge, conversation: Conversation, *, system: str | None = None,
           generation_prompt: bool = True) -> str:
    """The conversation as the template writes it, with the assistant's opening when asked."""
    template(model)
    return model.tokenizer.apply_chat_template(messages(conversation, system=system), tokenize=False,
                                               add_generation_prompt=generation_prompt)


def token_ids(model: TransformerBridge, text: str) -> list[int]:
    """Ids of already-templated text: special tokens as written, none added."""
    return list(model.tokenizer(text, add_special_tokens=False)["input_ids"])


def encode(model: TransformerBridge, conversation: Conversation, *, system: str | None = None) -> list[int]:
    """Token ids of the rendered conversation, ending with the generation prompt.

    >>> from actlens.models.tiny import tiny_model
    >>> ids = encode(tiny_model(), "Hi")
    >>> ids[0] == tiny_model().tokenizer.bos_token_id
    True
    """
    return token_ids(model, render(model, conversation, system=system))


def answer_prefix(model: TransformerBridge, conversation: Conversation, answer: str, *,
                  system: str | None = None) -> tuple[list[int], int]:
    """Ids of the conversation plus the start of an assistant ``answer`` (its turn left open).

    Returns the ids and where the answer's tokens begin. The answer is tokenised on its own
    after the generation prompt, exactly as the model would have produced it.
    """
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f"an assistant answer must be non-empty text, got {answer!r}")
    prompt = encode(model, conversation, system=system)
    return prompt + token_ids(model, answer), len(prompt)


def user_span(model: TransformerBridge, conversation: Conversation, *,
              system: str | None = None) -> tuple[int, int | None]:
    """The last user turn's content as a slice ``(start, stop)`` of the prompt's positions.

    ``start`` counts from the prompt's first token (0), ``stop`` is negative (from the
    prompt's end; ``None`` when the template writes nothing after the user turn), so one
    span serves a batch of prompts that share the system prompt and template; pass it as
    ``span=`` to steer only the user's words.

    >>> from actlens.models.tiny import tiny_model
    >>> model = tiny_model()
    >>> start, stop = user_span(model, "Hi there")
    >>> model.tokenizer.decode(encode(model, "Hi there")[start:stop])
    'Hi there'
    """
    msgs = messages(conversation, system=system)
    content = msgs[-1]["content"]
    marker = "\x00actlens\x00"
    before, _, after = render(model, msgs[:-1] + [{"role": "user", "content": marker}]).partition(marker)
    head, tail = token_ids(model, before), token_ids(model, after)
    full = encode(model, msgs)
    if full[:len(head)] != head or (tail and full[-len(tail):] != tail):
        raise ValueError("the template's text around the user turn tokenises differently with the message in "
                         "place, so the user turn has no clean token span; give span= as explicit positions")
    return len(head), -len(tail) if tail else None


def end_of_turn(model: TransformerBridge) -> int | None:
    """The special token the template closes an assistant turn with (None if it writes none).

    A chat reply ends there, and decoding stops there (:func:`actlens.generate` with ``chat=True``);
    for SmolLM2 (``<|im_end|>``) and the tiny models it is also EOS, for templates such as Llama 3's
    (``<|eot_id|>``) and Gemma's (``<end_of_turn>``) it is not.

    >>> from actlens.models.tiny import tiny_model
    >>> model = tiny_model()
    >>> end_of_turn(model) == model.tokenizer.eos_token_id
    True
    """
    marker = "\x00actlens\x00"
    msgs = [{"role": "user", "content": "x"}, {"role": "assistant", "content": marker}]
    text = model.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
    after = token_ids(model, text.partition(marker)[2])
    special = set(getattr(model.tokenizer, "all_special_ids", ()))
    # Added tokens flagged special count too: a GGUF-converted Gemma tokenizer lists <end_of_turn> only there.
    added = getattr(model.tokenizer, "added_tokens_decoder", {}) or {}
    special |= {i for i, token in added.items() if getattr(token, "special", False)}
    return after[0] if after and after[0] in special else None


def reply_display(conversation: Conversation) -> str:
    """The last user turn's text (what a chat generation shows as its prompt)."""
    return messages(conversation)[-1]["content"]


__all__ = ["ROLES", "Conversation", "Role", "answer_prefix", "conversations", "encode", "end_of_turn", "messages",
           "render", "reply_display", "template", "template_id", "token_ids", "user_span"]
