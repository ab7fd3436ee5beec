"""How actlens picks the next token: settings, logits processors, keyed sampling, and the one
``GenerationConfig`` it hands to Hugging Face.

The ActAdd paper samples at temperature 1 with top-p 0.3 and frequency penalty 1, applied in
TransformerLens's order: temperature, frequency penalty, then top-p. ``temperature=0`` is plain
greedy decoding, the arg-max of the raw logits before any penalty (as TransformerLens's
``sample_logits`` and Hugging Face's greedy search): no processor runs.

Two ways to draw a sample share these processors: :func:`actlens.generate` draws from the global
torch generator (one random stream per batch); the sweeps draw *keyed* per row
(:class:`KeyedSample`), so that a row's tokens depend only on its prompt, steering and key.

Everything actlens passes to ``transformers`` is explicit (:func:`generation_config`), and
:func:`hf_generate` hides the model's own ``generation_config`` while it runs, so a hub model's
``generation_config.json`` (``do_sample``, ``repetition_penalty``, ``top_k``, suppressed or forced
tokens, ...) changes nothing.
"""

import contextlib
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import TemperatureLogitsWarper

from actlens.core import validation as _validation


@dataclass(frozen=True)
class Sampling:
    """Decoding settings; the defaults are the ActAdd paper's (T = 1, top-p 0.3, frequency penalty 1).

    ``temperature=0`` is greedy (the penalty and top-p then do nothing).

    >>> Sampling(temperature=0).greedy
    True
    """

    max_new_tokens: int = 40
    temperature: float = 1.0
    top_p: float = 0.3
    freq_penalty: float = 1.0
    stop_at_eos: bool = True

    def __post_init__(self) -> None:
        _validation.positive_int("max_new_tokens", self.max_new_tokens)
        t, p = _validation.finite("temperature", self.temperature), _validation.finite("top_p", self.top_p)
        _validation.finite("freq_penalty", self.freq_penalty)
        if t < 0 or not 0 < p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {t} and {p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class FrequencyPenalty(LogitsProcessor):
    """``logits - penalty * count(token)`` over each row's real tokens (pads excluded)."""

    def __init__(self, penalty: float, starts: Tensor):
        self.penalty = penalty
        self.starts = starts  # [batch] first real position per row

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        columns = torch.arange(input_ids.shape[1], device=input_ids.device)
        real = columns[None] >= self.starts.to(input_ids.device)[:, None]
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

    def __call__(self, input_ids: Tensor | None, scores: Tensor) -> Tensor:  # the scores alone decide
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


def key_seed(*parts: int | str) -> int:
    """A 63-bit seed from ints and strings, stable across runs and machines.

    >>> key_seed(0, "I think") == key_seed(0, "I think") != key_seed(1, "I think")
    True
    """
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big") >> 1


# Recorded in every sweep's configuration hash: resuming a sweep file written with another sampler
# would mix completions from different random streams, so it raises instead.
SAMPLER = "keyed-inverse-cdf/topk-nucleus"


class KeyedSample(LogitsProcessor):
    """Draws one token per row from ``softmax(scores)`` with one uniform from the row's own generator.

    Inverse-CDF sampling: the returned scores are 0 at the drawn token and -inf elsewhere, so
    the arg-max of greedy decoding that follows picks it.

    >>> KeyedSample([0])(None, torch.tensor([[0.0, float("-inf"), 1.0]])).tolist()
    [[-inf, -inf, 0.0]]
    """

    def __init__(self, seeds: Sequence[int]):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def __call__(self, input_ids: Tensor | None, scores: Tensor) -> Tensor:  # the scores alone decide
        if scores.shape[0] != len(self.generators):
            raise ValueError(f"KeyedSample has {len(self.generators)} generators but the batch has "
                             f"{scores.shape[0]} rows")
        u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in self.generators])
        cdf = torch.softmax(scores.double(), dim=-1).cumsum(-1)
        target = (u.to(cdf.device) * cdf[:, -1])[:, None]
        token = torch.searchsorted(cdf, target, right=True).clamp(max=scores.shape[-1] - 1)
        return torch.full_like(scores, float("-inf")).scatter_(-1, token, 0.0)


