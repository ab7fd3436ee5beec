"""Invariants of vectors and steering on tiny models of every architecture."""

import pytest
import torch

import actlens
from actlens.core import prompts
from actlens.models.model import forward, hook_name, hooks_registered, padding


def _batch(model, texts):
    return prompts.left_pad([prompts.encode(model, t) for t in texts], prompts.pad_token_id(model))


def _resid_all(model, batch):
    layers = list(range(model.cfg.n_layers))
    with padding(model, batch.starts, batch.lengths):
        return actlens.resid_pre(model, batch.tokens, layers, batch.attention_mask)


def test_actadd_vector_equals_run_with_cache_difference(tiny):
    layer = 2
    v = actlens.actadd_vector(tiny, "Love", "Hate", layer)
    plus, minus = torch.tensor([v.plus_tokens[0]]), torch.tensor([v.minus_tokens[0]])
    name = hook_name(layer)
    with torch.no_grad():  # TransformerLens's own path, not actlens's fast tree
        _, cache_p = tiny.run_with_cache(plus, names_filter=[name])
        _, cache_m = tiny.run_with_cache(minus, names_filter=[name])
    expected = cache_p[name][0] - cache_m[name][0]
    torch.testing.assert_close(v.values, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(v.values[0], torch.zeros_like(v.values[0]))  # BOS row cancels
    assert v.hook_name == name and v.layer == layer and v.model.d_model == tiny.cfg.d_model


def test_actadd_pads_shorter_prompt_with_space_token(tiny):
    v = actlens.actadd_vector(tiny, "Love", "Hatred", 1)
    space = prompts.space_pad(tiny)
    assert space.source == "space"
    assert len(v.plus_tokens[0]) == len(v.minus_tokens[0]) == v.k
    assert v.plus_tokens[0][-2:] == (space.token_id, space.token_id)
    assert v.pad_token_id == space.token_id


def test_coefficient_zero_is_bit_identical(tiny):
    v = actlens.actadd_vector(tiny, "Love", "Hate", 1)
    tokens = torch.tensor([prompts.encode(tiny, "I think that you are")])
    base = forward(tiny, tokens)
    for align in ("front", "back", "all"):
        with actlens.steer(tiny, v, 0.0, align=align, position=1):
            assert torch.equal(forward(tiny, tokens), base)


@pytest.mark.parametrize("align", ["front", "mid", "back", "all"])
def test_residuals_change_exactly_where_and_how_expected(tiny, align):
    layer, coeff = 2, 3.0
    v = actlens.actadd_vector(tiny, "Love", "Hate", layer)
    texts = ["I think that you are nice", "Hi there, friend"]  # different lengths: left padding
    batch = _batch(tiny, texts)
    base = _resid_all(tiny, batch)
    with actlens.steer(tiny, v, coeff, align=align, position=1):
        steered = _resid_all(tiny, batch)
    for below in range(layer):
        assert torch.equal(steered[below], base[below])
    values = v.values if align != "all" else v.values[1:2]
    expected = base[layer].clone()
    for row, (start, length) in enumerate(zip(batch.starts, batch.lengths, strict=True)):
        if align == "all":
            expected[row, start + 1:] += coeff * values[0]
            continue
        a = {"front": 0, "mid": length // 2 - v.k // 2, "back": length - v.k}[align]
        expected[row, start + a:start + a + v.k] += coeff * values
    torch.testing.assert_close(steered[layer], expected, atol=1e-5, rtol=0)
    changed = (steered[layer] != base[layer]).any(-1)
    assert not changed[0, :batch.starts[0]].any() and not changed[1, :batch.starts[1]].any()  # pads untouched
    assert not torch.equal(steered[layer + 1], base[layer + 1])


def test_composition_adds_both_vectors(tiny):
    v1 = actlens.actadd_vector(tiny, "Love", "Hate", 1)
    v2 = actlens.actadd_vector(tiny, "Joy!", "Sad.", 1)
    batch = _batch(tiny, ["I think that you are"])
    base = _resid_all(tiny, batch)[1]
    with actlens.steer(tiny, [(v1, 2.0), (v2, -1.0)]):
        both = _resid_all(tiny, batch)[1]
    expected = base.clone()
    expected[0, :v1.k] += 2.0 * v1.values
    expected[0, :v2.k] += -1.0 * v2.values
    torch.testing.assert_close(both, expected, atol=1e-5, rtol=0)


def test_no_hook_remains_after_an_exception(tiny):
    v = actlens.actadd_vector(tiny, "Love", "Hate", 1)
    assert hooks_registered(tiny) == 0
    pre_hooks = [len(b._forward_pre_hooks) for b in tiny.blocks]  # actlens's position recorders
    with pytest.raises(RuntimeError, match="boom"):
        with actlens.steer(tiny, v, 2.0):
            assert hooks_registered(tiny) == 1
            raise RuntimeError("boom")
    assert hooks_registered(tiny) == 0
    assert [len(b._forward_pre_hooks) for b in tiny.blocks] == pre_hooks


def test_user_hooks_survive_steering(tiny):
    v = actlens.actadd_vector(tiny, "Love", "Hate", 1)
    calls = []
    tiny.add_hook(hook_name(0), lambda resid, hook: calls.append(1))
    try:
        with actlens.steer(tiny, v, 1.0):
            pass
        forward(tiny, torch.tensor([prompts.encode(tiny, "I think that you are")]))
        assert calls
    finally:
        tiny.reset_hooks()


def test_short_prompt_is_an_error_or_padded_on_request(tiny):
    v = actlens.actadd_vector(tiny, "Love", "Hate", 1)
    with pytest.raises(ValueError, match="short_prompt='pad'"):
        actlens.steered_logits(tiny, ["Hi"], v, 2.0)
    logits, batch = actlens.steered_logits(tiny, ["Hi"], v, 2.0, short_prompt="pad")
    space = prompts.space_pad(tiny).token_id
    assert batch.lengths == [v.k]
    assert batch.tokens[0, 1:v.k - 2].tolist() == [space] * (v.k - 3)
    with pytest.raises(ValueError, match="align='all'"):  # the raw forward path says so too
        with actlens.steer(tiny, v, 2.0):
            forward(tiny, torch.tensor([prompts.encode(tiny, "Hi")]))
    assert hooks_registered(tiny) == 0


def test_mean_diff_vector_is_mean_of_last_token_differences(tiny):
    pairs = [("I love it", "I hate it"), ("Great day", "Awful day")]
    v = actlens.mean_diff_vector(tiny, pairs, 2)
    acts = []
    for text in [p for p, _ in pairs] + [n for _, n in pairs]:
        tokens = torch.tensor([prompts.encode(tiny, text)])
        acts.append(actlens.resid_pre(tiny, tokens, [2])[2][0, -1])
    expected = (torch.stack(acts[:2]).mean(0) - torch.stack(acts[2:]).mean(0))[None]
    torch.testing.assert_close(v.values, expected, atol=1e-5, rtol=1e-5)
    assert v.k == 1 and not v.bos_row and v.kind == "mean_diff"


def test_mean_centred_vector_uses_reference_texts(tiny):
    v = actlens.mean_diff_vector(tiny, [("I love it", ""), ("Great", "")], 1, centre=["The table.", "A door."])
    assert v.kind == "mean_centred" and v.minus == ("The table.", "A door.")


def test_vector_is_immutable(tiny):
    v = actlens.actadd_vector(tiny, "Love", "Hate", 1)
    v.values.add_(1.0)
    assert torch.equal(v.values[0], torch.zeros_like(v.values[0]))
    with pytest.raises(AttributeError):
        v.layer = 2


def test_random_control_has_the_same_norms(tiny):
    v = actlens.actadd_vector(tiny, "Love", "Hate", 1)
    r = actlens.random_like(v, seed=3)
    torch.testing.assert_close(r.norms(), v.norms(), atol=1e-4, rtol=1e-5)
    assert r.kind == "random" and not torch.allclose(r.values[1:], v.values[1:])


def test_bridge_forward_after_cached_generation_sees_fresh_positions(tiny_hf_model):
    """A KV-cached generate leaves the cache length behind; the next plain forward must not reuse it."""
    v = actlens.actadd_vector(tiny_hf_model, "Love", "Hate", 1)
    tokens = torch.tensor([prompts.encode(tiny_hf_model, "I think that you are")])
    with actlens.steer(tiny_hf_model, v, 3.0):
        fresh = tiny_hf_model(tokens)
    actlens.generate(tiny_hf_model, "Hello there, friend", max_new_tokens=6, temperature=0)
    with actlens.steer(tiny_hf_model, v, 3.0):
        assert torch.equal(tiny_hf_model(tokens), fresh)
