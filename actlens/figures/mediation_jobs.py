"""The ``mediation`` figure: which attention layers, MLPs and heads carry the Love−Hate ActAdd vector's effect
and the mean-difference sentiment vector's (:func:`actlens.mediation`, per-token KL)."""

import pandas as pd

from actlens.core.corpora import KL_TEXTS, SENTIMENT_PAIRS, WEDDING_PAIRS
from actlens.figures.jobs import FigureJob, Job, Output

# Neutral texts: the KL prompts and the non-wedding halves of the wedding pairs.
TEXTS = (*KL_TEXTS, *(other for _, other in WEDDING_PAIRS))


def mediation_figure(job: Job) -> Output:
    from actlens.analysis.mediation import mediation
    from actlens.plots.mediation import fig_mediation
    from actlens.vectors import actadd_vector, mean_diff_vector

    texts = list(TEXTS[:2] if job.smoke else TEXTS)
    n_boot = 50 if job.smoke else 1000
    actadd_layer, mean_layer = job.layer(0.2), job.layer(0.4)
    runs = {"Love−Hate ActAdd": (actadd_vector(job.model, "Love", "Hate", actadd_layer), 5.0, "front"),
            "mean-diff sentiment": (mean_diff_vector(job.model, SENTIMENT_PAIRS, mean_layer), 4.0, "all")}
    frames = []
    for name, (vector, coeff, align) in runs.items():
        kw = dict(align=align, position=None, n_boot=n_boot, batch_rows=64)
        layers = mediation(job.model, vector, coeff, texts, **kw)
        attn = layers[(layers.kind == "attn") & (layers.measure == "necessity")].nsmallest(2 if job.smoke else 3,
                                                                                           "fraction")
        heads = [f"head.{int(j)}.{h}" for j in attn.layer for h in range(int(job.model.cfg.n_heads))]
        frames += [layers.assign(vector=name), mediation(job.model, vector, coeff, texts, components=heads,
                                                          **kw).assign(vector=name)]
    frame = pd.concat(frames, ignore_index=True)
    notes = []
    for name, (vector, coeff, _) in runs.items():
        part = frame[(frame.vector == name) & (frame.measure == "necessity") & (frame.kind != "head")]
        top = part.nsmallest(3, "fraction")
        suff = frame[(frame.vector == name) & (frame.measure == "sufficiency") & (frame.kind != "head")].nlargest(
            3, "fraction")
        heads = frame[(frame.vector == name) & (frame.measure == "necessity") & (frame.kind == "head")].nsmallest(
            3, "fraction")
        notes.append(
            f"{name} (layer {vector.layer}, c = {coeff:g}, total KL {part.total.iloc[0]:.3f} nats): restoring "
            + ", ".join(f"{r.component} leaves {r.fraction:.2f} [{r.ci_low:.2f}–{r.ci_high:.2f}]" for r in top.itertuples())
            + " of the effect; alone, " + ", ".join(f"{r.component} recovers {r.fraction:.2f}" for r in suff.itertuples())
            + "; top heads (remaining when restored): "
            + ", ".join(f"{r.component} {r.fraction:.2f}" for r in heads.itertuples()) + ".")
    notes.append(_reading(frame, list(runs)))
    config = dict(texts=texts, metric="kl", n_boot=n_boot,
                  vectors={k: dict(layer=v.layer, site=v.site, coeff=c, align=a, kind=v.kind)
                           for k, (v, c, a) in runs.items()})
    return Output(fig_mediation(frame), frame, config, [], notes)


JOBS: dict[str, FigureJob] = {
    "mediation": FigureJob(
        "Which components carry a steering vector's effect",
        "Activation patching of the steering effect (per-token KL): for each downstream layer's attention and MLP, "
        "the share of the effect lost when its output is restored to the unsteered value (necessity) and the share "
        "it recovers alone (sufficiency), for the Love−Hate ActAdd vector and the mean-difference sentiment vector; "
        "plus the heads of the three most necessary attention layers.", mediation_figure, False),
}
"""Figure id -> job."""

__all__ = ["JOBS"]


def _reading(frame: pd.DataFrame, names: list[str], top: int = 5) -> str:
    """Is one component necessary, or is the effect spread out? Do the two vectors use the same components?"""
    parts, tops = [], {}
    for name in names:
        nec = frame[(frame.vector == name) & (frame.measure == "necessity") & frame.kind.isin(["attn", "mlp"])]
        nec = nec.sort_values("fraction")
        tops[name] = list(nec.component[:top])
        first = nec.iloc[0]
        spread = ("one component carries most of it" if first.fraction < 0.5 else
                  "no single component carries it: the effect is spread over many")
        parts.append(f"{name}: the most necessary component is {first.component} (restoring it leaves "
                     f"{first.fraction:.2f} of the effect), so {spread}")
    shared = [c for c in tops[names[0]] if c in tops[names[1]]]
    parts.append(f"of each vector's {top} most necessary components, {len(shared)} are shared "
                 f"({', '.join(shared) or 'none'})")
    return "Reading: " + "; ".join(parts) + "."
