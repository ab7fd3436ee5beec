"""Hooks are pure and scoped: they never write into their input, nest, and leave other hooks alone."""

import pytest
import torch

import actlens
from actlens.analysis.ablation import remove_direction
from actlens.core import prompts
from actlens.models.model import forward, hook_name, hooks_registered
from actlens.steering.batched import Request, steer_rows

TEXT = "I think that you are"


def _interventions(model, layer):
    """Every kind of hook actlens puts on ``blocks.{layer}.hook_resid_pre``, by name."""
    v = actlens.actadd_vector(model, "Love", "Hate", layer)
    u = v.values[1]
    return {
        "steer front": lambda: actlens.steer(model, v, 5.0),
        "steer all": lambda: actlens.steer(model, v, 5.0, align="all", position=1),
        "steer_rows": lambda: steer_rows(model, [Request(v, 5.0)]),
        "remove_direction": lambda: remove_direction(model, {layer: u}),
    }


@pytest.mark.parametrize("kind", ["steer front", "steer all", "steer_rows", "remove_direction"])
def test_hooks_never_write_into_their_input(tiny, kind):
    layer = 1
    intervention = _interventions(tiny, layer)[kind]
    tokens = torch.tensor([prompts.encode(tiny, TEXT)])
    seen = []

    def spy(resid, *, hook):  # registered first, so it sees the tensor the intervention receives
        seen.append((resid, resid.clone()))

    base = forward(tiny, tokens)
    with torch.no_grad(), tiny.hooks(fwd_hooks=[(hook_name(layer), spy)]):
        with intervention():
            changed = forward(tiny, tokens)
    assert not torch.equal(changed, base)  # the intervention ran
    (handed, copy), = seen
    assert torch.equal(handed, copy)  # the tensor the hook received still holds its value afterwards


def test_nested_steer_at_one_layer_adds_both_and_unwinds(tiny):
    v1 = actlens.actadd_vector(tiny, "Love", "Hate", 1)
    v2 = actlens.actadd_vector(tiny, "Joy!", "Sad.", 1)
    tokens = torch.tensor([prompts.encode(tiny, TEXT)])
    base = forward(tiny, tokens)
    with actlens.steer(tiny, v1, 2.0):
        outer = forward(tiny, tokens)
    with actlens.steer(tiny, [(v1, 2.0), (v2, -1.0)]):
        composed = forward(tiny, tokens)
    with actlens.steer(tiny, v1, 2.0):
        with actlens.steer(tiny, v2, -1.0):
            assert hooks_registered(tiny) == 2
            nested = forward(tiny, tokens)
        assert hooks_registered(tiny) == 1
        torch.testing.assert_close(forward(tiny, tokens), outer, atol=0, rtol=0)  # inner gone, outer still on
    assert hooks_registered(tiny) == 0 and torch.equal(forward(tiny, tokens), base)
    torch.testing.assert_close(nested, composed, atol=1e-5, rtol=1e-5)  # nesting is composition


def test_user_hooks_at_the_same_layer_survive_every_intervention_and_analysis(tiny):
    layer = 1
    name = hook_name(layer)
    v = actlens.actadd_vector(tiny, "Love", "Hate", layer)
    tokens = torch.tensor([prompts.encode(tiny, TEXT)])
    calls = []
    tiny.add_hook(name, lambda resid, hook: calls.append(resid.shape))
    try:
        def still_fires(after: str) -> None:
            calls.clear()
            forward(tiny, tokens)
            assert calls == [tokens.shape + (tiny.cfg.d_model,)], f"the user hook stopped firing after {after}"
            assert hooks_registered(tiny) == 1, f"hooks left behind or removed by {after}"

        for kind, intervention in _interventions(tiny, layer).items():
            with intervention():
                forward(tiny, tokens)
            still_fires(kind)
        actlens.resid_pre(tiny, tokens, [layer])
        still_fires("resid_pre")
        actlens.kl_per_token(tiny, [TEXT], v, 2.0)
        still_fires("kl_per_token")
        actlens.norm_profile(tiny, ("Love", "Hate"), layers=[layer])
        still_fires("norm_profile")
        actlens.propagation(tiny, v, 2.0, [TEXT])
        still_fires("propagation")
        actlens.logit_lens(tiny, v)
        still_fires("logit_lens")
        actlens.cosine_across_layers(tiny, [("Love", "Hate")], layers=[layer])
        still_fires("cosine_across_layers")
        with pytest.raises(RuntimeError, match="boom"), actlens.steer(tiny, v, 1.0):
            raise RuntimeError("boom")
        still_fires("an exception inside steer")
    finally:
        tiny.reset_hooks()
