"""Figure jobs for the analyses (figures 5-8 and propagation): norm profile, cosine across layers,
logit lens, per-token KL and propagation of a vector.

:mod:`actlens.figures.registry` lists them after the paper's sampling figures 1-4 and before the layer
ablation, the order ``actlens figures`` runs them and ``figures/README.md`` numbers them. Each job calls one analysis module
(:mod:`actlens.analysis.norms`, :mod:`actlens.analysis.cosine`, :mod:`actlens.analysis.logit_lens`, :mod:`actlens.analysis.kl`,
:mod:`actlens.analysis.propagation`) and its plot from :mod:`actlens.plots.analysis`, imported only when
the figure runs.
"""

from actlens.core.corpora import KL_TEXTS
from actlens.figures.jobs import FigureJob, Job, Output
from actlens.vectors import actadd_vector


def norm_profile(job: Job) -> Output:
    from actlens.analysis.norms import norm_profile as compute
    from actlens.plots.analysis import fig_norm_profile

    result = compute(job.model, ("Love", "Hate"))
    frame = result.to_frame()
    top = frame.loc[frame.relative.idxmax()]
    first = frame[frame.position == 1].sort_values("layer")
    notes = [f"Largest ‖Δ‖/‖resid‖: {top.relative:.2f} at layer {int(top.layer)}, position {int(top.position)}; at "
             f"position 1 it ranges {first.relative.min():.2f}–{first.relative.max():.2f} over layers.",
             "Paper (GPT-2-XL, Anger−Calm, App. F): relative norm ≈ 0.6–1.3 at positions 1–2, decreasing with depth. "
             + ("Here it is far larger (> 2) at some layers: the first positions carry outsized activations, so a "
                "coefficient of 1 already replaces them." if top.relative > 2 else "Same order here.")]
    return Output(fig_norm_profile(result), frame, dict(pair=["Love", "Hate"]), [], notes)


def cosine_layers(job: Job) -> Output:
    from actlens.analysis.cosine import cosine_across_layers
    from actlens.plots.analysis import fig_cosine

    result = cosine_across_layers(job.model, ("Love", "Hate"))
    frame = result.to_frame()
    adjacent = frame[frame.b_layer == frame.a_layer + 1].set_index("a_layer").cosine
    low = adjacent.idxmin()
    early, late = job.layer(0.2), job.layer(2 / 3)
    far = frame[(frame.a_layer == early) & (frame.b_layer == late)].cosine.iloc[0]
    notes = [f"Cosine of the Love−Hate ActAdd vector (positions summed) between every two layers; adjacent layers "
             f"agree at {adjacent.median():.2f} (median), least between layers {low} and {low + 1} "
             f"({adjacent[low]:.2f}); layer {early} vs layer {late}: {far:.2f}. The paper reports no such analysis."]
    return Output(fig_cosine(result), frame, dict(pair=["Love", "Hate"], reduce="sum", method="actadd"), [], notes)


def logit_lens_table(job: Job) -> Output:
    from actlens.analysis.logit_lens import logit_lens
    from actlens.plots.analysis import fig_logit_lens

    result = logit_lens(job.model, (" weddings", ""), layers=job.layers(every=True), top_k=10)
    frame = result.to_frame()
    notes = ["Tokens the ' weddings' − '' vector promotes and suppresses when read through the final norm and "
             "unembedding at each layer (no counterpart in the paper). Top 3 promoted at the first real position:"]
    for layer in (job.layer(0.2), job.layer(0.5), job.n_layers - 1):
        top = frame[(frame.layer == layer) & (frame.direction == "promoted") & (frame.position == 1)].nsmallest(3, "rank")
        notes.append(f"layer {layer}: " + ", ".join(repr(t) for t in top.token))
    return Output(fig_logit_lens(result, kind="table"), frame,
                  dict(pair=[" weddings", ""], layers=job.layers(every=True), top_k=10, norm="residual"), [], notes)


