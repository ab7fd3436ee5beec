"""``actlens bench``: generation and forward throughput of actlens against raw Hugging Face.

One process, one model, the same prompts and settings for every row; rows are timed
interleaved (see :mod:`actlens.bench.timing`) and compared by paired per-repeat ratios.
Rows (``--rows``, patterns over ``group/name``):

* ``generate/*`` — greedy decoding of exactly ``--new-tokens`` tokens from random-token
  prompts (BOS first, no padding): raw HF ``generate`` (the baseline), actlens unsteered,
  actlens with an ActAdd vector (front-aligned, prefill only), actlens ``align="all"``,
  the steering-vectors library on the raw model (if importable), the TransformerLens
  bridge's own ``generate``, and a greedy :func:`actlens.experiments.sweeps.sweep` with the ActAdd
  vector on every row (:mod:`actlens.bench.extra`).
* ``forward/*`` — raw HF forward (the baseline), ``actlens.forward``, the bridge forward,
  ``actlens.resid_pre`` of every layer, TransformerLens ``run_with_cache`` of every
  ``resid_pre``, and :func:`actlens.analysis.kl.kl_per_token` (three forwards per text, or two with
  ``control=False``).
* ``klcurve/*``, ``klcurve-late/*`` — :func:`actlens.kl_curve` with 8 coefficients against 8 separate
  ``kl_per_token(control=False)`` calls (:mod:`actlens.bench.klcurve`), at the vector's layer and at
  2/3 of the depth; the check round asserts the same numbers.
* ``sweep/*`` — one sampled sweep grid (:func:`actlens.bench.extra.sweep_grid`, 68
  completions of ``--sweep-tokens`` tokens) run one setting at a time (the baseline) and
  batched; the check round asserts identical completions. Opt-in (named in ``--rows``):
  ``sweep/ray-2workers``, the batched sweep on two Ray workers of one thread each, and
  ``sweep/2-processes``, its two halves on two plain processes (no Ray): the reference for what two
  workers can gain on the machine.

Every ratio is the median over repeats of ``baseline time / row time`` from the same
repeat, with its interquartile range; targets (:data:`actlens.bench.report.TARGETS`) are
checked the same way.

Writes ``bench.json`` (timings, machine, versions, targets) and ``bench.html`` (plus
``bench.png`` when kaleido works) into ``--out``, and prints a markdown table with
PASS/FAIL per target. New rows are one function each (:mod:`actlens.bench.rows`).

Examples::

    actlens bench --smoke --model tiny --out /tmp/bench          # a few seconds
    actlens bench --model smollm2-135m --out figures/bench        # the CPU targets
    actlens bench --model llama-1b-random --device cuda --out figures/bench-gpu
    actlens bench --rows 'sweep/batched,sweep/ray-2workers,sweep/2-processes' --threads 1 --out figures/bench-ray
"""

import argparse
import fnmatch
import json
import sys
from pathlib import Path

import torch

# extra, klcurve and mediation register rows
from actlens.bench import extra, klcurve, mediation, profile, report, timing
from actlens.bench.models import MODELS, build
from actlens.bench.rows import ROWS, Case, Unavailable, Workload, baseline_of, cached_activation_bytes
from actlens.core.helptext import plain

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULTS = dict(batch_sizes="1,32", new_tokens=128, prompt_tokens=24, forward_batch=16, forward_tokens=256,
                sweep_tokens=20, klcurve_batch=8, klcurve_tokens=64)
