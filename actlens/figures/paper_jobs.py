"""The paper's figures: topic rate by layer, perplexity by relevance, sentiment by coefficient, capital recall,
and the layer ablation (figures 1-4 and the ablation of ``actlens figures``).

Each job takes a :class:`~actlens.figures.jobs.Job` and returns an :class:`~actlens.figures.jobs.Output`. Layers
are chosen as fractions of the model's depth so that a tiny model and SmolLM2-135M (30 layers) run the same code.
"""

import pandas as pd

from actlens.analysis import ablation
from actlens.core import corpora, metrics
from actlens.core.corpora import EVAL_PROMPTS, KL_TEXTS, SENTIMENT_PAIRS, TOPIC_PROMPT, WEDDING_PAIRS
from actlens.experiments import evaluate, sweeps
from actlens.figures.jobs import FigureJob, Job, Output
from actlens.figures.jobs import name_of as _name
from actlens.plots import sweeps as plots
from actlens.steering.batched import Request
from actlens.vectors import actadd_vector, random_like


def _fmt(stats: pd.Series) -> str:
    return f"{stats['mean']:.3f} [{stats.ci_low:.3f}, {stats.ci_high:.3f}]"


# --- 1. topic rate against the injection layer ------------------------------------------------------
def topic_by_layer(job: Job) -> Output:
    seeds, layers = job.seeds(2, 48), job.layers()
    actadd = sweeps.pair_spec(" weddings", "", name="ActAdd ' weddings' (front)", prefix=None)
    mean_diff = sweeps.mean_diff_spec(WEDDING_PAIRS, name="mean-diff weddings (all positions)")
    a = job.sweep("topic_by_layer.actadd", sweeps.Grid([actadd], layers, [1.0], [TOPIC_PROMPT], seeds,
                                                       controls=("unsteered",)))
    b = job.sweep("topic_by_layer.mean_diff", sweeps.Grid([mean_diff], layers, [4.0], [TOPIC_PROMPT], seeds,
                                                          controls=()))
    rate = pd.concat([a.summary("topic_hit"), b.summary("topic_hit")], ignore_index=True)
    count = pd.concat([a.summary("topic_count"), b.summary("topic_count")], ignore_index=True)
    data = pd.concat([rate.assign(metric="topic_hit"), count.assign(metric="topic_count")], ignore_index=True)
    fig = plots.fig_topic_by_layer(rate, count, title=f"Weddings: topic rate by injection layer ({_name(job)}, "
                                   f"prompt {TOPIC_PROMPT!r}, {len(seeds)} samples per layer)")
    base = rate[rate.condition == "unsteered"].iloc[0]
    notes = [f"Unsteered: {_fmt(base)} of completions contain a wedding word."]
    for vector, group in rate[rate.condition == "steered"].groupby("vector", sort=False):
        best = group.loc[group["mean"].idxmax()]
        above = group[group.ci_low > base.ci_high].layer.tolist()
        notes.append(f"{vector}, c={best.coeff:g}: best layer {int(best.layer)} ({_fmt(best)}); layers whose CI "
                     f"lies above unsteered: {[int(x) for x in above] or 'none'}.")
    # The paper's claim is about its own recipe, so the verdict reads the ActAdd vector only.
    peak = rate[(rate.condition == "steered") & (rate.vector == actadd.name)]["mean"].max()
    notes.append("Paper (GPT-2-XL, ActAdd, c=1): effective from layer 0, peak near layer 6 of 48, '> 90 %' vs ~2 % "
                 "unsteered. " + (f"Here ActAdd's peak ({peak:.0%}) reaches that level." if peak >= 0.9 else
                                  f"Here ActAdd's best rate is {peak:.0%}: the paper's size of effect is NOT reproduced "
                                  "(the mean-difference vector above is not the paper's recipe)."))
    config = dict(prompt=TOPIC_PROMPT, layers=layers, sweeps=[a.config, b.config])
    return Output(fig, data, config, seeds, notes, [job.out / "topic_by_layer.actadd.completions.jsonl",
                                                     job.out / "topic_by_layer.mean_diff.completions.jsonl"])


# --- 2. perplexity ratio against topic relevance ----------------------------------------------------
BINS = [(-1.0, 0.0, "0"), (0.0, 0.01, "(0, 1%]"), (0.01, 0.02, "(1%, 2%]"), (0.02, 1.0, "> 2%")]


