"""Build-time helpers of the docs site (``notebooks/mkdocs.yml``); not part of the actlens package.

* ``on_files`` adds the notebooks beside this file (``notebooks/NN_name.ipynb``, rendered by mkdocs-jupyter without
  running them: the test suite runs them) and everything under ``figures/`` (PNGs, the plotly HTML and the
  ``plotly.min.js`` they load, CSVs, bench JSON) to the site at the same relative paths, so a page links to
  ``figures/norm_profile.png`` as the repository does. Nothing is copied into the source tree.
* It also writes the **generated pages**: one figure gallery per model (``gallery/<model>.md``), built from that
  model's committed ``manifest.json`` (title, what the figure shows, the paper's claim and the measured notes, the
  PNG and a link to the interactive HTML), so no number on those pages is typed by hand; likewise each
  ``<!-- actlens:bench PATH -->`` marker in a page becomes the table of that committed ``bench.json``.
* ``ActlensMarkup`` is a griffe extension (``mkdocstrings`` loads it): docstrings keep reStructuredText habits that
  are also fine in a terminal (double backticks, ``:func:`x``` roles, ``>>>`` examples); it renders them as Markdown
  for the API reference: code spans, cross-references to documented objects, fenced ``pycon`` blocks.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent  # the repository
NOTEBOOKS = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
FIGURES = ROOT / "figures"

# Gallery pages: (site path, manifest folder relative to ROOT, page title).
GALLERIES = [
    ("gallery/smollm2-135m.md", "figures", "SmolLM2-135M-Instruct"),
    ("gallery/gemma-3-270m.md", "figures/gemma-3-270m", "Gemma 3 270M (base)"),
]


# --- mkdocs hooks -------------------------------------------------------------------------------------------------

try:  # mkdocs imports this file as a hook; griffe imports it as an extension module (mkdocs is there then too)
    from mkdocs.plugins import event_priority
except ImportError:  # pragma: no cover - imported without mkdocs

    def event_priority(_priority):
        return lambda f: f


@event_priority(100)  # before mkdocs-jupyter's on_files, so it renders the notebooks added here
def on_files(files, config):
    from mkdocs.structure.files import File

    def add(path: Path) -> None:
        rel = path.relative_to(ROOT).as_posix()
        if files.get_file_from_path(rel) is None:
            files.append(File(rel, str(ROOT), config["site_dir"], config["use_directory_urls"]))

    for nb in NOTEBOOKS:
        add(nb)
    for path in sorted(FIGURES.rglob("*")):
        if path.is_file() and path.suffix in {".png", ".html", ".js", ".csv", ".json", ".md"}:
            add(path)
    for site_path, folder, title in GALLERIES:
        files.append(File.generated(config, site_path, content=gallery_page(ROOT / folder, title, site_path)))
    return files


BENCH = re.compile(r"<!-- actlens:bench (\S+?\.json) -->")


def on_page_markdown(markdown_text, page, config, files):
    """Fills the generated table of the package face into the API index (``<!-- actlens:face -->``), and each
    ``<!-- actlens:bench figures/.../bench.json -->`` with that committed bench run's table."""
    marker = "<!-- actlens:face -->"
    if marker in markdown_text:
        markdown_text = markdown_text.replace(marker, face_table())
    return BENCH.sub(lambda m: bench_table(ROOT / m.group(1), m.group(1)), markdown_text)


def bench_table(path: Path, rel: str) -> str:
    """The rows of one ``actlens bench`` JSON as a table (median tok/s, paired ratio to the case's baseline), with
    where and at which commit it ran: numbers on the Speed page come from the file, not from typing."""
    sys.path.insert(0, str(ROOT))
    from actlens.bench.report import _tok_s  # the bench's own number format

    result = json.loads(path.read_text())
    machine, settings = result["machine"], result["settings"]
    where = machine.get("cuda_device") or f"{machine['cpu']}, {machine['torch_threads']} torch thread(s)"
    rows = ["| case | row | tok/s median | ratio to baseline, median [IQR] |", "|---|---|---|---|"]
    for r in result["rows"]:
        ratio = f"{r['ratio_median']:.3f} [{r['ratio_q1']:.3f}–{r['ratio_q3']:.3f}]" if "ratio_median" in r else "n/a"
        rows.append(f"| {r['case']} | {_md(r['label'])} | {_tok_s(r['tok_s_median'])} | {ratio} |")
    dirty = ", uncommitted changes" if machine.get("git_dirty") else ""
    rows += ["", f"*Generated from [`{rel}`]({rel}): {result['model']['name']} ({settings['dtype']}) on {where}; "
                 f"torch {machine['torch']}, commit `{machine.get('git_commit')}`{dirty}; {settings['repeats']} "
                 f"repeats.*"]
    return "\n".join(rows)


