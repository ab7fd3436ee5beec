"""Figures for sweeps and evaluations: topic rate by layer, perplexity ratio by relevance,
sentiment by coefficient, fact recall P@K, and the layer-ablation study.

Each function takes summary frames (from :func:`actlens.core.metrics.summarise`,
:func:`actlens.experiments.evaluate.p_at_k`, :mod:`actlens.analysis.ablation`) and returns a
``plotly.graph_objects.Figure``; none shows or writes anything. Error bars are bootstrap
confidence intervals (``ci_low``/``ci_high``); controls are drawn dashed or dotted.
"""

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from actlens.plots import TEMPLATE

LAYER_AXIS = "layer L (blocks.L.hook_resid_pre)"
STYLE = {  # condition -> line style; steered solid, controls dashed/dotted
    "steered": dict(dash="solid"),
    "random": dict(dash="dash"),
    "prompting": dict(dash="dot"),
    "unsteered": dict(dash="dot", color="black"),
}
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def _need(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"{what} needs columns {columns}; missing {missing} (got {list(frame.columns)})")


def _errors(group: pd.DataFrame) -> dict:
    return dict(type="data", symmetric=False, array=(group.ci_high - group["mean"]).tolist(),
                arrayminus=(group["mean"] - group.ci_low).tolist())


def _baseline(fig: go.Figure, stats: pd.Series, label: str, x: list[float], *, colour: str = "black",
              dash: str = "dot", showlegend: bool = True, **where) -> None:
    """A horizontal line across ``x`` (min, max) with its CI as a shaded band, in the legend."""
    x0, x1 = min(x), max(x)
    if not (isinstance(stats.ci_low, float) and math.isnan(stats.ci_low)):
        fig.add_trace(go.Scatter(x=[x0, x1, x1, x0], y=[stats.ci_low, stats.ci_low, stats.ci_high, stats.ci_high],
                                 fill="toself", fillcolor=colour, opacity=0.12, line=dict(width=0), hoverinfo="skip",
                                 showlegend=False, legendgroup=label), **where)
    fig.add_trace(go.Scatter(x=[x0, x1], y=[stats["mean"]] * 2, mode="lines", name=label, legendgroup=label,
                             line=dict(color=colour, dash=dash), showlegend=showlegend), **where)


def fig_topic_by_layer(rate: pd.DataFrame, count: pd.DataFrame, *, title: str = "") -> go.Figure:
    """Share of completions with a wedding word (left) and mean count (right) against the injection layer.

    ``rate`` and ``count`` are :meth:`actlens.experiments.sweeps.SweepResult.summary` frames (columns
    condition, vector, layer, coeff, n, mean, ci_low, ci_high). Unsteered is a dotted line.

    >>> s = pd.DataFrame(dict(condition=["unsteered", "steered", "steered"], vector=["", "w", "w"], layer=[None, 0, 1],
    ...                       coeff=[None, 1.0, 1.0], n=[4, 4, 4], mean=[0.0, 0.5, 0.2], ci_low=[0, 0.1, 0],
    ...                       ci_high=[0, .9, .5]))
    >>> fig_topic_by_layer(s, s).layout.xaxis.title.text
    'layer L (blocks.L.hook_resid_pre)'
    """
    fig = make_subplots(rows=1, cols=2,
                        subplot_titles=("completions with ≥ 1 wedding word", "wedding words per completion"))
    for col, frame in ((1, rate), (2, count)):
        _need(frame, ["condition", "vector", "layer", "coeff", "mean", "ci_low", "ci_high"], "fig_topic_by_layer")
        lines = frame[frame.condition.isin(["steered", "random"])]
        for i, ((vector, coeff), sub) in enumerate(lines.groupby(["vector", "coeff"], sort=False)):
            for condition, group in sub.groupby("condition", sort=False):
                group = group.sort_values("layer")
                fig.add_trace(go.Scatter(
                    x=group.layer.tolist(), y=group["mean"].tolist(), error_y=_errors(group), mode="lines+markers",
                    name=f"{vector} c={coeff:g}" + (" [random]" if condition == "random" else ""),
                    line=dict(color=PALETTE[i % len(PALETTE)], **STYLE[condition]),
                    legendgroup=f"{vector}{coeff}{condition}",
                    showlegend=col == 1), row=1, col=col)
        xs = [float(v) for v in frame.layer.dropna()] or [0.0]
        for _, stats in frame[frame.condition == "unsteered"].iterrows():
            _baseline(fig, stats, "unsteered", xs, showlegend=col == 1, row=1, col=col)
    fig.update_xaxes(title_text=LAYER_AXIS)
    fig.update_yaxes(title_text="share of completions (0–1)", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="mean wedding-word count", rangemode="tozero", row=1, col=2)
    fig.update_layout(template=TEMPLATE, title=title or "Topic steering by injection layer (weddings)")
    return fig


