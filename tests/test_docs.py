"""The docs site: ``mkdocs build -f notebooks/mkdocs.yml --strict`` passes (every link and anchor checked, offline)
and the built pages hold what they should: the API entry of ``actlens.steer``, every name of ``actlens.__all__``, a
rendered notebook, and the figure galleries generated from the committed manifests.

The build takes about 30 s (it imports actlens and renders four notebooks), hence ``slow``.
"""

import html
import json
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import actlens

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    try:
        import mkdocs  # noqa: F401
    except ImportError:
        pytest.fail('mkdocs is not installed: the docs extra is part of the test command, pip install -e ".[docs]"')
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "-f",
            str(ROOT / "notebooks" / "mkdocs.yml"),
            "--strict",
            "--site-dir",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stdout[-4000:]}\n{run.stderr[-8000:]}"
    assert not (ROOT / ".cache").exists(), "the docs build wrote a top-level .cache/ folder"
    return out


def text(page: Path) -> str:
    """The visible text of an HTML page: tags dropped (highlighted code keeps its spacing), whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", page.read_text())).split())


def inventory(site: Path) -> dict[str, str]:
    """objects.inv (Sphinx format, as mkdocstrings writes it): identifier -> page URI with anchor."""
    raw = (site / "objects.inv").read_bytes()
    body = zlib.decompress(raw.split(b"\n", 4)[4]).decode()
    found = {}
    for line in body.splitlines():
        name, _domain, _prio, uri = line.split(" ", 4)[:4] if line.count(" ") >= 4 else (line, "", "", "")
        found[name] = uri.replace("$", name)
    return found


def test_the_api_page_of_steer_renders_its_signature_arguments_and_example(site: Path):
    page = site / "api" / "steering" / "index.html"
    source = page.read_text()
    assert 'id="actlens.steering.intervene.steer"' in source, "no reference entry for actlens.steer"
    entry = text(page)
    start = entry.index("Add coeff * vector to blocks.")
    body = entry[start : start + 6000]
    for arg in ("align", "position", "phase", "span", "include_bos"):
        assert arg in body, f"argument {arg} of steer is not in its rendered entry"
    assert ">>> with steer(model, v, 4.0):" in body, "the doctest example is not rendered"
    assert "language-pycon" in source or "highlight" in source
    # reStructuredText habits are rewritten for the site: no double backticks or Sphinx roles left
    assert "``" not in entry and ":func:`" not in entry and ":class:`" not in entry


def test_every_public_name_has_a_rendered_entry(site: Path):
    inv = inventory(site)
    missing = [n for n in actlens.__all__ if f"actlens.{n}" not in inv]
    assert not missing, f"names of actlens.__all__ without a reference entry: {missing}"
    for name in actlens.__all__:
        uri = inv[f"actlens.{name}"]
        path, _, anchor = uri.partition("#")
        page = site / path / "index.html" if not path.endswith(".html") else site / path
        assert page.is_file(), f"actlens.{name} points at {uri}, which was not built"
        assert f'id="{anchor}"' in page.read_text(), f"actlens.{name}: no anchor {anchor} in {path}"


def test_a_notebook_page_is_rendered_from_the_notebook(site: Path):
    page = site / "notebooks" / "01_quickstart" / "index.html"
    assert page.is_file(), "the quick-start notebook was not rendered"
    nb = json.loads((ROOT / "notebooks" / "01_quickstart.ipynb").read_text())
    code = next(c for c in nb["cells"] if c["cell_type"] == "code" and "load_model" in "".join(c["source"]))
    line = " ".join(next(s for s in code["source"] if "load_model" in s).split())
    assert line in text(page), f"the notebook page lacks its code cell line {line!r}"


@pytest.mark.parametrize("folder, page", [("figures", "smollm2-135m"), ("figures/gemma-3-270m", "gemma-3-270m")])
def test_a_figure_gallery_shows_each_figure_with_its_manifest_numbers(site: Path, folder: str, page: str):
    built = site / "gallery" / page / "index.html"
    assert built.is_file(), f"no gallery page for {page}"
    source, visible = built.read_text(), text(built)
    manifest = json.loads((ROOT / folder / "manifest.json").read_text())
    for fig_id, entry in manifest["figures"].items():
        assert f'id="{fig_id}"' in source, f"{page}: no section for figure {fig_id}"
        png = f"{folder}/{entry['files']['png']}"
        assert (site / png).is_file() and png.split("/")[-1] in source, f"{page}: {png} not shown"
        for note in entry["notes"][:2]:
            assert " ".join(note.split()) in visible, f"{page}/{fig_id}: note {note!r} missing"
    assert (site / folder / "plotly.min.js").is_file(), "the plotly HTML needs plotly.min.js served beside it"


def test_the_site_loads_nothing_from_the_network(site: Path):
    remote = re.compile(r"<(?:script|link|img|iframe)\b[^>]*(?:src|href)=[\"']https?://", re.I)
    bad = [
        str(p.relative_to(site))
        for p in site.rglob("*.html")
        if not p.is_relative_to(site / "figures") and remote.search(p.read_text())
    ]
    assert not bad, f"pages that load something from the network: {bad[:5]}"


def test_the_speed_pages_bench_tables_are_generated_from_the_committed_json(site: Path):
    """Each ``<!-- actlens:bench PATH -->`` marker becomes that bench.json's rows, commit and machine: no number of
    those tables is typed by hand, and a marker never survives into the page."""
    import re

    source = (ROOT / "notebooks" / "docs" / "speed.md").read_text()
    paths = re.findall(r"<!-- actlens:bench (\S+?\.json) -->", source)
    assert "figures/bench-compiled-cpu/bench.json" in paths and "figures/bench-gpu/bench.json" in paths
    built = site / "speed" / "index.html"
    page = text(built)
    assert "actlens:bench" not in built.read_text()
    for path in paths:
        result = json.loads((ROOT / path).read_text())
        assert f"Generated from {path}" in page and result["machine"]["git_commit"] in page
        for row in result["rows"]:
            assert f"{row['ratio_median']:.3f} [{row['ratio_q1']:.3f}–{row['ratio_q3']:.3f}]" in page, (path, row["id"])
