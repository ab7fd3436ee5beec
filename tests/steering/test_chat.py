"""Chat prompts (actlens.core.chat) and chat-formatted vectors (actlens.vectors.chat)."""

import pytest
import torch

import actlens
from actlens.core import chat, prompts
from actlens.models.activations import resid_pre
from actlens.models.model import forward
from actlens.vectors.chat import chat_actadd_vector, chat_mean_diff_vector

TURNS = ["Tell me about your day.", "What is a cat?", "Hi"]
CONTRASTS = [("How was the film?", "It was wonderful.", "It was dreadful."),
             ("Describe your lunch.", "Delicious and fresh!", "Cold and stale.")]


def _greedy(model, turns, **kw):
    return actlens.generate(model, turns, chat=True, temperature=0, max_new_tokens=6, stop_at_eos=False, **kw)


def test_encode_is_the_tokenizers_own_template(tiny):
    msgs = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hello"}]
    want = tiny.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert chat.encode(tiny, "Hello", system="Be kind.") == tiny.tokenizer(want, add_special_tokens=False)["input_ids"]
    assert chat.encode(tiny, msgs) == chat.encode(tiny, "Hello", system="Be kind.")
    assert chat.encode(tiny, "Hello")[0] == tiny.tokenizer.bos_token_id  # the template writes BOS itself, once
    assert chat.encode(tiny, "Hello").count(tiny.tokenizer.bos_token_id) == 2  # user turn + assistant opening


def test_chat_reply_is_the_greedy_continuation_of_the_templated_prompt(tiny):
    out = _greedy(tiny, "Hello", freq_penalty=0)
    tokens = torch.tensor([chat.encode(tiny, "Hello")])
    for _ in range(6):  # a plain argmax loop over the rendered conversation
        tokens = torch.cat([tokens, forward(tiny, tokens)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert out.tokens[0] == tokens[0, -6:].tolist()
    assert out.prompts == ["Hello"] and out.settings["chat"] is True


def test_chat_batched_cached_uncached_seeded_and_paired(tiny):
    v = chat_mean_diff_vector(tiny, CONTRASTS, layer=2)
    kw = dict(vector=v, coeff=6.0, align="all")
    batched = _greedy(tiny, TURNS, **kw).tokens
    assert batched == [_greedy(tiny, [t], **kw).tokens[0] for t in TURNS]
    assert batched == _greedy(tiny, TURNS, use_cache=False, **kw).tokens
    assert batched != _greedy(tiny, TURNS).tokens
    sample = dict(chat=True, max_new_tokens=6, temperature=1.0, top_p=0.9, seed=3, system="Be brief.")
    a = actlens.generate(tiny, TURNS, **sample)
    assert a.tokens == actlens.generate(tiny, TURNS, **sample).tokens
    pair = actlens.generate(tiny, TURNS, paired=True, **sample, **kw)
    assert pair.unsteered.tokens == a.tokens
    assert pair.steered.tokens == actlens.generate(tiny, TURNS, **sample, **kw).tokens
    assert "user:       Hi" in str(pair)


def test_one_conversation_as_messages_or_a_batch_of_them(tiny):
    conv = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "How are you?"}]
    one = _greedy(tiny, conv)
    assert len(one.tokens) == 1 and one.prompts == ["How are you?"]
    assert _greedy(tiny, [conv, "Hi"]).tokens == [one.tokens[0], _greedy(tiny, "Hi").tokens[0]]


def test_chat_without_a_template_is_a_clear_error(tiny, monkeypatch):
    monkeypatch.setattr(tiny.tokenizer, "chat_template", None)
    with pytest.raises(ValueError, match="chat=True needs a chat template.*chat=False"):
        actlens.generate(tiny, "Hi", chat=True, max_new_tokens=2)
    with pytest.raises(ValueError, match="chat template"):
        chat_mean_diff_vector(tiny, CONTRASTS, layer=1)
    actlens.generate(tiny, "Hi", max_new_tokens=2)  # raw text still works


@pytest.mark.parametrize(("conversation", "match"), [
    ([{"role": "usr", "content": "Hi"}], "did you mean 'user'"),
    ([{"role": "user", "content": "  "}], "empty content"),
    ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}], "last message must be a user"),
    ([{"role": "user", "text": "Hi"}], "exactly the keys"),
    ([{"role": "user", "content": "Hi"}, {"role": "system", "content": "x"}, {"role": "user", "content": "Hi"}],
     "only come first"),
])
def test_bad_messages_are_clear_errors(tiny, conversation, match):
    with pytest.raises(ValueError, match=match):
        actlens.generate(tiny, conversation, chat=True, max_new_tokens=2)


@pytest.mark.unchecked
def test_bad_chat_settings(tiny):
    with pytest.raises(ValueError, match="already hold a system"):
        chat.messages([{"role": "system", "content": "a"}, {"role": "user", "content": "b"}], system="c")
    with pytest.raises(ValueError, match="pass chat=True"):
        actlens.generate(tiny, "Hi", system="Be kind.", max_new_tokens=2)
    with pytest.raises(ValueError, match="empty"):
        actlens.generate(tiny, [], chat=True)
    with pytest.raises(TypeError, match="string or a list"):
        chat.messages(42)