def fig_ppl_by_relevance(summary: pd.DataFrame, *, title: str = "") -> go.Figure:
    """Perplexity ratio (condition / unsteered) per topic-relevance bin, one line per condition.

    ``summary``: columns condition, bin (label), order (sort key), n, mean, ci_low, ci_high.

    >>> s = pd.DataFrame(dict(condition=["steered"] * 2, bin=["0", ">0"], order=[0, 1], n=[3, 3], mean=[1.01, .97],
    ...                       ci_low=[1.0, .95], ci_high=[1.02, .99]))
    >>> fig_ppl_by_relevance(s).layout.yaxis.title.text
    'perplexity ratio (condition / unsteered)'
    """
    _need(summary, ["condition", "bin", "order", "n", "mean", "ci_low", "ci_high"], "fig_ppl_by_relevance")
    fig = go.Figure()
    for i, (condition, group) in enumerate(summary.groupby("condition", sort=False)):
        group = group.sort_values("order")
        fig.add_trace(go.Scatter(
            x=[f"{b}<br>(n={n})" for b, n in zip(group.bin, group.n, strict=True)], y=group["mean"].tolist(),
            error_y=_errors(group), mode="lines+markers", name=condition,
            line=dict(color=PALETTE[i % len(PALETTE)], **STYLE.get(condition, {}))))
    fig.add_hline(y=1.0, line=dict(color="gray", dash="dot"))
    fig.update_xaxes(title_text="wedding words per word in the paragraph (bin)")
    fig.update_yaxes(title_text="perplexity ratio (condition / unsteered)")
    fig.update_layout(template=TEMPLATE, title=title or "Perplexity ratio against topic relevance")
    return fig


def fig_sentiment_by_coeff(summary: pd.DataFrame, *, metric_label: str = "VADER compound (−1…1)",
                           title: str = "") -> go.Figure:
    """Mean sentiment against the coefficient, one panel per vector; random dashed, prompting and unsteered lines.

    >>> s = pd.DataFrame(dict(condition=["unsteered", "steered", "random", "prompting"], vector=["", "v", "v", "v"],
    ...                       layer=[None, 6, 6, None], coeff=[None, 2.0, 2.0, None], n=[4] * 4, mean=[.1, .4, .1, .2],
    ...                       ci_low=[0, .3, 0, .1], ci_high=[.2, .5, .2, .3]))
    >>> fig_sentiment_by_coeff(s).layout.xaxis.title.text
    'coefficient c'
    """
    _need(summary, ["condition", "vector", "layer", "coeff", "mean", "ci_low", "ci_high"], "fig_sentiment_by_coeff")
    vectors = [v for v in dict.fromkeys(summary.vector) if v]
    fig = make_subplots(rows=1, cols=max(len(vectors), 1), shared_yaxes=True,
                        subplot_titles=[_vector_title(summary, v) for v in vectors] or None)
    base = summary[summary.condition == "unsteered"]
    for col, vector in enumerate(vectors, start=1):
        sub = summary[summary.vector == vector]
        for condition, colour in (("steered", PALETTE[0]), ("random", PALETTE[1])):
            group = sub[sub.condition == condition].sort_values("coeff")
            if len(group):
                fig.add_trace(go.Scatter(
                    x=group.coeff.tolist(), y=group["mean"].tolist(), error_y=_errors(group), mode="lines+markers",
                    name="steered" if condition == "steered" else "random vector (same norm)",
                    line=dict(color=colour, **STYLE[condition]), legendgroup=condition, showlegend=col == 1),
                    row=1, col=col)
        xs = [float(v) for v in sub.coeff.dropna()] or [0.0]
        for _, stats in sub[sub.condition == "prompting"].iterrows():
            _baseline(fig, stats, "prompting (phrase prepended)", xs, colour=PALETTE[2], showlegend=col == 1,
                      row=1, col=col)
        for _, stats in base.iterrows():
            _baseline(fig, stats, "unsteered", xs, showlegend=col == 1, row=1, col=col)
    fig.update_xaxes(title_text="coefficient c")
    fig.update_yaxes(title_text=f"mean sentiment, {metric_label}", row=1, col=1)
    fig.update_layout(template=TEMPLATE, title=title or "Sentiment of completions against the steering coefficient")
    return fig


def _vector_title(summary: pd.DataFrame, vector: str) -> str:
    layers = sorted({int(x) for x in summary[(summary.vector == vector) & summary.layer.notna()].layer})
    return f"{vector} (layer {', '.join(map(str, layers))})"


