"""Steered forward passes and generation.

Hugging Face models generate with Hugging Face's own ``generate`` loop (KV cache, SDPA)
on the fast tree (see :mod:`actlens.model`), steered through the TransformerLens
HookPoints. TransformerLens native models, which have no KV cache, use a small uncached
loop. Sampling follows the ActAdd paper's settings by default: temperature 1, top-p 0.3,
frequency penalty 1, applied in TransformerLens's order (temperature, frequency penalty,
then top-p). The frequency penalty counts the prompt's and the generated tokens but not
left padding, so padded batches sample from the same distributions as single prompts.
"""

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import TransformerBridge
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import TemperatureLogitsWarper

from actlens import _validation, prompts
from actlens import chat as chat_
from actlens.intervene import Steering, needed_length, steer
from actlens.model import device_of, fast_tree, forward, padding
from actlens.types import SHORT_PROMPTS, Align, Phase, ShortPrompt
from actlens.vectors import SteeringVector


class FrequencyPenalty(LogitsProcessor):
    """``logits - penalty * count(token)`` over each row's real tokens (pads excluded)."""

    def __init__(self, penalty: float, starts: Tensor):
        self.penalty = penalty
        self.starts = starts  # [batch] first real position per row

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        real = torch.arange(input_ids.shape[1], device=input_ids.device)[None] >= self.starts.to(input_ids.device)[:, None]
        counts = torch.zeros_like(scores).scatter_add_(1, input_ids, real.to(scores.dtype))
        return scores - self.penalty * counts


class TopP(LogitsProcessor):
    """Nucleus filter: keeps the most likely tokens until their mass reaches ``top_p`` (-inf elsewhere).

    The same rule as Hugging Face's ``TopPLogitsWarper`` (a token is kept when the mass of the
    tokens more likely than it is below ``top_p``; the top token always; the two differ only by
    float rounding, for tokens within ~1e-7 of the threshold), found with ``topk``
    instead of sorting the whole vocabulary: sorting 49k scores per row per step was a third of
    a 64-row sweep's time on CPU. ``k`` grows until the nucleus of every row fits.

    >>> TopP(0.5)(None, torch.tensor([[2.0, 1.0, 0.0, -1.0]])).tolist()
    [[2.0, -inf, -inf, -inf]]
    """

    def __init__(self, top_p: float, first_k: int = 64):
        self.top_p, self.first_k = float(top_p), first_k

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        logp = torch.log_softmax(scores.float(), dim=-1)
        vocab, k = scores.shape[-1], min(self.first_k, scores.shape[-1])
        while True:
            top, idx = logp.topk(k, dim=-1)
            p = top.exp()
            above = p.cumsum(-1) - p  # mass of the tokens ranked above each one
            keep = above < self.top_p
            keep[..., 0] = True
            if k == vocab or not bool(keep[..., -1].any()):
                break
            k = min(vocab, 8 * k)
        kept = torch.where(keep, scores.gather(-1, idx), float("-inf"))
        return torch.full_like(scores, float("-inf")).scatter_(-1, idx, kept)


def sampling_processors(temperature: float, top_p: float, freq_penalty: float, starts: Tensor) -> LogitsProcessorList:
    """The paper's sampling settings as logits processors, in TransformerLens's order."""
    procs = LogitsProcessorList()
    if temperature > 0 and temperature != 1.0:
        procs.append(TemperatureLogitsWarper(temperature))
    if freq_penalty:
        procs.append(FrequencyPenalty(freq_penalty, starts))
    if temperature > 0 and top_p < 1.0:
        procs.append(TopP(top_p))
    return procs


@dataclass(frozen=True)
class Generation:
    """Completions of ``prompts`` (new text only), with the settings that made them."""

    prompts: list[str]
    completions: list[str]
    tokens: list[list[int]]
    settings: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return "\n".join(f"{p!r} -> {c!r}" for p, c in zip(self.prompts, self.completions, strict=True))


@dataclass(frozen=True)
class PairedGeneration:
    """Unsteered and steered completions drawn with the same seed."""

    unsteered: Generation
    steered: Generation

    def __str__(self) -> str:
        lines = []
        chat = self.steered.settings.get("chat", False)
        for p, u, s in zip(self.steered.prompts, self.unsteered.completions, self.steered.completions, strict=True):
            if chat:  # replies stand alone; the prompt is the user's turn
                lines += [f"user:       {p}", f"unsteered:  {u}", f"steered:    {s}", ""]
            else:
                lines += [f"prompt:     {p}", f"unsteered:  {p}{u}", f"steered:    {p}{s}", ""]
        return "\n".join(lines)


