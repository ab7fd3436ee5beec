"""Propagation of an injection through the layers, and layer transfer (actlens.analysis.propagation)."""

import pytest
import torch

from actlens.analysis import kl
from actlens.analysis.propagation import propagation, transfer_matrix
from actlens.models.model import hooks_registered
from actlens.vectors import actadd_vector, mean_diff_vector

TEXTS = ["I think that you are", "The weather is nice", "Hello there, my old friend"]



@pytest.mark.parametrize("layer", [1, 2])
def test_layers_below_the_injection_are_exactly_zero(tiny, layer):
    vec = actadd_vector(tiny, "Love", "Hate", layer)
    result = propagation(tiny, vec, 4.0, TEXTS)
    assert torch.equal(result.diff_norm[:, :layer], torch.zeros_like(result.diff_norm[:, :layer]))
    assert bool(result.cosine[:, :layer].isnan().all())  # no difference, no direction
    assert bool((result.diff_norm[:, layer + 1][result.real] > 0).any())
    assert not hooks_registered(tiny)


def test_injection_layer_holds_exactly_the_added_vector(tiny):
    layer, coeff = 2, 3.0
    vec = actadd_vector(tiny, "Love", "Hat!", layer)
    result = propagation(tiny, vec, coeff, TEXTS)
    norms = coeff * vec.norms()
    direction = vec.values.sum(0)
    for i, start in enumerate(result.starts):
        window = slice(start, start + vec.k)
        torch.testing.assert_close(result.diff_norm[i, layer, window], norms, rtol=1e-4, atol=1e-4)
        outside = torch.ones(result.diff_norm.shape[-1], dtype=torch.bool)
        outside[window] = False
        assert torch.equal(result.diff_norm[i, layer][outside], torch.zeros(int(outside.sum())))
        expected = torch.nn.functional.cosine_similarity(vec.values[1:], direction[None], dim=-1)
        torch.testing.assert_close(result.cosine[i, layer, start + 1:start + vec.k], expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(result.injected, result.injected & result.real)


def test_pads_and_zero_coefficient(tiny_models):
    model = tiny_models["llama"]
    vec = mean_diff_vector(model, [("Good", "Bad")], 1)
    zero = propagation(model, vec, 0.0, TEXTS, align="all")
    assert torch.equal(zero.diff_norm, torch.zeros_like(zero.diff_norm))
    result = propagation(model, vec, 2.0, TEXTS, align="all")
    pads = ~result.real[:, None, :].expand_as(result.diff_norm)
    assert torch.equal(result.diff_norm[pads], torch.zeros(int(pads.sum())))
    assert bool(result.cosine[pads].isnan().all())
    frame = result.to_frame()
    assert len(frame) == 4 * sum(result.lengths)
    assert result.mean_over_texts("relative").shape == (4, max(result.lengths))


def test_transfer_diagonal_is_ordinary_actadd_kl(tiny):
    layers, coeff = [1, 3], 4.0
    result = transfer_matrix(tiny, ("Love", "Hate"), layers, coeff, TEXTS[:2])
    assert result.kl.shape == (2, 2) and result.values is result.kl
    assert bool(((result.flip_rate >= 0) & (result.flip_rate <= 1)).all())
    for i, layer in enumerate(layers):
        direct = kl.kl_per_token(tiny, TEXTS[:2], actadd_vector(tiny, "Love", "Hate", layer), coeff)
        assert float(result.kl[i, i]) == pytest.approx(direct.summary().mean_kl[0], rel=1e-5, abs=1e-7)
        assert result.n_positions == int(direct.counted.sum())
    assert len(result.to_frame()) == 4
    assert not hooks_registered(tiny)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda m, v: propagation(m, v, 1.0, []), ValueError, "texts is empty"),
        (lambda m, v: propagation(m, v, 1.0, ["Hi"]), ValueError, "covers 5 positions"),
        (lambda m, v: propagation(m, v, float("inf"), TEXTS), ValueError, "coeff must be finite"),
        (lambda m, v: transfer_matrix(m, ("a", "b"), [0, 4], 1.0, TEXTS), ValueError, r"must be in \[0, 4\)"),
        (lambda m, v: transfer_matrix(m, ("a", "b"), [0], 1.0, TEXTS, metric="mse"), ValueError, "metric must be"),
        (lambda m, v: transfer_matrix(m, ("a", "b"), [0], 1.0, []), ValueError, "texts is empty"),
    ],
)
@pytest.mark.unchecked
def test_bad_input_raises(tiny_models, call, error, match):
    model = tiny_models["gpt2"]
    with pytest.raises(error, match=match):
        call(model, actadd_vector(model, "Love", "Hate", 1))
    assert not hooks_registered(model)


@pytest.mark.slow
def test_propagation_and_transfer_on_smollm2(smol):
    vec = actadd_vector(smol, "Love", "Hate", 6)
    result = propagation(smol, vec, 1.0, ["I think that the weather today is"])
    assert torch.equal(result.diff_norm[:, :6], torch.zeros_like(result.diff_norm[:, :6]))
    torch.testing.assert_close(result.diff_norm[0, 6, :vec.k], vec.norms(), rtol=1e-4, atol=1e-2)
    transfer = transfer_matrix(smol, ("Love", "Hate"), [6, 12], 1.0, ["I think that the weather today is"])
    assert transfer.kl.shape == (2, 2) and bool((transfer.kl >= 0).all())
    assert not hooks_registered(smol)
