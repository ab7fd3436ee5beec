"""Summaries, targets, machine info and the markdown table of ``actlens bench``."""

import datetime
import os
import platform
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

from actlens.bench.timing import paired_ratios, summary

FORMAT = "actlens.bench/1"


@dataclass(frozen=True)
class Target:
    """A pass/fail check on the paired per-repeat time ratio ``numerator / denominator``.

    ``kind="throughput"`` checks ``denominator_time / numerator_time >= limit``;
    ``kind="time"`` checks ``numerator_time / denominator_time <= limit``. Both are per token
    when the rows process different numbers of tokens. ``kind="seconds"`` checks the numerator's own median
    time, ``<= limit`` seconds (the denominator only names the case). ``passes``: the numerator's work is
    that many runs of the denominator (per-token KL needs 2 or 3 forwards), so its time is
    compared with ``passes`` times the denominator's.
    """

    label: str
    group: str
    numerator: str
    denominator: str
    kind: str
    limit: float
    passes: int = 1
    batches: tuple[int, ...] | None = None  # only at these batch sizes (None: every case of the group)


TARGETS = (
    Target("actlens ActAdd generate >= 0.95x raw HF generate", "generate", "actlens+actadd", "hf", "throughput", 0.95),
    Target("steering overhead, ActAdd vs unsteered actlens <= 2 %", "generate", "actlens+actadd", "actlens", "time", 1.02),
    Target("steering overhead, align='all' vs unsteered actlens <= 2 %", "generate", "actlens+all", "actlens", "time", 1.02),
    # Compiled decoding (issue 21): GPU targets on llama-1b-random in bf16; compile time is reported apart.
    Target("compiled ActAdd generate >= 3x raw HF eager generate at batch 1", "generate", "compiled+actadd", "hf",
           "throughput", 3.0, batches=(1,)),
    Target("compiled ActAdd generate >= 1.5x raw HF eager generate at batch 32", "generate", "compiled+actadd", "hf",
           "throughput", 1.5, batches=(32,)),
    Target("steering overhead within the compiled path, ActAdd <= 2 %", "generate", "compiled+actadd", "compiled",
           "time", 1.02),
    Target("steering overhead within the compiled path, align='all' <= 2 %", "generate", "compiled+all", "compiled",
           "time", 1.02),
    Target("steering at mlp_out vs resid_pre (align='all') <= 2 %", "generate", "actlens+all-mlp_out", "actlens+all",
           "time", 1.02),
    Target("resid_pre of every layer <= 1.1x plain actlens.forward", "forward", "actlens-resid_pre", "actlens", "time", 1.10),
    Target("batched sweep >= 5x the throughput of one setting at a time", "sweep", "batched", "separate",
           "throughput", 5.0),
    Target("2 Ray workers >= 1.6x one process (1 thread each: --threads 1)", "sweep", "ray-2workers", "batched",
           "throughput", 1.6),
    # Not a target of actlens: the same halves on two plain processes, i.e. what this machine allows two workers.
    Target("reference: 2 plain processes (no Ray) >= 1.6x one process (1 thread each)", "sweep", "2-processes",
           "batched", "throughput", 1.6),
    Target("actlens.mediation (components batched) >= 1x the one-forward-per-component loop", "mediation", "batched",
           "naive", "throughput", 1.0),
    Target("kl_curve, 8 coefficients, >= 3x the throughput of 8 kl_per_token(control=False) calls", "klcurve",
           "batched", "separate", "throughput", 3.0),
    Target("kl_curve at 2/3 depth, 8 coefficients, >= 3x 8 kl_per_token(control=False) calls", "klcurve-late",
           "batched", "separate", "throughput", 3.0),
    # Issue 22's budget: a sweep store checksums every weight each time it opens.
    Target("fingerprint(model), a sweep store's model check, <= 0.5 s", "forward", "fingerprint", "hf", "seconds", 0.5),
    Target("kl_per_token (steered vs unsteered) >= 0.9x the throughput of 2 raw HF forwards", "forward",
           "kl_per_token-nocontrol", "hf", "throughput", 0.9, passes=2),
    Target("kl_per_token with its random control >= 0.9x the throughput of 3 raw HF forwards", "forward",
           "kl_per_token", "hf", "throughput", 0.9, passes=3),
)


