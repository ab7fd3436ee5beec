"""Generation: cache, batching, seeds, pairing, and the TransformerLens 4.3 KV-cache shim."""

import pytest
import torch

import actlens
from actlens.core import prompts

PROMPTS = ["I think that you are", "Hello there, my good friend", "Why"]


def _greedy(model, texts, **kw):
    return actlens.generate(model, texts, temperature=0, max_new_tokens=8, stop_at_eos=False, **kw).tokens


@pytest.mark.parametrize("align", ["front", "back", "all"])
def test_cached_uncached_and_batched_agree(tiny, align):
    v = actlens.actadd_vector(tiny, "Yes", "No!", 2)  # k=4 fits every prompt
    kw = dict(vector=v, coeff=4.0, align=align, position=1)
    cached = _greedy(tiny, PROMPTS, **kw)
    assert cached == _greedy(tiny, PROMPTS, use_cache=False, **kw)
    assert cached == [_greedy(tiny, [p], **kw)[0] for p in PROMPTS]
    assert cached != _greedy(tiny, PROMPTS)  # and steering did something


def test_same_seed_same_samples_and_paired_shares_the_seed(tiny):
    v = actlens.actadd_vector(tiny, "Hi", "Yo", 1)
    kw = dict(max_new_tokens=6, temperature=1.0, top_p=0.9, seed=7)
    a = actlens.generate(tiny, PROMPTS, **kw)
    assert a.tokens == actlens.generate(tiny, PROMPTS, **kw).tokens
    assert a.tokens != actlens.generate(tiny, PROMPTS, **(kw | {"seed": 8})).tokens
    pair = actlens.generate(tiny, PROMPTS, vector=v, coeff=8.0, paired=True, **kw)
    assert pair.unsteered.tokens == a.tokens
    assert pair.steered.tokens == actlens.generate(tiny, PROMPTS, vector=v, coeff=8.0, **kw).tokens
    assert "steered:" in str(pair)


def test_frequency_penalty_ignores_left_padding(tiny_hf_model):
    from actlens.core.sampling import FrequencyPenalty

    pad = prompts.pad_token_id(tiny_hf_model)
    ids = torch.tensor([[pad, pad, 5, 6, 6], [3, 4, 5, 6, 6]])
    scores = torch.zeros(2, tiny_hf_model.cfg.d_vocab)
    out = FrequencyPenalty(1.0, torch.tensor([2, 0]))(ids, scores)
    assert out[0, pad] == 0 and out[0, 6] == -2 and out[1, 3] == -1


def test_bridge_generate_cached_equals_uncached(tiny_hf_model):
    """Guards the TL 4.3 KV-cache shim in actlens/models/model.py (transformers 5.2x passes `cache=`)."""
    tokens = torch.tensor([prompts.encode(tiny_hf_model, "Hello there")])
    kw = dict(max_new_tokens=8, do_sample=False, stop_at_eos=False, verbose=False)
    cached = tiny_hf_model.generate(tokens, use_past_kv_cache=True, **kw)
    uncached = tiny_hf_model.generate(tokens, use_past_kv_cache=False, **kw)
    assert torch.equal(cached, uncached)


def test_actlens_greedy_equals_bridge_generate(tiny_hf_model):
    tokens = torch.tensor([prompts.encode(tiny_hf_model, "Hello there")])
    bridge = tiny_hf_model.generate(tokens, max_new_tokens=8, do_sample=False, stop_at_eos=False, verbose=False)
    ours = actlens.generate(tiny_hf_model, "Hello there", temperature=0, freq_penalty=0, max_new_tokens=8,
                            stop_at_eos=False)
    assert bridge[0, tokens.shape[1]:].tolist() == ours.tokens[0]


