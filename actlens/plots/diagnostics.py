"""Figures for the diagnostics: sinks, the sink-aware measurement, KL curves and steerability.

Each function takes a result object or a tidy frame and returns a ``plotly.graph_objects.Figure``;
none shows or writes anything. Error bars are bootstrap confidence intervals.
"""

import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from actlens.analysis.sinks import SinkReport
from actlens.plots import SEQUENTIAL, TEMPLATE

LAYER_AXIS = "layer L (blocks.L.hook_resid_pre)"
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def _need(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"{what} needs columns {columns}; missing {missing} (got {list(frame.columns)})")


def fig_sinks(report: SinkReport, *, max_positions: int = 16, top_tokens: int = 12) -> go.Figure:
    """Left: largest ``‖resid_pre‖ / median`` over the texts per layer and position (log colour).
    Right: the tokens most often flagged after position 0, by their largest ratio.

    >>> from actlens.models.tiny import tiny_model
    >>> from actlens.analysis.sinks import sinks
    >>> fig_sinks(sinks(tiny_model(), ["I think so"], threshold=1.2)).layout.xaxis.title.text
    'position (0 = BOS)'
    """
    ratio = report.max_ratio()[:, :max_positions]
    tokens = report.tokens().head(top_tokens)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], horizontal_spacing=0.12,
                        subplot_titles=(f"max ‖resid‖ / median over {len(report.texts)} texts",
                                        f"tokens flagged after BOS (ratio ≥ {report.threshold:g})"))
    fig.add_trace(go.Heatmap(z=torch.log10(ratio.clamp_min(1e-3)).tolist(), x=list(range(ratio.shape[1])),
                             y=list(report.layers), colorscale=SEQUENTIAL,
                             customdata=ratio.tolist(), hovertemplate="layer %{y}, position %{x}: %{customdata:.1f}×"
                             "<extra></extra>", colorbar=dict(title="log10 ratio", x=0.5)), row=1, col=1)
    fig.add_trace(go.Bar(x=tokens.max_ratio.tolist(), y=[repr(t) for t in tokens.token], orientation="h",
                         marker_color=PALETTE[1], text=[f"{n}×" for n in tokens.n_flags], textposition="outside",
                         hovertemplate="%{y}: max %{x:.1f}× median<extra></extra>", showlegend=False), row=1, col=2)
    fig.update_xaxes(title_text="position (0 = BOS)", row=1, col=1)
    fig.update_yaxes(title_text=LAYER_AXIS, row=1, col=1)
    fig.update_xaxes(title_text="largest ratio to the layer's median", row=1, col=2)
    fig.update_yaxes(autorange="reversed", row=1, col=2)
    fig.update_layout(template=TEMPLATE, title=f"Attention sinks in {report.model_name}")
    return fig


def fig_effect_bars(frame: pd.DataFrame, *, title: str = "") -> go.Figure:
    """One panel per ``task``: mean (with CI) per ``condition``; an unsteered dotted line.

    ``frame`` columns: task, condition, mean, ci_low, ci_high (the unsteered condition named "unsteered").

    >>> f = pd.DataFrame(dict(task=["t"] * 2, condition=["unsteered", "a"], mean=[0.1, 0.3], ci_low=[0, .2],
    ...                       ci_high=[.2, .4]))
    >>> len(fig_effect_bars(f).data)
    2
    """
    _need(frame, ["task", "condition", "mean", "ci_low", "ci_high"], "fig_effect_bars")
    tasks = list(dict.fromkeys(frame.task))
    fig = make_subplots(rows=1, cols=len(tasks), subplot_titles=tasks, horizontal_spacing=0.25)
    for col, task in enumerate(tasks, start=1):
        sub = frame[frame.task == task]
        base = sub[sub.condition == "unsteered"]
        rest = sub[sub.condition != "unsteered"]
        colours = [PALETTE[2] if "sink-aware" in c else PALETTE[0] if "faithful" in c else "#999999"
                   for c in rest.condition]
        fig.add_trace(go.Bar(y=rest.condition.tolist(), x=rest["mean"].tolist(), orientation="h", marker_color=colours,
                             error_x=dict(type="data", symmetric=False, array=(rest.ci_high - rest["mean"]).tolist(),
                                          arrayminus=(rest["mean"] - rest.ci_low).tolist()),
                             showlegend=False), row=1, col=col)
        if len(base):
            b = base.iloc[0]
            fig.add_trace(go.Scatter(x=[b["mean"]] * 2, y=[rest.condition.iloc[0], rest.condition.iloc[-1]],
                                     mode="lines", line=dict(color="black", dash="dot"), name="unsteered",
                                     showlegend=col == 1), row=1, col=col)
        fig.update_yaxes(autorange="reversed", row=1, col=col)
    fig.update_layout(template=TEMPLATE, title=title, height=520)
    return fig