def fig_recall(pk: pd.DataFrame, *, title: str = "") -> go.Figure:
    """Mean P@K against K (log axis), one line per condition (with CIs when present).

    >>> pk = pd.DataFrame(dict(condition=["unsteered", "unsteered"], k=[1, 10], p_at_k=[0.3, 0.8]))
    >>> fig_recall(pk).layout.xaxis.type
    'log'
    """
    _need(pk, ["condition", "k", "p_at_k"], "fig_recall")
    fig = go.Figure()
    for i, (condition, group) in enumerate(pk.groupby("condition", sort=False)):
        group = group.sort_values("k")
        err = None
        if {"ci_low", "ci_high"} <= set(group.columns):
            err = dict(type="data", symmetric=False, array=(group.ci_high - group.p_at_k).tolist(),
                       arrayminus=(group.p_at_k - group.ci_low).tolist())
        style = STYLE["unsteered"] if condition == "unsteered" else dict(color=PALETTE[i % len(PALETTE)])
        if "random" in condition:
            style |= STYLE["random"]
        fig.add_trace(go.Scatter(x=group.k.tolist(), y=group.p_at_k.tolist(), error_y=err, mode="lines+markers",
                                 name=condition, line=style))
    fig.update_xaxes(type="log", title_text="K (answer among the top K next tokens)",
                     tickvals=[1, 2, 5, 10, 20, 50, 100])
    fig.update_yaxes(title_text="P@K (share of facts)", range=[0, 1.02])
    fig.update_layout(template=TEMPLATE, title=title or "Capital recall with and without steering")
    return fig


def fig_ablation(by_layer: pd.DataFrame, ablated: pd.DataFrame, *, title: str = "") -> go.Figure:
    """Left: effect of injecting at each layer (KL and wedding-token shift, steered vs random); right:
    share of the KL effect that survives ablating a direction at each later layer (the topic-shift
    share is in the data, not drawn: its small denominators make it noisy).

    ``by_layer`` is :func:`actlens.analysis.ablation.inject_each_layer`'s frame, ``ablated``
    :func:`actlens.analysis.ablation.ablate_downstream`'s.

    >>> a = pd.DataFrame(dict(layer=[0, 0], condition=["steered", "random"], kl=[.2, .1], topic_shift=[1., 0.]))
    >>> b = pd.DataFrame(dict(layer=[2], mode=["zero"], direction=["injected"], injected_at=[1], kl_retained=[.5],
    ...                       topic_retained=[.4], side_kl=[.01]))
    >>> fig_ablation(a, b).layout.xaxis2.title.text
    'ablated layer j (blocks.j.hook_resid_pre)'
    """
    _need(by_layer, ["layer", "condition", "kl", "topic_shift"], "fig_ablation")
    _need(ablated, ["layer", "mode", "direction", "injected_at", "kl_retained", "topic_retained"], "fig_ablation")
    fig = make_subplots(rows=1, cols=2, specs=[[{"secondary_y": True}, {}]],
                        subplot_titles=("inject at each layer",
                                        f"ablate downstream of layer {int(ablated.injected_at.iloc[0])}"))
    for condition, colour in (("steered", PALETTE[0]), ("random", PALETTE[1])):
        group = by_layer[by_layer.condition == condition].sort_values("layer")
        fig.add_trace(go.Scatter(x=group.layer.tolist(), y=group.kl.tolist(), mode="lines+markers",
                                 name=f"KL, {condition}", line=dict(color=colour, **STYLE[condition])), row=1, col=1)
        fig.add_trace(go.Scatter(x=group.layer.tolist(), y=group.topic_shift.tolist(), mode="lines",
                                 name=f"topic-token shift, {condition}", opacity=0.6,
                                 line=dict(color=colour, width=1, **STYLE[condition])), row=1, col=1, secondary_y=True)
    for i, ((mode, direction), group) in enumerate(ablated.groupby(["mode", "direction"], sort=False)):
        group = group.sort_values("layer")
        colour = PALETTE[(i + 2) % len(PALETTE)]
        fig.add_trace(go.Scatter(x=group.layer.tolist(), y=group.kl_retained.tolist(), mode="lines+markers",
                                 name=f"{mode}-ablate {direction} direction", line=dict(color=colour)), row=1, col=2)
    fig.add_hline(y=1.0, line=dict(color="gray", dash="dot"), row=1, col=2)
    kept = ablated["kl_retained"].to_numpy(dtype=float)
    if (kept[~pd.isna(kept)] > 2.5).any():  # ablating a high-norm direction can disturb more than steering does
        fig.update_yaxes(range=[-0.2, 2.5], row=1, col=2)
        fig.add_annotation(text="y clipped at 2.5 (see kl_retained, side_kl in the CSV)", xref="x2 domain",
                           yref="y3 domain", x=1.0, y=0.0, showarrow=False, font=dict(size=10), xanchor="right",
                           yanchor="bottom")
    fig.update_xaxes(title_text=LAYER_AXIS, row=1, col=1)
    fig.update_xaxes(title_text="ablated layer j (blocks.j.hook_resid_pre)", row=1, col=2)
    fig.update_yaxes(title_text="mean KL(steered ‖ unsteered) [nats]", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="Δ log P(wedding tokens) [nats]", row=1, col=1, secondary_y=True)
    fig.update_yaxes(title_text="share of the KL effect kept (ablated / full)", row=1, col=2)
    fig.update_layout(template=TEMPLATE, title=title or "Where the steering effect is injected and carried")
    return fig


__all__ = ["fig_ablation", "fig_ppl_by_relevance", "fig_recall", "fig_sentiment_by_coeff", "fig_topic_by_layer"]
