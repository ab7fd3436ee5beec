"""`actlens diagnose`: the report's sections on a tiny model; bad input exits 2 with a clear message."""

import pytest

from actlens.cli import main as cli
from actlens.models.tiny import tiny_model
from actlens.vectors import mean_diff_vector


def test_diagnose_pair_prints_every_section(capsys, tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("# positive<TAB>negative\nI love it\tI hate it\na good day\ta bad day\nso happy\tso sad\n")
    assert cli(["diagnose", "--model", "tiny", "--plus", "Love", "--minus", "Hate", "--layer", "1", "--kl", "0.001",
                "--pairs", str(pairs)]) == 0
    out = capsys.readouterr().out
    for section in ("## Norms against the residual stream", "## Sinks", "## Strength for a KL budget of 0.001",
                    "## Steerability at layer 1", "verdict:", "3 pairs"):
        assert section in out
    assert "coeff " in out and "measured mean KL" in out


def test_diagnose_saved_mean_difference_uses_its_own_pairs(capsys, tmp_path):
    v = mean_diff_vector(tiny_model(), [("I love it", "I hate it"), ("a good day", "a bad day")], 2)
    path = v.save(tmp_path / "v.safetensors")
    assert cli(["diagnose", "--model", "tiny", "--vector", str(path), "--kl", "1e9"]) == 0
    out = capsys.readouterr().out
    assert "added with align='all'" in out and "not found: no coefficient" in out and "2 pairs" in out


@pytest.mark.parametrize("argv, message", [
    (["--plus", "Love"], "pass --plus and --minus"),
    (["--plus", "Love", "--minus", "Hate"], "need --layer"),
    (["--vector", "x.safetensors", "--plus", "a", "--minus", "b"], "not both"),
    (["--vector", "/nonexistent.safetensors"], "no steering-vector file"),
    (["--plus", "Love", "--minus", "Hate", "--layer", "1", "--pairs", "/nope.tsv"], "neither a file"),
    (["--plus", "Love", "--minus", "Hate", "--layer", "9"], "layer"),
])
def test_diagnose_bad_input(argv, message, capsys):
    assert cli(["diagnose", "--model", "tiny", *argv]) == 2
    assert message in capsys.readouterr().err