def ppl_by_relevance(job: Job) -> Output:
    n = job.samples or (8 if job.smoke else 80)
    sample = corpora.relevance_sample(n)
    layer, coeff = job.layer(1 / 3), 1.0
    vector = actadd_vector(job.model, " weddings", "", layer)
    frame = evaluate.perplexity_ratio(job.model, [t for t, _ in sample], vector, coeff, prefix="weddings ",
                                      max_tokens=32 if job.smoke else 96)
    frame["relevance"] = [sample[i][1] for i in frame.text]
    for order, (lo, hi, label) in enumerate(BINS):
        mask = (frame.relevance > lo) & (frame.relevance <= hi)
        frame.loc[mask, "bin"], frame.loc[mask, "order"] = label, order
    summary = metrics.summarise(frame.rename(columns={"ppl_ratio": "value"}), ["condition", "bin", "order"])
    fig = plots.fig_ppl_by_relevance(summary, title=f"Perplexity ratio vs wedding relevance (ActAdd ' weddings', "
                                     f"layer {layer}, c={coeff:g}; {_name(job)}; Pride and Prejudice paragraphs)")
    notes = []
    for condition, group in summary.groupby("condition", sort=False):
        group = group.sort_values("order")
        first, last = group.iloc[0], group.iloc[-1]
        notes.append(f"{condition}: ratio {_fmt(first)} at relevance {first.bin} and {_fmt(last)} at {last.bin}.")
    steer = summary[summary.condition == "steered"].sort_values("order")
    falls = len(steer) > 1 and steer["mean"].iloc[-1] < steer["mean"].iloc[0]
    zero = summary[summary.order == 0].set_index("condition")["mean"]
    if {"steered", "prompting"} <= set(zero.index):
        worse = zero["prompting"] > zero["steered"]
        notes.append(f"Unrelated paragraphs (relevance 0): prompting {zero['prompting']:.3f} vs ActAdd "
                     f"{zero['steered']:.3f}; prompting hurts unrelated text "
                     + ("more than ActAdd, as in the paper (App. B)." if worse else
                        "LESS than ActAdd here, unlike the paper (App. B: 1.132 vs 0.994)."))
    notes.append("Paper (GPT-2-XL, OpenWebText): the ratio falls as relevance rises (by up to ~4 %); prompting "
                 "with 'weddings' hurts unrelated text more than ActAdd (App. B: 1.132 vs 0.994). Here the steered "
                 + ("ratio falls with relevance, as in the paper." if falls else "ratio does NOT fall with relevance."))
    config = dict(layer=layer, coeff=coeff, pair=[" weddings", ""], n_texts=n, max_tokens=32 if job.smoke else 96,
                  bins=[b[2] for b in BINS], prefix="weddings ", control_seed=0)
    return Output(fig, frame, config, [0], notes)


# --- 3. sentiment against the coefficient ---------------------------------------------------------
def sentiment_by_coeff(job: Job) -> Output:
    seeds = job.seeds(1, 6)
    prompts = EVAL_PROMPTS[:2] if job.smoke else EVAL_PROMPTS[:8]
    la, lm = job.layer(0.2), job.layer(0.4)
    coeffs_a = [-4.0, 4.0] if job.smoke else [-16.0, -4.0, -1.0, 1.0, 4.0, 16.0]
    coeffs_m = [-4.0, 4.0] if job.smoke else [-8.0, -4.0, -2.0, 2.0, 4.0, 8.0]
    actadd = sweeps.pair_spec("Love", "Hate", name="ActAdd Love−Hate (front)")
    mean_diff = sweeps.mean_diff_spec(SENTIMENT_PAIRS, name="mean-diff sentiment (all positions)")
    a = job.sweep("sentiment_by_coeff.actadd", sweeps.Grid([actadd], [la], coeffs_a, prompts, seeds))
    b = job.sweep("sentiment_by_coeff.mean_diff", sweeps.Grid([mean_diff], [lm], coeffs_m, prompts, seeds,
                                                              controls=("random",)))
    summary = pd.concat([a.summary("sentiment"), b.summary("sentiment")], ignore_index=True)
    fig = plots.fig_sentiment_by_coeff(summary, title=f"Sentiment vs coefficient ({_name(job)}; {len(prompts)} prompts "
                                       f"× {len(seeds)} samples; VADER)")
    base = summary[summary.condition == "unsteered"].iloc[0]
    notes = [f"Unsteered mean VADER compound: {_fmt(base)}."]
    varied = summary[summary.condition.isin(["steered", "random", "prompting"])]
    for vector, group in varied.groupby("vector", sort=False):
        for condition, sub in group.groupby("condition", sort=False):
            if condition == "prompting":
                notes.append(f"{vector}, prompting baseline: {_fmt(sub.iloc[0])}.")
                continue
            hi, lo = sub.loc[sub.coeff.idxmax()], sub.loc[sub.coeff.idxmin()]
            notes.append(f"{vector}, {condition}: c={lo.coeff:g} → {_fmt(lo)}; c={hi.coeff:g} → {_fmt(hi)}.")
    steered = summary[(summary.condition == "steered") & (summary.vector == actadd.name)]
    moved = bool((steered.ci_low > base.ci_high).any())
    md = summary[summary.vector == mean_diff.name].set_index(["condition", "coeff"])["mean"]
    if len(md):
        c = max(k for (cond, k) in md.index if cond == "steered")
        if ("random", c) in md.index:
            notes.append(f"Mean-difference vector at c={c:g}: {md[('steered', c)]:+.3f} vs a random vector of the same "
                         f"norm {md[('random', c)]:+.3f} (unsteered {base['mean']:+.3f}).")
    notes.append("Paper (LLaMA-3.1-8B, l=6, c=3): ActAdd raises the positive-sentiment rate 0.200 → 0.349 and beats "
                 "prompting (0.246). Here front-aligned ActAdd " + ("moves sentiment above the unsteered CI at some "
                 "coefficient." if moved else "does NOT move sentiment beyond the unsteered CI at any coefficient."))
    config = dict(prompts=list(prompts), sweeps=[a.config, b.config])
    return Output(fig, summary, config, seeds, notes, [job.out / "sentiment_by_coeff.actadd.completions.jsonl",
                                                        job.out / "sentiment_by_coeff.mean_diff.completions.jsonl"])


