"""Figure jobs for the diagnostics (sinks, sink-aware ActAdd, KL budgets, steerability).

Registered into :data:`actlens.figure_jobs.JOBS` (this module is imported at its end), so
``actlens figures --only sinks,sink_aware,...`` runs them like the paper figures. Each job
returns an :class:`actlens.figure_jobs.Output` whose notes say what was measured and what it
shows, whatever it shows.
"""

import numpy as np
import pandas as pd

from actlens import metrics, sweeps
from actlens.demo import EVAL_PROMPTS
from actlens.figure_jobs import FigureJob, Job, Output
from actlens.norms import units_from_coeff
from actlens.plots import diagnostics as plots
from actlens.sinks import sink_aware_actadd, sinks, touched
from actlens.vectors import actadd_vector


def _fmt(mean: float, lo: float, hi: float) -> str:
    return f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]"


# --- sinks -------------------------------------------------------------------------------------------------
def sinks_figure(job: Job) -> Output:
    report = sinks(job.model)
    frame = report.to_frame()
    bos = frame[frame.position == 0]
    later = report.tokens()
    notes = [f"{len(report.texts)} reference texts, threshold {report.threshold:g}× the layer's median residual norm "
             f"(positions after BOS): {len(frame)} flagged (text, layer, position) cells."]
    if len(bos):
        notes.append(f"BOS is flagged at {bos.layer.nunique()} of {len(report.layers)} layers "
                     f"(layers {int(bos.layer.min())}–{int(bos.layer.max())}), up to {bos.ratio.max():.0f}× the median.")
    if len(later):
        top = ", ".join(f"{t!r} ({r:.1f}×, {n} flags)" for t, r, n in
                        zip(later.token.head(6), later.max_ratio.head(6), later.n_flags.head(6), strict=True))
        layers = frame[frame.position > 0].layer
        notes.append(f"After BOS, tokens flagged (largest ratio first): {top}; at layers {int(layers.min())}–"
                     f"{int(layers.max())}. Positions flagged in at least half the texts: {report.positions()}.")
    else:
        notes.append("No position after BOS is flagged.")
    for pair in (("Love", "Hate"), (" weddings", "")):
        layer = job.layer(0.2)
        hits = touched(job.model, actadd_vector(job.model, *pair, layer))
        notes.append(f"The faithful ActAdd {pair[0]!r} − {pair[1]!r} vector at layer {layer} reads "
                     + (", ".join(f"row {t.position} ({t.plus_token!r} {t.plus_ratio:.1f}× / {t.minus_token!r} "
                                  f"{t.minus_ratio:.1f}×; ‖Δ‖ = {t.row_ratio:.1f}× median)" for t in hits)
                        if hits else "no sink row") + ".")
    return Output(plots.fig_sinks(report), frame, dict(threshold=report.threshold, texts="reference_texts.txt"),
                  [], notes)


# --- sink-aware ActAdd against the faithful recipe -------------------------------------------------------
TASKS = (("sentiment", "Love", "Hate", "sentiment"), ("weddings", " weddings", "", "topic_hit"))


