"""Steered forward passes and generation.

Hugging Face models generate with Hugging Face's own ``generate`` loop (KV cache, SDPA)
on the fast tree (see :mod:`actlens.models.model`), steered through the TransformerLens
HookPoints. TransformerLens native models, which have no KV cache, use a small uncached
loop. Sampling (:mod:`actlens.core.sampling`) follows the ActAdd paper's settings by default:
temperature 1, top-p 0.3, frequency penalty 1, applied in TransformerLens's order
(temperature, frequency penalty, then top-p); ``temperature=0`` is plain greedy decoding.
The frequency penalty counts the prompt's and the generated tokens but not left padding,
so padded batches sample from the same distributions as single prompts.
"""

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import TransformerBridge
from transformers import CompileConfig

from actlens.core import chat as chat_
from actlens.core import prompts, sampling
from actlens.core import validation as _validation
from actlens.core.sampling import Sampling
from actlens.core.types import SHORT_PROMPTS, Align, Phase, ShortPrompt
from actlens.models.model import device_of, fast_tree, forward, padding
from actlens.steering.intervene import Steering, needed_length, steer
from actlens.vectors import SteeringVector


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

    >>> from actlens.models.tiny import tiny_model
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
    texts: str | Sequence[str] | chat_.Conversation | Sequence[chat_.Conversation],
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
    compile: sampling.CompileSetting = False,
) -> Generation | PairedGeneration:
    """Sample completions, optionally steered; ``paired=True`` also returns unsteered ones.

    Defaults are the ActAdd paper's sampling settings (temperature 1, top-p 0.3, frequency
    penalty 1); ``temperature=0`` is greedy. The same ``seed`` gives the same samples, and a
    paired run draws its unsteered and steered completions from the same seed. Sampled
    tokens depend on how prompts are batched (the random stream is shared by the batch);
    greedy tokens do not.

    ``phase``, ``span`` and ``include_bos`` choose which tokens ``align="all"`` steers (see
    :func:`actlens.steer`): ``phase="generation"`` leaves the prompt unsteered.

    ``compile=True`` decodes with a static KV cache and ``torch.compile`` (CUDA graphs on a GPU; the first
    call per batch shape compiles, which takes seconds to minutes); steering goes through the same
    HookPoints and gives the same greedy tokens as eager decoding. A backend name (e.g. ``"eager"``) picks
    the ``torch.compile`` backend. Without a C++ compiler on the CPU it warns and decodes eagerly.

    ``chat=True`` wraps each prompt (a string as a user turn, or a list of ``{"role",
    "content"}`` messages) in the tokenizer's chat template with the generation prompt
    (:mod:`actlens.core.chat`), with ``system`` as the system message; completions are the
    assistant's reply only, up to its end-of-turn token.

    >>> from actlens.models.tiny import tiny_model
    >>> out = generate(tiny_model(), ["Hello"], max_new_tokens=3, temperature=0)
    >>> len(out.tokens[0]) <= 3
    True
    """
    if chat:
        convs = chat_.conversations(texts)
        encoded = [chat_.encode(model, c, system=system) for c in convs]
        texts = [chat_.reply_display(c) for c in convs]
    else:
        if system is not None:
            raise ValueError("system= is a chat setting; pass chat=True to use it, or put it in the prompt")
        texts = _validation.texts("texts", [texts] if isinstance(texts, str) else texts)
        encoded = [prompts.encode(model, t) for t in texts]
    settings = Sampling(max_new_tokens, temperature, top_p, freq_penalty, stop_at_eos)
    seed, batch_size = _validation.seed(seed), _validation.batch_size(batch_size)
    _validation.choice("short_prompt", short_prompt, SHORT_PROMPTS)
    if paired and vector is None:
        raise ValueError("paired=True compares unsteered with steered completions; pass vector=")
    scope = dict(phase=phase, span=span, include_bos=include_bos)
    need = needed_length(model, vector, coeff, align=align, position=position, **scope)
    recorded = dict(max_new_tokens=max_new_tokens, seed=seed, temperature=temperature, top_p=top_p,
                    freq_penalty=freq_penalty, use_cache=use_cache, coeff=coeff, align=align, chat=chat,
                    system=system, **scope) | ({"compile": compile} if compile else {})
    compile = compiled(model, compile, use_cache) or False  # a bad compile= raises before anything runs; checked once
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
                    out += decode(model, chunk, settings, use_cache=use_cache, compile=compile,
                                  stop=() if turn_end is None else (turn_end,))
        if turn_end is not None:  # a reply ends at its end-of-turn token even where that is not EOS (Llama 3)
            out = [sampling.until_eos(row, turn_end) for row in out]
        completions = [model.tokenizer.decode(t, skip_special_tokens=True) for t in out]
        return Generation(texts, completions, out, recorded | {"steered": steered})

    if paired:
        return PairedGeneration(unsteered=run(False), steered=run(True))
    return run(vector is not None)