# --- 4. capital recall P@K -----------------------------------------------------------------------------
def capital_recall(job: Job) -> Output:
    facts = list(corpora.capital_pairs())[:8 if job.smoke else None]
    lw, ll = job.layer(1 / 3), job.layer(0.2)
    wed = actadd_vector(job.model, " weddings", "", lw)
    love = actadd_vector(job.model, "Love", "Hate", ll)
    conditions: dict[str, Request | None] = {
        "unsteered": None,
        f"ActAdd ' weddings' L{lw} c=1": Request(wed, 1.0),
        f"random (same norm) L{lw} c=1": Request(random_like(wed, seed=0), 1.0),
        f"ActAdd Love−Hate L{ll} c=4": Request(love, 4.0),
    }
    ranks = pd.concat([evaluate.fact_ranks(job.model, facts, request=r).assign(condition=name)
                       for name, r in conditions.items()], ignore_index=True)
    rows = []
    for name, group in ranks.groupby("condition", sort=False):
        for k in sorted({*evaluate.DEFAULT_KS, 10}):
            hits = (group["rank"] < k).astype(float).to_numpy()
            lo, hi = metrics.bootstrap_ci(hits)
            rows.append(dict(condition=name, k=k, p_at_k=float(hits.mean()), ci_low=lo, ci_high=hi, n=len(hits)))
    pk = pd.DataFrame(rows)
    fig = plots.fig_recall(pk, title=f"Capital recall P@K, 'The capital of X is' ({len(facts)} countries; "
                           f"{_name(job)})")
    at = pk[pk.k.isin([1, 10])].set_index(["condition", "k"])
    notes = [f"{name}: P@1 {at.loc[(name, 1), 'p_at_k']:.2f} [{at.loc[(name, 1), 'ci_low']:.2f}, "
             f"{at.loc[(name, 1), 'ci_high']:.2f}], P@10 {at.loc[(name, 10), 'p_at_k']:.2f}" for name in conditions]
    drop = at.loc[("unsteered", 1), "p_at_k"] - at.loc[(f"ActAdd ' weddings' L{lw} c=1", 1), "p_at_k"]
    notes.append("Paper (GPT-2-XL, ConceptNet, l=16, c=1): 'negligible impact' on P@K. Here the weddings vector "
                 + (f"costs {drop:.2f} in P@1: NOT negligible." if drop > 0.05 else f"changes P@1 by {-drop:+.2f}: "
                    "negligible, as in the paper."))
    config = dict(template="The capital of {} is", n_facts=len(facts), ks=sorted({*evaluate.DEFAULT_KS, 10}),
                  conditions=list(conditions), source="actlens/data/capitals.json")
    return Output(fig, pd.concat([pk, ranks], keys=["p_at_k", "ranks"]).reset_index(level=0, names="table"),
                  config, [0], notes)


