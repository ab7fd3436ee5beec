"""Integration on the embedded SmolLM2-135M-Instruct (loaded once per session)."""

import pytest
import torch

import actlens
from actlens.core import prompts
from actlens.models import embedded

pytestmark = pytest.mark.slow


def test_identity_and_tokenizer(smol):
    ident = actlens.models.model.identity(smol)
    assert (ident.name, ident.n_layers, ident.d_model, ident.d_vocab) == ("smollm2-135m", 30, 576, 49152)
    assert prompts.space_pad(smol) == prompts.SpacePad(216, "space")
    assert prompts.encode(smol, "Love")[0] == 1  # <|im_start|> as BOS
    assert (embedded.converted_dir() / "model.safetensors").is_file()


def test_greedy_recall_and_cache_equivalence(smol):
    out = actlens.generate(smol, "The capital of France is", temperature=0, max_new_tokens=4)
    assert "Paris" in out.completions[0]
    v = actlens.actadd_vector(smol, "Love", "Hate", 6)
    kw = dict(vector=v, coeff=2.0, temperature=0, max_new_tokens=6, stop_at_eos=False)
    texts = ["I hate you because", "The weather today is really"]
    cached = actlens.generate(smol, texts, **kw).tokens
    assert cached == actlens.generate(smol, texts, use_cache=False, **kw).tokens
    assert cached == [actlens.generate(smol, [t], **kw).tokens[0] for t in texts]


def test_love_hate_vector_is_dominated_by_its_first_positions(smol):
    """The research note's finding, measured: ‖Δ‖ at the first real position >> a typical residual."""
    v = actlens.actadd_vector(smol, "Love", "Hate", 6)
    assert v.values[0].abs().max() == 0
    tokens = torch.tensor([prompts.encode(smol, "The weather today is really quite nice and calm")])
    typical = actlens.resid_pre(smol, tokens, [6])[6][0, 3:].norm(dim=-1).median()
    assert v.norms()[1] > 3 * typical


def test_cli_steer_prints_paired_completions(capsys, tmp_path):
    from actlens.cli import main

    code = main(["steer", "--plus", "Love", "--minus", "Hate", "--layer", "6", "--coeff", "5",
                 "--prompt", "I hate you because", "--max-new-tokens", "5", "--save", str(tmp_path / "v.safetensors")])
    out = capsys.readouterr().out
    assert code == 0 and "unsteered:" in out and "steered:" in out
    assert actlens.SteeringVector.load(tmp_path / "v.safetensors").layer == 6


def test_cli_reports_bad_input_without_a_traceback(capsys):
    from actlens.cli import main

    assert main(["steer", "--layer", "30", "--max-new-tokens", "2"]) == 2
    assert "layer must be in [0, 30)" in capsys.readouterr().err