SMOKE = dict(batch_sizes="1,2", new_tokens=4, prompt_tokens=8, forward_batch=2, forward_tokens=16, sweep_tokens=2,
             klcurve_batch=2, klcurve_tokens=16)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="actlens bench", description=plain(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=MODELS, default="smollm2-135m",
                   help="gpt2-xl-random / llama-1b-random are random-weight GPU-sized models (slow on CPU)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default cpu)")
    p.add_argument("--dtype", choices=("auto", *DTYPES), default="auto", help="auto: float32 on CPU, bfloat16 on CUDA")
    p.add_argument("--batch-sizes", default=None, help=f"generation batch sizes (default {DEFAULTS['batch_sizes']})")
    p.add_argument("--new-tokens", type=int, default=None, help=f"tokens to generate (default {DEFAULTS['new_tokens']})")
    p.add_argument("--prompt-tokens", type=int, default=None,
                   help=f"generation prompt length, BOS included (default {DEFAULTS['prompt_tokens']})")
    p.add_argument("--forward-batch", type=int, default=None, help=f"forward batch (default {DEFAULTS['forward_batch']})")
    p.add_argument("--forward-tokens", type=int, default=None,
                   help=f"forward sequence length (default {DEFAULTS['forward_tokens']})")
    p.add_argument("--sweep-tokens", type=int, default=None,
                   help=f"tokens per completion in the sweep rows (default {DEFAULTS['sweep_tokens']})")
    p.add_argument("--klcurve-batch", type=int, default=None,
                   help=f"texts in the kl_curve rows (default {DEFAULTS['klcurve_batch']})")
    p.add_argument("--klcurve-tokens", type=int, default=None,
                   help=f"tokens per text in the kl_curve rows (default {DEFAULTS['klcurve_tokens']})")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per row (>= 5 for the report)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up rounds (>= 1; the first also checks outputs)")
    p.add_argument("--rows", default="*", help="comma-separated patterns over row ids, e.g. 'generate/*,forward/hf'; "
                   f"baselines are always kept. Rows: {', '.join(ROWS)}")
    p.add_argument("--layer", type=int, default=None, help="steering layer (default min(6, n_layers - 1))")
    p.add_argument("--coeff", type=float, default=4.0, help="steering coefficient")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-memory", action="store_true", help="skip the untimed peak-memory pass")
    p.add_argument("--out", default="figures/bench", help="output directory")
    p.add_argument("--no-png", action="store_true", help="skip the PNG (kaleido starts a browser: seconds)")
    p.add_argument("--smoke", action="store_true", help=f"tiny sizes for a quick check: {SMOKE}")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when a target fails")
    p.add_argument("--profile", default=None, metavar="ROWS",
                   help="comma-separated patterns over the timed rows' ids: after timing, call each once more under "
                        "torch.profiler and keep its busiest kernels, host waits and launches in bench.json "
                        "(actlens.bench.profile), e.g. 'forward/kl_per_token*'")
    return p


def _settings(args) -> dict:
    sizes = SMOKE if args.smoke else DEFAULTS
    s = {key: getattr(args, key) if getattr(args, key) is not None else sizes[key] for key in DEFAULTS}
    try:
        s["batch_sizes"] = [int(b) for b in str(s["batch_sizes"]).split(",") if b.strip()]
    except ValueError as err:
        raise ValueError(f"--batch-sizes must be comma-separated integers such as 1,32, got {args.batch_sizes!r}") from err
    for key in ("new_tokens", "prompt_tokens", "forward_batch", "forward_tokens", "sweep_tokens", "klcurve_batch",
                "klcurve_tokens"):
        if s[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {s[key]}")
    if not s["batch_sizes"] or min(s["batch_sizes"]) < 1:
        raise ValueError(f"--batch-sizes must be positive integers such as 1,32, got {args.batch_sizes!r}")
    if args.repeats < 1 or args.warmup < 1:
        raise ValueError(f"need --repeats >= 1 and --warmup >= 1, got {args.repeats} and {args.warmup}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device} asked for CUDA but torch sees no GPU; use --device cpu")
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if device.type == "cuda" else "float32")
    return s | dict(model=args.model, device=str(device), dtype=dtype, repeats=args.repeats, warmup=args.warmup,
                    rows=args.rows, coeff=args.coeff, smoke=args.smoke, threads=args.threads, profile=args.profile)


def select_rows(patterns: str) -> list:
    """Rows matching any pattern (by ``group/name`` or ``name``), plus the baselines of their groups.

    Opt-in rows need a pattern that contains their name (``sweep/ray-2workers``, ``ray*``), not just ``*``.
    """
    chosen = _matching(patterns, ROWS.values())
    if not chosen:
        raise ValueError(f"--rows {patterns!r} matches no row; rows are {list(ROWS)}")
    groups = {r.group for r in chosen}
    return [r for r in ROWS.values() if r in chosen or (r.baseline and r.group in groups)]


def _matching(patterns: str, rows) -> list:
    """The rows that any of the comma-separated ``patterns`` selects (:func:`_selects`)."""
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    return [r for r in rows if any(_selects(p, r) for p in pats)]


def _selects(pattern: str, r) -> bool:
    if not (fnmatch.fnmatch(r.id, pattern) or fnmatch.fnmatch(r.name, pattern)):
        return False
    literal = pattern.rsplit("/", 1)[-1].replace("*", "").replace("?", "")
    return not r.opt_in or bool(literal) and literal in r.name


