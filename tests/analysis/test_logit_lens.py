"""Logit lens of steering vectors (actlens.analysis.logit_lens)."""

import pytest
import torch

from actlens.analysis.logit_lens import final_norm, logit_lens, project
from actlens.models.tiny import tiny_model
from actlens.vectors import actadd_vector


def unembedding_inputs(model, tokens: torch.Tensor, norm: str) -> torch.Tensor:
    """Rows whose treated version points along ``W_U[:, t]``: raw columns for "none",
    columns divided by the final norm's gain for "scale" / "residual" (RMS undoes exactly)."""
    cols = model.W_U.detach().float()[:, tokens].T
    return cols if norm == "none" else cols / final_norm(model).gain


@pytest.mark.parametrize("norm", ["none", "scale", "residual"])
def test_unembedding_column_ranks_its_token_first(tiny, norm):
    tokens = torch.arange(3, int(tiny.cfg.d_vocab), 7)
    scores = project(tiny, unembedding_inputs(tiny, tokens, norm), norm)
    assert torch.equal(scores.argmax(-1), tokens)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "native"])
def test_norm_modes_match_their_formulas_with_real_gains(arch):
    model = tiny_model(arch, seed=3)  # a fresh model: its final-norm parameters are randomised below
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.ln_final.named_parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * (0.5 if name.endswith("bias") else 1.0))
    fn = final_norm(model)
    x = torch.randn(5, 64, generator=gen) * 30
    w_u = model.W_U.detach().float()
    eps = float(model.cfg.eps)
    if fn.kind == "rms":
        residual = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * fn.gain
        scale = x * fn.gain
    else:
        centred = x - x.mean(-1, keepdim=True)
        residual = centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + eps) * fn.gain + fn.bias
        scale = centred * fn.gain
    assert fn.kind == ("rms" if arch == "llama" else "ln")
    torch.testing.assert_close(project(model, x, "residual"), residual @ w_u, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(project(model, x, "scale"), scale @ w_u, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(project(model, x, "none"), x @ w_u, rtol=1e-4, atol=1e-3)
    # "residual" is blind to the coefficient; "scale" and "none" are linear in it
    torch.testing.assert_close(project(model, 7 * x, "residual"), project(model, x, "residual"), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(project(model, 7 * x, "scale"), 7 * project(model, x, "scale"), rtol=1e-4, atol=1e-3)


def test_pair_lens_sorted_and_consistent_with_projection(tiny):
    lens = logit_lens(tiny, ("Love", "Hat!"), layers=[2, 0], norm="scale", top_k=4)
    assert lens.layers == (2, 0) and lens.norm == "scale"
    assert torch.equal(lens.promoted_ids[:, 0], torch.full((2, 4), -1))  # BOS row: nothing to decode
    assert bool(lens.promoted_scores[:, 0].isnan().all())
    real = lens.promoted_scores[:, 1:]
    assert bool((real[..., :-1] >= real[..., 1:]).all())
    low = lens.suppressed_scores[:, 1:]
    assert bool((low[..., :-1] <= low[..., 1:]).all())
    vec = actadd_vector(tiny, "Love", "Hat!", 2)
    scores = project(tiny, vec.values, "scale")
    assert torch.equal(lens.promoted_ids[0, 1:], scores[1:].topk(4).indices)
    frame = lens.to_frame()
    assert len(frame) == 2 * (lens.promoted_ids.shape[1] - 1) * 2 * 4
    assert set(frame.direction) == {"promoted", "suppressed"}


def test_vector_input_matches_pair_input(tiny_models):
    model = tiny_models["gpt2"]
    vec = actadd_vector(model, "Love", "Hate", 3)
    by_vector = logit_lens(model, vec, top_k=5)
    by_pair = logit_lens(model, ("Love", "Hate"), layers=[3], top_k=5)
    assert torch.equal(by_vector.promoted_ids, by_pair.promoted_ids)
    assert by_vector.top(3, 1)[0][0] == by_pair.promoted_tokens[0][1][0]
    several = logit_lens(model, [actadd_vector(model, "Love", "Hate", layer) for layer in (1, 2)], top_k=5)
    assert several.layers == (1, 2)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(norm="rms"), ValueError, "norm must be one of"),
        (dict(top_k=0), ValueError, "top_k must be an int"),
        (dict(layers=[9]), ValueError, r"must be in \[0, 4\)"),
    ],
)
@pytest.mark.unchecked
def test_bad_options_raise(tiny_models, kwargs, error, match):
    with pytest.raises(error, match=match):
        logit_lens(tiny_models["llama"], ("Love", "Hate"), **kwargs)


@pytest.mark.unchecked
def test_vector_with_other_layers_or_model_raises(tiny_models):
    vec = actadd_vector(tiny_models["llama"], "Love", "Hate", 1)
    with pytest.raises(ValueError, match="extracted at layer 1"):
        logit_lens(tiny_models["llama"], vec, layers=[2])
    with pytest.raises(TypeError, match="SteeringVector, a list of them, or a"):
        logit_lens(tiny_models["llama"], vec.values)
    other = tiny_model("llama", d_model=32)
    with pytest.raises(ValueError, match="does not fit"):
        logit_lens(other, vec)


@pytest.mark.slow
def test_logit_lens_on_smollm2(smol):
    # Cauchy-Schwarz: the largest-norm unembedding column out-scores every other column on itself.
    w_u = smol.W_U.detach().float()
    t = int(torch.linalg.vector_norm(w_u, dim=0).argmax())
    for norm in ("none", "scale", "residual"):
        assert int(project(smol, unembedding_inputs(smol, torch.tensor([t]), norm), norm).argmax()) == t
    assert final_norm(smol).kind == "rms"
    lens = logit_lens(smol, ("Love", "Hate"), layers=[6], top_k=5)
    vec = actadd_vector(smol, "Love", "Hate", 6)
    assert torch.equal(lens.promoted_ids[0, 1], project(smol, vec.values, "residual")[1].topk(5).indices)
    assert len(lens.to_frame()) == 2 * 2 * 5  # two non-BOS positions, two directions
