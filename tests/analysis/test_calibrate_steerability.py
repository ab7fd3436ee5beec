"""actlens.analysis.calibrate (KL budget / units) and actlens.analysis.steerability (consistency, separation, anti-steerable)."""

import pytest
import torch

from actlens.analysis.calibrate import calibrate, default_texts
from actlens.analysis.klcurve import kl_curve
from actlens.analysis.norms import coeff_from_units
from actlens.analysis.steerability import auroc, contrast_metric, steerability
from actlens.vectors import actadd_vector

PAIRS = [("I love it", "I hate it"), ("a good day", "a bad day"), ("so happy", "so sad"), ("great food", "awful food")]
PROMPTS = ["The film was", "My day", "Our trip to the city"]


def test_calibrated_coefficient_meets_the_budget(tiny_models):
    model = tiny_models["llama"]
    v = actadd_vector(model, "Love", "Hate", 1)
    cal = calibrate(model, v, target_kl=0.001)
    measured = float(kl_curve(model, list(default_texts()), v, [cal.coeff]).mean_kl[0])
    assert cal.mean_kl == pytest.approx(measured, rel=1e-5) and measured == pytest.approx(0.001, rel=0.05)
    curve = cal.to_frame()
    assert {"coeff", "mean_kl", "units", "round"} <= set(curve.columns) and curve["round"].max() >= 1
    assert cal.units == pytest.approx(cal.coeff / coeff_from_units(model, v, 1.0), rel=1e-6)


def test_units_calibration(tiny_models):
    model = tiny_models["gpt2"]
    v = actadd_vector(model, "Love", "Hate", 2)
    cal = calibrate(model, v, units=0.5)
    assert cal.coeff == pytest.approx(coeff_from_units(model, v, 0.5)) and cal.mean_kl is None


def test_calibrate_bad_input(tiny_models):
    model = tiny_models["llama"]
    v = actadd_vector(model, "Love", "Hate", 1)
    with pytest.raises(ValueError, match=r"no coefficient in \[.*\] reaches target_kl=50: the largest mean KL seen"):
        calibrate(model, v, target_kl=50.0)
    with pytest.raises(ValueError, match="exactly one of target_kl"):
        calibrate(model, v)
    with pytest.raises(ValueError, match="exactly one of target_kl"):
        calibrate(model, v, target_kl=0.1, units=1.0)
    with pytest.raises(ValueError, match="target_kl must be > 0"):
        calibrate(model, v, target_kl=-1.0)
    with pytest.raises(ValueError, match="shorter|covers"):
        calibrate(model, v, target_kl=0.001, texts=["Hi"])
    with pytest.raises(ValueError, match="0 < low < high"):
        calibrate(model, v, target_kl=0.001, coeff_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="smallest coefficient"):
        calibrate(model, v, target_kl=1e-12, coeff_range=(1.0, 2.0))


def test_auroc():
    assert auroc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert auroc(torch.tensor([1.0]), torch.tensor([1.0])) == 0.5
    assert auroc(torch.tensor([0.0, 5.0]), torch.tensor([1.0, 2.0])) == 0.5


def test_steerability_report(tiny_models):
    model = tiny_models["llama"]
    r = steerability(model, PAIRS, 2, prompts=PROMPTS)
    assert -1 <= r.consistency <= 1 and 0 <= r.separation <= 1 and r.folds == 4
    assert r.pair_cosines.shape == (4,) and r.prompt_shifts.shape == (3,)
    assert r.anti_steerable == pytest.approx(float((r.prompt_shifts < 0).float().mean()))
    assert str(r) == r.verdict and "AUROC" in r.verdict and "prompts" in r.verdict
    swapped = steerability(model, [(n, p) for p, n in PAIRS], 2)
    assert swapped.separation == pytest.approx(r.separation)  # the direction flips with the pairs
    assert swapped.consistency == pytest.approx(r.consistency, abs=1e-5)
    flipped_metric = contrast_metric(model, PAIRS)
    negated = steerability(model, PAIRS, 2, prompts=PROMPTS, metric=lambda lg: -flipped_metric(lg), coeff=r.coeff)
    assert torch.allclose(negated.prompt_shifts, -r.prompt_shifts, atol=1e-5)
    assert r.to_frame().columns.tolist()[:4] == ["layer", "n_pairs", "consistency", "separation"]


@pytest.mark.unchecked
def test_steerability_bad_input(tiny_models):
    model = tiny_models["llama"]
    with pytest.raises(ValueError, match="pairs is empty"):
        steerability(model, [], 1)
    with pytest.raises(ValueError, match="one-sided"):
        steerability(model, [("I love it", ""), ("a", "b")], 1)
    with pytest.raises(ValueError, match="at least 2 pairs"):
        steerability(model, [("I love it", "I hate it")], 1)
    with pytest.raises(TypeError, match="pair of strings"):
        steerability(model, [("a", "b", "c"), ("a", "b")], 1)
    with pytest.raises(ValueError, match="same text"):
        steerability(model, [("a", "a"), ("b", "c")], 1)
    with pytest.raises(ValueError, match="one score per prompt"):
        steerability(model, PAIRS, 1, prompts=PROMPTS, metric=lambda lg: lg.sum())
    with pytest.raises(ValueError, match="pass prompts"):
        steerability(model, PAIRS, 1, coeff=2.0)
