"""Per-token KL with injection masking and a random control (actlens.analysis.kl)."""

import math

import pytest
import torch

from actlens.analysis import kl
from actlens.core import positions
from actlens.models.model import hooks_registered
from actlens.models.tiny import tiny_model
from actlens.steering import chunked
from actlens.vectors import actadd_vector, mean_diff_vector, random_like

TEXTS = ["I think that you are", "The weather is nice", "Hello there, my old friend"]



# --- pure math ------------------------------------------------------------------------------
def test_kl_of_a_distribution_with_itself_is_exactly_zero():
    logits = torch.randn(3, 7, 50, generator=torch.Generator().manual_seed(0)) * 5
    assert torch.equal(kl.kl_divergence(logits, logits), torch.zeros(3, 7))
    torch.testing.assert_close(kl.kl_divergence(logits, logits + 3.0), torch.zeros(3, 7), rtol=0, atol=1e-6)


def test_kl_is_nonnegative_and_matches_torch():
    gen = torch.Generator().manual_seed(1)
    p, q = torch.randn(200, 30, generator=gen) * 4, torch.randn(200, 30, generator=gen) * 4
    values = kl.kl_divergence(p, q)
    assert bool((values >= 0).all())
    ref = torch.nn.functional.kl_div(torch.log_softmax(q, -1), torch.log_softmax(p, -1), log_target=True,
                                     reduction="none").sum(-1)
    torch.testing.assert_close(values, ref, rtol=1e-5, atol=1e-6)
    assert kl.kl_divergence(p.half(), q.half()).dtype == torch.float32