def test_generation_settings_are_validated_before_running(tiny):
    v = actlens.actadd_vector(tiny, "Hi", "Yo", 1)
    with pytest.raises(ValueError, match="paired=True"):
        actlens.generate(tiny, "Hello", paired=True)
    with pytest.raises(ValueError, match="finite"):
        actlens.generate(tiny, "Hello there", vector=v, coeff=float("nan"))
    with pytest.raises(ValueError, match="top_p"):
        actlens.generate(tiny, "Hello", top_p=0.0)
    with pytest.raises(ValueError, match="context"):
        actlens.generate(tiny, "x" * 300)


def test_top_p_keeps_the_same_tokens_as_hugging_faces_warper():
    from transformers.generation.logits_process import TopPLogitsWarper

    from actlens.core.sampling import TopP

    gen = torch.Generator().manual_seed(0)
    checked = 0
    for trial in range(40):
        scores = torch.randn(6, 3000, generator=gen) * (0.2 + trial / 8)  # flat to peaked: nuclei of 1 to ~2000
        for top_p in (0.05, 0.3, 0.9, 0.99):
            ours = TopP(top_p, first_k=16)(None, scores.clone())
            ref = TopPLogitsWarper(top_p)(None, scores.clone())
            assert torch.equal(ours[ours > -torch.inf], scores[ours > -torch.inf])  # kept scores unchanged
            for row in (torch.isinf(ours) != torch.isinf(ref)).any(-1).nonzero().flatten().tolist():
                # Only float rounding at the threshold may differ: the first disagreeing token sits on it.
                probs = torch.softmax(scores[row].double(), -1)
                tok = (torch.isinf(ours[row]) != torch.isinf(ref[row])).nonzero()[0, 0]
                assert abs(float(probs[probs > probs[tok]].sum()) - top_p) < 1e-5
            checked += 6
    assert checked == 40 * 4 * 6


def test_keyed_sample_draws_from_the_softmax():
    from actlens.core.sampling import KeyedSample

    scores = torch.tensor([[1.0, 0.0, -torch.inf, 2.0, -1.0]])
    sampler = KeyedSample([123])
    counts = torch.zeros(5)
    for _ in range(20000):
        out = sampler(None, scores)
        counts[out.argmax(-1)] += 1
        assert int(torch.isfinite(out).sum()) == 1
    torch.testing.assert_close(counts / counts.sum(), torch.softmax(scores, -1)[0], rtol=0, atol=0.012)
    assert counts[2] == 0


# --- compiled decoding (issue 21) ------------------------------------------------------------------
def _compiled_vs_eager(model, backend):
    """Greedy tokens of compiled and eager decoding, unsteered and steered, switching vectors, layers,
    coefficients and alignments between calls on the same compiled model. ``align="all"`` steers every
    generated token, so a steering hook dropped by the compiled decode steps changes them."""
    import torch._dynamo

    from actlens.vectors import actadd_vector

    v, w = actadd_vector(model, "Love", "Hate", 1), actadd_vector(model, "Up", "Down", 2)
    texts = ["I think that you are", "Hello there"]
    greedy = dict(max_new_tokens=6, temperature=0, stop_at_eos=False)
    graphs = []
    for vector, coeff, align in ((None, 1.0, "front"), (v, 4.0, "all"), (v, 4.0, "front"), (w, -6.0, "all"),
                                 (v, 2.0, "all"), (v, 8.0, "all")):
        steering = {} if vector is None else dict(vector=vector, coeff=coeff, align=align, position=1)
        eager = actlens.generate(model, texts, **greedy, **steering).tokens
        fast = actlens.generate(model, texts, **greedy, **steering, compile=backend).tokens
        assert fast == eager, (vector is not None and vector.layer, coeff, align)
        graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    return graphs


@pytest.mark.slow  # the fast tier has the same comparison in test_compiled_decode_step_is_one_graph...
@pytest.mark.compiled
@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3"])
def test_compiled_decoding_steers_like_eager_decoding(arch):
    """dynamo's tracing and guards (the 'eager' backend: no code generation, so it is quick on the CPU), as far as
    jaxtyping's checkers (which dynamo runs eagerly) let it trace."""
    from actlens.models.tiny import tiny_hf

    hf, tok = tiny_hf(arch)
    model = actlens.load_model(hf, tokenizer=tok)
    graphs = _compiled_vs_eager(model, "eager")
    assert graphs[-1] == graphs[-2]  # another coefficient for the same vector and alignment: no new graph