def _steered(model, vector, coeff, align, position, scope):
    if vector is None:
        return contextlib.nullcontext()
    return steer(model, vector, coeff, align=align, position=position, **scope)



def steered_logits(
    model: TransformerBridge,
    texts: str | Sequence[str],
    vector: Steering | None = None,
    coeff: float = 1.0,
    *,
    align: Align = "front",
    position: int | None = None,
    phase: Phase = "both",
    span: tuple[int, int | None] | None = None,
    include_bos: bool = False,
    short_prompt: ShortPrompt = "error",
) -> tuple[Float[Tensor, "batch pos d_vocab"], prompts.Batch]:
    """Logits of a left-padded batch of texts, steered or not, and the batch itself.

    >>> from actlens.tiny import tiny_model
    >>> logits, batch = steered_logits(tiny_model(), ["Hi", "Hello there"])
    >>> logits.shape[:2] == batch.tokens.shape
    True
    """
    _validation.choice("short_prompt", short_prompt, SHORT_PROMPTS)
    scope = dict(phase=phase, span=span, include_bos=include_bos)
    need = needed_length(model, vector, coeff, align=align, position=position, **scope)
    batch = prompts.encode_batch(model, list([texts] if isinstance(texts, str) else texts),
                                 min_length=need, short_prompt=short_prompt)
    with torch.inference_mode(), padding(model, batch.starts, batch.lengths), _steered(model, vector, coeff, align, position, scope):
        logits = forward(model, batch.tokens, batch.attention_mask)
    return logits, batch


def generate(
    model: TransformerBridge,
    prompts_: str | Sequence[str] | chat_.Conversation | Sequence[chat_.Conversation],
    *,
    vector: Steering | None = None,
    coeff: float = 1.0,
    align: Align = "front",
    position: int | None = None,
    phase: Phase = "both",
    span: tuple[int, int | None] | None = None,
    include_bos: bool = False,
    chat: bool = False,
    system: str | None = None,
    max_new_tokens: int = 40,
    seed: int = 0,
    temperature: float = 1.0,
    top_p: float = 0.3,
    freq_penalty: float = 1.0,
    paired: bool = False,
    use_cache: bool = True,
    stop_at_eos: bool = True,
    short_prompt: ShortPrompt = "error",
    batch_size: int | None = None,
) -> Generation | PairedGeneration:
    """Sample completions, optionally steered; ``paired=True`` also returns unsteered ones.

    Defaults are the ActAdd paper's sampling settings (temperature 1, top-p 0.3, frequency
    penalty 1); ``temperature=0`` is greedy. The same ``seed`` gives the same samples, and a
    paired run draws its unsteered and steered completions from the same seed. Sampled
    tokens depend on how prompts are batched (the random stream is shared by the batch);
    greedy tokens do not.

    ``phase``, ``span`` and ``include_bos`` choose which tokens ``align="all"`` steers (see
    :func:`actlens.steer`): ``phase="generation"`` leaves the prompt unsteered.

    ``chat=True`` wraps each prompt (a string as a user turn, or a list of ``{"role",
    "content"}`` messages) in the tokenizer's chat template with the generation prompt
    (:mod:`actlens.chat`), with ``system`` as the system message; completions are the
    assistant's reply only, up to its end-of-turn token.

    >>> from actlens.tiny import tiny_model
    >>> out = generate(tiny_model(), ["Hello"], max_new_tokens=3, temperature=0)
    >>> len(out.tokens[0]) <= 3
    True
    """
    if chat:
        convs = chat_.conversations(prompts_)
        encoded = [chat_.encode(model, c, system=system) for c in convs]
        texts = [chat_.reply_display(c) for c in convs]
    else:
        if system is not None:
            raise ValueError("system= is a chat setting; pass chat=True to use it, or put it in the prompt")
        texts = _validation.texts("prompts", [prompts_] if isinstance(prompts_, str) else prompts_)
        encoded = [prompts.encode(model, t) for t in texts]
    _validation.positive_int("max_new_tokens", max_new_tokens)
    seed, batch_size = _validation.seed(seed), _validation.batch_size(batch_size)
    temperature = _validation.finite("temperature", temperature)
    top_p, freq_penalty = _validation.finite("top_p", top_p), _validation.finite("freq_penalty", freq_penalty)
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature} and {top_p}")
    _validation.choice("short_prompt", short_prompt, SHORT_PROMPTS)
    if paired and vector is None:
        raise ValueError("paired=True compares unsteered with steered completions; pass vector=")
    scope = dict(phase=phase, span=span, include_bos=include_bos)
    need = needed_length(model, vector, coeff, align=align, position=position, **scope)
    settings = dict(max_new_tokens=max_new_tokens, seed=seed, temperature=temperature, top_p=top_p,
                    freq_penalty=freq_penalty, use_cache=use_cache, coeff=coeff, align=align, chat=chat,
                    system=system, **scope)
    rows = [prompts.pad_rows(model, [e], [t], min_length=need, short_prompt=short_prompt,
                             max_new_tokens=max_new_tokens) for e, t in zip(encoded, texts, strict=True)]
    ids = [b.tokens[0].tolist() for b in rows]

    turn_end = chat_.end_of_turn(model) if chat and stop_at_eos else None

    def run(steered: bool) -> Generation:
        out: list[list[int]] = []
        size = batch_size or len(ids)
        with torch.random.fork_rng(devices=_cuda_devices(model)):
            torch.manual_seed(seed)
            for i in range(0, len(ids), size):
                chunk = prompts.left_pad(ids[i:i + size], prompts.pad_token_id(model))
                with _steered(model, vector if steered else None, coeff, align, position, scope):
                    out += _decode(model, chunk, max_new_tokens, temperature, top_p, freq_penalty,
                                   use_cache, stop_at_eos)
        if turn_end is not None:  # a reply ends at its end-of-turn token even where that is not EOS (Llama 3)
            out = [_until_eos(row, turn_end) for row in out]
        completions = [model.tokenizer.decode(t, skip_special_tokens=True) for t in out]
        return Generation(texts, completions, out, settings | {"steered": steered})

    if paired:
        return PairedGeneration(unsteered=run(False), steered=run(True))
    return run(vector is not None)