def machine() -> dict:
    """CPU, memory, accelerator and library versions of this run."""
    import transformer_lens
    import transformers

    import actlens

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_bytes": _meminfo_total(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "transformer_lens": _version("transformer-lens", getattr(transformer_lens, "__version__", None)),
        "actlens": actlens.__version__,
        "steering_vectors": _version("steering-vectors", None),
        "git_commit": _git_commit(),
        "git_dirty": _git_dirty(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def _version(dist: str, fallback):
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return fallback


def _meminfo_total() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _git_dirty() -> bool | None:
    """Whether tracked files differ from the commit (the timed code is then not exactly ``git_commit``)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], check=False, capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).resolve().parent)
        return bool(out.stdout.strip()) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# --- per-row records -------------------------------------------------------------------------
def record(row, case, seconds: list[float], baseline_seconds: list[float] | None, *,
           tokens_per_call: int | None = None) -> dict:
    """One timed (case, row): timings, tokens/s (median and spread) and the paired ratio to the baseline.

    The ratio is the per-repeat ``baseline time / row time``, i.e. a throughput ratio for the
    same work; a row that processes a different number of tokens (``tokens_per_call``) is
    compared by tokens/s instead.
    """
    s = summary(seconds)
    n = tokens_per_call or case.tokens_per_call
    out = {
        "id": row.id, "group": row.group, "name": row.name, "label": row.label, "case": case.key,
        "batch": case.batch, "prompt_tokens": case.prompt_tokens, "new_tokens": case.new_tokens,
        "tokens_per_call": n, "seconds": seconds, **s,
        "tok_s_median": n / s["median_s"], "tok_s_q1": n / s["q3_s"], "tok_s_q3": n / s["q1_s"],
        "tok_s_min": n / s["max_s"], "tok_s_max": n / s["min_s"],
    }
    if baseline_seconds is not None:
        scale = n / case.tokens_per_call  # 1 unless the row processed a different number of tokens
        ratios = [r * scale for r in paired_ratios(baseline_seconds, seconds)]  # throughput ratio
        q = summary(ratios)
        out |= {"ratio_median": q["median_s"], "ratio_q1": q["q1_s"], "ratio_q3": q["q3_s"],
                "ratio_min": q["min_s"], "ratio_max": q["max_s"]}
    return out


def evaluate_targets(rows: list[dict]) -> list[dict]:
    """Each target for each case where both of its rows were timed."""
    by_key = {(r["group"], r["case"], r["name"]): r for r in rows}
    cases = sorted({(r["group"], r["case"], r["batch"]) for r in rows}, key=lambda c: (c[0], c[2]))
    results = []
    for target in TARGETS:
        for group, case, batch in cases:
            num, den = by_key.get((group, case, target.numerator)), by_key.get((group, case, target.denominator))
            if group != target.group or num is None or den is None:
                continue
            if target.batches is not None and batch not in target.batches:
                continue
            per_token = den["tokens_per_call"] / num["tokens_per_call"]
            time_ratios = [r * per_token / target.passes for r in paired_ratios(num["seconds"], den["seconds"])]
            if target.kind == "seconds":
                values = list(num["seconds"])
            elif target.kind == "throughput":
                values = [1 / r for r in time_ratios]
            else:
                values = time_ratios
            value = statistics.median(values)
            relation = ">=" if target.kind == "throughput" else "<="
            passed = value >= target.limit if relation == ">=" else value <= target.limit
            q = summary(values)
            results.append({"target": target.label, "case": case, "kind": target.kind, "value": value,
                            "q1": q["q1_s"], "q3": q["q3_s"], "min": q["min_s"], "max": q["max_s"],
                            "relation": relation, "limit": target.limit, "passed": bool(passed)})
    return results


# --- markdown -------------------------------------------------------------------------------------
def _tok_s(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.3g}"


def _mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:,.1f} MiB"


def markdown(result: dict) -> str:
    """The results table, the model's memory and the PASS/FAIL lines, as markdown."""
    info, settings, machine_ = result["model"], result["settings"], result["machine"]
    where = machine_["cuda_device"] or (f"{machine_['cpu']} ({machine_['cpus_usable']} CPUs, "
                                        f"torch threads: {machine_['torch_threads']})")
    lines = [
        (f"## actlens bench{' (SMOKE sizes: checks the harness, not speed)' if settings.get('smoke') else ''}: "
         f"{info['name']} ({info['architecture']}, {info['parameters']:,} parameters, {info['dtype']}) on {where}"),
        "",
        (f"{settings['repeats']} timed repeats after {settings['warmup']} warm-up rounds, rows interleaved; "
         "tok/s = tokens per call / seconds (generation: new tokens, prefill included). Ratio = paired per-repeat "
         "throughput ratio to the baseline row of the same case: median [IQR] (min-max in bench.json)."),
        "",
        "| case | row | tok/s median | tok/s IQR | ratio to baseline | peak extra memory |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        ratio = (f"{r['ratio_median']:.3f} [{r['ratio_q1']:.3f}-{r['ratio_q3']:.3f}]"
                 if "ratio_median" in r else "n/a")
        memory = _mib(r.get("peak_extra_bytes"))
        if "cached_activation_bytes" in r:
            memory += f" (cache {_mib(r['cached_activation_bytes'])})"
        lines.append(f"| {r['case']} | {r['label']} | {_tok_s(r['tok_s_median'])} | "
                     f"{_tok_s(r['tok_s_q1'])}-{_tok_s(r['tok_s_q3'])} | {ratio} | {memory} |")
    for s in result["skipped"]:
        lines.append(f"| {s['case']} | {s['label']} | skipped: {s['reason']} | | | |")
    lines += [
        "",
        (f"Weights: {_mib(info['weight_bytes_actlens'])} for the actlens bridge and its fast tree together "
         f"(shared tensors: {info['fast_tree_shares_weights']}), plus {_mib(info['weight_bytes_raw_copy'])} for the "
         f"raw HF baseline copy, which only the benchmark holds. Attention: raw {info['attn_implementation_raw']}, "
         f"fast tree {info['attn_implementation_fast_tree']}. Memory: {result['memory_method']}; process peak RSS "
         f"{_mib(result.get('process_peak_rss_bytes'))}."),
    ]
    same = [f"{r['label']} @ {r['case']}: {'yes' if r['same_tokens_as_baseline'] else 'NO'}"
            + ("" if r["same_tokens_as_baseline"] else f" ({r.get('token_agreement', 0):.1%} of tokens equal"
               + (f"; {r['divergence']['near_ties']} of {r['divergence']['rows_differing']} differing rows first "
                  f"differ at a near-tie of raw HF's logits" if "divergence" in r else "") + ")")
            for r in result["rows"] if "same_tokens_as_baseline" in r]
    if same:
        lines += ["", "Greedy tokens identical to raw HF generate: " + "; ".join(same) + "."]
    agree = [f"{r['label']} @ {r['case']}: {'yes' if r['same_completions_as_baseline'] else 'NO'}"
             + ("" if r["same_completions_as_baseline"] else f" ({r.get('completion_agreement', 0):.1%} equal)")
             for r in result["rows"] if "same_completions_as_baseline" in r]
    if agree:
        lines += ["", "Sweep completions identical to one setting at a time: " + "; ".join(agree) + "."]
    startup = [f"{r['label']}: {r['startup_s']:.1f} s" for r in result["rows"] if "startup_s" in r]
    if startup:
        lines += ["", "Start-up before the timed calls (Ray workers loading the model; compiled rows compiling at "
                  "their batch shape), not in the timings: " + "; ".join(startup) + "."]
    close = [f"{r['case']}: {r['max_relative_difference']:.1e}" for r in result["rows"] if "max_relative_difference" in r]
    if close:
        lines += ["", "kl_curve against separate kl_per_token calls, largest relative difference of the 8 mean KLs "
                  "(float rounding; checked below): " + "; ".join(close) + "."]
    logits = [f"{r['label']} @ {r['case']}: {r['max_logit_difference']:.1e}" for r in result["rows"]
              if "max_logit_difference" in r]
    if logits:
        lines += ["", "Logits against raw HF's, largest |difference| / largest |logit|: " + "; ".join(logits) + "."]
    if result.get("checks"):
        lines += ["", "| agreement check | case | value | limit | result |", "|---|---|---|---|---|"]
        for c in result["checks"]:
            verdict = "reported" if c["limit"] is None else "PASS" if c["passed"] else "FAIL"
            lines.append(f"| {c['row']}: {c['what']} | {c['case']} | {c['value']:.3g} | "
                         f"{'-' if c['limit'] is None else c['limit']} | {verdict} |")
    lines += [
        "",
        "| target | case | paired median [IQR] [min-max] vs limit | result |",
        "|---|---|---|---|",
    ]
    for t in result["targets"]:
        lines.append(f"| {t['target']} | {t['case']} | {t['value']:.3f} [{t['q1']:.3f}-{t['q3']:.3f}] "
                     f"[{t['min']:.3f}-{t['max']:.3f}] "
                     f"{t['relation']} {t['limit']} | {'PASS' if t['passed'] else 'FAIL'} |")
    return "\n".join(lines)