def _cuda_devices(model) -> list[int]:
    device = device_of(model)
    return [device.index or 0] if device.type == "cuda" else []


def compiled(model: TransformerBridge, compile: sampling.CompileSetting, use_cache: bool = True):
    """The checked ``transformers.CompileConfig`` for ``compile=`` on this model (None: eager decoding).

    Compiled decoding runs Hugging Face's ``generate`` with a static KV cache on the fast tree, whose decoder
    layers hand their input to the ``blocks.L.hook_resid_pre`` HookPoints as in eager decoding; dynamo guards
    on whether a HookPoint has hooks, so steering added at another layer after the first compile compiles a
    graph for it instead of being dropped. The steering hook is graph-safe (:func:`actlens.steering.intervene.
    make_hook`): a decode step is one graph, and new coefficients, vector values or prompts of the same shape
    reuse it (tests/steering/test_generation.py compares compiled with eager greedy tokens, ``align="all"``
    included, and counts dynamo's graphs).
    """
    # a config this function returned before is taken as it is (a sweep checks compile= once, not per batch)
    config = compile if isinstance(compile, CompileConfig) else sampling.compile_config(compile, device_of(model))
    if config is None:
        return None
    if fast_tree(model) is None:
        raise ValueError(f"compile={compile!r} compiles Hugging Face's cached decoding, and {state_name(model)} has "
                         "none (a TransformerLens native model, or compatibility mode); pass compile=False")
    if not use_cache:
        raise ValueError("compile=True decodes with a static KV cache; it cannot be combined with use_cache=False")
    return config


def state_name(model: TransformerBridge) -> str:
    return repr(getattr(model.cfg, "model_name", type(model).__name__))


def decode(model: TransformerBridge, batch: prompts.Batch, settings: Sampling, *, use_cache: bool = True,
           compile: sampling.CompileSetting = False, stop: Sequence[int] = ()) -> list[list[int]]:
    """New token ids per row of a left-padded batch (EOS and anything after it removed), under any active steering.

    With ``settings.stop_at_eos``, decoding also stops at the tokens in ``stop`` (a chat template's
    end-of-turn token, e.g. Gemma's ``<end_of_turn>``), which are removed with what follows.
    Draws from the global torch generator (:func:`generate` seeds it). ``compile``: see :func:`compiled`.
    """
    eos = [t for t in (model.tokenizer.eos_token_id, *stop) if t is not None] if settings.stop_at_eos else None
    compile_with = compiled(model, compile, use_cache)
    fast = fast_tree(model)
    device = device_of(model)
    sample = not settings.greedy
    with torch.inference_mode(), padding(model, batch.starts, batch.lengths):
        if fast is not None:
            config = sampling.generation_config(settings, sample=sample, eos=eos,
                                                pad_token_id=prompts.pad_token_id(model), use_cache=use_cache,
                                                compile=compile_with)
            procs = sampling.processors(settings, torch.tensor(batch.starts))
            new = sampling.hf_generate(fast, batch.tokens.to(device), batch.attention_mask.to(device), config,
                                       procs).tolist()
        else:  # TL native models have no KV cache: one unpadded prompt at a time, recomputed every step
            procs = sampling.processors(settings, torch.zeros(1, dtype=torch.long))
            new = []
            for row, start in enumerate(batch.starts):
                tokens = batch.tokens[row:row + 1, start:].to(device)
                with padding(model, [0], [tokens.shape[1]]):
                    new += sampling.decode_loop(lambda t: forward(model, t)[:, -1], tokens, procs,
                                                max_new_tokens=settings.max_new_tokens, sample=sample,
                                                eos=eos).tolist()
    return [sampling.until_eos(row, eos) for row in new]


__all__ = ["Generation", "PairedGeneration", "SteeringVector", "compiled", "decode", "generate", "steered_logits"]
