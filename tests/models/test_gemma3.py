"""Gemma 3 specifics on tiny configs: scaled embeddings, a sliding window of 4 tokens, the readout split.

The general invariants (fast tree == bridge == raw Hugging Face logits, steered logits and
greedy tokens against a hand-written reference, cached == uncached == batched) run on a tiny
Gemma 3 through the ``tiny`` fixtures and ``tests/test_equivalence.py``; here: what is
particular to the architecture.
"""

import copy

import pytest
import torch

import actlens
from actlens.core import prompts
from actlens.models.model import _decoder_layers, hook_name
from actlens.models.tiny import GEMMA_WINDOW, tiny_hf

LONG = ["Hello there, my good friend, how are you", "I think that", "Why is the sky so blue today?"]


@pytest.fixture(scope="module")
def gemma():
    hf, tok = tiny_hf("gemma3", seed=3)
    raw = copy.deepcopy(hf)
    return raw, actlens.load_model(hf, tokenizer=tok)


def _layer_types(raw) -> list[str]:
    return list(raw.config.layer_types)


def test_the_tiny_config_has_sliding_and_global_layers_and_the_window_matters(gemma):
    raw, model = gemma
    types = _layer_types(raw)
    assert "sliding_attention" in types and "full_attention" in types
    tokens = torch.tensor([prompts.encode(model, LONG[0])])
    assert tokens.shape[1] > 4 * GEMMA_WINDOW
    wide = copy.deepcopy(raw)
    wide.config.sliding_window = 4096  # same weights, no effective window
    with torch.inference_mode():
        narrow_logits, wide_logits = raw(tokens).logits, wide(tokens).logits
    # inside the window nothing changes; beyond it the window must change the result
    torch.testing.assert_close(narrow_logits[:, :GEMMA_WINDOW], wide_logits[:, :GEMMA_WINDOW], atol=1e-5, rtol=0)
    assert (narrow_logits[:, -1] - wide_logits[:, -1]).abs().max() > 1e-3


def test_resid_pre_0_is_the_scaled_embedding(gemma):
    raw, model = gemma
    tokens = torch.tensor([prompts.encode(model, "Love and hate")])
    seen = actlens.resid_pre(model, tokens, [0])[0]
    weight = raw.get_input_embeddings().weight
    expected = weight[tokens] * torch.tensor(model.cfg.d_model**0.5, dtype=weight.dtype)
    torch.testing.assert_close(seen, expected, atol=1e-5, rtol=1e-6)
    assert not torch.allclose(seen, weight[tokens])  # the scale (8 at d_model 64) is really applied


@pytest.mark.parametrize("layer", [0, 1, 2])  # sliding, sliding, global
def test_actadd_vector_equals_a_hand_written_reference(gemma, layer):
    raw, model = gemma
    plus, minus = prompts.encode(model, "Love"), prompts.encode(model, "Hate")
    captured = []
    handle = _decoder_layers(raw)[layer].register_forward_pre_hook(
        lambda module, args, kwargs: captured.append((args[0] if args else kwargs["hidden_states"])[0].clone()),
        with_kwargs=True)
    try:
        with torch.inference_mode():
            raw(torch.tensor([plus]))
            raw(torch.tensor([minus]))
    finally:
        handle.remove()
    vector = actlens.actadd_vector(model, "Love", "Hate", layer)
    torch.testing.assert_close(vector.values, captured[0] - captured[1], atol=1e-5, rtol=0)
    assert vector.values[0].abs().max() == 0  # the shared BOS cancels


def _greedy(model, texts, **kw):
    return actlens.generate(model, texts, temperature=0, freq_penalty=0, stop_at_eos=False, max_new_tokens=12,
                            **kw).tokens