def face_table() -> str:
    """Markdown table of ``actlens.__all__``: each name, a link to its reference entry, its docstring's first line."""
    sys.path.insert(0, str(ROOT))
    import inspect

    import actlens

    rows = ["| name | defined in | what it is |", "|---|---|---|"]
    for name in actlens.__all__:
        obj = getattr(actlens, name)
        if name == "__version__":
            rows.append(f"| [`actlens.__version__`][actlens.__version__] | `actlens` | the version, `{obj}` |")
            continue
        module = getattr(obj, "__module__", "actlens")
        doc = (inspect.getdoc(obj) or "").strip().splitlines()
        first = doc[0] if doc else ""
        first = re.sub(r"``(.+?)``", r"`\1`", ROLE.sub(lambda m: f"`{m.group(2)}`", first))
        rows.append(f"| [`actlens.{name}`][actlens.{name}] | `{module}` | {_md(first)} |")
    return "\n".join(rows)


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def gallery_page(folder: Path, title: str, site_path: str) -> str:
    """The gallery of one model's figures, from its ``manifest.json`` (the page says so)."""
    from actlens.figures.compare import split_paper_note

    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    up = "../" * site_path.count("/")
    rel = folder.relative_to(ROOT).as_posix()
    model = manifest.get("model", {})
    lines = [
        f"# Figure gallery: {title}",
        "",
        '!!! info "Generated page"',
        f"    Written at build time by `notebooks/mkdocs_hooks.py` from "
        f"[`{rel}/manifest.json`]({up}{rel}/manifest.json),"
        f" which `actlens figures` wrote; edit nothing here, rerun the figures instead. The full reading of every "
        f"figure is [`{rel}/README.md`]({up}{rel}/README.md).",
        "",
        f"Model `{model.get('name')}`: {model.get('n_layers')} layers, d_model {model.get('d_model')}, vocabulary "
        f"{model.get('d_vocab')}; revision {model.get('revision')}.",
        "",
    ]
    for fig_id, entry in manifest.get("figures", {}).items():
        lines += [f"## {entry.get('title', fig_id)} (`{fig_id}`) {{ #{fig_id} }}", ""]
        if entry.get("status") != "ok":
            lines += [f"Not run (status `{entry.get('status')}`).", ""]
            continue
        notes = [str(n) for n in entry.get("notes", [])]
        claim, verdict = split_paper_note(notes)
        measured = [n for n in notes if not n.startswith("Paper")]
        files = entry.get("files", {})
        git = entry.get("git", {})
        lines += [str(entry.get("shows", "")), ""]
        if files.get("png"):
            lines += [f"![{fig_id}]({up}{rel}/{files['png']})", ""]
        links = [f"[{kind}]({up}{rel}/{files[kind]})" for kind in ("html", "csv") if files.get(kind)]
        if links:
            lines += ["Files: " + ", ".join(links) + " (the HTML is the interactive plotly figure).", ""]
        lines += ["| the paper | measured here |", "|---|---|", f"| {_md(claim)} | {_md(verdict) or '–'} |", ""]
        lines += ["Measured:", ""] + [f"- {n}" for n in measured] + [""]
        lines += [
            f"<small>code: git `{str(git.get('commit'))[:7]}`{' (uncommitted changes)' if git.get('dirty') else ''}"
            f"; {entry.get('elapsed_s', '?')} s; smoke: {entry.get('smoke')}; updated {entry.get('updated', '?')}"
            f"</small>",
            "",
        ]
    return "\n".join(lines)


# --- griffe extension: reStructuredText habits to Markdown ----------------------------------------------------------

try:
    import griffe
except ImportError:  # pragma: no cover - only mkdocstrings loads the extension
    griffe = None

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|exc|obj|const|type)?:`(~?)([^`]+)`")
DOUBLE = re.compile(r"``(.+?)``")


def _resolvable(pkg, path: str) -> str | None:
    """The canonical path of ``path`` when it names a public, documented object of the package, else None."""
    if not path.startswith(pkg.path + ".") and path != pkg.path:
        return None
    try:
        obj = pkg[path[len(pkg.path) + 1 :]] if path != pkg.path else pkg
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
    try:
        target = obj.final_target if obj.is_alias else obj
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
    canonical = target.path
    parts = canonical.split(".")
    if any(p.startswith("_") and not (p.startswith("__") and p.endswith("__")) for p in parts):
        return None
    if not target.docstring and not target.is_module:
        return None  # filtered out of the reference (show_if_no_docstring: false)
    return canonical


def markdown(text: str, pkg, module_path: str) -> str:
    """One docstring, reStructuredText habits rewritten as Markdown (see the module docstring)."""

    def role(m: re.Match) -> str:
        tilde, target = m.group(1), m.group(2).strip().rstrip("()")
        shown = target.rsplit(".", 1)[-1] if tilde else target
        candidates = (
            [target]
            if "." in target and target.startswith(pkg.path)
            else [f"{module_path}.{target}", f"{pkg.path}.{target}", target]
        )
        for cand in candidates:
            found = _resolvable(pkg, cand)
            if found:
                return f"[`{shown}`][{found}]"
        return f"`{shown}`"

    out, lines, i = [], text.splitlines(), 0
    in_fence = False
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith("```"):
            in_fence = not in_fence
        if not in_fence and stripped.startswith(">>>"):
            indent = line[: len(line) - len(stripped)]
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i].lstrip())
                i += 1
            out += [f"{indent}```pycon"] + [indent + b for b in block] + [f"{indent}```"]
            continue
        if not in_fence:
            line = ROLE.sub(role, line)
            line = DOUBLE.sub(lambda m: f"`{m.group(1)}`", line)
            if line.rstrip().endswith("::") and not line.strip() == "::":
                line = line.rstrip()[:-1]  # reST "text::" introduces an indented literal block; Markdown keeps "text:"
        out.append(line)
        i += 1
    return "\n".join(out)


if griffe is not None:

    class ActlensMarkup(griffe.Extension):
        """Rewrites every docstring of the package once it is loaded (see the module docstring)."""

        def on_package(self, *, pkg, **kwargs) -> None:
            def walk(obj):
                if obj.is_alias:
                    return
                if obj.docstring is not None:
                    module = obj if obj.is_module else obj.module
                    obj.docstring.value = markdown(obj.docstring.value, pkg, module.path)
                for member in obj.members.values():
                    walk(member)

            walk(pkg)


if __name__ == "__main__":  # print one gallery page: python notebooks/mkdocs_hooks.py figures/gemma-3-270m
    sys.path.insert(0, str(ROOT))
    folder = ROOT / (sys.argv[1] if len(sys.argv) > 1 else "figures")
    print(gallery_page(folder, folder.name, "gallery/x.md"))