@pytest.mark.slow
@pytest.mark.compiled
def test_compiled_decoding_with_inductor_steers_like_eager_decoding():
    """The real thing on the CPU: inductor compiles C++ (minutes on two cores)."""
    from actlens.models.tiny import tiny_hf

    hf, tok = tiny_hf("llama")
    _compiled_vs_eager(actlens.load_model(hf, tokenizer=tok), True)


# Graph counts are read in a fresh interpreter: under pytest, jaxtyping's import hook wraps every actlens function
# in a checker that dynamo cannot trace, so it would run those frames eagerly and compile the pieces between them.
PROBE = r"""
import json, sys
import torch._dynamo
from torch._dynamo.utils import counters
import actlens
from actlens.models.tiny import tiny_hf
from actlens.vectors import actadd_vector

arch, case = sys.argv[1:]
hf, tok = tiny_hf(arch)
model = actlens.load_model(hf, tokenizer=tok)
greedy = dict(max_new_tokens=4, temperature=0, stop_at_eos=False)
texts = ["I think that you are", "Hello there"]
if case == "values":  # unsteered; then new coefficients, vector values at the same layer, prompts of the same
    # padded shape (no new graph), and new alignments and layers (one new graph each)
    others = ["We went to the shops", "A cat"]
    love, up = actadd_vector(model, "Love", "Hate", 1), actadd_vector(model, "Up", "Down", 1)
    setups = [(None, 0.0, "front", texts), (love, 4.0, "all", texts), (love, 9.0, "all", texts),
              (up, -6.0, "all", texts), (up, -6.0, "all", others), (love, 4.0, "front", texts),
              (up, 6.0, "front", others), (actadd_vector(model, "Up", "Down", 2), -6.0, "all", texts)]
    widths = [max(len(tok(t).input_ids) for t in p) for p in (texts, others)]
else:  # more steering set-ups than dynamo's default recompile limit
    greedy["max_new_tokens"] = 2
    setups = [(actadd_vector(model, "Love", "Hate", layer), 4.0, align, ["Hello there"])
              for align in ("front", "back", "all") for layer in range(model.cfg.n_layers)]
    widths = [torch._dynamo.config.recompile_limit]
    setups = setups[:widths[0] + 1]
rows = []
for vector, coeff, align, prompts in setups:
    steering = {} if vector is None else dict(vector=vector, coeff=coeff, align=align, position=1)
    compiled = actlens.generate(model, prompts, **greedy, **steering, compile="eager").tokens
    past = actlens.models.model.state(model).positions.past  # no device tensor escapes a compiled step
    assert isinstance(past, int), type(past)
    rows.append(dict(compiled=compiled, eager=actlens.generate(model, prompts, **greedy, **steering).tokens,
                     unsteered=actlens.generate(model, prompts, **greedy).tokens,
                     graphs=counters["stats"]["unique_graphs"]))
sweep_equal = None
if case == "values":  # per-row steering (a sweep's batches: several settings, rows masked per setting)
    grid = actlens.Grid(vectors=[actlens.pair_spec("Love", "Hate")], layers=[1, 2], coeffs=[2.0, 6.0],
                        prompts=["I think", "The weather today is"], seeds=[0], controls=("unsteered", "random"))
    short = actlens.Sampling(max_new_tokens=4)
    eager = actlens.sweep(model, grid, sampling=short, progress=False).records
    sweep_equal = actlens.sweep(model, grid, sampling=short, compile="eager", progress=False).records == eager
print(json.dumps(dict(rows=rows, widths=widths, breaks=sum(counters["graph_break"].values()),
                      skipped=sum(counters["unimplemented"].values()), sweep_equal=sweep_equal)))
"""