def _paired(completions: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per setting: mean of ``metric`` and the paired shift against unsteered (same prompt and seed), with CIs."""
    base = completions[completions.condition == "unsteered"].set_index(["prompt", "seed"])[metric]
    rows = []
    for (cond, vec, coeff), group in completions.groupby(["condition", "vector", "coeff"], sort=False, dropna=False):
        vals = group[metric].to_numpy(float)
        lo, hi = metrics.bootstrap_ci(vals)
        shift = vals - base.loc[list(zip(group.prompt, group.seed, strict=True))].to_numpy(float)
        slo, shi = metrics.bootstrap_ci(shift)
        label = "unsteered" if cond == "unsteered" else f"{vec}{' random control' if cond == 'random' else ''} c={coeff:g}"
        rows.append(dict(condition=label, kind=cond, vector=vec, coeff=coeff, n=len(vals), mean=float(vals.mean()),
                         ci_low=lo, ci_high=hi, shift=float(shift.mean()), shift_low=slo, shift_high=shi))
    return pd.DataFrame(rows)


def sink_aware(job: Job) -> Output:
    layer = job.layer(0.2)
    seeds = job.seeds(1, 3)
    prompts = EVAL_PROMPTS[:2] if job.smoke else EVAL_PROMPTS[:24]
    coeffs = [4.0] if job.smoke else [1.0, 4.0, 8.0]
    sampling = sweeps.Sampling(max_new_tokens=job.max_new_tokens or (8 if job.smoke else 30))
    frames, notes, configs, files = [], [], [], []
    for task, plus, minus, metric in TASKS:
        faithful = sweeps.VectorSpec("faithful", lambda m, layer, p=plus, q=minus: actadd_vector(m, p, q, layer),
                                     recipe=f"actadd {plus!r} - {minus!r}")
        aware = sweeps.VectorSpec("sink-aware", lambda m, layer, p=plus, q=minus: sink_aware_actadd(m, p, q, layer),
                                  recipe=f"sink_aware_actadd {plus!r} - {minus!r} prefix '\\n' threshold 4")
        grid = sweeps.Grid([faithful, aware], [layer], coeffs, list(prompts), seeds, controls=("unsteered", "random"))
        path = job.out / f"sink_aware.{task}.completions.jsonl"
        result = sweeps.sweep(job.model, grid, sampling=sampling, out=path, batch_size=job.batch_size,
                              progress=job.progress)
        files.append(path)
        configs.append(result.config)
        table = _paired(result.completions(), metric).assign(task=f"{task} ({metric}), {plus!r} − {minus!r}, L{layer}")
        frames.append(table)
        sizes = {name: units_from_coeff(job.model, build(job.model, layer), 1.0)
                 for name, build in (("faithful", faithful.build), ("sink-aware", aware.build))}
        base = table[table.kind == "unsteered"].iloc[0]
        notes.append(f"{task}: unsteered {metric} {_fmt(base['mean'], base.ci_low, base.ci_high)} "
                     f"({int(base.n)} completions: {len(prompts)} prompts × {len(seeds)} seeds). Largest row of the vector "
                     f"at c = 1: faithful {sizes['faithful']:.2f}, sink-aware {sizes['sink-aware']:.2f} typical residual "
                     "norms.")
        for _, r in table[table.kind != "unsteered"].iterrows():
            notes.append(f"{task}, {r.condition}: {_fmt(r['mean'], r.ci_low, r.ci_high)}; shift vs unsteered "
                         f"{_fmt(r['shift'], r.shift_low, r.shift_high)}.")
        steered = table[table.kind == "steered"]
        for name in ("faithful", "sink-aware"):
            own = steered[steered.vector == name]
            beats = [f"c={r.coeff:g}" for _, r in own.iterrows() if r.shift_low > 0
                     and r.ci_low > table[(table.kind == "random") & (table.vector == name)
                                          & (table.coeff == r.coeff)].ci_high.iloc[0]]
            notes.append(f"{task}: {name} moves {metric} above unsteered (shift CI > 0) and above its random control "
                         f"(CIs apart) at: {', '.join(beats) if beats else 'no coefficient'}.")
    data = pd.concat(frames, ignore_index=True)
    fig = plots.fig_effect_bars(data, title=f"Sink-aware vs faithful ActAdd ({job.name or 'model'}, layer {layer}, "
                                f"{len(prompts)} prompts × {len(seeds)} seeds, {sampling.max_new_tokens} tokens)")
    config = dict(layer=layer, coeffs=coeffs, prompts=list(prompts), seeds=seeds, sweeps=configs,
                  max_new_tokens=sampling.max_new_tokens)
    return Output(fig, data, config, seeds, notes, files)


JOBS = {
    "sinks": FigureJob(
        "Attention sinks: residual norm per layer and position",
        "Largest ‖resid_pre‖ relative to the layer's median (reference texts, positions after BOS) per layer and "
        "position, and the tokens flagged as sinks (≥ 4× the median) after BOS (`actlens.sinks`).",
        sinks_figure, False),
    "sink_aware": FigureJob(
        "Sink-aware ActAdd against the faithful recipe",
        "Love − Hate sentiment (VADER) and ' weddings' topic rate of sampled completions for the faithful "
        "front-aligned ActAdd vector and the sink-aware one (`actlens.sinks.sink_aware_actadd`: read behind a shared "
        "prefix, sink rows zeroed), each with a norm-matched random control, against unsteered completions of the "
        "same prompts and seeds. Error bars: 95 % bootstrap CIs over prompts × seeds.",
        sink_aware, True),
}


__all__ = ["JOBS"]