def _cuda_devices(model) -> list[int]:
    device = device_of(model)
    return [device.index or 0] if device.type == "cuda" else []


def _decode(model, batch: prompts.Batch, max_new_tokens, temperature, top_p, freq_penalty, use_cache, stop_at_eos) -> list[list[int]]:
    """New token ids per row (EOS and anything after it removed)."""
    eos = model.tokenizer.eos_token_id if stop_at_eos else None
    fast = fast_tree(model)
    device = device_of(model)
    with torch.inference_mode(), padding(model, batch.starts, batch.lengths):
        if fast is not None:
            config = GenerationConfig(
                do_sample=temperature > 0, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=max_new_tokens,
                eos_token_id=[] if eos is None else eos,  # None would fall back to the model default
                pad_token_id=prompts.pad_token_id(model), use_cache=use_cache,
            )
            procs = sampling_processors(temperature, top_p, freq_penalty, torch.tensor(batch.starts))
            out = fast.generate(input_ids=batch.tokens.to(device), attention_mask=batch.attention_mask.to(device),
                                generation_config=config, logits_processor=procs)
            new = out[:, batch.tokens.shape[1]:].tolist()
        else:
            unpadded = sampling_processors(temperature, top_p, freq_penalty, torch.zeros(1, dtype=torch.long))
            new = [_native_decode(model, batch.tokens[row:row + 1, start:], unpadded, max_new_tokens, temperature, eos)
                   for row, start in enumerate(batch.starts)]
    return [_until_eos(row, eos) for row in new]


def _native_decode(model, tokens: Tensor, procs: LogitsProcessorList, max_new_tokens, temperature, eos) -> list[int]:
    """One prompt, no KV cache (TL native models have none): recompute every step."""
    tokens = tokens.to(device_of(model))
    start = tokens.shape[1]
    with padding(model, [0], [start]):
        for _ in range(max_new_tokens):
            scores = procs(tokens, forward(model, tokens)[:, -1].float())
            if temperature > 0:
                nxt = torch.multinomial(torch.softmax(scores, -1), 1)
            else:
                nxt = scores.argmax(-1, keepdim=True)
            tokens = torch.cat([tokens, nxt], dim=1)
            if eos is not None and int(nxt) == eos:
                break
    return tokens[0, start:].tolist()


def _until_eos(row: list[int], eos: int | None) -> list[int]:
    return row[:row.index(eos)] if eos is not None and eos in row else row


__all__ = ["Generation", "PairedGeneration", "SteeringVector", "generate", "steered_logits"]