def processors(settings: Sampling, starts: Tensor, seeds: Sequence[int] | None = None) -> LogitsProcessorList:
    """The settings as logits processors, in TransformerLens's order; ``seeds`` adds keyed sampling.

    Greedy settings give no processor at all: the next token is the arg-max of the raw logits.
    """
    procs = LogitsProcessorList()
    if settings.greedy:
        return procs
    if settings.temperature != 1.0:
        procs.append(TemperatureLogitsWarper(settings.temperature))
    if settings.freq_penalty:
        procs.append(FrequencyPenalty(settings.freq_penalty, starts))
    if settings.top_p < 1.0:
        procs.append(TopP(settings.top_p))
    if seeds is not None:
        procs.append(KeyedSample(seeds))
    return procs


CompileSetting = bool | str
"""``compile=`` of :func:`actlens.generate` and :func:`actlens.sweep`: False (eager decoding), True (a static KV
cache and ``torch.compile`` with inductor; CUDA graphs on a GPU), or the name of a ``torch.compile`` backend.
(Inside actlens, the checked ``transformers.CompileConfig`` that :func:`compile_config` made is passed on too.)"""


def compile_config(compile: CompileSetting, device: torch.device):
    """The ``transformers.CompileConfig`` for ``compile=`` on ``device``, or None for eager decoding.

    Inductor on the CPU needs a C++ compiler: without one this warns and returns None (eager decoding),
    never a silent slowdown or a failure in the middle of generation.
    """
    if compile is False:
        return None
    if not (compile is True or isinstance(compile, str) and compile):
        raise TypeError(f"compile must be True, False or a torch.compile backend name such as 'inductor', "
                        f"got {compile!r}")
    import warnings

    from transformers import CompileConfig

    backend = "inductor" if compile is True else compile
    if backend not in torch._dynamo.list_backends(exclude_tags=()):
        raise ValueError(f"compile={compile!r}: torch.compile has no backend {backend!r}; use True (inductor) or "
                         f"one of {torch._dynamo.list_backends()}")
    if backend == "inductor" and device.type == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()
        except Exception as err:  # no compiler installed, or one torch cannot use
            warnings.warn(f"compile=True on the CPU needs a C++ compiler for torch.compile's inductor backend "
                          f"({type(err).__name__}: {err}); decoding eagerly instead. Install g++ (or set CXX), "
                          "or pass compile=False", RuntimeWarning, stacklevel=3)
            return None
    config = CompileConfig(backend=backend, fullgraph=False, dynamic=None,
                           mode="reduce-overhead" if device.type == "cuda" and backend == "inductor" else None)
    config._compile_all_devices = True  # transformers compiles on accelerators only unless told
    return config


def generation_config(settings: Sampling, *, sample: bool, eos: int | Sequence[int] | None, pad_token_id: int,
                      use_cache: bool = True, compile=None) -> GenerationConfig:
    """The one ``GenerationConfig`` actlens generates with: every field that decides tokens is set.

    ``sample`` draws with Hugging Face's multinomial after :func:`processors`; otherwise the
    arg-max of what the processors leave is taken. ``compile``, a :func:`compile_config`, switches to a
    static KV cache with the decode step compiled. No built-in processor or warper runs, and
    ``eos=None`` means no EOS at all (an empty list: ``None`` would fall back to the model's).
    """
    return GenerationConfig(
        max_new_tokens=settings.max_new_tokens, min_new_tokens=0, min_length=0, do_sample=sample, num_beams=1,
        num_beam_groups=1, num_return_sequences=1, temperature=1.0, top_k=0, top_p=1.0, typical_p=1.0,
        epsilon_cutoff=0.0, eta_cutoff=0.0, repetition_penalty=1.0, encoder_repetition_penalty=1.0,
        no_repeat_ngram_size=0, encoder_no_repeat_ngram_size=0, length_penalty=1.0, diversity_penalty=0.0,
        renormalize_logits=False, remove_invalid_values=False, early_stopping=False, output_scores=False,
        return_dict_in_generate=False, eos_token_id=_stops(eos), pad_token_id=pad_token_id,
        use_cache=use_cache,
        # compiled decoding: transformers compiles the decode step when the KV cache is static
        **({} if compile is None else dict(cache_implementation="static", compile_config=compile)),
    )


