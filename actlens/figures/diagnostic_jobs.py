"""Figure jobs for the diagnostics (sinks, sink-aware ActAdd, KL budgets, steerability).

Listed last in :data:`actlens.figures.registry.JOBS`, so ``actlens figures --only sinks,sink_aware,...`` runs
them like the paper figures. Each job returns an :class:`actlens.figures.jobs.Output` whose notes say what was measured and what it
shows, whatever it shows.
"""

import numpy as np
import pandas as pd

from actlens.analysis.calibrate import DEFAULT_KL, calibrate
from actlens.analysis.norms import coeff_from_units, units_from_coeff
from actlens.analysis.sinks import sink_aware_actadd, sinks, touched
from actlens.analysis.steerability import steerability
from actlens.core import metrics
from actlens.core.corpora import EVAL_PROMPTS, SENTIMENT_PAIRS, WEDDING_PAIRS
from actlens.experiments import sweeps
from actlens.figures.jobs import FigureJob, Job, Output
from actlens.plots import diagnostics as plots
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
    # The CSV is the heatmap's data (every layer and position), not only the flagged cells: a model
    # without sinks still gets its norm profile, and the flagged cells are the rows with flagged=True.
    return Output(plots.fig_sinks(report), report.profile(), dict(threshold=report.threshold, texts="reference_texts.txt"),
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


# --- one KL budget across layers; steerability predictors against the measured effect ------------------
SETS = (("sentiment", SENTIMENT_PAIRS, "sentiment"), ("weddings", WEDDING_PAIRS, "topic_hit"))
_STUDIES: dict[int, pd.DataFrame] = {}


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _spearman_ci(x: np.ndarray, y: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Spearman's rho with a percentile bootstrap CI over points (resampled with replacement)."""
    rng = np.random.default_rng(seed)
    boots = [_spearman(x[i], y[i]) for i in (rng.integers(0, len(x), len(x)) for _ in range(n))]
    boots = [b for b in boots if not np.isnan(b)]
    lo, hi = (np.percentile(boots, [2.5, 97.5]) if boots else (np.nan, np.nan))
    return _spearman(x, y), float(lo), float(hi)


def _budget(job: Job) -> float:
    return 0.002 if job.smoke else DEFAULT_KL  # tiny random models saturate near 0.02 nats


def layer_study(job: Job) -> pd.DataFrame:
    """Per (pair set, layer): steerability, the coefficient at the KL budget, and sampled effects under
    that coefficient and under an equal-units coefficient (computed once per run, shared by two figures)."""
    if id(job) in _STUDIES:
        return _STUDIES[id(job)]
    n = job.n_layers
    layers = [1, 2] if job.smoke else [round(f * n) for f in (0.1, 0.3, 0.5, 0.7, 0.9)]
    prompts = list(EVAL_PROMPTS[:2] if job.smoke else EVAL_PROMPTS[:24])
    seeds = job.seeds(1, 1)
    sampling = sweeps.Sampling(max_new_tokens=job.max_new_tokens or (6 if job.smoke else 20))
    rows = []
    folder = job.out / "steerability_effect"
    folder.mkdir(parents=True, exist_ok=True)
    for name, pairs, metric in SETS:
        spec = sweeps.mean_diff_spec(pairs, name=f"mean-diff {name}")
        cals = {}
        for layer in layers:
            vector = spec.build(job.model, layer)
            cals[layer] = (vector, calibrate(job.model, vector, target_kl=_budget(job), align="all"))
        units = float(np.median([c.units for _, c in cals.values()]))
        base = sweeps.sweep(job.model, sweeps.Grid([spec], [layers[0]], [1.0], prompts, seeds, controls=("unsteered",)),
                            sampling=sampling, out=folder / f"{name}.unsteered.jsonl", batch_size=job.batch_size,
                            progress=job.progress, limit=None)
        unsteered = base.completions()
        unsteered = unsteered[unsteered.condition == "unsteered"].set_index(["prompt", "seed"])[metric]
        for layer, (vector, cal) in cals.items():
            report = steerability(job.model, pairs, layer, prompts=prompts, coeff=cal.coeff)
            c_units = coeff_from_units(job.model, vector, units)
            at_units = steerability(job.model, pairs, layer, prompts=prompts, coeff=c_units)
            grid = sweeps.Grid([spec], [layer], [round(cal.coeff, 6)], prompts, seeds, controls=())
            result = sweeps.sweep(job.model, grid, sampling=sampling, out=folder / f"{name}.L{layer}.jsonl",
                                  batch_size=job.batch_size, progress=job.progress)
            cell = result.completions()
            curve = cal.curve.sort_values("coeff")
            kl_units = float(np.exp(np.interp(np.log(c_units), np.log(curve.coeff), np.log(curve.mean_kl.clip(1e-12)))))
            shift = cell[metric].to_numpy(float) - unsteered.loc[list(zip(cell.prompt, cell.seed,
                                                                          strict=True))].to_numpy(float)
            lo, hi = metrics.bootstrap_ci(shift)
            per_prompt = pd.Series(shift).groupby(cell.prompt.to_numpy()).mean()
            logit = {}
            for scheme, r in (("kl", report), ("units", at_units)):
                llo, lhi = metrics.bootstrap_ci(r.prompt_shifts.numpy())
                logit |= {f"logit_{scheme}": float(r.prompt_shifts.mean()), f"logit_{scheme}_low": llo,
                          f"logit_{scheme}_high": lhi, f"anti_logit_{scheme}": r.anti_steerable}
            rows.append(dict(set=name, metric=metric, layer=layer, consistency=report.consistency,
                             separation=report.separation, coeff_kl=cal.coeff, units_at_budget=cal.units,
                             kl_at_coeff=cal.mean_kl, coeff_units=c_units, units=units, kl_at_units=kl_units,
                             effect_kl=float(shift.mean()), effect_kl_low=lo, effect_kl_high=hi,
                             anti_kl=float((per_prompt < 0).mean()), **logit))
    _STUDIES[id(job)] = pd.DataFrame(rows)
    return _STUDIES[id(job)]


def kl_budget(job: Job) -> Output:
    study = layer_study(job)

    fig = plots.fig_layer_effects(study, effect="logit", title=f"One KL budget ({DEFAULT_KL:g} nats/token) across layers "
                                  f"({job.name or 'model'}; mean-difference vectors, all positions)")
    notes = [f"Mean-difference vectors (added at every position) calibrated with actlens.analysis.calibrate to mean KL "
             f"{_budget(job):g} nats/token on the 12 shipped neutral texts, at layers {sorted(set(study.layer))}; "
             "compared with an equal-units scheme (every layer at the median over layers of the calibrated size). Effect "
             "for both schemes: the mean shift of the next-token log-odds of the pairs' contrasting tokens after 24 "
             "prompts (actlens.analysis.steerability's default metric); for the KL budget also the paired shift of the sampled "
             "metric against unsteered completions (24 prompts × 1 seed, 20 tokens).",
             "Transfer across models: compare units_at_budget and the log-odds shifts with the same figure of the "
             "other embedded model (figures/README.md puts them side by side)."]
    for name, group in study.groupby("set", sort=False):
        kl_ok = (group.kl_at_coeff - _budget(job)).abs().max()
        notes.append(f"{name}: the budget needs {group.units_at_budget.min():.2f}–{group.units_at_budget.max():.2f} "
                     f"typical residual norms depending on layer (largest error of the achieved KL: {kl_ok:.3f} nats); "
                     f"at equal units ({group.units.iloc[0]:.2f}) the KL ranges {group.kl_at_units.min():.3f}–"
                     f"{group.kl_at_units.max():.3f} nats.")
        for scheme in ("kl", "units"):
            e = group[f"logit_{scheme}"]
            notes.append(f"{name}, {'KL budget' if scheme == 'kl' else 'equal units'}: next-token contrast log-odds shift "
                         "per layer " + ", ".join(f"L{int(r.layer)} {r[f'logit_{scheme}']:+.3f} [{r[f'logit_{scheme}_low']:+.3f}, "
                                                  f"{r[f'logit_{scheme}_high']:+.3f}]" for _, r in group.iterrows())
                         + f"; spread (max − min) {e.max() - e.min():.3f}, std {e.std():.3f}.")
        notes.append(f"{name}, KL budget: sampled {group.metric.iloc[0]} shift vs unsteered per layer "
                     + ", ".join(f"L{int(r.layer)} {r.effect_kl:+.3f} [{r.effect_kl_low:+.3f}, {r.effect_kl_high:+.3f}]"
                                 for _, r in group.iterrows()) + ".")
        spread_kl, spread_u = group.logit_kl.std(), group.logit_units.std()
        cv_kl = spread_kl / abs(group.logit_kl.mean()) if group.logit_kl.mean() else float("nan")
        cv_u = spread_u / abs(group.logit_units.mean()) if group.logit_units.mean() else float("nan")
        verdict = ("about as uniform across layers as equal units" if abs(cv_kl - cv_u) <= 0.05 * max(cv_kl, cv_u)
                   else "MORE uniform effects across layers than equal units" if cv_kl < cv_u
                   else "LESS uniform effects across layers than equal units")
        notes.append(f"{name}: the KL budget gives {verdict} (log-odds shift, coefficient of variation "
                     f"{cv_kl:.2f} vs {cv_u:.2f}).")
    return Output(fig, study, dict(target_kl=_budget(job), sets=[s[0] for s in SETS]), job.seeds(1, 1), notes,
                  sorted((job.out / "steerability_effect").glob("*.jsonl")))


def steerability_effect(job: Job) -> Output:
    study = layer_study(job)
    fig = plots.fig_predictors(study, effect="effect_kl", title="Steerability predictors against the measured effect "
                               f"at a KL budget of {DEFAULT_KL:g} ({job.name or 'model'}; one point per layer)")
    notes = ["Consistency and held-out separation (actlens.analysis.steerability, last-token reads of the pairs) against the "
             "measured effect (paired shift vs unsteered at the KL-budget coefficient), across layers. Spearman's rho "
             "with a 95 % bootstrap CI over layers (few points: wide intervals)."]
    for name, group in [*study.groupby("set", sort=False)]:
        for predictor in ("consistency", "separation"):
            rho, lo, hi = _spearman_ci(group[predictor].to_numpy(), group.effect_kl.to_numpy())
            rho2, lo2, hi2 = _spearman_ci(group[predictor].to_numpy(), group.logit_kl.to_numpy())
            notes.append(f"{name}: rho({predictor}, sampled effect) = {rho:+.2f} [{lo:+.2f}, {hi:+.2f}]; "
                         f"rho({predictor}, log-odds shift) = {rho2:+.2f} [{lo2:+.2f}, {hi2:+.2f}]; over {len(group)} "
                         f"layers ({predictor} {group[predictor].min():.2f}–{group[predictor].max():.2f}).")
        rho, lo, hi = _spearman_ci(group.logit_kl.to_numpy(), group.effect_kl.to_numpy())
        notes.append(f"{name}: for comparison, rho(next-token contrast log-odds shift, effect) = {rho:+.2f} "
                     f"[{lo:+.2f}, {hi:+.2f}]. Anti-steerable prompts (sampled metric moved against the vector, "
                     f"mean over seeds): {group.anti_kl.min():.0%}–{group.anti_kl.max():.0%} per layer.")
    return Output(fig, study, dict(target_kl=_budget(job), sets=[s[0] for s in SETS]), job.seeds(1, 1), notes, [])


JOBS = {
    "sinks": FigureJob(
        "Attention sinks: residual norm per layer and position",
        "Largest ‖resid_pre‖ relative to the layer's median (reference texts, positions after BOS) per layer and "
        "position, and the tokens flagged as sinks (≥ 4× the median) after BOS (`actlens.analysis.sinks`).",
        sinks_figure, False),
    "sink_aware": FigureJob(
        "Sink-aware ActAdd against the faithful recipe",
        "Love − Hate sentiment (VADER) and ' weddings' topic rate of sampled completions for the faithful "
        "front-aligned ActAdd vector and the sink-aware one (`actlens.analysis.sinks.sink_aware_actadd`: read behind a shared "
        "prefix, sink rows zeroed), each with a norm-matched random control, against unsteered completions of the "
        "same prompts and seeds. Error bars: 95 % bootstrap CIs over prompts × seeds.",
        sink_aware, True),
    "kl_budget": FigureJob(
        "One KL budget across layers: calibrated strength and effect",
        f"Mean-difference sentiment and weddings vectors calibrated (`actlens.analysis.calibrate`) to {DEFAULT_KL:g} nats/token "
        "of mean KL on neutral text at several layers: the size that needs in residual-norm units, and the sampled "
        "effect (paired shift vs unsteered) under the KL budget and under equal units. Error bars: 95 % bootstrap CIs.",
        kl_budget, True),
    "steerability_effect": FigureJob(
        "Steerability predictors against the measured effect",
        "Pair consistency and held-out separation AUROC (`actlens.analysis.steerability`) against the measured effect at the "
        "KL-budget coefficient, one point per layer and pair set; Spearman correlations with bootstrap CIs in the "
        "notes.", steerability_effect, True),
}


__all__ = ["JOBS"]