# --- 9. layer ablation ------------------------------------------------------------------------------------------
def layer_ablation(job: Job) -> Output:
    spec = sweeps.pair_spec(" weddings", "", prefix=None)
    texts = list(KL_TEXTS)
    layers = job.layers(every=True)
    by_layer = ablation.inject_each_layer(job.model, spec, texts, 1.0, layers=layers)
    at = job.layer(0.2)
    later = list(range(at + 1, job.n_layers))
    ablated = ablation.ablate_downstream(job.model, actadd_vector(job.model, " weddings", "", at), 1.0, texts,
                                         layers=later)
    fig = plots.fig_ablation(by_layer, ablated, title=f"Weddings vector: inject at each layer, ablate downstream "
                             f"of layer {at} ({_name(job)})")
    steer = by_layer[by_layer.condition == "steered"]
    best = steer.loc[steer.topic_shift.idxmax()]
    notes = [f"Injecting at each layer: largest wedding-token log-mass shift {best.topic_shift:+.2f} nats at layer "
             f"{int(best.layer)} (mean KL {best.kl:.3f} nats)."]
    for (mode, direction), group in ablated.groupby(["mode", "direction"], sort=False):
        group = group.sort_values("layer")
        first, back = group.iloc[0], group[group.kl_retained >= 0.9]
        notes.append(f"{mode}-ablating the {direction} direction at layer {int(first.layer)} keeps "
                     f"{first.kl_retained:.0%} of the KL effect (the ablation alone: {first.side_kl:.3f} nats); "
                     + (f"from layer {int(back.layer.iloc[0])} on, ≥ 90 % is kept." if len(back) else
                        "no later layer keeps ≥ 90 %."))
    notes.append("The paper has no ablation. Read: where ablating a direction removes the effect, the effect is still "
                 "carried along it; where the kept share returns to ~1, it has moved into other directions or "
                 "positions. Zero-ablating a high-norm direction disturbs the model by itself (large side effect).")
    data = pd.concat([by_layer.assign(part="inject_each_layer"), ablated.assign(part="ablate_downstream")],
                     ignore_index=True)
    config = dict(pair=[" weddings", ""], coeff=1.0, texts=texts, inject_layers=layers, ablate_after=at,
                  ablated_layers=later, modes=["zero", "mean"], directions=["injected", "measured"])
    return Output(fig, data, config, [0], notes)


JOBS: dict[str, FigureJob] = {
    "topic_by_layer": FigureJob(
        "Topic (weddings) rate against the injection layer",
        "Share of sampled completions of the paper's prompt that contain a wedding word (left) and the mean number "
        "of wedding words (right), for ActAdd ' weddings' − '' added front-aligned at c = 1 (the paper's §2.3 "
        "sweep) and for a mean-difference weddings vector added at every position, at each injection layer; the "
        "unsteered rate is the dotted line. Error bars: 95 % bootstrap CIs over samples.",
        topic_by_layer, True),
    "ppl_by_relevance": FigureJob(
        "Perplexity ratio against the text's topic relevance",
        "Perplexity of Pride and Prejudice paragraphs under ActAdd ' weddings' (steered), a norm-matched random "
        "vector and the prompt prefix 'weddings ', divided by the unsteered perplexity, binned by the paragraph's "
        "share of wedding words (the paper's §2.1 on OpenWebText). Predictions at injected positions are masked.",
        ppl_by_relevance, False),
    "sentiment_by_coeff": FigureJob(
        "Sentiment shift against the coefficient, with prompting and random controls",
        "Mean VADER compound score of completions of neutral prompts against the coefficient, for ActAdd "
        "Love − Hate (front-aligned) and a mean-difference sentiment vector (all positions), with a norm-matched "
        "random vector at each coefficient, the prompting baseline ('Love ' prepended) and the unsteered level.",
        sentiment_by_coeff, True),
    "capital_recall": FigureJob(
        "Capital recall P@K with and without steering",
        "Share of 58 countries whose capital's first token is among the top K next tokens after 'The capital of X "
        "is', unsteered, with the weddings vector, a random vector of the same norm and Love − Hate (the paper's "
        "§2.7 LAMA P@K, on capitals). CIs: bootstrap over countries.",
        capital_recall, False),
    "layer_ablation": FigureJob(
        "Inject at each layer; ablate the vector's direction downstream",
        "Left: mean KL and the shift of log-probability mass on wedding tokens when the weddings vector is injected "
        "at each layer (random vector dashed). Right: share of that effect kept when the component along the "
        "injected direction, or along the measured steered − unsteered difference, is zeroed or mean-replaced at "
        "each later layer in both runs.", layer_ablation, False),
}
"""The paper's figures, by id (their place in the run order is :data:`actlens.figures.registry.JOBS`)."""


__all__ = ["JOBS", "capital_recall", "layer_ablation", "ppl_by_relevance", "sentiment_by_coeff", "topic_by_layer"]
