"""Norm profiles, residual scales and residual-norm units (actlens.analysis.norms)."""

import pytest
import torch

import actlens
from actlens.analysis import norms
from actlens.core.prompts import encode
from actlens.models.activations import resid_pre
from actlens.models.model import hooks_registered
from actlens.vectors import actadd_vector, actadd_vectors

REFERENCE = ["The cat sat on the mat.", "Water boils at one hundred degrees.", "We met at the station at noon."]



def test_shipped_reference_texts_are_a_small_neutral_set():
    texts = norms.default_reference_texts()
    assert 30 <= len(texts) <= 60
    assert len(set(texts)) == len(texts)
    assert all(t and not t.startswith("#") for t in texts)


def test_all_layer_extraction_equals_actadd_vector(tiny):
    found = actadd_vectors(tiny, "Love", "Hate!", [0, 1, 2, 3])
    for layer, vec in found.items():
        ref = actadd_vector(tiny, "Love", "Hate!", layer)
        assert torch.equal(vec.values, ref.values)
        assert (vec.layer, vec.hook_name, vec.plus_tokens, vec.minus_tokens) == (
            ref.layer, ref.hook_name, ref.plus_tokens, ref.minus_tokens)


def test_profile_norms_equal_vector_norm(tiny):
    profile = norms.norm_profile(tiny, ("Love", "Hate!"), layers=[3, 1], reference_texts=REFERENCE)
    assert profile.layers == (3, 1)
    for i, layer in enumerate(profile.layers):
        values = actadd_vector(tiny, "Love", "Hate!", layer).values
        assert torch.allclose(profile.norms[i], torch.linalg.vector_norm(values, dim=-1), rtol=1e-6, atol=1e-6)
    assert torch.equal(profile.norms[:, 0], torch.zeros(2))  # BOS row
    assert torch.allclose(profile.relative, profile.norms / profile.resid_scale[:, None])
    frame = profile.to_frame()
    assert len(frame) == 2 * profile.k
    assert {"layer", "position", "norm", "resid_scale", "relative"} <= set(frame.columns)
    assert not hooks_registered(tiny)


def test_residual_scale_is_median_norm_after_bos(tiny):
    scales = norms.residual_scales(tiny, REFERENCE)
    per_token = {layer: [] for layer in range(4)}
    for text in REFERENCE:  # one by one, unpadded
        acts = resid_pre(tiny, torch.tensor([encode(tiny, text)]), list(range(4)))
        for layer in range(4):
            per_token[layer].append(torch.linalg.vector_norm(acts[layer][0, 1:], dim=-1))
    expected = torch.stack([torch.cat(per_token[layer]).median() for layer in range(4)])
    torch.testing.assert_close(scales, expected, rtol=1e-4, atol=1e-5)
    assert norms.residual_scale(tiny, 2, REFERENCE) == pytest.approx(float(expected[2]), rel=1e-4)


def test_reference_forward_runs_once_per_model(monkeypatch, tiny_models):
    model = tiny_models["llama"]
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return resid_pre(*args, **kwargs)

    monkeypatch.setattr(norms, "resid_pre", counting)
    texts = ["A unique reference sentence for this cache test.", "And a second one."]
    first = norms.residual_scale(model, 1, texts)
    assert len(calls) == 1  # both texts in one batch, every layer at once
    assert norms.residual_scale(model, 3, texts) > 0
    assert norms.residual_scale(model, 1, texts) == first
    assert len(calls) == 1


def test_coeff_from_units_round_trip(tiny):
    vec = actadd_vector(tiny, "Love", "Hate", 2)
    coeff = norms.coeff_from_units(tiny, vec, 0.5, reference_texts=REFERENCE)
    scale = norms.residual_scale(tiny, 2, REFERENCE)
    assert coeff * float(vec.norms().max()) == pytest.approx(0.5 * scale, rel=1e-6)
    row1 = norms.coeff_from_units(tiny, vec, 1.0, position=1, reference_texts=REFERENCE)
    assert row1 * float(vec.norms()[1]) == pytest.approx(scale, rel=1e-6)
    assert norms.units_from_coeff(tiny, vec, coeff, reference_texts=REFERENCE) == pytest.approx(0.5, rel=1e-6)


def test_coeff_from_units_rejects_the_zero_bos_row(tiny_models):
    model = tiny_models["llama"]
    vec = actadd_vector(model, "Love", "Hate", 1)
    with pytest.raises(ValueError, match="row 0 of this vector is zero"):
        norms.coeff_from_units(model, vec, 1.0, position=0)
    with pytest.raises(ValueError, match="position must be 'max' or a row index"):
        norms.coeff_from_units(model, vec, 1.0, position=9)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(pair=("Love", "Hate"), layers=[4]), ValueError, r"must be in \[0, 4\)"),
        (dict(pair=("Love", "Hate"), layers=[]), ValueError, "layers is empty"),
        (dict(pair=("Love", "Hate"), layers=[1, 1]), ValueError, "repeated layers"),
        (dict(pair="Love"), TypeError, r"\(plus, minus\) tuple"),
        (dict(pair=("Love", "Hate"), reference_texts=[]), ValueError, "reference_texts is empty"),
    ],
)
@pytest.mark.unchecked
def test_norm_profile_rejects_bad_input(tiny_models, kwargs, error, match):
    with pytest.raises(error, match=match):
        norms.norm_profile(tiny_models["gpt2"], **kwargs)


@pytest.mark.slow
def test_norm_profile_on_smollm2(smol):
    profile = norms.norm_profile(smol, ("Love", "Hate"), layers=[2, 6], reference_texts=REFERENCE)
    assert profile.plus_tokens[1] == "Love" and profile.norms.shape == (2, 3)
    vec = actlens.actadd_vector(smol, "Love", "Hate", 6)
    torch.testing.assert_close(profile.norms[1], vec.norms())
    assert bool((profile.resid_scale > 0).all())
    assert not hooks_registered(smol)
