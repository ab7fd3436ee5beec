"""Figure job comparing ways to find a direction at equal distribution shift, with a conditional-steering demo.

``directions_at_equal_kl``: ActAdd, mean difference, PCA (``pca_diff``, ``pca_center``), a logistic probe, a
norm-matched random vector and prompting, for sentiment and the weddings topic. Every vector is calibrated
(:func:`actlens.analysis.calibrate`) to the same per-token KL budgets on neutral text, so no direction wins by being
stronger; completions are drawn with keyed sampling (paired with the unsteered completion of the same prompt and
seed), scored by the concept metric (VADER sentiment; share of completions with a wedding word) and by fluency
(perplexity of the completion under the unsteered model, as a ratio to the paired unsteered completion's).
Prompting (a phrase before the prompt) has no coefficient: its KL is measured on the same texts and it is one point.
"""

import math

import numpy as np
import pandas as pd
import torch

from actlens.analysis.calibrate import calibrate, default_texts
from actlens.core import metrics
from actlens.core.corpora import (
    EVAL_PROMPTS,
    FOOD_PAIRS,
    FOOD_PROMPTS,
    OTHER_PROMPTS,
    PROMPTING_PREFIXES,
    SENTIMENT_PAIRS,
    WEDDING_PAIRS,
)
from actlens.core.prompts import encode
from actlens.core.sampling import Sampling, key_seed
from actlens.experiments.evaluate import score_texts
from actlens.figures.jobs import FigureJob, Job, Output
from actlens.plots.directions import fig_directions
from actlens.steering.batched import Request, encode_rows, forward_rows, generate_rows
from actlens.steering.conditional import condition_scores, conditional, pick_condition
from actlens.vectors import actadd_vector, mean_diff_vector, random_like
from actlens.vectors.pca import pca_vector
from actlens.vectors.probe import probe_vector

BUDGETS = (0.05, 0.1, 0.2)
TASKS = {"sentiment": (SENTIMENT_PAIRS, ("Love", "Hate")), "weddings": (WEDDING_PAIRS, (" weddings", ""))}


def _metric(task: str, text: str) -> float:
    return metrics.sentiment([text])[0] if task == "sentiment" else float(metrics.topic_count(text) > 0)


def _vectors(model, layer: int, pairs, actadd: tuple[str, str]) -> dict:
    md = mean_diff_vector(model, pairs, layer)
    return {"ActAdd": (actadd_vector(model, *actadd, layer), "front"), "mean difference": (md, "all"),
            "PCA (pca_diff)": (pca_vector(model, pairs, layer, method="pca_diff"), "all"),
            "PCA (pca_center)": (pca_vector(model, pairs, layer, method="pca_center"), "all"),
            "probe": (probe_vector(model, pairs, layer), "all"), "random": (random_like(md, seed=0), "all")}


def _generate(job: Job, texts: list[str], requests: list, keys: list[int], settings: Sampling) -> list[list[int]]:
    rows = encode_rows(job.model, texts, requests, short_prompt="pad")
    out: list[list[int]] = []
    for i in range(0, len(rows), job.batch_size):
        out += generate_rows(job.model, rows[i:i + job.batch_size], requests[i:i + job.batch_size],
                             keys[i:i + job.batch_size], settings)
    return out


def _nll(job: Job, prompt_texts: list[str], completions: list[list[int]]) -> list[float]:
    """Mean NLL per completion token under the unsteered model, given the (unprefixed) prompt; nan if empty."""
    model, out = job.model, []
    rows = [encode(model, p) for p in prompt_texts]
    for i in range(0, len(rows), job.batch_size):
        chunk = [r + c for r, c in zip(rows[i:i + job.batch_size], completions[i:i + job.batch_size], strict=True)]
        logits, batch = forward_rows(model, chunk, [None] * len(chunk))
        logp = torch.log_softmax(logits.float(), -1)
        for j, (r, c) in enumerate(zip(rows[i:i + job.batch_size], completions[i:i + job.batch_size], strict=True)):
            if not c:
                out.append(math.nan)
                continue
            at = [batch.starts[j] + len(r) - 1 + t for t in range(len(c))]
            out.append(float(-logp[j, at, c].mean()))
    return out


