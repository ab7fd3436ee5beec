"""Integration on the embedded Gemma 3 270M base model (loaded once per session) and on a local GGUF path."""

import pytest
import torch

import actlens
from actlens.core import prompts
from actlens.models import cache, embedded

pytestmark = pytest.mark.slow


def test_identity_tokenizer_and_verified_cache(gemma):
    ident = actlens.models.model.identity(gemma)
    assert (ident.name, ident.n_layers, ident.d_model, ident.d_vocab) == ("gemma-3-270m", 18, 640, 262144)
    assert prompts.encode(gemma, "Love")[0] == 2  # <bos>
    assert prompts.space_pad(gemma).token_id == 236743
    directory = embedded.converted_dir("gemma-3-270m")
    assert cache.verify(directory, embedded.gemma_chunk_paths(embedded.GEMMA3), "gguf-f32-1") is None
    assert not list(directory.parent.glob(".converting-*"))  # no assembled GGUF left behind


def test_resid_pre_0_is_the_embedding_times_sqrt_d_model(gemma):
    tokens = torch.tensor([prompts.encode(gemma, "The weather today is")])
    seen = actlens.resid_pre(gemma, tokens, [0])[0]
    raw = gemma.W_E[tokens]
    torch.testing.assert_close(seen, raw * torch.tensor(640**0.5), rtol=1e-5, atol=1e-4)


def test_cached_uncached_and_batched_agree_past_the_512_token_window(gemma):
    long = "The weather today is nice. " * 90  # > 512 tokens: the sliding-window layers drop the oldest keys
    texts = [long + "Tomorrow it will be", "I hate you because"]
    assert len(prompts.encode(gemma, texts[0])) > 512
    v = actlens.actadd_vector(gemma, "Love", "Hate", 6)
    for kw in ({}, dict(vector=v, coeff=5.0)):
        run = dict(temperature=0, freq_penalty=0, max_new_tokens=6, stop_at_eos=False, **kw)
        cached = actlens.generate(gemma, texts, **run).tokens
        assert cached == actlens.generate(gemma, texts, use_cache=False, **run).tokens
        assert cached == [actlens.generate(gemma, [t], **run).tokens[0] for t in texts]


def test_the_bos_sink_cancels_in_the_love_hate_vector(gemma):
    """The research note's finding: Gemma's massive activation sits on BOS, shared by both prompts."""
    v = actlens.actadd_vector(gemma, "Love", "Hate", 6)
    assert v.values[0].abs().max() == 0 and v.k == 3  # "Hate" is "H" + "ate"
    tokens = torch.tensor([prompts.encode(gemma, "The weather today is quite nice and warm.")])
    resid = actlens.resid_pre(gemma, tokens, [6])[6][0].norm(dim=-1)
    assert resid[0] > 5 * resid[1:].median()  # the sink is at BOS


def test_analyses_run_on_the_262k_vocabulary(gemma):
    v = actlens.actadd_vector(gemma, " weddings", "", 6)
    kl = actlens.kl_per_token(gemma, ["I went up to my friend and said hello to everyone there."], v, 1.0)
    summary = kl.summary().set_index("run")
    assert summary.loc["steered", "mean_kl"] > 0
    lens = actlens.logit_lens(gemma, (" weddings", ""), layers=[6], top_k=5).to_frame()
    assert len(lens) > 0


def test_a_local_gguf_file_and_its_folder_load_like_the_embedded_model(smol):
    path = embedded.gguf_path("smollm2-135m")
    tokens = torch.tensor([prompts.encode(smol, "The capital of France is")])
    expected = actlens.forward(smol, tokens)
    for source in (path, path.parent):  # the file, and the package folder holding it
        model = actlens.load_model(source)
        torch.testing.assert_close(actlens.forward(model, tokens), expected, atol=1e-5, rtol=0)