def test_user_span_covers_the_users_words(tiny):
    for turn in TURNS:
        start, stop = chat.user_span(tiny, turn, system="Be brief.")
        ids = chat.encode(tiny, turn, system="Be brief.")
        assert tiny.tokenizer.decode(ids[start:stop]) == turn
    assert chat.user_span(tiny, "a") == chat.user_span(tiny, "a much longer turn")  # one span serves a batch


def test_chat_mean_diff_reads_the_answer_positions(tiny):
    v = chat_mean_diff_vector(tiny, CONTRASTS, layer=2, read_position=0)
    plus_acts, minus_acts = [], []
    for (turn, pos, neg), at_plus, at_minus in zip(CONTRASTS, v.read_positions[:2], v.read_positions[2:], strict=True):
        for answer, at, into in ((pos, at_plus, plus_acts), (neg, at_minus, minus_acts)):
            ids, start = chat.answer_prefix(tiny, turn, answer)
            assert at == (start,)  # index 0 = the answer's first token
            into.append(resid_pre(tiny, torch.tensor([ids]), [2])[2][0, start])
    want = torch.stack(plus_acts).mean(0) - torch.stack(minus_acts).mean(0)
    torch.testing.assert_close(v.values[0], want.float(), atol=1e-5, rtol=1e-5)
    assert v.chat_template == chat.template_id(tiny) and v.read_position == "chat answer 0"
    mean = chat_mean_diff_vector(tiny, CONTRASTS, layer=2, read_position="mean")
    assert len(mean.read_positions[0]) == len(chat.token_ids(tiny, CONTRASTS[0][1]))
    with pytest.raises(ValueError, match="outside the answer"):
        chat_mean_diff_vector(tiny, CONTRASTS, layer=2, read_position=40)


def test_chat_actadd_lands_on_the_users_words(tiny, tmp_path):
    v = chat_actadd_vector(tiny, "Love", "Hate", layer=1, system="Be brief.")
    head = chat.user_span(tiny, "Love", system="Be brief.")[0]
    assert v.values[:head].abs().max() == 0 and v.values[head:].abs().max() > 0
    ids = torch.tensor([chat.encode(tiny, "I really like my garden", system="Be brief.")])
    base = forward(tiny, ids)
    with actlens.steer(tiny, v, 4.0, align="front"):
        steered = forward(tiny, ids)
    assert torch.equal(steered[0, :head], base[0, :head])  # nothing before the user's words moves
    assert not torch.allclose(steered[0, head:], base[0, head:])
    v.save(tmp_path / "v.safetensors")
    assert actlens.SteeringVector.load(tmp_path / "v.safetensors") == v


@pytest.mark.slow
def test_smollm2_chat_reply(smol):
    ids = chat.encode(smol, "What is the capital of France?")
    assert ids[0] == prompts.bos_id(smol) == smol.tokenizer.convert_tokens_to_ids("<|im_start|>")
    out = actlens.generate(smol, "What is the capital of France?", chat=True, temperature=0, max_new_tokens=24)
    assert "Paris" in out.completions[0] and "assistant" not in out.completions[0]
    assert chat.end_of_turn(smol) == smol.tokenizer.eos_token_id  # <|im_end|>
    start, stop = chat.user_span(smol, "What is the capital of France?")
    assert smol.tokenizer.decode(ids[start:stop]) == "What is the capital of France?"


def test_chat_measurement_runs_on_a_tiny_model(tiny_models):
    from actlens.cli import demo

    settings = demo.Recipe(kind="mean_diff", layer=2, coeff=4.0, align="all")
    frame = demo.measure_chat(tiny_models["llama"], turns=["Hi", "Tell me more"], seeds=(0,), max_new_tokens=3,
                              phases=("both", "generation"), settings=settings)
    table = demo.summarise(frame)
    assert len(table) == 9 and set(table.n) == {2}  # unsteered + 2 vectors x 2 phases x (vector, random)
    assert frame.settings.iloc[-1]["phase"] == "generation" and frame.settings.iloc[-1]["chat_template"]


def test_reply_ends_at_the_end_of_turn_token_even_when_it_is_not_eos(tiny_models, monkeypatch):
    model = tiny_models["gpt2"]
    kw = dict(chat=True, temperature=0, max_new_tokens=12)
    full = actlens.generate(model, "Hello", stop_at_eos=False, **kw).tokens[0]  # the raw continuation
    stop = full[3]
    monkeypatch.setattr(chat, "end_of_turn", lambda m: stop)  # a template whose turns end with another token
    want = full[:full.index(stop)]
    eos = model.tokenizer.eos_token_id
    assert actlens.generate(model, "Hello", **kw).tokens[0] == (want[:want.index(eos)] if eos in want else want)