def test_entropy_and_flips():
    assert float(kl.entropy(torch.zeros(10))) == pytest.approx(math.log(10), rel=1e-6)
    logits = torch.randn(4, 9, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(kl.entropy(logits), torch.distributions.Categorical(logits=logits).entropy())
    assert float(kl.entropy(torch.tensor([0.0, -1e9]))) == pytest.approx(0.0, abs=1e-6)
    assert kl.top1_flip(logits, logits).sum() == 0
    assert math.isnan(kl.masked_mean(torch.ones(2, 3), torch.zeros(2, 3, dtype=torch.bool)))


# --- masking --------------------------------------------------------------------------------
def test_masking_removes_exactly_the_injection_positions(tiny):
    vec = actadd_vector(tiny, "Love", "Hate", 1)  # k = 5: BOS + 4 bytes
    result = kl.kl_per_token(tiny, TEXTS, vec, 4.0)
    for i, (start, length) in enumerate(zip(result.starts, result.lengths, strict=True)):
        injected = torch.zeros(result.tokens.shape[1], dtype=torch.bool)
        injected[start:start + vec.k] = True  # front: rows 0..k-1 on BOS..
        assert torch.equal(result.injected[i], injected)
        real = torch.zeros_like(injected)
        real[start + 1:start + length] = True  # BOS and pads are never counted
        assert torch.equal(result.counted[i], real & ~injected)
    assert int(result.counted.sum()) == sum(result.lengths) - len(TEXTS) * vec.k
    assert result.masked_injection
    assert not hooks_registered(tiny)


def test_masking_for_other_alignments(tiny_models):
    model = tiny_models["llama"]
    one_row = mean_diff_vector(model, [("Good", "Bad")], 2)  # k = 1, no BOS row: lands after BOS
    front = kl.kl_per_token(model, TEXTS, one_row, 2.0)
    for i, s in enumerate(front.starts):
        assert torch.nonzero(front.injected[i]).flatten().tolist() == [s + 1]
    back = kl.kl_per_token(model, TEXTS, actadd_vector(model, "ab", "cd", 1), 2.0, align="back")
    for i, (s, n) in enumerate(zip(back.starts, back.lengths, strict=True)):
        assert torch.nonzero(back.injected[i]).flatten().tolist() == list(range(s + n - 3, s + n))
    every = kl.kl_per_token(model, TEXTS, one_row, 2.0, align="all")
    assert not every.masked_injection
    assert torch.equal(every.counted, positions.real(_encoded(model).layout, skip_bos=True))


def _encoded(model):
    return chunked.encode_texts(model, TEXTS, None)[1]


# --- the analysis ---------------------------------------------------------------------------
def test_random_control_has_the_requested_norm(tiny):
    vec = actadd_vector(tiny, "Love", "Hate", 2)
    control = random_like(vec, seed=5)
    torch.testing.assert_close(control.norms(), vec.norms(), rtol=1e-5, atol=1e-6)
    result = kl.kl_per_token(tiny, TEXTS[:2], vec, 3.0, control_seed=5)
    torch.testing.assert_close(result.control_norms, vec.norms(), rtol=1e-5, atol=1e-6)
    assert torch.equal(result.vector_norms, vec.norms())
    assert bool((result.kl_steered >= 0).all()) and bool((result.kl_control >= 0).all())
    assert result.summary().set_index("run").loc["control", "n_positions"] == int(result.counted.sum())


def test_zero_coefficient_changes_nothing(tiny):
    result = kl.kl_per_token(tiny, TEXTS, actadd_vector(tiny, "Love", "Hate", 1), 0.0)
    assert torch.equal(result.kl_steered, torch.zeros_like(result.kl_steered))
    assert not bool(result.flip_steered.any())
    torch.testing.assert_close(result.entropy_steered, result.entropy_base, rtol=0, atol=0)


def test_unsteered_pass_runs_once_per_chunk_and_is_shared(monkeypatch, tiny_models):
    model = tiny_models["gpt2"]
    calls: list[bool] = []
    original = chunked.hidden

    def counting(model, chunk, vector=None, *args, **kwargs):
        calls.append(vector is None)
        return original(model, chunk, vector, *args, **kwargs)

    monkeypatch.setattr(chunked, "hidden", counting)
    kl.kl_per_token(model, TEXTS, actadd_vector(model, "Love", "Hate", 1), 2.0, batch_size=2)
    assert calls.count(True) == 2 and calls.count(False) == 4  # 2 chunks x (steered, control)


def test_batching_does_not_change_results(tiny_hf_model):
    vec = actadd_vector(tiny_hf_model, "Love", "Hate", 1)
    one = kl.kl_per_token(tiny_hf_model, TEXTS, vec, 4.0, batch_size=1)
    all_ = kl.kl_per_token(tiny_hf_model, TEXTS, vec, 4.0, batch_size=8)
    torch.testing.assert_close(one.kl_steered, all_.kl_steered, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(one.kl_control, all_.kl_control, rtol=1e-3, atol=1e-5)


def test_frames_and_html(tiny_models):
    model = tiny_models["native"]
    result = kl.kl_per_token(model, ["a <b>bold</b> & text", "short one!"], actadd_vector(model, "Hi", "Yo", 1), 4.0)
    frame = result.to_frame()
    assert len(frame) == sum(result.lengths)
    assert frame.groupby("text").position.min().tolist() == [0, 0]
    summary = result.summary()
    assert summary.run.tolist() == ["steered", "control"]
    page = result.html()
    assert "&lt;" in page and "<b>bold" not in page
    assert page.count("<span") == 2 * sum(result.lengths)


@pytest.mark.parametrize(
    ("texts", "kwargs", "error", "match"),
    [
        ([], {}, ValueError, "texts is empty"),
        (["Hi"], {}, ValueError, "short_prompt='pad'"),
        (TEXTS, dict(coeff=float("nan")), ValueError, "coeff must be finite"),
        (TEXTS, dict(align="middle"), ValueError, "did you mean 'mid'"),
        (TEXTS, dict(batch_size=0), ValueError, "batch_size must be a positive int"),
        (TEXTS, dict(control="no"), TypeError, "control must be True or False"),
    ],
)
@pytest.mark.unchecked
def test_bad_input_raises_before_running(tiny_models, texts, kwargs, error, match):
    model = tiny_models["llama"]
    vec = actadd_vector(model, "Love", "Hate", 1)
    args = dict(coeff=2.0) | kwargs
    with pytest.raises(error, match=match):
        kl.kl_per_token(model, texts, vec, **args)
    assert not hooks_registered(model)


def test_short_texts_can_be_padded(tiny_models):
    model = tiny_models["llama"]
    result = kl.kl_per_token(model, ["Hi", "Hello there"], actadd_vector(model, "Love", "Hate", 1), 2.0,
                             short_prompt="pad")
    assert result.lengths[0] == 5 and int(result.counted[0].sum()) == 0


def test_vector_from_another_model_raises(tiny_models):
    other = tiny_model("llama", d_model=32)
    with pytest.raises(ValueError, match="does not fit"):
        kl.kl_per_token(tiny_models["llama"], TEXTS, actadd_vector(other, "Love", "Hate", 1), 2.0)
    with pytest.raises(TypeError, match="SteeringVector"):
        kl.kl_per_token(tiny_models["llama"], TEXTS, torch.zeros(5, 64), 2.0)


@pytest.mark.slow
def test_kl_on_smollm2(smol):
    vec = actadd_vector(smol, "Love", "Hate", 6)
    result = kl.kl_per_token(smol, ["I think that the weather today is", "She opened the door and saw"], vec, 1.0)
    assert bool((result.kl_steered >= 0).all())
    assert int(result.counted.sum()) == sum(result.lengths) - 2 * vec.k
    torch.testing.assert_close(result.control_norms, vec.norms(), rtol=1e-5, atol=1e-4)
    assert not hooks_registered(smol)


def test_impossible_tokens_follow_0_log_0_and_give_infinite_kl_where_p_is_not_zero():
    p = torch.tensor([[1.0, 0.0, -float("inf")]])
    q = torch.tensor([[0.0, 1.0, 2.0]])
    ref = kl.kl_divergence(p[:, :2], torch.log_softmax(q, -1)[:, :2])  # P has no mass on token 2
    lp, lq = torch.log_softmax(p[:, :2], -1), torch.log_softmax(q, -1)[:, :2]
    expected = (lp.exp() * (lp - lq)).sum(-1)
    torch.testing.assert_close(kl.kl_divergence(p, q), expected)
    assert torch.isfinite(ref).all()
    assert float(kl.kl_divergence(q, p)) == float("inf")
    torch.testing.assert_close(kl.entropy(p), kl.entropy(p[:, :2]))


def test_without_control(tiny_hf_model):
    vec = actadd_vector(tiny_hf_model, "Love", "Hate", 1)
    full = kl.kl_per_token(tiny_hf_model, TEXTS, vec, 4.0)
    alone = kl.kl_per_token(tiny_hf_model, TEXTS, vec, 4.0, control=False)
    assert alone.kl_control is None and alone.control_norms is None and alone.control_seed is None
    torch.testing.assert_close(alone.kl_steered, full.kl_steered, rtol=1e-5, atol=1e-7)
    assert list(alone.summary().run) == ["steered"]
    assert "kl_control" not in alone.to_frame() and "kl_control" in full.to_frame()
    assert "No control run" in alone.html() and "steered" in alone.html()
