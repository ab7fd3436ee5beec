"""Phase, span and BOS scoping of all-position steering (actlens.core.positions.Scope)."""

import pytest
import torch

import actlens
from actlens.core import chat, positions
from actlens.core.positions import Placement, Scope, of_batch
from actlens.core.sampling import Sampling

PROMPTS = ["I think that you are", "Hello there, my good friend", "Why"]
SCOPES = [dict(phase="both"), dict(phase="prompt"), dict(phase="generation"), dict(include_bos=True),
          dict(span=(2, None)), dict(span=(1, -1), phase="prompt"), dict(span=(0, 2), include_bos=True)]


def _greedy(model, texts, **kw):
    return actlens.generate(model, texts, temperature=0, max_new_tokens=6, stop_at_eos=False, **kw).tokens


def _vec(model):
    return actlens.mean_diff_vector(model, [("I love it", "I hate it"), ("Great", "Awful")], layer=2)


@pytest.mark.parametrize("scope", SCOPES, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_cached_uncached_and_batched_agree_for_every_scope(tiny, scope):
    kw = dict(vector=_vec(tiny), coeff=8.0, align="all", **scope)
    cached = _greedy(tiny, PROMPTS, **kw)
    assert cached == _greedy(tiny, PROMPTS, use_cache=False, **kw)
    assert cached == [_greedy(tiny, [p], **kw)[0] for p in PROMPTS]
    # and it steered: seeded samples see any change of the logits (greedy tokens may not, since
    # temperature=0 is the plain arg-max without the frequency penalty)
    sampled = dict(max_new_tokens=6, stop_at_eos=False, seed=0)
    assert actlens.generate(tiny, PROMPTS, **sampled, **kw).tokens != actlens.generate(tiny, PROMPTS, **sampled).tokens


def test_phases_differ_and_generation_leaves_the_first_token_alone(tiny):
    kw = dict(vector=_vec(tiny), coeff=8.0, align="all")
    base, gen, prompt, both = (_greedy(tiny, PROMPTS, **kw | dict(phase=p)) if p else _greedy(tiny, PROMPTS)
                               for p in (None, "generation", "prompt", "both"))
    assert [g[0] for g in gen] == [b[0] for b in base]  # the prompt, so the first new token, is unsteered
    assert [p[0] for p in prompt] == [b[0] for b in both]  # the first token sees only the prompt
    assert len({str(gen), str(prompt), str(both)}) == 3


def test_steered_logits_by_scope(tiny):
    v = _vec(tiny)
    base, batch = actlens.steered_logits(tiny, PROMPTS)
    both, _ = actlens.steered_logits(tiny, PROMPTS, v, 8.0, align="all")
    prompt, _ = actlens.steered_logits(tiny, PROMPTS, v, 8.0, align="all", phase="prompt")
    gen, _ = actlens.steered_logits(tiny, PROMPTS, v, 8.0, align="all", phase="generation")
    bos, _ = actlens.steered_logits(tiny, PROMPTS, v, 8.0, align="all", include_bos=True)
    span, _ = actlens.steered_logits(tiny, PROMPTS, v, 8.0, align="all", span=(2, None))
    assert torch.equal(prompt, both) and torch.equal(gen, base)  # a forward pass is all prompt
    for row, start in enumerate(batch.starts):
        assert not torch.allclose(bos[row, start], base[row, start])  # BOS steered: its own logits move
        torch.testing.assert_close(both[row, start], base[row, start])
        torch.testing.assert_close(span[row, start:start + 2], base[row, start:start + 2])  # before the span
        assert not torch.allclose(span[row, start + 2], base[row, start + 2])


def test_injected_masks():
    layout = of_batch([1, 0], [4, 5], 7)  # two prompts, then two generated columns
    place = lambda **s: Placement("all", 1, False, True, Scope(**s))  # noqa: E731
    assert positions.injected(place(), layout).int().tolist() == [[0, 0, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 1]]
    assert positions.injected(place(phase="prompt"), layout).int().tolist() == [[0, 0, 1, 1, 1, 0, 0],
                                                                             [0, 1, 1, 1, 1, 0, 0]]
    assert positions.injected(place(phase="generation"), layout).int().tolist() == [[0, 0, 0, 0, 0, 1, 1],
                                                                                 [0, 0, 0, 0, 0, 1, 1]]
    assert positions.injected(place(include_bos=True), layout).int().tolist() == [[0, 1, 1, 1, 1, 1, 1],
                                                                               [1, 1, 1, 1, 1, 1, 1]]
    assert positions.injected(place(span=(2, -1)), layout).int().tolist() == [[0, 0, 0, 1, 0, 1, 1],
                                                                           [0, 0, 1, 1, 0, 1, 1]]


def test_chat_user_span_steers_only_the_users_words(tiny):
    v = _vec(tiny)
    span = chat.user_span(tiny, "x", system="Be brief.")
    ids = torch.tensor([chat.encode(tiny, "Tell me a story", system="Be brief.")])
    base = actlens.forward(tiny, ids)
    with actlens.steer(tiny, v, 8.0, align="all", span=span, phase="prompt"):
        steered = actlens.forward(tiny, ids)
    assert torch.equal(steered[0, :span[0]], base[0, :span[0]])
    assert not torch.allclose(steered[0, span[0]], base[0, span[0]])


@pytest.mark.parametrize(("kw", "error", "match"), [
    (dict(phase="generaton"), ValueError, "did you mean 'generation'"),
    (dict(phase="prefill"), ValueError, "phase must be one of"),
    (dict(span=(1, 99)), ValueError, "outside a prompt"),
    (dict(span=(0, 3)), ValueError, "BOS"),
    (dict(span=(3, 2)), ValueError, "empty"),
    (dict(span=(1, -40)), ValueError, "outside a prompt"),
    (dict(span="user"), TypeError, "span must be"),
    (dict(span=(2, None), phase="generation"), ValueError, "would do nothing"),
    (dict(include_bos="yes"), TypeError, "include_bos"),
])
@pytest.mark.unchecked
def test_bad_scopes_are_clear_errors(tiny, kw, error, match):
    with pytest.raises(error, match=match):
        actlens.generate(tiny, PROMPTS, vector=_vec(tiny), coeff=4.0, align="all", max_new_tokens=2, **kw)


def test_positional_alignment_with_generation_phase_is_explained(tiny):
    v = actlens.actadd_vector(tiny, "Hi", "Yo", 2)
    with pytest.raises(ValueError, match="phase='generation' steers generated tokens only, so nothing would be added"):
        actlens.generate(tiny, PROMPTS, vector=v, coeff=4.0, align="front", phase="generation", max_new_tokens=2)
    with pytest.raises(ValueError, match="already has its window"):
        actlens.generate(tiny, PROMPTS, vector=v, coeff=4.0, align="front", include_bos=True, max_new_tokens=2)
    kw = dict(vector=v, coeff=4.0, align="front")  # phase="prompt" is what a positional vector always did
    assert _greedy(tiny, PROMPTS, phase="prompt", **kw) == _greedy(tiny, PROMPTS, **kw)


def test_kl_per_token_takes_the_scope(tiny):
    v = _vec(tiny)
    texts = ["I think that you are nice", "The weather is"]
    both = actlens.kl_per_token(tiny, texts, v, 8.0, align="all", control=False)
    prompt = actlens.kl_per_token(tiny, texts, v, 8.0, align="all", control=False, phase="prompt")
    late = actlens.kl_per_token(tiny, texts, v, 8.0, align="all", control=False, span=(4, None))
    assert torch.equal(both.kl_steered, prompt.kl_steered)
    for row, start in enumerate(late.starts):
        assert late.kl_steered[row, start:start + 4].abs().max() < 1e-6  # before the span nothing moved
        assert late.kl_steered[row, start + 4] > 0 and late.injected[row, start + 4]
        assert not late.injected[row, start + 3]
    with pytest.raises(ValueError, match="would steer nothing"):
        actlens.kl_per_token(tiny, texts, v, 8.0, align="all", phase="generation")


def test_sweep_specs_carry_the_scope(tiny):
    from actlens.experiments.sweeps import VectorSpec, mean_diff_spec
    from actlens.steering import batched

    spec = mean_diff_spec([("I love it", "I hate it")], name="s", phase="generation")
    assert spec.scope_config() == dict(phase="generation", span=None, include_bos=False)
    assert mean_diff_spec([("a", "b")], name="d").scope_config() == {}
    with pytest.raises(ValueError, match="nothing would be added"):
        VectorSpec("p", lambda m, layer: None, align="front", phase="generation")
    v = _vec(tiny)
    rows = [actlens.core.prompts.encode(tiny, p) for p in PROMPTS]
    req = [batched.Request(v, 8.0, "all", phase="generation"), batched.Request(v, 8.0, "all", phase="prompt"), None]
    got = batched.generate_rows(tiny, rows, req, [0, 0, 0],
                                Sampling(max_new_tokens=6, temperature=0, stop_at_eos=False))
    want = [_greedy(tiny, [PROMPTS[0]], vector=v, coeff=8.0, align="all", phase="generation", freq_penalty=1.0)[0],
            _greedy(tiny, [PROMPTS[1]], vector=v, coeff=8.0, align="all", phase="prompt", freq_penalty=1.0)[0],
            _greedy(tiny, [PROMPTS[2]], freq_penalty=1.0)[0]]
    assert got == want
