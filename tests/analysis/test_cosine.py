"""Cosine matrices across layers, contrasts and methods (actlens.analysis.cosine)."""

import pytest
import torch

from actlens.analysis.cosine import cosine_across_layers, cosine_matrix
from actlens.models.model import hooks_registered
from actlens.vectors import actadd_vector, mean_diff_vector


def check_cosine_matrix(matrix: torch.Tensor, *, allow_zero_items: bool = False) -> None:
    torch.testing.assert_close(matrix, matrix.T, rtol=0, atol=0, equal_nan=True)
    zero = matrix.diagonal().isnan()  # items whose vector is exactly zero
    assert allow_zero_items or not bool(zero.any())
    torch.testing.assert_close(matrix.diagonal()[~zero], torch.ones(int((~zero).sum())), rtol=0, atol=1e-6)
    assert bool((matrix[~zero][:, ~zero].abs() <= 1).all())
    assert bool(matrix[zero].isnan().all())


@pytest.mark.parametrize("reduce", ["sum", "last", "per_position"])
def test_symmetric_with_unit_diagonal(tiny, reduce):
    result = cosine_across_layers(tiny, ("Love", "Hat!"), reduce=reduce)
    check_cosine_matrix(result.matrix)
    assert result.matrix.dtype == torch.float32
    k = actadd_vector(tiny, "Love", "Hat!", 0).k
    per_layer = k - 1 if reduce == "per_position" else 1  # the BOS row is not an item
    assert result.matrix.shape == (4 * per_layer, 4 * per_layer)
    assert hooks_registered(tiny) == 0


def test_identical_tokens_give_nan_not_fake_cosines(tiny_models):
    # "Love" / "Hate!" share the byte "e" at position 4, so that row is exactly zero at layer 0.
    result = cosine_across_layers(tiny_models["llama"], ("Love", "Hate!"), layers=[0, 1], reduce="per_position")
    check_cosine_matrix(result.matrix, allow_zero_items=True)
    zero = [i for i, (_, layer, pos) in enumerate(result.items) if layer == 0 and pos == 4]
    assert len(zero) == 1 and bool(result.matrix[zero[0]].isnan().all())


def test_reductions_follow_their_definitions(tiny_models):
    model = tiny_models["llama"]
    layers = [1, 3]
    vecs = [actadd_vector(model, "Love", "Hate!", layer).values for layer in layers]
    for reduce, pick in (("sum", lambda v: v.sum(0)), ("last", lambda v: v[-1])):
        result = cosine_across_layers(model, ("Love", "Hate!"), layers=layers, reduce=reduce)
        torch.testing.assert_close(result.vectors, torch.stack([pick(v) for v in vecs]))
        expected = torch.nn.functional.cosine_similarity(pick(vecs[0]), pick(vecs[1]), dim=0)
        torch.testing.assert_close(result.block()[0, 1], expected, rtol=1e-5, atol=1e-6)


def test_pure_cosine_matrix_matches_torch_and_marks_zero_vectors():
    x = torch.randn(6, 16, generator=torch.Generator().manual_seed(0))
    x[4] = 0
    m = cosine_matrix(x)
    ref = torch.nn.functional.cosine_similarity(x[:, None], x[None], dim=-1)
    keep = torch.tensor([0, 1, 2, 3, 5])
    torch.testing.assert_close(m[keep][:, keep], ref[keep][:, keep], rtol=1e-5, atol=1e-6)
    assert bool(m[4].isnan().all()) and bool(m[:, 4].isnan().all())


def test_across_contrasts_blocks_are_transposes(tiny_models):
    model = tiny_models["gpt2"]
    result = cosine_across_layers(model, [("Love", "Hate"), ("Joy", "Sadness"), (" weddings", "")], layers=[1, 2])
    check_cosine_matrix(result.matrix)
    assert len(result.labels) == 3 and result.matrix.shape == (6, 6)
    torch.testing.assert_close(result.block(0, 2), result.block(2, 0).T)
    frame = result.to_frame()
    assert len(frame) == 36 and set(frame.a_contrast) == set(result.labels)


def test_mean_diff_method_equals_mean_diff_vector(tiny_models):
    model = tiny_models["llama"]
    pairs = [("I love it", "I hate it"), ("Great day", "Awful day"), ("Yes", "No")]
    result = cosine_across_layers(model, [pairs], layers=[0, 2], method="mean_diff")
    for i, layer in enumerate([0, 2]):
        ref = mean_diff_vector(model, pairs, layer).values[0]
        torch.testing.assert_close(result.vectors[i], ref, rtol=1e-4, atol=1e-5)


def test_methods_compared_on_one_pair(tiny_models):
    model = tiny_models["native"]
    result = cosine_across_layers(model, [("Love", "Hate"), ("Love", "Hate")], layers=[1, 2, 3],
                                  method=["actadd", "mean_diff"])
    check_cosine_matrix(result.matrix)
    assert result.methods == ("actadd", "mean_diff")
    assert result.block(0, 1).shape == (3, 3)
    frame = result.to_frame()
    assert set(frame.a_method) == {"actadd", "mean_diff"}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(pairs=("Love", "Hate"), reduce="mean"), ValueError, "reduce must be one of"),
        (dict(pairs=[[("a", "b"), ("c", "d")]]), ValueError, "ActAdd uses one pair"),
        (dict(pairs=[("a", "b"), ("c", "d")], method=["actadd"]), ValueError, "one per contrast"),
        (dict(pairs=("Love", "Hate"), method="caa"), ValueError, "must be one of"),
        (dict(pairs=[]), TypeError, "non-empty list"),
        (dict(pairs=("Love", "Hate"), layers=[-1]), ValueError, r"must be in \[0, 4\)"),
    ],
)
@pytest.mark.unchecked
def test_bad_input_raises(tiny_models, kwargs, error, match):
    with pytest.raises(error, match=match):
        cosine_across_layers(tiny_models["llama"], **kwargs)


@pytest.mark.slow
def test_cosine_on_smollm2(smol):
    result = cosine_across_layers(smol, [("Love", "Hate"), ("Joy", "Sadness")], layers=[3, 6, 12])
    check_cosine_matrix(result.matrix)
    assert result.block(0, 1).shape == (3, 3)
