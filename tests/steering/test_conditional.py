"""Conditional steering (CAST): per-row gates read on the prompt, bit-identical untouched rows, thresholds, bad input."""

import pytest
import torch

import actlens
from actlens.core.sampling import Sampling
from actlens.steering.batched import Request, encode_rows, generate_rows
from actlens.steering.conditional import (ConditionalVector, condition_scores, conditional, pick_condition,
                                         pick_threshold)
from actlens.vectors import mean_diff_vector

PROMPTS = ["I ate pasta with bread", "The train left the station", "Soup and cheese for lunch",
           "We drove along the road", "A bowl of rice", "The bus was late again"]
MOOD = [("I love it", "I hate it"), ("Great day", "Awful day")]
FOOD = [("Pasta and bread", "Trains and roads"), ("Soup and rice", "Buses and cars")]


def _split_threshold(scores: torch.Tensor) -> float:
    """A threshold halfway in the largest gap near the median: some rows pass, some fail, none near the edge."""
    s = scores.sort().values
    mid = len(s) // 2
    gaps = s[1:] - s[:-1]
    i = int(torch.argmax(gaps[max(mid - 2, 0):mid + 1])) + max(mid - 2, 0)
    return float((s[i] + s[i + 1]) / 2)


def _setup(model, behaviour_layer=2, condition_layer=1, read_position="mean"):
    mood = mean_diff_vector(model, MOOD, behaviour_layer)
    food = mean_diff_vector(model, FOOD, condition_layer)
    scores = condition_scores(model, food, PROMPTS, read_position=read_position)
    threshold = _split_threshold(scores)
    cv = conditional(mood, food, threshold, read_position=read_position)
    passes = (scores > threshold).tolist()
    assert any(passes) and not all(passes)
    return cv, mood, passes


@pytest.mark.parametrize("layers", [(2, 1), (2, 2)])
@pytest.mark.parametrize("read_position", ["mean", "last"])
def test_failing_rows_are_bit_identical_and_passing_rows_are_steered(tiny, layers, read_position):
    """Logits of a padded batch: rows that fail equal the unsteered rows exactly; rows that pass equal plain steering.

    With the condition at the behaviour's own layer, the gate must still be read before the addition.
    """
    cv, mood, passes = _setup(tiny, *layers, read_position=read_position)
    plain, _ = actlens.steered_logits(tiny, PROMPTS)
    gated, _ = actlens.steered_logits(tiny, PROMPTS, cv, 8.0, align="all")
    always, _ = actlens.steered_logits(tiny, PROMPTS, mood, 8.0, align="all")
    for row, passed in enumerate(passes):
        if passed:
            assert torch.equal(gated[row], always[row]) and not torch.equal(gated[row], plain[row])
        else:
            assert torch.equal(gated[row], plain[row])


def test_generation_gates_once_per_prompt(tiny):
    """KV-cached (and, for the native model, uncached) generation: failing rows' tokens equal unsteered ones."""
    cv, _, passes = _setup(tiny)
    out = actlens.generate(tiny, PROMPTS, vector=cv, coeff=100.0, align="all", paired=True, temperature=0,
                           max_new_tokens=6)
    for row, passed in enumerate(passes):
        if not passed:
            assert out.steered.tokens[row] == out.unsteered.tokens[row]
    assert any(out.steered.tokens[r] != out.unsteered.tokens[r] for r, p in enumerate(passes) if p)


def test_per_row_requests_in_one_batch(tiny_hf_model):
    """Sweeps: conditional and unconditional requests side by side, each row gated on its own prompt."""
    model = tiny_hf_model
    cv, mood, passes = _setup(model)
    requests = [Request(cv, 8.0, align="all")] * len(PROMPTS) + [None] * len(PROMPTS)
    rows = encode_rows(model, PROMPTS * 2, requests)
    settings = Sampling(max_new_tokens=5, temperature=0)
    tokens = generate_rows(model, rows, requests, list(range(len(rows))), settings)
    alone = generate_rows(model, rows[len(PROMPTS):], [None] * len(PROMPTS), list(range(len(PROMPTS))), settings)
    steered = generate_rows(model, rows[:len(PROMPTS)], [Request(mood, 8.0, align="all")] * len(PROMPTS),
                            list(range(len(PROMPTS))), settings)
    for row, passed in enumerate(passes):
        assert tokens[len(PROMPTS) + row] == alone[row]
        assert tokens[row] == (steered[row] if passed else alone[row])


