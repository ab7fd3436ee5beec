"""actlens.kl_curve equals separate kl_per_token calls, without recomputing layers below the vector."""

import pytest
import torch

from actlens.analysis.kl import kl_per_token
from actlens.analysis.klcurve import kl_curve, resumable
from actlens.models.model import decoder_layers, hooks_registered
from actlens.vectors import actadd_vector, mean_diff_vector

TEXTS = ["I think that you are nice", "The weather is", "A much longer text to pad the batch out"]
COEFFS = [0.0, 0.5, 2.0, -3.0, 8.0]


@pytest.mark.parametrize("align", ["front", "all"])
def test_curve_equals_separate_kl_per_token(tiny, align):
    v = (actadd_vector(tiny, "Love", "Hate", 2) if align == "front"
         else mean_diff_vector(tiny, [("good day", "bad day"), ("yes", "no")], 1))
    curve = kl_curve(tiny, TEXTS, v, COEFFS, align=align, batch_size=2)
    for j, c in enumerate(COEFFS):
        ref = kl_per_token(tiny, TEXTS, v, c, align=align, control=False, batch_size=2)
        assert float(curve.mean_kl[j]) == pytest.approx(float(ref.summary().mean_kl.iloc[0]), rel=1e-5, abs=1e-9)
        per_text = [float(ref.kl_steered[i][ref.counted[i]].mean()) for i in range(len(TEXTS))]
        assert curve.per_text[j].tolist() == pytest.approx(per_text, rel=1e-5, abs=1e-9)
    frame = curve.to_frame()
    assert frame.coeff.tolist() == COEFFS and frame.n_positions.iloc[0] == int(curve.counted.sum())
    assert len(curve.per_text_frame()) == len(COEFFS) * len(TEXTS)
    assert hooks_registered(tiny) == 0


def test_hf_models_resume_at_the_layer_and_native_falls_back(tiny_models):
    assert resumable(tiny_models["llama"], 2) and resumable(tiny_models["gpt2"], 3)
    assert not resumable(tiny_models["native"], 2)


def test_layers_below_the_vector_run_once_per_chunk(tiny_models):
    model = tiny_models["llama"]
    v = actadd_vector(model, "Love", "Hate", 2)
    resumable(model, 2)  # the one-time check runs its own forwards
    calls = {0: 0, 3: 0}
    handles = [decoder_layers(model)[i].mlp.register_forward_hook(
        lambda *_, i=i: calls.__setitem__(i, calls[i] + 1)) for i in calls]
    try:
        kl_curve(model, TEXTS, v, COEFFS, batch_size=8)
    finally:
        for h in handles:
            h.remove()
    assert calls == {0: 1, 3: 2}  # layer 0: the unsteered pass only; layer 3: unsteered + one batched steered pass


@pytest.mark.unchecked
def test_bad_input(tiny_models):
    model = tiny_models["llama"]
    v = actadd_vector(model, "Love", "Hate", 1)
    with pytest.raises(ValueError, match="coeffs is empty"):
        kl_curve(model, TEXTS, v, [])
    with pytest.raises(ValueError, match="finite"):
        kl_curve(model, TEXTS, v, [1.0, float("nan")])
    with pytest.raises(ValueError, match="shorter|covers"):
        kl_curve(model, ["Hi"], v, [1.0])
    with pytest.raises(TypeError, match="list of numbers"):
        kl_curve(model, TEXTS, v, 2.0)
    with pytest.raises(ValueError, match="non-finite"):  # refused where the vector is made (issue 22)
        kl_curve(model, TEXTS, v.with_values(torch.full_like(v.values, float("inf"))), [1.0])
    assert hooks_registered(model) == 0