@contextlib.contextmanager
def _own_config_only(tree: nn.Module, config: GenerationConfig):
    # transformers fills every field a config leaves unset from the model's generation_config
    # (forced or suppressed tokens, min_p, ...): show it ours while it runs.
    saved = tree.generation_config
    tree.generation_config = config
    try:
        yield
    finally:
        tree.generation_config = saved


RECOMPILE_LIMIT = 64


def _graph_room(config: GenerationConfig):
    """Room for one compiled graph per steering set-up (layers, sites, alignments, batch shape) of the one compiled
    decode step: at dynamo's default of 8, a layer sweep would fall back to eager decoding after 8 layers."""
    if config.compile_config is None:  # generation_config sets it, with the static cache, for compiled decoding only
        return contextlib.nullcontext()
    import torch._dynamo

    return torch._dynamo.config.patch(recompile_limit=max(RECOMPILE_LIMIT, torch._dynamo.config.recompile_limit))


def hf_generate(tree: nn.Module, input_ids: Tensor, attention_mask: Tensor, config: GenerationConfig,
                procs: LogitsProcessorList) -> Tensor:
    """``tree.generate`` with ``config`` and ``procs`` only: new token ids ``[batch, new]``."""
    with _own_config_only(tree, config), _graph_room(config):
        out = tree.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                            logits_processor=procs)
    return out[:, input_ids.shape[1]:]


def decode_loop(next_logits: Callable[[Tensor], Tensor], tokens: Tensor, procs: LogitsProcessorList, *,
                max_new_tokens: int, sample: bool, eos: int | Sequence[int] | None) -> Tensor:
    """Uncached decoding (models without a KV cache): recompute every step; new ids ``[batch, new]``.

    ``next_logits(tokens)`` gives the last position's logits. Stops when every row has made EOS.
    """
    start = tokens.shape[1]
    done = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
    stops = torch.tensor(_stops(eos), dtype=torch.long, device=tokens.device)
    for _ in range(max_new_tokens):
        scores = procs(tokens, next_logits(tokens).float())
        nxt = torch.multinomial(torch.softmax(scores, -1), 1)[:, 0] if sample else scores.argmax(-1)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        if stops.numel():
            done |= torch.isin(nxt, stops)
            if bool(done.all()):
                break
    return tokens[:, start:]


def until_eos(row: list[int], eos: int | Sequence[int] | None) -> list[int]:
    """The tokens before the first EOS, or the first of several stop tokens (all of them when ``eos`` is None).

    >>> until_eos([5, 6, 1, 7], 1), until_eos([5, 6], None), until_eos([5, 9, 6, 1], [1, 9])
    ([5, 6], [5, 6], [5])
    """
    stops = set(_stops(eos))
    return next((row[:i] for i, t in enumerate(row) if t in stops), row)


def _stops(eos: int | Sequence[int] | None) -> list[int]:
    if eos is None:
        return []
    return [int(eos)] if isinstance(eos, int) else [int(t) for t in eos]


__all__ = ["SAMPLER", "CompileSetting", "compile_config", "FrequencyPenalty", "KeyedSample", "Sampling", "TopP", "decode_loop", "generation_config",
           "hf_generate", "key_seed", "processors", "until_eos"]
