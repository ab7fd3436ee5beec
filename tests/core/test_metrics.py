"""Text metrics, summaries, model-based evaluation (perplexity ratio, KL, P@K) and the shipped data."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

import actlens
from actlens.analysis import kl
from actlens.core import corpora, metrics
from actlens.experiments import evaluate
from actlens.steering.batched import Request


# --- pure text metrics ------------------------------------------------------------------------
@pytest.mark.parametrize("text, count", [
    ("The wedding was lovely; the bride and groom married at noon.", 4),
    ("Weddings! WED? marry, Marriage; honeymoon.", 5),
    ("We wedged the door and went to the wedding-planner.", 1),  # "wedged" is not "wed"
    ("", 0),
])
def test_topic_count_matches_the_papers_word_list(text, count):
    assert metrics.topic_count(text) == count


def test_topic_rate_and_relevance():
    texts = ["a wedding", "nothing here", "they married", "a dog"]
    assert metrics.topic_rate(texts) == 0.5
    assert metrics.topic_relevance("a wedding a bride") == 0.5
    assert metrics.topic_relevance("...") == 0.0
    assert metrics.topic_count("a cat and a dog", topic={"dog"}) == 1
    with pytest.raises(ValueError, match="at least one text"):
        metrics.topic_rate([])


@pytest.mark.unchecked
def test_distinct_and_repetition():
    assert metrics.distinct_n("a b c d", 1) == 1.0
    assert metrics.distinct_n("a a a a", 1) == 0.25
    assert math.isnan(metrics.distinct_n("", 1))
    assert metrics.repetition_rate("a b c d e f g h", 4) == 0.0
    assert metrics.repetition_rate("go go go go go go", 2) == 1.0 - 1 / 5
    assert metrics.repetition_rate("short", 4) == 0.0
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="positive int"):
            metrics.distinct_n("a b", bad)


def test_text_metrics_cover_every_default_metric():
    out = metrics.text_metrics("I love my wife; our wedding was wonderful.")
    assert set(out) == set(metrics.TEXT_METRICS)
    assert out["topic_hit"] == 1.0 and out["positive"] == 1.0 and out["sentiment"] > 0.5


def test_bootstrap_fast_path_equals_generic_path():
    values = np.random.default_rng(1).normal(size=37)
    fast = metrics.bootstrap_ci(values)
    generic = metrics.bootstrap_ci(values, stat=lambda x: float(np.mean(x)))
    assert fast == pytest.approx(generic, abs=1e-12)


def test_summarise_gives_means_with_cis_and_drops_nan():
    frame = pd.DataFrame({"g": ["a"] * 5 + ["b"] * 3, "value": [0, 1, 1, 0, float("nan"), 2, 2, 2]})
    out = metrics.summarise(frame, ["g"]).set_index("g")
    assert out.loc["a", "n"] == 4 and out.loc["a", "mean"] == 0.5
    assert out.loc["a", "ci_low"] <= 0.5 <= out.loc["a", "ci_high"]
    assert out.loc["b", "ci_low"] == out.loc["b", "ci_high"] == 2.0
    with pytest.raises(KeyError, match="not in the frame"):
        metrics.summarise(frame, ["nope"])


# --- model-based metrics -------------------------------------------------------------------------
def test_kl_divergence_is_zero_on_equal_and_positive_otherwise():
    x = torch.randn(5, 11)
    assert torch.equal(kl.kl_divergence(x, x), torch.zeros(5))
    assert bool((kl.kl_divergence(x, torch.randn(5, 11)) > 0).all())


def test_zero_coefficient_gives_ratio_one_and_zero_kl(tiny):
    v = actlens.actadd_vector(tiny, "Love", "Hate", 1)
    f = evaluate.score_texts(tiny, ["The weather today is nice", "I think so"], [("zero", Request(v, 0.0), None)])
    assert f.ppl_ratio.tolist() == [1.0, 1.0] and f.kl.tolist() == [0.0, 0.0]


def test_perplexity_ratio_matches_a_hand_computation(tiny_models):
    model = tiny_models["llama"]
    v = actlens.actadd_vector(model, "Love", "Hate", 1)
    text = "The weather today is nice and warm"
    f = evaluate.perplexity_ratio(model, [text], v, 3.0, controls=()).iloc[0]
    base, _ = actlens.steered_logits(model, [text])
    steered, batch = actlens.steered_logits(model, [text], v, 3.0)
    ids = batch.tokens[0]
    pos = torch.arange(v.k, len(ids) - 1)  # predictions at injected positions [0, k) are masked

    def nll(logits):
        return -logits[0, pos].log_softmax(-1)[torch.arange(len(pos)), ids[pos + 1]].mean()

    assert f.n_scored == len(pos)
    assert f.ppl_ratio == pytest.approx(float(torch.exp(nll(steered) - nll(base))), rel=1e-5)


def test_prompting_condition_scores_the_same_tokens(tiny_models):
    model = tiny_models["llama"]
    v = actlens.actadd_vector(model, "Love", "Hate", 1)
    f = evaluate.perplexity_ratio(model, ["The weather today is nice"], v, 1.0, prefix="Love ")
    assert f.condition.tolist() == ["steered", "random", "prompting"]
    assert f.n_scored.nunique() == 1 and f.nll_base.nunique() == 1
    prefixed, _ = actlens.steered_logits(model, ["Love The weather today is nice"])
    assert f.set_index("condition").loc["prompting", "ppl_ratio"] != 1.0
    assert prefixed.shape[1] > 0


def test_score_texts_rejects_texts_too_short_for_the_vector(tiny):
    v = actlens.actadd_vector(tiny, "Love you", "Hate", 1)
    with pytest.raises(ValueError, match="Use longer texts"):
        evaluate.score_texts(tiny, ["Hi"], [("s", Request(v, 1.0), None)])
    with pytest.raises(ValueError, match="unique names"):
        evaluate.score_texts(tiny, ["Hello there"], [("s", None, "x"), ("s", None, "y")])


def test_fact_ranks_match_the_logits(tiny_models):
    model = tiny_models["gpt2"]
    f = evaluate.fact_ranks(model, [("France", "Paris")])
    logits, _ = actlens.steered_logits(model, ["The capital of France is"])
    lp = logits[0, -1].log_softmax(-1)
    tok = evaluate.answer_token(model, "Paris")
    assert f["rank"][0] == int((lp > lp[tok]).sum())
    assert f.logprob[0] == pytest.approx(float(lp[tok]), abs=1e-5)
    with pytest.raises(ValueError, match="subject"):
        evaluate.fact_ranks(model, [])
    with pytest.raises(ValueError, match="template"):
        evaluate.fact_ranks(model, [("France", "Paris")], template="The capital of")


def test_p_at_k_is_monotone_in_k():
    ranks = pd.DataFrame({"rank": [0, 1, 4, 30, 200], "cond": ["a"] * 5})
    pk = evaluate.p_at_k(ranks, evaluate.DEFAULT_KS, by=["cond"])
    assert pk.p_at_k.is_monotonic_increasing and pk.p_at_k.iloc[0] == 0.2 and pk.p_at_k.iloc[-1] == 0.8
    assert evaluate.DEFAULT_KS[0] == 1 and evaluate.DEFAULT_KS[-1] == 100


# --- shipped data ------------------------------------------------------------------------------------
def test_shipped_data_is_small_documented_and_loads():
    assert corpora.AUSTEN.stat().st_size < 300_000
    readme = (corpora.DATA / "README.md").read_text()
    assert "janeaustenr" in readme and "countryinfo" in readme and "MIT" in readme
    assert len(corpora.capital_pairs()) == 58
    sample = corpora.relevance_sample(20)
    assert sum(r == 0 for _, r in sample) == 10 and all(r > 0 for _, r in sample[10:])
    with pytest.raises(ValueError, match="at most"):
        corpora.relevance_sample(10_000)