def kl_tokens(job: Job) -> Output:
    from actlens.analysis.kl import kl_per_token
    from actlens.plots.analysis import fig_kl

    layer = job.layer(1 / 3)
    vector = actadd_vector(job.model, " weddings", "", layer)
    result = kl_per_token(job.model, list(KL_TEXTS), vector, 1.0)
    s = result.summary().set_index("run")
    steer_kl, control_kl = s.loc["steered", "mean_kl"], s.loc["control", "mean_kl"]
    notes = [f"Mean KL(steered ‖ unsteered) over counted tokens: steered {steer_kl:.4f}, norm-matched random "
             f"{control_kl:.4f} nats.",
             "Paper (LW1, Fig. 10): the steering vector changes the distribution less than a random vector of the same "
             "norm (it is targeted). " + ("Same here." if steer_kl < control_kl else "NOT so here: the steering vector "
                                         "changes the distribution more than the random one.")]
    return Output(fig_kl(result, text=0), result.to_frame(), dict(layer=layer, coeff=1.0, pair=[" weddings", ""],
                                                                   texts=list(KL_TEXTS), control_seed=0), [0], notes)


def propagation_figure(job: Job) -> Output:
    from actlens.analysis.propagation import propagation
    from actlens.plots.analysis import fig_propagation

    layer = job.layer(0.2)
    vector = actadd_vector(job.model, " weddings", "", layer)
    result = propagation(job.model, vector, 1.0, list(KL_TEXTS))
    frame = result.to_frame()
    main = int(vector.norms().argmax())  # the injected position with the largest difference
    at = frame[(frame.position == main)].groupby("layer")[["relative", "cosine"]].mean()
    later = frame[(frame.position >= vector.k)].groupby("layer").relative.mean()
    below = frame[frame.layer < layer].diff_norm.abs().max()
    last = job.n_layers - 1
    notes = [f"Injected at layer {layer} (c = 1): layers below it are unchanged (max ‖Δresid‖ {below:.1f}).",
             f"At the injected position {main}, ‖Δresid‖/‖resid‖ is {at.relative[layer]:.2f} at layer {layer}, "
             f"{at.relative[min(layer + 4, last)]:.2f} at layer {min(layer + 4, last)} and {at.relative[last]:.2f} at "
             f"layer {last}; its cosine to the injected vector is {at.cosine[min(layer + 1, last)]:.2f} one layer later "
             f"and {at.cosine[last]:.2f} at layer {last}.",
             f"At positions after the injection (≥ {vector.k}, reached only through attention) the relative difference grows from "
             f"{later[min(layer + 1, last)]:.3f} (layer {min(layer + 1, last)}) to {later[last]:.3f} (layer {last}). "
             "The paper has no propagation analysis."]
    return Output(fig_propagation(result), frame, dict(layer=layer, coeff=1.0, pair=[" weddings", ""],
                                                       texts=list(KL_TEXTS)), [], notes)


JOBS: dict[str, FigureJob] = {
    "norm_profile": FigureJob(
        "Norm of the Love−Hate vector per layer and position",
        "‖Δ‖₂ of the Love − Hate ActAdd vector per position and layer, absolute and relative to the median "
        "residual norm of neutral text (the paper's App. F).", norm_profile, False),
    "cosine_layers": FigureJob(
        "Cosine similarity of the Love−Hate vector across layers",
        "Cosine similarity between the Love − Hate vectors extracted at every pair of layers.", cosine_layers, False),
    "logit_lens": FigureJob(
        "Logit-lens table of the weddings vector",
        "Top promoted and suppressed tokens of the ' weddings' − '' vector read through the final norm and the "
        "unembedding, per layer.", logit_lens_table, False),
    "kl_tokens": FigureJob(
        "Per-token KL of the weddings vector against a random control",
        "KL(steered ‖ unsteered) of the next-token distribution at each token of a text, for the weddings vector "
        "and a norm-matched random vector; grey positions (injected) are excluded from means.", kl_tokens, False),
    "propagation": FigureJob(
        "Propagation of the weddings vector through later layers",
        "‖steered − unsteered‖ relative to the residual norm, and its cosine to the injected vector, at every layer "
        "and position after injecting the ' weddings' − '' vector (mean over texts).", propagation_figure, False),
}
"""Figure id -> job, in run order."""


__all__ = ["JOBS"]
