"""The rows ``actlens bench`` times, as a registry: one function per row.

A row function takes the :class:`Workload` and one :class:`Case` and returns a *thunk*, a
zero-argument callable that does the timed work (inputs are prepared outside it). It may
raise :class:`Unavailable` to be skipped with a reason (e.g. an optional library is
missing). Generation thunks return the new token ids ``[batch, new_tokens]`` so the
harness can check that every row did the same amount of work (a tensor, or a list of
lists as actlens's own path returns them; converting is left out of the timed call).

A thunk that processes a different number of tokens than the case says (rows that run
on text) sets ``thunk.tokens_per_call``. Adding a row is one decorated function, e.g.::

    @row("forward", "logit-lens", "actlens.analysis.logit_lens of the vector")
    def _lens(w: Workload, case: Case):
        from actlens.analysis.logit_lens import logit_lens
        return lambda: logit_lens(w.setup.model, w.vector)

The table lists rows in registration order; ``actlens/bench/extra.py`` holds the
per-token-KL and sweep rows.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from actlens.bench.models import Setup
from actlens.core import prompts
from actlens.models.model import hook_name
from actlens.vectors import SteeringVector


class Unavailable(Exception):
    """A row that cannot run here; the message says why and how to enable it."""


@dataclass(frozen=True)
class Case:
    """One workload shape: generation (``new_tokens > 0``) or a forward pass."""

    group: str  # "generate" | "forward" | "sweep"
    batch: int
    prompt_tokens: int
    new_tokens: int = 0

    @property
    def key(self) -> str:
        if self.group == "generate":
            return f"generate b={self.batch} p={self.prompt_tokens} n={self.new_tokens}"
        if self.group == "sweep":
            return f"sweep {self.batch} completions n={self.new_tokens}"
        if self.group.startswith("klcurve") or self.group == "mediation":
            return f"{self.group} b={self.batch} p={self.prompt_tokens}"
        return f"forward b={self.batch} p={self.prompt_tokens}"

    @property
    def tokens_per_call(self) -> int:
        """Generated tokens (generation, prefill included in the time) or processed tokens (forward)."""
        return self.batch * (self.new_tokens if self.group in ("generate", "sweep") else self.prompt_tokens)


@dataclass
class Workload:
    """What every row shares: the model, the steering vector and the prompts per case."""

    setup: Setup
    vector: SteeringVector
    coeff: float
    seed: int = 0

    def tokens(self, case: Case) -> Tensor:
        """Random token ids (BOS first), the same for every row of a case; no padding."""
        vocab = int(self.setup.model.cfg.d_vocab)
        low, high = (100, min(50_000, vocab)) if vocab > 1_000 else (3, vocab)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + case.batch * 1_009 + case.prompt_tokens)
        ids = torch.randint(low, high, (case.batch, case.prompt_tokens), generator=gen)
        bos = self.setup.model.tokenizer.bos_token_id
        if bos is not None:
            ids[:, 0] = bos
        return ids.to(self.setup.device)


@dataclass(frozen=True)
class Row:
    group: str
    name: str
    label: str
    make: Callable[[Workload, Case], Callable[[], object]]
    baseline: bool = False
    optional: bool = False  # may be skipped (Unavailable) without failing the run
    opt_in: bool = False  # runs only when a --rows pattern names it (starts other processes: Ray workers)

    @property
    def id(self) -> str:
        return f"{self.group}/{self.name}"


ROWS: dict[str, Row] = {}


def row(group: str, name: str, label: str, *, baseline: bool = False, optional: bool = False,
        opt_in: bool = False):
    """Register a row function under ``group/name`` (the order of registration is the table's order)."""

    def register(fn):
        r = Row(group, name, label, fn, baseline, optional, opt_in)
        ROWS[r.id] = r
        return fn

    return register


def baseline_of(group: str) -> Row:
    return next(r for r in ROWS.values() if r.group == group and r.baseline)


# --- generation ----------------------------------------------------------------------------
def _hf_generation_config(w: Workload, n: int):
    from transformers import GenerationConfig

    # Greedy, exactly n tokens: no EOS at all (an empty list; None would fall back to the model's),
    # which is what actlens's own path does with stop_at_eos=False. min_new_tokens=n would add a
    # logits processor the actlens path does not run; the harness checks every row made n tokens.
    return GenerationConfig(do_sample=False, max_new_tokens=n, eos_token_id=[],
                            pad_token_id=prompts.pad_token_id(w.setup.model), use_cache=True,
                            temperature=None, top_p=None, top_k=None)


def _raw_generate(w: Workload, case: Case) -> Callable[[], Tensor]:
    tokens = w.tokens(case)
    mask = torch.ones_like(tokens)
    config = _hf_generation_config(w, case.new_tokens)
    raw = w.setup.raw
    return lambda: raw.generate(input_ids=tokens, attention_mask=mask, generation_config=config)[:, tokens.shape[1]:]


def _actlens_decode(w: Workload, case: Case, steering: Callable | None = None, compile: bool = False
                    ) -> Callable[[], Tensor]:
    """actlens's generation path on token ids (``actlens.generate`` minus tokenising the text)."""
    from actlens.core.sampling import Sampling
    from actlens.steering.generation import decode

    tokens = w.tokens(case)
    batch = prompts.Batch(tokens, torch.ones_like(tokens), [0] * case.batch, [case.prompt_tokens] * case.batch)
    model = w.setup.model
    settings = Sampling(max_new_tokens=case.new_tokens, temperature=0.0, top_p=1.0, freq_penalty=0.0,
                        stop_at_eos=False)

    def run():
        return decode(model, batch, settings, use_cache=True, compile=compile)

    if steering is None:
        thunk = run
    else:
        def thunk():
            with steering():
                return run()

    if compile:  # compile now, timed apart: the first call of a shape (and of a steering set-up) compiles
        import time

        started = time.perf_counter()
        try:
            with torch.inference_mode():
                thunk()
        except Exception as err:  # a backend that cannot compile this model here: skip the row, say why
            raise Unavailable(f"compiled decoding failed here ({type(err).__name__}: {str(err)[:300]})") from err
        thunk.startup_s = time.perf_counter() - started
    return thunk


@row("generate", "hf", "raw HF generate (baseline)", baseline=True)
def _gen_hf(w: Workload, case: Case):
    return _raw_generate(w, case)


@row("generate", "actlens", "actlens generate, unsteered")
def _gen_actlens(w: Workload, case: Case):
    return _actlens_decode(w, case)


@row("generate", "actlens+actadd", "actlens generate, ActAdd (front, prefill only)")
def _gen_actadd(w: Workload, case: Case):
    from actlens.steering.intervene import steer

    if w.vector.k > case.prompt_tokens:
        raise ValueError(f"the ActAdd vector covers {w.vector.k} positions but prompts have {case.prompt_tokens} "
                         f"tokens; pass --prompt-tokens {w.vector.k} or more")
    return _actlens_decode(w, case, lambda: steer(w.setup.model, w.vector, w.coeff))


@row("generate", "actlens+all", "actlens generate, align='all' (every position)")
def _gen_all(w: Workload, case: Case):
    from actlens.steering.intervene import steer

    return _actlens_decode(w, case, lambda: steer(w.setup.model, w.vector, w.coeff, align="all", position=1))


@row("generate", "compiled", "actlens generate(compile=True), unsteered (static KV cache; compile time apart)",
     optional=True, opt_in=True)
def _gen_compiled(w: Workload, case: Case):
    return _actlens_decode(w, case, compile=True)


@row("generate", "compiled+actadd", "actlens generate(compile=True), ActAdd (front)", optional=True, opt_in=True)
def _gen_compiled_actadd(w: Workload, case: Case):
    from actlens.steering.intervene import steer

    return _actlens_decode(w, case, lambda: steer(w.setup.model, w.vector, w.coeff), compile=True)


@row("generate", "compiled+all", "actlens generate(compile=True), align='all'", optional=True, opt_in=True)
def _gen_compiled_all(w: Workload, case: Case):
    from actlens.steering.intervene import steer

    return _actlens_decode(w, case, lambda: steer(w.setup.model, w.vector, w.coeff, align="all", position=1),
                           compile=True)


@row("generate", "actlens+all-mlp_out", "actlens generate, align='all' at mlp_out of the layer before")
def _gen_all_mlp_out(w: Workload, case: Case):
    """The same addition as ``actlens+all`` (mlp_out of L-1 = resid_pre of L), through the MLP's forward hook."""
    from dataclasses import replace

    from actlens.steering.intervene import steer

    if w.vector.layer < 1:
        raise Unavailable("the vector is at layer 0; there is no mlp_out before it")
    moved = replace(w.vector, layer=w.vector.layer - 1, site="mlp_out")
    return _actlens_decode(w, case, lambda: steer(w.setup.model, moved, w.coeff, align="all", position=1))


@row("generate", "steering-vectors", "steering-vectors library on raw HF (every position)", optional=True)
def _gen_steering_vectors(w: Workload, case: Case):
    try:
        from steering_vectors import SteeringVector as LibraryVector
    except ImportError as err:
        raise Unavailable(
            f"steering-vectors is not importable ({err}); it pins transformers<5, so install it with "
            "`pip install --no-deps steering-vectors==0.12.2 && pip install scikit-learn`"
        ) from err
    layer = w.vector.layer
    if layer < 1:
        raise Unavailable("steering-vectors hooks block outputs, so it cannot reach blocks.0.hook_resid_pre")
    # The output of decoder block L-1 is blocks.L.hook_resid_pre; same single vector as actlens+all.
    value = w.vector.at_position(1).values[0].to(device=w.setup.device, dtype=w.setup.dtype)
    library = LibraryVector({layer - 1: value}, "decoder_block")
    generate = _raw_generate(w, case)

    def steered():
        with library.apply(w.setup.raw, multiplier=w.coeff, min_token_index=0):
            return generate()

    return steered


@row("generate", "tl-bridge", "TransformerLens bridge generate")
def _gen_bridge(w: Workload, case: Case):
    tokens = w.tokens(case)
    model = w.setup.model

    def generate():
        out = model.generate(tokens, max_new_tokens=case.new_tokens, do_sample=False, stop_at_eos=False,
                             verbose=False, use_past_kv_cache=True)
        return out[:, tokens.shape[1]:]

    return generate


# --- forward and caching ---------------------------------------------------------------------
@row("forward", "hf", "raw HF forward (baseline)", baseline=True)
def _fwd_hf(w: Workload, case: Case):
    tokens = w.tokens(case)
    mask = torch.ones_like(tokens)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # the inputs actlens.forward gives its fast tree
    raw = w.setup.raw
    return lambda: raw(input_ids=tokens, attention_mask=mask, position_ids=position_ids, use_cache=False).logits


@row("forward", "actlens", "actlens.forward")
def _fwd_actlens(w: Workload, case: Case):
    from actlens.models.model import forward

    tokens = w.tokens(case)
    return lambda: forward(w.setup.model, tokens)


@row("forward", "tl-bridge", "TransformerLens bridge forward")
def _fwd_bridge(w: Workload, case: Case):
    tokens = w.tokens(case)
    return lambda: w.setup.model(tokens)


@row("forward", "actlens-resid_pre", "actlens.resid_pre, every layer")
def _cache_actlens(w: Workload, case: Case):
    from actlens.models.activations import resid_pre

    tokens = w.tokens(case)
    layers = list(range(int(w.setup.model.cfg.n_layers)))
    return lambda: resid_pre(w.setup.model, tokens, layers)


@row("forward", "tl-run_with_cache", "TransformerLens run_with_cache, every resid_pre")
def _cache_bridge(w: Workload, case: Case):
    tokens = w.tokens(case)
    names = [hook_name(layer) for layer in range(int(w.setup.model.cfg.n_layers))]
    return lambda: w.setup.model.run_with_cache(tokens, names_filter=names)


@row("forward", "fingerprint", "actlens fingerprint(model), a sweep store's model check (its time counts, not tok/s)")
def _fingerprint(w: Workload, case: Case):
    from actlens.models.model import fingerprint

    return lambda: fingerprint(w.setup.model)  # its time, not tok/s, is what counts: a target in seconds


def cached_activation_bytes(w: Workload, case: Case) -> int:
    """Bytes of every layer's ``resid_pre`` for one forward case (what the cache rows must hold)."""
    n_layers, d_model = int(w.setup.model.cfg.n_layers), int(w.setup.model.cfg.d_model)
    return n_layers * case.batch * case.prompt_tokens * d_model * torch.empty((), dtype=w.setup.dtype).element_size()


__all__ = ["ROWS", "Case", "Row", "Unavailable", "Workload", "baseline_of", "cached_activation_bytes", "row"]
