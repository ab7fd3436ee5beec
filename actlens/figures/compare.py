"""The paper and every model's figure run side by side, for ``figures/README.md``.

``actlens figures`` writes one folder per model: ``figures/`` for the default model and
``figures/<model>/`` for others (``--out``), each with its own ``manifest.json``. This module
reads them all and builds one table: per figure, the paper's claim and, per model, the
measured verdict and key number, both taken from the notes the figure job wrote (so the table
says exactly what each run's README says, never more).
"""

import json
from pathlib import Path


def manifests(root: Path) -> dict[str, dict]:
    """Model name -> manifest, for ``root/manifest.json`` and every ``root/*/manifest.json`` (full runs only)."""
    found = {}
    for path in [root / "manifest.json", *sorted(root.glob("*/manifest.json"))]:
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(manifest, dict) and not manifest.get("smoke"):
            name = str(manifest.get("model", {}).get("name") or path.parent.name)
            found[name] = manifest | {"_folder": "." if path.parent == root else path.parent.name}
    return found


def split_paper_note(notes: list[str]) -> tuple[str, str]:
    """(the paper's claim, this run's verdict) from a figure's notes.

    >>> split_paper_note(["x: 0.5", "Paper (GPT-2-XL): falls. Here the ratio does NOT fall."])
    ('Paper (GPT-2-XL): falls.', 'Here the ratio does NOT fall.')
    >>> split_paper_note(["Paper (LW1): targeted. Same here."])
    ('Paper (LW1): targeted.', 'Same here.')
    >>> split_paper_note(["Cosine ... The paper reports no such analysis."])
    ('no counterpart in the paper', '')
    """
    for note in notes:
        if note.startswith("Paper"):
            for marker in (" Here", " Same here", " NOT so here"):
                head, sep, tail = note.partition(marker)
                if sep:
                    return head.strip(), (sep + tail).strip()
            return note, ""
    return "no counterpart in the paper", ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(root: Path) -> list[str]:
    """Markdown lines of the side-by-side table, or [] when fewer than two models have full runs."""
    runs = manifests(root)
    if len(runs) < 2:
        return []
    from actlens.figures.registry import JOBS

    names = list(runs)
    lines = ["## The paper and each model side by side", "",
             "Per figure: the paper's claim, and each model's verdict with its first measured number (95 % CIs in "
             "brackets), copied from the notes of that model's run (" +
             ", ".join(f"`{n}`: [{runs[n]['_folder']}/README.md]({runs[n]['_folder']}/README.md), git "
                       f"{str(runs[n].get('git', {}).get('commit'))[:7]}" for n in names) + ").", "",
             "| figure | paper | " + " | ".join(f"`{n}`" for n in names) + " |",
             "|---|---|" + "---|" * len(names)]
    for fig_id, spec in JOBS.items():
        paper, cells = "", []
        for name in names:
            entry = runs[name].get("figures", {}).get(fig_id)
            if not entry or entry.get("status") != "ok":
                cells.append("not run")
                continue
            notes = [str(n) for n in entry.get("notes", [])]
            claim, verdict = split_paper_note(notes)
            paper = paper or claim
            first = notes[0] if notes and not notes[0].startswith("Paper") else ""
            cells.append(" ".join(x for x in (verdict, first) if x) or "–")
        lines.append(f"| {_cell(spec.title)} (`{fig_id}`) | {_cell(paper or '–')} | " +
                     " | ".join(_cell(c) for c in cells) + " |")
    return [*lines, ""]


__all__ = ["manifests", "split_paper_note", "table"]