def _probe(arch: str, case: str) -> dict:
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", PROBE, arch, case], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("arch", ["llama", pytest.param("gemma3", marks=pytest.mark.slow)])
def test_compiled_decode_step_is_one_graph_that_new_values_reuse(arch):
    """The steering hook is graph-safe: a compiled decode step is one graph with no break and no frame dynamo gives
    up on (no host read of the cache length or of the rows' positions), and new coefficients, new vector values at
    the same layer and new prompts of the same padded shape run the graph already compiled, still steering like
    eager decoding (``align="all"`` steers every generated token), and so does a compiled sweep. Gemma 3's
    sliding-window layers stop counting in their tensor once the window is full: the hooks read a full-attention
    layer's counter."""
    got = _probe(arch, "values")
    assert got["widths"][0] == got["widths"][1]
    assert got["sweep_equal"] is True  # a compiled sweep (per-row steering hooks) gives the eager sweep's records
    rows = got["rows"]
    for row in rows:
        assert row["compiled"] == row["eager"]
    for row in rows[1:]:
        assert row["eager"] != row["unsteered"]  # steered: a hook dropped by the compiled steps would show
    assert got["breaks"] == got["skipped"] == 0
    # a graph per set-up (Gemma 3's cache adds one as its sliding window fills); nothing new for new values or prompts
    graphs = [row["graphs"] for row in rows]
    assert [b > a for a, b in zip(graphs, graphs[1:])] == [True, False, False, False, True, False, True], graphs


@pytest.mark.slow
def test_compiled_decoding_keeps_compiling_past_dynamos_default_limit():
    """A layer sweep with compile=True needs one graph per steering set-up; past dynamo's default limit it would
    decode eagerly (correct, but not what compile=True asks for): each new set-up here adds its graph."""
    got = _probe("llama", "limit")
    assert len(got["rows"]) > got["widths"][0]
    for row in got["rows"]:
        assert row["compiled"] == row["eager"]
    assert [row["graphs"] for row in got["rows"]] == list(range(1, len(got["rows"]) + 1))


@pytest.mark.unchecked
def test_compile_refuses_what_it_cannot_do(tiny_models, monkeypatch):
    import torch._inductor.cpp_builder as builder

    model = tiny_models["llama"]
    with pytest.raises(ValueError, match="has none"):
        actlens.generate(tiny_models["native"], ["Hi"], max_new_tokens=2, compile=True)
    with pytest.raises(ValueError, match="use_cache=False"):
        actlens.generate(model, ["Hi"], max_new_tokens=2, compile="eager", use_cache=False)
    with pytest.raises(ValueError, match="no backend"):
        actlens.generate(model, ["Hi"], max_new_tokens=2, compile="no-such-backend")
    with pytest.raises(TypeError, match="compile must be"):
        actlens.generate(model, ["Hi"], max_new_tokens=2, compile=3)

    def missing():
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(builder, "get_cpp_compiler", missing)
    with pytest.warns(RuntimeWarning, match="decoding eagerly instead"):
        out = actlens.generate(model, ["Hi"], max_new_tokens=2, temperature=0, compile=True)
    assert out.tokens == actlens.generate(model, ["Hi"], max_new_tokens=2, temperature=0).tokens


@pytest.mark.compiled
def test_compiled_sweep_equals_eager_sweep(tiny_models):
    grid = actlens.Grid(vectors=[actlens.pair_spec("Love", "Hate")], layers=[1], coeffs=[2.0],
                        prompts=["I think", "The weather today is"], seeds=[0], controls=("unsteered", "random"))
    short = actlens.Sampling(max_new_tokens=4)
    model = tiny_models["llama"]
    eager = actlens.sweep(model, grid, sampling=short, progress=False)
    assert actlens.sweep(model, grid, sampling=short, compile="eager", progress=False).records == eager.records
