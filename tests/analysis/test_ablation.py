"""Layer ablations: the projection hook, injecting at each layer, ablating downstream."""

import pytest
import torch

import actlens
from actlens.analysis import ablation
from actlens.experiments.sweeps import pair_spec
from actlens.models.model import hook_name, hooks_registered

TEXTS = ["The weather today is nice and warm.", "I think that we should go home now."]




def _capture(model, layer, tokens):
    seen = {}

    def keep(resid, hook):
        seen["x"] = resid.detach().clone()

    with torch.no_grad(), model.hooks(fwd_hooks=[(hook_name(layer), keep)]):
        model(tokens)
    return seen["x"]


@pytest.mark.parametrize("mean", [0.0, 2.5])
def test_remove_direction_sets_the_projection_after_bos(tiny, mean):
    tokens = torch.tensor([[0, 40, 41, 42, 43]])
    u = torch.randn(tiny.cfg.d_model, generator=torch.Generator().manual_seed(0))
    unit = u / u.norm()
    before = _capture(tiny, 2, tokens)
    with ablation.remove_direction(tiny, {2: u}, means={2: mean}):
        after = _capture(tiny, 2, tokens)
    torch.testing.assert_close(after[0, 1:] @ unit, torch.full((4,), mean), atol=1e-4, rtol=0)
    torch.testing.assert_close(after[0, 0], before[0, 0])  # BOS untouched
    orthogonal = after[0, 1:] - (after[0, 1:] @ unit)[:, None] * unit
    torch.testing.assert_close(orthogonal, before[0, 1:] - (before[0, 1:] @ unit)[:, None] * unit, atol=1e-4, rtol=0)


def test_remove_direction_is_scoped_and_validates(tiny):
    before = hooks_registered(tiny)
    with pytest.raises(RuntimeError, match="boom"), ablation.remove_direction(tiny, {1: torch.ones(tiny.cfg.d_model)}):
        raise RuntimeError("boom")
    assert hooks_registered(tiny) == before
    d = tiny.cfg.d_model
    for directions, match in (({1: torch.zeros(d)}, "non-zero finite"), ({1: torch.ones(3)}, "non-zero finite"),
                              ({99: torch.ones(d)}, "layer must be in")):
        with pytest.raises(ValueError, match=match), ablation.remove_direction(tiny, directions):
            pass


def test_inject_each_layer_reports_steered_and_random(tiny_models):
    model = tiny_models["llama"]
    f = ablation.inject_each_layer(model, pair_spec("Love", "Hate"), TEXTS, 4.0)
    assert sorted(set(f.layer)) == list(range(model.cfg.n_layers))
    assert set(f.condition) == {"steered", "random"} and (f.kl > 0).all()
    with pytest.raises(ValueError, match="layers is empty"):
        ablation.inject_each_layer(model, pair_spec("Love", "Hate"), TEXTS, 4.0, layers=[])


def test_ablate_downstream_measures_kept_effect(tiny_models):
    model = tiny_models["gpt2"]
    v = actlens.actadd_vector(model, "Love", "Hate", 1)
    f = ablation.ablate_downstream(model, v, 4.0, TEXTS)
    assert sorted(set(f.layer)) == [2, 3] and len(f) == 2 * 2 * 2
    assert (f.kl_full > 0).all() and (f.side_kl >= 0).all()
    assert f.kl_retained.between(0, 10).all()
    # the "measured" direction at layer j is what the steering changed there: removing it removes more
    first = f[f.layer == 2].set_index(["mode", "direction"]).kl_retained
    assert first[("zero", "measured")] < 1.0


@pytest.mark.unchecked
def test_ablate_downstream_rejects_layers_at_or_before_injection(tiny_models):
    model = tiny_models["llama"]
    v = actlens.actadd_vector(model, "Love", "Hate", 2)
    with pytest.raises(ValueError, match="after the injection layer 2"):
        ablation.ablate_downstream(model, v, 1.0, TEXTS, layers=[2, 3])
    with pytest.raises(ValueError, match="modes"):
        ablation.ablate_downstream(model, v, 1.0, TEXTS, modes=["shuffle"])
    last = actlens.actadd_vector(model, "Love", "Hate", model.cfg.n_layers - 1)
    with pytest.raises(ValueError, match="after the injection layer"):
        ablation.ablate_downstream(model, last, 1.0, TEXTS)