def _ci(values: np.ndarray) -> tuple[float, float, float]:
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return math.nan, math.nan, math.nan
    lo, hi = metrics.bootstrap_ci(values) if len(values) > 1 else (values[0], values[0])
    return float(values.mean()), float(lo), float(hi)


def directions_at_equal_kl(job: Job) -> Output:
    model = job.model
    layer = job.layer(0.4)
    budgets = (0.01,) if job.smoke else BUDGETS  # tiny random models barely move
    prompts = EVAL_PROMPTS[:2] if job.smoke else EVAL_PROMPTS[:10]
    seeds = job.seeds(1, 2)
    settings = Sampling(max_new_tokens=job.max_new_tokens or (6 if job.smoke else 24))
    cal_texts = list(default_texts())
    rows, notes, calib = [], [], {}
    for task, (pairs, actadd) in TASKS.items():
        conditions: list[tuple[str, float, float, float, Request | None, str]] = []  # method, budget, coeff, kl, ...
        for method, (vector, align) in _vectors(model, layer, pairs, actadd).items():
            for budget in budgets:
                try:
                    cal = calibrate(model, vector, target_kl=budget, align=align, texts=cal_texts)
                except ValueError as err:  # e.g. a front-aligned vector that cannot move neutral text that much
                    notes.append(f"{task}, {method}: budget {budget:g} not reachable ({str(err).split(';')[0]}).")
                    continue
                calib[(task, method, budget)] = cal
                conditions.append((method, budget, cal.coeff, float(cal.mean_kl), Request(vector, cal.coeff, align),
                                   ""))
        prefix = PROMPTING_PREFIXES[task]
        kl = float(score_texts(model, cal_texts, [("prompting", None, prefix)]).kl.mean())
        conditions.append(("prompting", math.nan, math.nan, kl, None, prefix))
        conditions.append(("unsteered", math.nan, 0.0, 0.0, None, ""))
        texts, requests, keys, meta = [], [], [], []
        for cond in conditions:
            for prompt in prompts:
                for seed in seeds:
                    texts.append(cond[5] + prompt)
                    requests.append(cond[4])
                    keys.append(key_seed(seed, prompt))
                    meta.append((cond, prompt, seed))
        tokens = _generate(job, texts, requests, keys, settings)
        completions = [model.tokenizer.decode(t, skip_special_tokens=True) for t in tokens]
        nll = _nll(job, [m[1] for m in meta], tokens)
        frame = pd.DataFrame(dict(method=[m[0][0] for m in meta], budget=[m[0][1] for m in meta],
                                  prompt=[m[1] for m in meta], seed=[m[2] for m in meta],
                                  metric=[_metric(task, c) for c in completions], nll=nll))
        base = frame[frame.method == "unsteered"].set_index(["prompt", "seed"])
        for cond in conditions:
            method, budget = cond[0], cond[1]
            sel = frame[(frame.method == method) & ((frame.budget == budget) | (np.isnan(budget) & frame.budget.isna()))]
            ref = base.loc[list(zip(sel.prompt, sel.seed, strict=True))]
            mean, lo, hi = _ci(sel.metric.to_numpy(float))
            shift, slo, shi = _ci(sel.metric.to_numpy(float) - ref.metric.to_numpy(float))
            lr, llo, lhi = _ci(sel.nll.to_numpy(float) - ref.nll.to_numpy(float))
            cal = calib.get((task, method, budget))
            rows.append(dict(task=task, method=method, budget=budget, coeff=cond[2], units=cal.units if cal else math.nan,
                             measured_kl=cond[3], n=len(sel), metric="sentiment" if task == "sentiment" else "topic_hit",
                             mean=mean, ci_low=lo, ci_high=hi, shift=shift, shift_low=slo, shift_high=shi,
                             ppl_ratio=math.exp(lr), ppl_low=math.exp(llo), ppl_high=math.exp(lhi)))
    data = pd.DataFrame(rows)
    for task in TASKS:
        sub = data[(data.task == task) & ~data.method.isin(["unsteered", "prompting"])]
        for budget in budgets:
            at = sub[sub.budget == budget].sort_values("shift", ascending=False)
            if len(at):
                ranking = ", ".join(f"{r.method} {r['shift']:+.3f} [{r.shift_low:+.3f}, {r.shift_high:+.3f}] "
                                    f"(ppl ×{r.ppl_ratio:.2f})" for _, r in at.iterrows())
                notes.append(f"{task}, KL budget {budget:g}: shift vs unsteered, best first: {ranking}.")
        p = data[(data.task == task) & (data.method == "prompting")].iloc[0]
        notes.append(_reading(task, sub, p, budgets))
        notes.append(f"{task}, prompting ({PROMPTING_PREFIXES[task]!r}, KL {p.measured_kl:.3f} on the calibration "
                     f"texts): shift {p['shift']:+.3f} [{p.shift_low:+.3f}, {p.shift_high:+.3f}] "
                     f"(ppl ×{p.ppl_ratio:.2f}).")
    demo, demo_notes = conditional_demo(job, layer, seeds, settings, calib)
    notes += demo_notes
    demo_path = job.out / "directions_at_equal_kl.conditional.csv"
    if not job.estimate:
        demo.to_csv(demo_path, index=False)
    fig = fig_directions(data[data.method != "unsteered"],
                         title=f"Directions at equal KL ({job.name or 'model'}, layer {layer}, {len(prompts)} prompts × "
                               f"{len(seeds)} seeds, {settings.max_new_tokens} tokens)")
    config = dict(layer=layer, budgets=list(budgets), prompts=list(prompts), seeds=seeds,
                  max_new_tokens=settings.max_new_tokens, prompting=PROMPTING_PREFIXES, calibration_texts=len(cal_texts))
    return Output(fig, data, config, seeds, notes, [demo_path])