def run(args) -> dict:
    """Build, time and summarise; returns the JSON-ready result."""
    from actlens.vectors import actadd_vector

    s = _settings(args)
    started = report.now()
    if s["threads"]:
        torch.set_num_threads(s["threads"])
    device, dtype = torch.device(s["device"]), DTYPES[s["dtype"]]
    rows = select_rows(s["rows"])
    profiled = _profiled(args.profile, rows)
    _log(f"building {s['model']} on {device} ({s['dtype']})")
    machine = report.machine()  # now, not at the end: the commit must be the code that runs
    setup = build(s["model"], device, dtype)
    n_layers = setup.info["n_layers"]
    layer = args.layer if args.layer is not None else min(6, n_layers - 1)
    vector = actadd_vector(setup.model, "Love", "Hate", layer)
    s |= {"layer": layer, "vector": f"ActAdd 'Love' - 'Hate', k={vector.k}"}
    work = Workload(setup, vector, s["coeff"])
    cases = [Case("generate", b, s["prompt_tokens"], s["new_tokens"]) for b in s["batch_sizes"]]
    cases.append(Case("forward", s["forward_batch"], s["forward_tokens"]))
    if any(r.group == "sweep" for r in rows):
        grid = extra.sweep_grid(setup.model)
        cases.append(Case("sweep", len(grid.settings()) * len(grid.prompts) * len(grid.seeds), 0, s["sweep_tokens"]))

    for group in ("klcurve", "klcurve-late"):
        if any(r.group == group for r in rows):
            cases.append(Case(group, s["klcurve_batch"], s["klcurve_tokens"]))
    if any(r.group == "mediation" for r in rows):
        cases.append(Case("mediation", 16, 32))  # issue 23's size: 16 texts of 32 tokens, every layer's attn and MLP

    thunks, skipped = {}, []
    for case in cases:
        for r in rows:
            if r.group != case.group:
                continue
            try:
                thunks[(case, r)] = r.make(work, case)
            except Unavailable as err:
                skipped.append({"id": r.id, "label": r.label, "case": case.key, "reason": str(err)})
    _log(f"checking {len(thunks)} rows (first warm-up round)")
    meta, checks = _check(thunks, device, s["dtype"], work)
    _log(f"timing: {s['warmup'] - 1} more warm-up round(s), {s['repeats']} repeats")
    seconds = timing.run_interleaved(thunks, device, warmup=s["warmup"] - 1, repeats=s["repeats"], progress=_log)
    peaks = {}
    if not args.no_memory:
        _log("peak-memory pass")
        timing.prepare_memory_pass(device)
        peaks = {key: timing.peak_extra_bytes(thunk, device) for key, thunk in thunks.items()}

    profiles = {}
    for (case, r), thunk in thunks.items():
        if r in profiled:
            _log(f"profiling {r.id} @ {case.key}")
            try:
                profiles[f"{r.id} @ {case.key}"] = profile.profile_call(thunk, device)
            except Exception as err:  # a profiler that fails here must not lose the timings
                profiles[f"{r.id} @ {case.key}"] = {"error": f"{type(err).__name__}: {str(err)[:500]}"}

    records = []
    for (case, r), secs in seconds.items():
        base = baseline_of(r.group)
        tokens = getattr(thunks[(case, r)], "tokens_per_call", None)  # rows on text set their own count
        rec = report.record(r, case, secs, seconds.get((case, base)), tokens_per_call=tokens)
        rec["peak_extra_bytes"] = peaks.get((case, r))
        if hasattr(thunks[(case, r)], "startup_s"):  # Ray workers loading the model, before any timed call
            rec["startup_s"] = round(thunks[(case, r)].startup_s, 2)
        rec |= meta.get((case, r), {})
        if r.name in ("actlens-resid_pre", "tl-run_with_cache"):
            rec["cached_activation_bytes"] = cached_activation_bytes(work, case)
        records.append(rec)
    result = {
        "format": report.FORMAT, "started": started, "created": report.now(), "machine": machine, "settings": s,
        "model": setup.info, "memory_method": "not measured (--no-memory)" if args.no_memory else timing.memory_method(device),
        "process_peak_rss_bytes": timing.process_peak_rss_bytes(), "rows": records, "skipped": skipped,
    }
    result["targets"] = report.evaluate_targets(records)
    result["checks"] = checks
    if profiles:
        result["profiles"] = profiles
    return result


def _profiled(patterns: str | None, rows: list) -> list:
    """The timed rows ``--profile`` names (read as ``--rows`` patterns); an error when it names none of them."""
    if patterns is None:
        return []
    chosen = _matching(patterns, rows)
    if not chosen:
        timed = ", ".join(r.id for r in rows)
        raise ValueError(f"--profile {patterns!r} matches none of the rows being timed ({timed}); "
                         "name one of them, e.g. --profile 'forward/kl_per_token*'")
    return chosen


