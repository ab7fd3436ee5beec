"""`actlens figures`: the smoke run writes every figure, its data and the manifest; bad input is refused."""

import hashlib
import json

import pandas as pd
import pytest

from actlens import figures
from actlens.cli import main as cli
from actlens.figure_jobs import JOBS


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    code = cli(["figures", "--smoke", "--out", str(out), "--no-progress"])
    return code, out


def test_smoke_run_writes_every_figure_and_the_manifest(smoke):
    code, out = smoke
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["figures"]) == set(JOBS)
    assert manifest["model"]["name"] == "tiny" and manifest["smoke"] is True
    assert manifest["versions"]["torch"] and "commit" in manifest["git"]
    assert (out / "plotly.min.js").stat().st_size > 1_000_000  # offline HTML: plotly.js once, beside the pages
    for fig_id, entry in manifest["figures"].items():
        assert entry["status"] == "ok", (fig_id, entry.get("error"))
        files = entry["files"]
        html = (out / files["html"]).read_text()
        assert 'src="plotly.min.js"' in html and entry["title"]
        data = (out / files["csv"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["results_sha256"]
        assert len(pd.read_csv(out / files["csv"])) > 0
        if files["png"]:
            assert (out / files["png"]).read_bytes()[:4] == b"\x89PNG" and entry["png"] == "written"
        else:
            assert entry["png"].startswith("skipped:")
        assert entry["config"] is not None and isinstance(entry["seeds"], list) and entry["notes"]
        assert entry["model"]["revision"].startswith("random weights")
    readme = (out / "README.md").read_text()
    assert all(f"(`{fig_id}`)" in readme for fig_id in JOBS) and "SMOKE" in readme


def test_sampling_figures_keep_their_completions_and_resume(smoke):
    _, out = smoke
    files = sorted(p.name for p in out.glob("*.completions.jsonl"))
    assert files == ["sentiment_by_coeff.actadd.completions.jsonl", "sentiment_by_coeff.mean_diff.completions.jsonl",
                     "topic_by_layer.actadd.completions.jsonl", "topic_by_layer.mean_diff.completions.jsonl"]
    before = (out / "topic_by_layer.csv").read_bytes()
    assert cli(["figures", "--smoke", "--out", str(out), "--only", "topic_by_layer", "--no-progress"]) == 0
    assert (out / "topic_by_layer.csv").read_bytes() == before  # resumed from the stored rows: same numbers


@pytest.mark.parametrize("argv, message", [
    (["--only", "topic_by_layr"], "did you mean 'topic_by_layer'"),
    (["--only", "nope"], "known ids: topic_by_layer, ppl_by_relevance"),
    (["--only", ","], "got no figure id"),
    (["--samples", "0"], "--samples must be a positive integer"),
    (["--layer-step", "-2"], "--layer-step must be a positive integer"),
])
def test_bad_arguments_exit_2_with_a_clear_message(argv, message, capsys, tmp_path):
    assert figures.main(["--smoke", "--out", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_unknown_model_is_a_clear_error(capsys, tmp_path):
    assert figures.main(["--smoke", "--model", "gpt-17-huge", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cannot load model 'gpt-17-huge'" in err and "never downloads" in err


def test_list_names_every_figure(capsys):
    assert figures.main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(fig_id in listed for fig_id in JOBS)


def test_missing_browser_is_an_error_outside_smoke(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(figures, "png_problem", lambda: "no browser found")
    assert figures.main(["--out", str(tmp_path), "--only", "norm_profile", "--model", "tiny"]) == 2
    assert "apt-get install -y chromium" in capsys.readouterr().err


def test_smoke_without_browser_records_png_as_skipped(monkeypatch, tmp_path):
    monkeypatch.setattr(figures, "png_problem", lambda: "no browser found")
    assert figures.main(["--smoke", "--out", str(tmp_path), "--only", "norm_profile", "--no-progress"]) == 0
    entry = json.loads((tmp_path / "manifest.json").read_text())["figures"]["norm_profile"]
    assert entry["png"] == "skipped: no browser found" and entry["files"]["png"] is None
    assert not (tmp_path / "norm_profile.png").exists() and (tmp_path / "norm_profile.html").exists()