def test_pick_threshold_finds_the_separating_cut(tiny_hf_model):
    model = tiny_hf_model
    food = mean_diff_vector(model, FOOD, 1)
    scores = condition_scores(model, food, PROMPTS)
    cut = float(scores.median())
    for compare, labels in (("greater", [bool(s > cut) for s in scores]), ("less", [bool(s < cut) for s in scores])):
        choice = pick_threshold(model, food, PROMPTS, labels)
        assert (choice.f1, choice.accuracy, choice.compare) == (1.0, 1.0, compare)
        pred = [(s > choice.threshold) if compare == "greater" else (s < choice.threshold) for s in scores.tolist()]
        assert pred == labels
    # labels no threshold can separate: F1 below 1, accuracy reported
    mixed = [True, False] * 3
    order = scores.argsort().tolist()
    labels = [mixed[order.index(i)] for i in range(len(PROMPTS))]  # alternate along the scores
    choice = pick_threshold(model, food, PROMPTS, labels, compare="greater")
    assert choice.f1 < 1.0 and choice.compare == "greater" and 0 < choice.accuracy < 1


def test_pick_condition_searches_layers_like_cast(tiny_hf_model):
    """Labels cut at layer 2's median score are separable there; the search finds a layer that separates them,
    reports every layer's best F1 and accuracy as pick_threshold gives them, and prefers the earliest on a tie."""
    model = tiny_hf_model
    scores = condition_scores(model, mean_diff_vector(model, FOOD, 2), PROMPTS)
    labels = [bool(s > float(scores.median())) for s in scores]
    got = pick_condition(model, FOOD, PROMPTS, labels, layers=[0, 1, 2])
    expected = [(layer, pick_threshold(model, mean_diff_vector(model, FOOD, layer), PROMPTS, labels))
                for layer in (0, 1, 2)]
    assert got.by_layer == tuple((layer, c.f1, c.accuracy) for layer, c in expected)
    assert got.choice.f1 == 1.0 and got.layer == next(layer for layer, c in expected if c.f1 == 1.0)
    assert torch.equal(got.condition.values, mean_diff_vector(model, FOOD, got.layer).values)
    with pytest.raises(ValueError, match="layers is empty"):
        pick_condition(model, FOOD, PROMPTS, labels, layers=[])


def test_the_vector_is_a_steering_vector_with_its_parts(tiny_hf_model, tmp_path):
    cv, mood, _ = _setup(tiny_hf_model)
    assert isinstance(cv, actlens.SteeringVector) and cv.behaviour == mood and cv.k == 1
    assert "condition" in cv.metadata() and cv == conditional(mood, cv.condition, cv.threshold)
    assert cv != conditional(mood, cv.condition, cv.threshold + 0.5)
    with pytest.raises(ValueError, match="save its parts"):
        cv.save(tmp_path / "cv.safetensors")
    with pytest.raises(ValueError, match="no condition"):
        cv.to_gguf(tmp_path / "cv.gguf")
    assert actlens.conditional is conditional


@pytest.mark.unchecked
def test_bad_input(tiny_models):
    llama, gpt2 = tiny_models["llama"], tiny_models["gpt2"]
    mood = mean_diff_vector(llama, MOOD, 2)
    food = mean_diff_vector(llama, FOOD, 1)
    with pytest.raises(ValueError, match="threshold is NaN"):
        conditional(mood, food, float("nan"))
    with pytest.raises(ValueError, match="comes from model 'GPT2LMHeadModel'"):
        conditional(mood, mean_diff_vector(gpt2, FOOD, 1), 0.1)
    with pytest.raises(ValueError, match="layer=2 but the condition vector was extracted at layer 1"):
        conditional(mood, food, 0.1, layer=2)
    with pytest.raises(ValueError, match="after the behaviour's layer"):
        conditional(mean_diff_vector(llama, MOOD, 1), mean_diff_vector(llama, FOOD, 2), 0.1)
    with pytest.raises(ValueError, match="compare must be one of"):
        conditional(mood, food, 0.1, compare="above")
    with pytest.raises(ValueError, match="one direction"):
        conditional(mood, actlens.actadd_vector(llama, "Soup", "Cars", 1), 0.1)
    with pytest.raises(ValueError, match="both True"):
        pick_threshold(llama, food, PROMPTS[:2], [True, True])
    with pytest.raises(ValueError, match="one True/False per text"):
        pick_threshold(llama, food, PROMPTS[:2], [True])
    cv = conditional(mood, food, 0.1)
    with pytest.raises(ValueError, match="after the behaviour's layer"):
        cv.at_layer(0)  # moving the behaviour before its condition is caught too
    assert isinstance(cv.at_layer(3), ConditionalVector)
