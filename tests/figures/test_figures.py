"""`actlens figures`: the smoke run writes every figure, its data and the manifest; bad input is refused."""

import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from actlens import figures
from actlens.cli import main as cli
from actlens.figures import static_png
from actlens.figures.registry import JOBS


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    code = cli(["figures", "--smoke", "--out", str(out), "--no-progress"])
    return code, out


@pytest.mark.slow
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


@pytest.mark.slow
def test_sampling_figures_keep_their_completions_and_resume(smoke):
    _, out = smoke
    files = sorted(p.name for p in out.glob("*.completions.jsonl"))
    assert files == ["sentiment_by_coeff.actadd.completions.jsonl", "sentiment_by_coeff.mean_diff.completions.jsonl",
                     "sink_aware.sentiment.completions.jsonl", "sink_aware.weddings.completions.jsonl",
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


def _no_browser(monkeypatch):
    monkeypatch.setattr(static_png, "find_browser", lambda: None)


@pytest.mark.slow
def test_missing_browser_still_writes_html_and_csv(monkeypatch, capsys, tmp_path):
    _no_browser(monkeypatch)
    assert figures.main(["--out", str(tmp_path), "--only", "norm_profile", "--model", "tiny", "--no-progress"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "no PNGs" in line]
    assert len(notes) == 1 and "apt-get install chromium" in notes[0]
    entry = json.loads((tmp_path / "manifest.json").read_text())["figures"]["norm_profile"]
    assert entry["status"] == "ok" and entry["png"].startswith("skipped: no Chromium found")
    assert (tmp_path / "norm_profile.html").exists() and (tmp_path / "norm_profile.csv").exists()
    assert not (tmp_path / "norm_profile.png").exists()


@pytest.mark.slow
def test_smoke_without_browser_records_png_as_skipped(monkeypatch, tmp_path):
    _no_browser(monkeypatch)
    assert figures.main(["--smoke", "--out", str(tmp_path), "--only", "norm_profile", "--no-progress"]) == 0
    entry = json.loads((tmp_path / "manifest.json").read_text())["figures"]["norm_profile"]
    assert entry["png"].startswith("skipped: no Chromium found") and entry["files"]["png"] is None
    assert not (tmp_path / "norm_profile.png").exists() and (tmp_path / "norm_profile.html").exists()


def test_png_problem_names_the_fix_without_a_browser(monkeypatch):
    _no_browser(monkeypatch)
    problem = static_png.png_problem()
    assert problem is not None and "apt-get install chromium" in problem and "\n" not in problem


def test_png_probe_wait_is_bounded(monkeypatch):
    """A browser thread that never answers (kaleido's dead sync server) costs the timeout, not forever."""
    import kaleido

    release = threading.Event()
    monkeypatch.setattr(static_png, "find_browser", lambda: "/usr/bin/chromium")
    monkeypatch.setattr(kaleido, "start_sync_server", lambda **kw: release.wait())
    try:
        started = time.perf_counter()
        problem = static_png.png_problem(timeout=0.5)
        assert time.perf_counter() - started < 5
        assert "did not finish within" in problem and "apt-get install chromium" in problem
    finally:
        release.set()


@pytest.mark.slow
def test_png_problem_returns_when_kaleido_finds_no_browser(tmp_path):
    """The real kaleido, told (through choreographer's BROWSER_PATH) of a browser that is not there: it used to wait
    forever on a server thread that died with ChromeNotFoundError."""
    env = {**os.environ, "BROWSER_PATH": str(tmp_path / "no-chromium")}
    code = "from actlens import static_png; print(static_png.png_problem(timeout=60))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no Chromium found" in done.stdout and "apt-get install chromium" in done.stdout


@pytest.mark.slow
def test_png_export_works_exactly_when_a_browser_is_found():
    assert (static_png.png_problem() is None) == (static_png.find_browser() is not None)


def test_side_by_side_table_reads_every_models_manifest(tmp_path):
    """figures/README.md puts the paper and each model's full run side by side (smoke runs are left out)."""
    from actlens.figures.compare import table

    def write(folder, name, note, smoke=False):
        folder.mkdir(parents=True, exist_ok=True)
        entry = dict(status="ok", files=dict(html="t.html", png="t.png", csv="t.csv"), notes=[f"{name}: 0.50 [0.40, 0.60].",
                                         f"Paper (GPT-2-XL, c=1): '> 90 %'. Here {note}"])
        manifest = dict(model=dict(name=name), git=dict(commit="abc1234def"), smoke=smoke,
                        figures={"topic_by_layer": entry})
        (folder / "manifest.json").write_text(json.dumps(manifest))

    write(tmp_path, "smollm2-135m", "the size of effect is NOT reproduced.")
    assert table(tmp_path) == []  # one model: nothing to compare
    write(tmp_path / "gemma-3-270m", "gemma-3-270m", "the peak reaches that level.")
    write(tmp_path / "tiny", "tiny", "smoke.", smoke=True)
    lines = table(tmp_path)
    header = next(line for line in lines if line.startswith("| figure"))
    assert header == "| figure | paper | `smollm2-135m` | `gemma-3-270m` |"
    row = next(line for line in lines if "(`topic_by_layer`)" in line)
    assert "Paper (GPT-2-XL, c=1): '> 90 %'." in row
    assert "NOT reproduced." in row and "the peak reaches that level." in row and "0.50 [0.40, 0.60]" in row
    assert "(`sentiment_by_coeff`) | – | not run | not run |" in "\n".join(lines)
    figures.write_readmes(tmp_path / "gemma-3-270m", json.loads((tmp_path / "gemma-3-270m" / "manifest.json")
                                                                  .read_text()))
    assert "side by side" in (tmp_path / "README.md").read_text()  # the parent's README got the table