def _reading(task: str, sub: pd.DataFrame, prompting: pd.Series, budgets) -> str:
    """Which direction wins at each budget, where mean difference ranks, and how prompting compares (AxBench)."""
    parts = []
    for budget in budgets:
        at = sub[(sub.budget == budget) & (sub.method != "random")].sort_values("shift", ascending=False)
        if len(at) < 2:
            continue
        top, second = at.iloc[0], at.iloc[1]
        clear = "CIs apart" if top.shift_low > second.shift_high else "CIs overlap"
        rank = list(at.method).index("mean difference") + 1 if "mean difference" in set(at.method) else None
        beats = "beats" if prompting["shift"] > top["shift"] else "does not beat"
        parts.append(f"at {budget:g} nats {top.method} leads ({clear} with {second.method}); mean difference ranks "
                     f"{rank if rank else '-'} of {len(at)}; prompting {beats} it")
    return f"{task}, reading: " + ("; ".join(parts) if parts else "too few calibrated directions to rank") + "."


def conditional_demo(job: Job, layer: int, seeds: list[int], settings: Sampling, calib: dict
                     ) -> tuple[pd.DataFrame, list[str]]:
    """Sentiment steering only on prompts about food (CAST): the gate's accuracy and the effect on each group."""
    model = job.model
    food, other = (FOOD_PROMPTS[:2], OTHER_PROMPTS[:2]) if job.smoke else (FOOD_PROMPTS, OTHER_PROMPTS)
    texts, labels = food + other, [True] * len(food) + [False] * len(other)
    # CAST's grid search over the layers that can gate the behaviour (at or before its layer), from 20 % of the depth
    search = pick_condition(model, FOOD_PAIRS, texts, labels, layers=range(min(job.layer(0.2), layer), layer + 1))
    condition, choice, cond_layer = search.condition, search.choice, search.layer
    behaviour = mean_diff_vector(model, SENTIMENT_PAIRS, layer)
    cal = calib.get(("sentiment", "mean difference", 0.1)) or next(
        (c for (t, m, _), c in calib.items() if t == "sentiment" and m == "mean difference"), None)
    coeff = cal.coeff if cal is not None else 4.0
    source = (f"its {cal.target_kl:g}-nat calibration" if cal is not None else "no budget was reachable: c = 4")
    cv = conditional(behaviour, condition, choice.threshold, compare=choice.compare)
    gated = (condition_scores(model, condition, texts) > choice.threshold if choice.compare == "greater"
             else condition_scores(model, condition, texts) < choice.threshold).tolist()
    runs = {"unsteered": None, "conditional": Request(cv, coeff, "all"), "always": Request(behaviour, coeff, "all")}
    all_texts, requests, keys, meta = [], [], [], []
    for name, req in runs.items():
        for text, label, gate in zip(texts, labels, gated, strict=True):
            for seed in seeds:
                all_texts.append(text)
                requests.append(req)
                keys.append(key_seed(seed, text))
                meta.append((name, text, label, gate, seed))
    tokens = _generate(job, all_texts, requests, keys, settings)
    frame = pd.DataFrame(dict(run=[m[0] for m in meta], prompt=[m[1] for m in meta], food=[m[2] for m in meta],
                              gate=[m[3] for m in meta], seed=[m[4] for m in meta],
                              sentiment=metrics.sentiment([model.tokenizer.decode(t, skip_special_tokens=True)
                                                           for t in tokens]),
                              tokens=[" ".join(map(str, t)) for t in tokens]))
    base = frame[frame.run == "unsteered"].set_index(["prompt", "seed"])
    rows = []
    for name in ("conditional", "always"):
        for group, is_food in (("food prompts", True), ("other prompts", False)):
            sel = frame[(frame.run == name) & (frame.food == is_food)]
            ref = base.loc[list(zip(sel.prompt, sel.seed, strict=True))]
            shift, lo, hi = _ci(sel.sentiment.to_numpy(float) - ref.sentiment.to_numpy(float))
            same = float(np.mean(sel.tokens.to_numpy() == ref.tokens.to_numpy()))
            rows.append(dict(run=name, group=group, n=len(sel), shift=shift, shift_low=lo, shift_high=hi,
                             identical_to_unsteered=same))
    table = pd.DataFrame(rows)
    searched = ", ".join(f"{lay}: {acc:.2f}" for lay, _, acc in search.by_layer)
    notes = [f"Conditional demo: condition = food-vs-other mean difference ({len(FOOD_PAIRS)} pairs) at layer "
             f"{cond_layer}, picked with its threshold {choice.threshold:+.4f} ({choice.compare}) by best F1 on the "
             f"{len(texts)} labelled prompts (in-sample; actlens.steering.conditional.pick_condition): F1 "
             f"{choice.f1:.2f}, accuracy {choice.accuracy:.2f} (best accuracy per layer searched: {searched}). "
             f"Behaviour = sentiment mean difference at layer {layer}, coeff {coeff:.3g} ({source})."]
    for _, r in table.iterrows():
        notes.append(f"Conditional demo, {r.run} steering, {r.group}: sentiment shift {r['shift']:+.3f} "
                     f"[{r.shift_low:+.3f}, {r.shift_high:+.3f}] over {r.n} completions; "
                     f"{r.identical_to_unsteered:.0%} token-identical to unsteered.")
    return table, notes


JOBS = {
    "directions_at_equal_kl": FigureJob(
        "Directions compared at equal KL, and conditional steering",
        "ActAdd, mean difference, PCA (pca_diff, pca_center), a logistic probe, a norm-matched random vector and "
        "prompting for sentiment and weddings, each calibrated (`actlens.analysis.calibrate`) to per-token KL budgets "
        f"{', '.join(f'{b:g}' for b in BUDGETS)} nats on neutral text: concept shift vs the paired unsteered "
        "completion and perplexity ratio under the unsteered model, with bootstrap CIs; plus sentiment steering "
        "gated on food prompts (`actlens.conditional`), its accuracy and its effect on the prompts it should and "
        "should not touch (directions_at_equal_kl.conditional.csv)",
        directions_at_equal_kl, True),
}

__all__ = ["JOBS", "conditional_demo", "directions_at_equal_kl"]