# Largest |logit difference| / largest |baseline logit| that a row doing the same work may show, per dtype.
# On the CPU actlens's forward is bit-identical to raw HF; on a GPU kernels chosen by shape differ in the last bits.
LOGIT_TOLERANCE = {"float32": 1e-3, "float16": 2e-2, "bfloat16": 6e-2}
# Largest relative difference of kl_curve's mean KLs against separate kl_per_token calls.
KL_TOLERANCE = {"cpu": {"float32": 1e-4, "float16": 5e-2, "bfloat16": 5e-2},
                "cuda": {"float32": 1e-3, "float16": 5e-2, "bfloat16": 5e-2}}


def _check(thunks: dict, device: torch.device, dtype: str = "float32", work: Workload | None = None) -> tuple[dict, list]:
    """Call each row once (untimed) and compare it with its baseline.

    Different *work* (wrong shapes, wrong token or completion counts) raises. Different *numbers* never
    abort: each comparison is recorded beside its row and, where a tolerance applies, as a check that
    fails beyond it (``checks``; ``main`` then exits 1 after writing the report). What must agree where:
    README, "Exactness". Returns ``(meta per row, checks)``.
    """
    outputs, meta, checks = {}, {}, []
    exact = device.type == "cpu"
    for (case, r), thunk in thunks.items():
        with torch.inference_mode():
            out = thunk()
        timing.synchronize(device)
        if case.group == "generate":
            out = torch.as_tensor(out)
            if tuple(out.shape) != (case.batch, case.new_tokens):
                raise RuntimeError(f"row {r.id} made {tuple(out.shape)} tokens for {case.key}; expected "
                                   f"{(case.batch, case.new_tokens)}: the rows would not do the same work")
            outputs[(case, r)] = out.cpu()
        elif case.group in ("sweep", "klcurve", "klcurve-late", "mediation"):
            outputs[(case, r)] = out
        elif case.group == "forward" and r.name in ("hf", "actlens", "tl-bridge") and isinstance(out, torch.Tensor):
            outputs[(case, r)] = out.float()

    def check(case, r, what: str, value: float, limit: float | None, passed: bool) -> None:
        checks.append({"row": r.id, "case": case.key, "what": what, "value": value, "limit": limit,
                       "passed": bool(passed)})

    for (case, r), out in outputs.items():
        base = outputs.get((case, baseline_of(r.group)))
        if base is None or r.baseline:
            continue
        if case.group == "generate" and r.name in ("actlens", "tl-bridge", "compiled"):
            same = bool(torch.equal(out, base))
            agree = float((out == base).float().mean())
            meta[(case, r)] = {"same_tokens_as_baseline": same, "token_agreement": round(agree, 4)}
            if not same and r.name == "actlens" and work is not None:
                meta[(case, r)]["divergence"] = _divergence(work, case, base, out)
        elif case.group == "forward":
            if out.shape != base.shape:
                raise RuntimeError(f"row {r.id} gave logits of shape {tuple(out.shape)} for {case.key}; expected "
                                   f"{tuple(base.shape)}: the rows would not do the same work")
            scale = float(base.abs().max()) or 1.0
            diff = float((out - base).abs().max()) / scale
            meta[(case, r)] = {"max_logit_difference": diff}
            if r.name == "actlens":  # the bridge's own forward is TransformerLens's, reported only
                check(case, r, "largest |logit difference| / largest |logit|", diff, LOGIT_TOLERANCE[dtype],
                      diff <= LOGIT_TOLERANCE[dtype])
        elif case.group == "sweep":
            if len(out) != len(base):
                raise RuntimeError(f"row {r.id} gave {len(out)} completions for the grid; {baseline_of(r.group).id} "
                                   f"gave {len(base)}: the rows would not do the same work")
            agree = sum(a == b for a, b in zip(out, base, strict=True)) / max(len(base), 1)
            meta[(case, r)] = {"same_completions_as_baseline": out == base, "completion_agreement": round(agree, 4)}
            # CPU: batched and separate sweeps are bit-identical, so every completion must agree. GPU: a row's
            # logits depend in the last bits on its batch, so sampled completions are compared by agreement rate,
            # reported and not asserted (sweep(..., exact=True) makes rows independent of their batch).
            check(case, r, "share of completions equal to one setting at a time", agree, 1.0 if exact else None,
                  agree == 1.0 or not exact)
        elif case.group == "mediation":
            worst = mediation.agreement(base, out)
            meta[(case, r)] = {"max_fraction_difference": worst}
            limit = 0.0 if exact else 1e-2
            check(case, r, "largest |fraction difference| against one forward per component", worst, limit,
                  worst <= limit)
        elif case.group in ("klcurve", "klcurve-late"):
            if len(out) != len(base):
                raise RuntimeError(f"row {r.id} gave {len(out)} mean KLs; {baseline_of(r.group).id} gave {len(base)}")
            worst = klcurve.agreement(base, out)
            limit = KL_TOLERANCE["cpu" if exact else "cuda"][dtype]
            meta[(case, r)] = {"max_relative_difference": worst}
            check(case, r, "largest relative difference of the mean KLs", worst, limit, worst <= limit)
    return meta, checks


