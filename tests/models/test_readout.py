"""The final residual and the unembedding kept apart (actlens.models.readout), and the blocked KL it serves."""

import torch
from torch import nn

from actlens.analysis import kl
from actlens.models import readout
from actlens.models.model import forward, hooks_registered, state
from actlens.models.tiny import tiny_model
from actlens.vectors import actadd_vector

TEXTS = ["I think that you are", "The weather is nice", "Hello there, my old friend"]


def test_head_of_final_hidden_is_the_models_logits(tiny):
    tokens = torch.tensor([[0, 40, 41, 42], [2, 0, 50, 51]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    with torch.inference_mode():
        hidden, head = readout.final_hidden(tiny, tokens, mask)
        full = forward(tiny, tokens, mask)
        split = head(hidden)
    assert hidden.shape == (2, 4, tiny.cfg.d_model)
    assert not isinstance(head, nn.Identity)  # the split is exact for GPT-2, Llama and TL-native models
    torch.testing.assert_close(split, full, rtol=1e-5, atol=1e-5)
    assert hooks_registered(tiny) == 0 and all(not m._forward_pre_hooks for m in [head])


def test_a_model_whose_logits_are_not_its_head_falls_back_to_full_logits(monkeypatch):
    model = tiny_model("llama", seed=3)
    vec = actadd_vector(model, "Love", "Hate", 1)
    expected = kl.kl_per_token(model, TEXTS, vec, 4.0)
    fresh = tiny_model("llama", seed=3)
    # A head the forward never calls (as if logits were post-processed elsewhere): not exact, so not used.
    monkeypatch.setattr(state(fresh).fast, "get_output_embeddings", lambda: nn.Linear(64, 64))
    assert readout.unembedding(fresh) is None
    hidden, head = readout.final_hidden(fresh, torch.tensor([[0, 40, 41]]))
    assert isinstance(head, nn.Identity) and hidden.shape[-1] == fresh.cfg.d_vocab
    got = kl.kl_per_token(fresh, TEXTS, actadd_vector(fresh, "Love", "Hate", 1), 4.0)
    torch.testing.assert_close(got.kl_steered, expected.kl_steered, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got.entropy_base, expected.entropy_base, rtol=1e-4, atol=1e-6)


def test_block_size_does_not_change_results(monkeypatch, tiny_models):
    model = tiny_models["gpt2"]
    vec = actadd_vector(model, "Love", "Hate", 1)
    whole = kl.kl_per_token(model, TEXTS, vec, 4.0)
    monkeypatch.setattr(kl, "BLOCK", 3)
    monkeypatch.setattr(kl, "HIDDEN_BUDGET", 1)  # every vector in its own group too
    blocked = kl.kl_per_token(model, TEXTS, vec, 4.0)
    for name in ("kl_steered", "kl_control", "entropy_base", "entropy_steered", "entropy_control"):
        torch.testing.assert_close(getattr(blocked, name), getattr(whole, name), rtol=1e-4, atol=1e-6)
    assert torch.equal(blocked.flip_steered, whole.flip_steered)


def test_blocked_kl_equals_kl_of_full_logits(tiny):
    """kl_per_token's numbers equal kl_divergence applied to the full steered and unsteered logits."""
    from actlens import steer

    vec = actadd_vector(tiny, "Love", "Hate", 1)
    text = "Hello there, my old friend"
    result = kl.kl_per_token(tiny, [text], vec, 4.0, control=False)
    tokens = result.tokens
    with torch.inference_mode():
        base = forward(tiny, tokens)
        with steer(tiny, vec, 4.0):
            steered = forward(tiny, tokens)
    torch.testing.assert_close(result.kl_steered[0], kl.kl_divergence(steered, base)[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(result.entropy_base[0], kl.entropy(base)[0], rtol=1e-4, atol=1e-6)