@pytest.mark.parametrize("layer", [0, 1, 2])
@pytest.mark.parametrize("align", [None, "front", "all"])
def test_cached_uncached_batched_and_raw_agree_beyond_the_window(gemma, layer, align):
    """Prompts of 13-41 tokens plus 12 generated, window 4: every sliding cache wraps around."""
    raw, model = gemma
    vector = actlens.actadd_vector(model, "Love", "Hate", layer)
    kw = dict(vector=vector, coeff=4.0, align=align, position=1) if align else {}
    ours = _greedy(model, LONG, **kw)
    assert ours == _greedy(model, LONG, use_cache=False, **kw)
    assert ours == [_greedy(model, [t], **kw)[0] for t in LONG]
    if align:
        assert ours != _greedy(model, LONG)  # the steering changed something
    # the raw model with the same additions written by hand, generating with Hugging Face's loop
    batch = prompts.encode_batch(model, LONG)
    delta = vector.values * 4.0

    def add(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        out, seq = hidden.clone(), hidden.shape[1]
        for row, start in enumerate(batch.starts):
            if align == "all":
                out[row, start + 1 if seq > 1 else 0:] += delta[1]
            elif align == "front" and seq > 1:
                out[row, start:start + delta.shape[0]] += delta
        return ((out, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": out})

    from transformers import GenerationConfig

    config = GenerationConfig(do_sample=False, max_new_tokens=12, eos_token_id=[], pad_token_id=prompts.pad_token_id(
        model), temperature=None, top_p=None, top_k=None)
    handle = _decoder_layers(raw)[layer].register_forward_pre_hook(add, with_kwargs=True)
    try:
        with torch.inference_mode():
            out = raw.generate(input_ids=batch.tokens, attention_mask=batch.attention_mask, generation_config=config)
    finally:
        handle.remove()
    assert ours == out[:, batch.tokens.shape[1]:].tolist()


def test_steered_logits_equal_the_bridge_under_the_same_steer(gemma):
    _, model = gemma
    vector = actlens.actadd_vector(model, "Love", "Hate", 1)
    tokens = torch.tensor([prompts.encode(model, LONG[0])])
    with torch.inference_mode(), actlens.steer(model, vector, 4.0):
        fast, bridge = actlens.forward(model, tokens), model(tokens)
    torch.testing.assert_close(fast, bridge, atol=1e-5, rtol=0)


def test_per_token_analyses_never_unembed_a_whole_batch(gemma):
    """KL / entropy read the final hidden state and unembed flat blocks of positions: the head only ever
    makes [positions, vocab] blocks, never [batch, pos, vocab] logits."""
    from actlens.models.readout import unembedding

    _, model = gemma
    head = unembedding(model)
    assert head is not None  # Gemma 3 has no final soft-capping: the split is exact
    vector = actlens.actadd_vector(model, " weddings", "", 1)
    shapes = []  # of the logits the head actually produced (forwards stopped before it do not count)
    handle = head.register_forward_hook(lambda module, args, out: shapes.append(tuple(out.shape)))
    try:
        result = actlens.kl_per_token(model, LONG, vector, 1.0)
    finally:
        handle.remove()
    assert shapes and all(len(s) == 2 for s in shapes)
    assert result.summary().mean_kl.notna().all()


def test_norms_lens_and_propagation_run(gemma):
    _, model = gemma
    profile = actlens.norm_profile(model, ("Love", "Hate")).to_frame()
    assert set(profile.layer) == set(range(model.cfg.n_layers))
    lens = actlens.logit_lens(model, (" weddings", ""), layers=[0, 2], top_k=3).to_frame()
    assert len(lens) and lens.token.map(lambda t: isinstance(t, str)).all()
    vector = actlens.actadd_vector(model, " weddings", "", 1)
    frame = actlens.propagation(model, vector, 1.0, LONG[:2]).to_frame()
    assert frame[frame.layer < 1].diff_norm.abs().max() == 0  # nothing changes before the injection
    assert frame[frame.layer > 1].diff_norm.max() > 0


def test_hook_name_is_the_one_the_bridge_has(gemma):
    _, model = gemma
    for layer in range(model.cfg.n_layers):
        assert hook_name(layer) in model.hook_dict