def fig_kl_curves(frame: pd.DataFrame, *, x: str = "coeff", title: str = "") -> go.Figure:
    """Mean per-token KL against ``x`` (a coefficient or residual-norm units), one line per ``label``.

    >>> f = pd.DataFrame(dict(label=["L2"] * 2, coeff=[0.5, 1.0], mean_kl=[0.01, 0.05]))
    >>> fig_kl_curves(f).layout.yaxis.type
    'log'
    """
    _need(frame, ["label", x, "mean_kl"], "fig_kl_curves")
    fig = go.Figure()
    for i, (label, group) in enumerate(frame.groupby("label", sort=False)):
        group = group.sort_values(x)
        fig.add_trace(go.Scatter(x=group[x], y=group.mean_kl, mode="lines+markers", name=str(label),
                                 line=dict(color=PALETTE[i % len(PALETTE)])))
    fig.update_layout(template=TEMPLATE, title=title, xaxis_title=x, yaxis_title="mean KL(steered ‖ unsteered), nats",
                      yaxis_type="log")
    return fig


def fig_predictors(frame: pd.DataFrame, *, effect: str = "effect", title: str = "") -> go.Figure:
    """Measured effect against consistency (left) and separation AUROC (right), one point per layer.

    ``frame`` columns: layer, consistency, separation, ``effect``, and optionally ``set`` (points
    coloured per set).

    >>> f = pd.DataFrame(dict(layer=[1, 2], consistency=[0.2, 0.5], separation=[0.6, 0.9], effect=[0.1, 0.4]))
    >>> len(fig_predictors(f).data)
    2
    """
    _need(frame, ["layer", "consistency", "separation", effect], "fig_predictors")
    frame = frame.assign(set=frame["set"] if "set" in frame.columns else "")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("consistency (mean cosine to the mean difference)",
                                                        "separation (held-out AUROC)"), horizontal_spacing=0.12)
    for i, (name, group) in enumerate(frame.groupby("set", sort=False)):
        for col, key in ((1, "consistency"), (2, "separation")):
            fig.add_trace(go.Scatter(x=group[key], y=group[effect], mode="markers+text", text=group.layer.astype(str),
                                     textposition="top center", name=str(name) or "pairs", legendgroup=str(name),
                                     showlegend=col == 1, marker=dict(color=PALETTE[i % len(PALETTE)], size=9)),
                          row=1, col=col)
    fig.update_yaxes(title_text=effect, row=1, col=1)
    fig.update_layout(template=TEMPLATE, title=title)
    return fig


def fig_layer_effects(study: pd.DataFrame, *, effect: str = "effect", title: str = "") -> go.Figure:
    """Left: residual-norm units a KL budget needs per layer. Right: ``{effect}_kl`` per layer under the KL budget
    (solid) and ``{effect}_units`` under equal units (dashed), with CIs; one colour per pair ``set``.

    >>> f = pd.DataFrame(dict(set=["s", "s"], layer=[1, 2], units_at_budget=[0.5, 0.7], effect_kl=[0.1, 0.2],
    ...                       effect_kl_low=[0, .1], effect_kl_high=[.2, .3], effect_units=[.1, .1],
    ...                       effect_units_low=[0, 0], effect_units_high=[.2, .2]))
    >>> len(fig_layer_effects(f).data)
    3
    """
    _need(study, ["set", "layer", "units_at_budget", f"{effect}_kl", f"{effect}_units"], "fig_layer_effects")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("size at the KL budget (typical residual norms)",
                                                        f"{effect} shift vs unsteered"), horizontal_spacing=0.1)
    for i, (name, group) in enumerate(study.groupby("set", sort=False)):
        colour = PALETTE[i % len(PALETTE)]
        fig.add_trace(go.Scatter(x=group.layer, y=group.units_at_budget, mode="lines+markers", name=f"{name}: units",
                                 line=dict(color=colour)), row=1, col=1)
        for scheme, dash in (("kl", "solid"), ("units", "dash")):
            y = group[f"{effect}_{scheme}"]
            fig.add_trace(go.Scatter(
                x=group.layer, y=y, mode="lines+markers", line=dict(color=colour, dash=dash),
                name=f"{name}: {'KL budget' if scheme == 'kl' else 'equal units'}",
                error_y=dict(type="data", symmetric=False, array=(group.get(f"{effect}_{scheme}_high", y) - y).tolist(),
                             arrayminus=(y - group.get(f"{effect}_{scheme}_low", y)).tolist())),
                row=1, col=2)
    fig.update_xaxes(title_text=LAYER_AXIS)
    fig.update_layout(template=TEMPLATE, title=title)
    return fig


__all__ = ["fig_effect_bars", "fig_kl_curves", "fig_layer_effects", "fig_predictors", "fig_sinks"]
