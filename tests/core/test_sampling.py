"""Sampling: greedy is the plain arg-max, and a model's own generation config changes nothing."""

import copy

import pytest
import torch
from transformers import GenerationConfig

import actlens
from actlens.core import prompts
from actlens.core.sampling import Sampling, processors
from actlens.models.model import fast_tree
from actlens.models.tiny import tiny_hf
from actlens.steering.batched import encode_rows, generate_rows

TEXTS = ["I think that you are", "Hello there, my good friend", "Why"]
NEW = 12


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def raw_and_model(request):
    hf, tok = tiny_hf(request.param, seed=1)
    raw = copy.deepcopy(hf)  # wrapping rewires `hf` in place
    return raw, actlens.load_model(hf, tokenizer=tok)


def test_temperature_zero_is_hf_greedy_before_any_penalty(raw_and_model):
    raw, model = raw_and_model
    batch = prompts.encode_batch(model, TEXTS)
    config = GenerationConfig(do_sample=False, max_new_tokens=NEW, eos_token_id=[], top_k=None, top_p=None,
                              temperature=None, pad_token_id=prompts.pad_token_id(model))
    with torch.inference_mode():
        out = raw.generate(input_ids=batch.tokens, attention_mask=batch.attention_mask, generation_config=config)
    reference = out[:, batch.tokens.shape[1]:].tolist()
    assert any(len(set(row)) < len(row) for row in reference)  # a token repeats: a penalty would change it
    # the paper's frequency penalty (default 1) and top-p are sampling settings: greedy ignores them
    ours = actlens.generate(model, TEXTS, temperature=0, max_new_tokens=NEW, stop_at_eos=False)
    assert ours.tokens == reference
    assert actlens.generate(model, TEXTS, temperature=0, max_new_tokens=NEW, stop_at_eos=False,
                            use_cache=False).tokens == reference
    rows = encode_rows(model, TEXTS, [None] * len(TEXTS))
    keyed = generate_rows(model, rows, [None] * len(TEXTS), [0, 1, 2],
                          Sampling(max_new_tokens=NEW, temperature=0, stop_at_eos=False))
    assert keyed == reference
    assert len(processors(Sampling(temperature=0, freq_penalty=3.0), torch.zeros(1, dtype=torch.long))) == 0


def _leaky(arch: str):
    """The same tiny model twice: once plain, once with a generation config that sets sampling fields."""
    hf, tok = tiny_hf(arch, seed=2)
    leaky = copy.deepcopy(hf)
    leaky.generation_config = GenerationConfig(
        do_sample=True, top_k=2, top_p=0.5, temperature=3.0, repetition_penalty=5.0, no_repeat_ngram_size=1,
        min_new_tokens=3, suppress_tokens=[70, 71], bad_words_ids=[[72]], bos_token_id=0, eos_token_id=1,
        pad_token_id=2,
    )
    return actlens.load_model(hf, tokenizer=tok), actlens.load_model(leaky, tokenizer=copy.deepcopy(tok))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_model_generation_config_changes_nothing(arch):
    plain, leaky = _leaky(arch)
    for kw in (dict(temperature=0), dict(temperature=1.0, top_p=0.9, seed=3), dict(temperature=0.7, seed=4)):
        kw |= dict(max_new_tokens=NEW, stop_at_eos=False)
        assert actlens.generate(leaky, TEXTS, **kw).tokens == actlens.generate(plain, TEXTS, **kw).tokens, kw
    settings = Sampling(max_new_tokens=NEW, top_p=0.9, stop_at_eos=False)
    rows = encode_rows(plain, TEXTS, [None] * len(TEXTS))
    assert (generate_rows(leaky, rows, [None] * 3, [5, 6, 7], settings)
            == generate_rows(plain, rows, [None] * 3, [5, 6, 7], settings))
    assert fast_tree(leaky).generation_config.repetition_penalty == 5.0  # restored after generating


def test_compiled_generate_has_room_for_a_graph_per_steering_setup(monkeypatch):
    """Every Hugging Face generate actlens runs with a compile config (generate, sweeps' generate_rows) raises dynamo's
    recompile limit while it runs, and only then: a layer sweep needs one graph per layer."""
    import torch
    import torch._dynamo

    from actlens.core import sampling

    seen = []

    class Tree(torch.nn.Module):
        generation_config = None

        def generate(self, **kwargs):
            seen.append(torch._dynamo.config.recompile_limit)
            return torch.zeros(1, 3, dtype=torch.long)

    before = torch._dynamo.config.recompile_limit
    settings = sampling.Sampling(max_new_tokens=2)
    for compile in (None, sampling.compile_config("eager", torch.device("cpu"))):
        config = sampling.generation_config(settings, sample=False, eos=None, pad_token_id=0, compile=compile)
        sampling.hf_generate(Tree(), torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1), config,
                             sampling.LogitsProcessorList())
    assert seen == [before, max(sampling.RECOMPILE_LIMIT, before)]
    assert torch._dynamo.config.recompile_limit == before