def _divergence(work: Workload, case: Case, base: torch.Tensor, out: torch.Tensor) -> dict:
    """Why greedy tokens differ from raw HF's: teacher-force raw HF's tokens through both models and compare.

    ``max_logit_difference``: largest |Δlogit| over the generated positions; ``margins``: raw HF's top-1
    minus top-2 logit where each differing row first differs. A margin within the logit difference is a
    near-tie that last-bit differences flip (kernels chosen by shape), not different work.
    """
    from actlens.models.model import forward

    prompt = work.tokens(case)
    seq = torch.cat([prompt, base.to(prompt.device)], dim=1)
    mask = torch.ones_like(seq)
    with torch.inference_mode():
        raw = work.setup.raw(input_ids=seq, attention_mask=mask).logits[:, prompt.shape[1] - 1:-1].float()
        ours = forward(work.setup.model, seq, mask)[:, prompt.shape[1] - 1:-1].float()
    diff = float((raw - ours).abs().max())
    rows = [i for i in range(base.shape[0]) if not torch.equal(base[i], out[i])]
    firsts = [int((base[i] != out[i]).int().argmax()) for i in rows]
    top2 = raw.topk(2, dim=-1).values
    margins = [float(top2[i, f, 0] - top2[i, f, 1]) for i, f in zip(rows, firsts, strict=True)]
    return {"rows_differing": len(rows), "first_differing_step": firsts[:8], "max_logit_difference": diff,
            "margins_at_first_difference": [round(m, 5) for m in margins[:8]],
            "near_ties": sum(m <= diff for m in margins), "argmax_equal_teacher_forced":
            bool(torch.equal(raw.argmax(-1), ours.argmax(-1)))}


def write(result: dict, out: Path, *, png: bool = True) -> dict[str, str]:
    """Write bench.json, bench.html and (if ``png`` and kaleido works) bench.png into ``out``."""
    from actlens.plots.bench import fig_bench

    out.mkdir(parents=True, exist_ok=True)
    files = {"json": str(out / "bench.json"), "html": str(out / "bench.html")}
    fig = fig_bench(result)
    fig.write_html(out / "bench.html", include_plotlyjs=True)
    if not png:
        files["png_skipped"] = "--no-png"
    else:
        try:
            fig.write_image(out / "bench.png")
            files["png"] = str(out / "bench.png")
        except Exception as err:  # kaleido missing or broken (no browser): HTML only
            files["png_skipped"] = f"{type(err).__name__}: {err}".splitlines()[0]
    result["files"] = files
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    return files


def _log(msg: str) -> None:
    print(f"[actlens bench] {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    threads = torch.get_num_threads()
    try:
        result = run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"actlens bench: error: {err}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)  # --threads must not leak into a caller (e.g. a test session)
    files = write(result, Path(args.out), png=not args.no_png)
    print(report.markdown(result))
    print(f"\nwrote {', '.join(v for k, v in files.items() if k != 'png_skipped')}"
          + (f" (no PNG: {files['png_skipped']})" if "png_skipped" in files else ""))
    failed = [t for t in result["targets"] if not t["passed"]]
    wrong = [c for c in result["checks"] if not c["passed"]]
    if wrong:  # numbers beyond their tolerance: reported in full above, then a failing exit status
        print(f"actlens bench: {len(wrong)} agreement check(s) beyond tolerance: "
              + "; ".join(f"{c['row']} @ {c['case']}: {c['value']:.3g} > {c['limit']}" for c in wrong), file=sys.stderr)
    return 1 if wrong or (args.strict and failed) else 0


__all__ = ["extra", "main", "parser", "run", "write"]
