"""Figures for the analysis results (norms, cosine, logit lens, KL, propagation, transfer).

Each function takes a result object and returns a ``plotly.graph_objects.Figure``; none
shows or writes anything. Signed quantities use the diverging scale centred at 0, norms
and KL a sequential one; every axis names its quantity and unit.
"""

from typing import Literal

import plotly.graph_objects as go
import torch
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from actlens.analysis.cosine import CosineResult
from actlens.analysis.kl import KLResult
from actlens.analysis.logit_lens import LogitLensResult
from actlens.analysis.norms import NormProfile
from actlens.analysis.propagation import PropagationResult, TransferResult
from actlens.core import validation as _validation
from actlens.plots import DIVERGING, SEQUENTIAL, TEMPLATE

LAYER_AXIS = "layer L (blocks.L.hook_resid_pre)"


def _colours(n: int) -> list[str]:
    return sample_colorscale(SEQUENTIAL, [i / max(n - 1, 1) * 0.85 for i in range(n)])


def fig_norm_profile(profile: NormProfile) -> go.Figure:
    """Left: ‖Δ‖₂ per position against the typical residual norm; right: their ratio.

    >>> from actlens.models.tiny import tiny_model
    >>> from actlens.analysis.norms import norm_profile
    >>> fig = fig_norm_profile(norm_profile(tiny_model(), ("Love", "Hate")))
    >>> fig.layout.yaxis2.title.text
    '‖Δ‖₂ / median ‖resid‖₂ (ratio)'
    """
    layers = list(profile.layers)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("absolute", "relative to the residual stream"))
    labels = profile.position_labels()
    colours = _colours(profile.k)
    for p in range(profile.k):
        if bool((profile.norms[:, p] == 0).all()):
            continue  # the BOS row: zero everywhere
        style = dict(color=colours[p])
        fig.add_trace(go.Scatter(x=layers, y=profile.norms[:, p].tolist(), mode="lines+markers", name=labels[p],
                                 legendgroup=str(p), line=style), row=1, col=1)
        fig.add_trace(go.Scatter(x=layers, y=profile.relative[:, p].tolist(), mode="lines+markers", name=labels[p],
                                 legendgroup=str(p), showlegend=False, line=style), row=1, col=2)
    fig.add_trace(go.Scatter(x=layers, y=profile.resid_scale.tolist(), mode="lines", name="median ‖resid‖₂ (reference)",
                             line=dict(color="black", dash="dash")), row=1, col=1)
    fig.add_hline(y=1.0, line=dict(color="gray", dash="dot"), row=1, col=2)
    fig.update_xaxes(title_text=LAYER_AXIS)
    fig.update_yaxes(title_text="L2 norm ‖·‖₂ (activation units)", row=1, col=1)
    fig.update_yaxes(title_text="‖Δ‖₂ / median ‖resid‖₂ (ratio)", row=1, col=2)
    plus, minus = profile.pair
    fig.update_layout(template=TEMPLATE, title=f"ActAdd vector norm per position: {plus!r} − {minus!r} "
                      f"({profile.model_name})", legend_title_text="position: plus/minus token")
    return fig


def fig_cosine(result: CosineResult, *, a: int | None = None, b: int | None = None,
               position: int | None = None) -> go.Figure:
    """Cosine heatmap: the full item × item matrix, or the layer × layer block of contrasts a, b.

    >>> from actlens.models.tiny import tiny_model
    >>> from actlens.analysis.cosine import cosine_across_layers
    >>> fig = fig_cosine(cosine_across_layers(tiny_model(), ("Love", "Hate")))
    >>> fig.data[0].zmid, fig.layout.xaxis.title.text
    (0, 'layer the vector was extracted at')
    """
    if a is None and b is None and (len(result.labels) > 1 or result.reduce == "per_position"):
        z = result.matrix
        x = y = result.item_labels()
        x_title = y_title = "vector (contrast, layer L, position p)"
        title = f"Cosine similarity of steering vectors (reduce={result.reduce})"
    else:
        a = a or 0
        b = a if b is None else b
        z = result.block(a, b, position=position)
        x = y = [str(layer) for layer in result.layers]
        x_title = "layer the vector was extracted at"
        y_title = x_title if a == b else f"layer ({result.labels[a]})"
        if a != b:
            x_title = f"layer ({result.labels[b]})"
        title = (f"Cosine across layers: {result.labels[a]}" + ("" if a == b else f" vs {result.labels[b]}")
                 + f" (reduce={result.reduce})")
    fig = go.Figure(go.Heatmap(z=z.tolist(), x=x, y=y, colorscale=DIVERGING, zmid=0, zmin=-1, zmax=1,
                               colorbar=dict(title="cosine")))
    fig.update_xaxes(title_text=x_title, type="category")
    fig.update_yaxes(title_text=y_title, type="category", autorange="reversed")
    fig.update_layout(template=TEMPLATE, title=title)
    return fig


def _visible(token: str) -> str:
    """Spaces and newlines made visible in heatmap cells (" the" -> "␣the")."""
    return token.replace(" ", "␣").replace("\n", "↵") or "∅"


def _default_position(result: LogitLensResult) -> int:
    return int(torch.nan_to_num(result.vector_norms, nan=0.0).mean(0).argmax())


def fig_logit_lens(result: LogitLensResult, *, position: int | None = None,
                   kind: Literal["heatmap", "table"] = "heatmap", top: int | None = None) -> go.Figure:
    """Top suppressed (left) and promoted (right) tokens per layer at one position.

    ``position`` defaults to the row with the largest mean norm; ``top`` limits the ranks shown.

    >>> from actlens.models.tiny import tiny_model
    >>> from actlens.analysis.logit_lens import logit_lens
    >>> fig = fig_logit_lens(logit_lens(tiny_model(), ("Love", "Hate"), top_k=3))
    >>> fig.data[0].zmid, fig.layout.yaxis.title.text
    (0, 'layer L (blocks.L.hook_resid_pre)')
    """
    _validation.choice("kind", kind, ("heatmap", "table"))
    p = _default_position(result) if position is None else position
    if not 0 <= p < len(result.position_labels):
        raise ValueError(f"position must be in [0, {len(result.position_labels)}), got {p}")
    k = result.top_k if top is None else max(1, min(top, result.top_k))
    layers = list(result.layers)
    title = (f"Logit lens of {result.source} at position {result.position_labels[p]} "
             f"(norm={result.norm}, {result.final_norm} final norm)")
    if kind == "table":
        def cell(tokens, scores, i):
            return "  ".join(f"{t!r} {s:+.2f}" for t, s in zip(tokens[i][p][:k], scores[i, p, :k].tolist(),
                                                                 strict=True))

        fig = go.Figure(go.Table(
            columnwidth=[1, 1, 5, 5],
            header=dict(values=["layer", "‖v‖₂", f"promoted (top {k}, logit score)",
                                f"suppressed (top {k}, logit score)"]),
            cells=dict(values=[
                layers, [f"{float(n):.3g}" for n in result.vector_norms[:, p]],
                [cell(result.promoted_tokens, result.promoted_scores, i) for i in range(len(layers))],
                [cell(result.suppressed_tokens, result.suppressed_scores, i) for i in range(len(layers))],
            ]),
        ))
        fig.update_layout(template=TEMPLATE, title=title)
        return fig
    # columns: most suppressed ... least suppressed | top promoted ... k-th promoted
    z = torch.cat([result.suppressed_scores[:, p, :k].flip(-1), result.promoted_scores[:, p, :k]], dim=-1)
    text = [[_visible(t) for t in list(reversed(result.suppressed_tokens[i][p][:k]))
             + list(result.promoted_tokens[i][p][:k])] for i in range(len(layers))]
    x = [f"−{r}" for r in range(k, 0, -1)] + [f"+{r}" for r in range(1, k + 1)]
    limit = float(torch.nan_to_num(z.abs(), nan=0.0).max()) or 1.0
    fig = go.Figure(go.Heatmap(
        z=torch.nan_to_num(z, nan=0.0).tolist(), x=x, y=[str(layer) for layer in layers], text=text,
        texttemplate="%{text}", colorscale=DIVERGING, zmid=0, zmin=-limit, zmax=limit,
        colorbar=dict(title="direct logit score (logits)"),
        hovertemplate="layer %{y}, rank %{x}: %{text} (%{z:.3f})<extra></extra>",
    ))
    fig.update_xaxes(title_text="rank (← most suppressed | most promoted →)", type="category")
    fig.update_yaxes(title_text=LAYER_AXIS, type="category", autorange="reversed")
    fig.update_layout(template=TEMPLATE, title=title)
    return fig


def fig_kl(result: KLResult, *, text: int = 0) -> go.Figure:
    """Per-token KL of the steered and the control run for one text; masked positions shaded.

    >>> from actlens.models.tiny import tiny_model
    >>> from actlens.vectors import actadd_vector
    >>> from actlens.analysis.kl import kl_per_token
    >>> model = tiny_model()
    >>> fig = fig_kl(kl_per_token(model, ["I think that you are"], actadd_vector(model, "Love", "Hate", 1), 4.0))
    >>> fig.layout.yaxis.title.text
    'KL(run ‖ unsteered) [nats]'
    """
    if not 0 <= text < len(result.texts):
        raise ValueError(f"text must be in [0, {len(result.texts)}), got {text}")
    s, n = result.starts[text], result.lengths[text]
    cols = list(range(s, s + n))
    labels = [f"{p - s}:{t!r}" for p, t in zip(cols, result.token_strings[text], strict=True)]
    fig = go.Figure()
    colours = _colours(2)
    names = {"steered": ("steered", colours[0]), "control": ("control (norm-matched random)", "#999999")}
    for run, values, _, _ in result.runs():
        name, colour = names[run]
        fig.add_trace(go.Bar(x=labels, y=values[text, s:s + n].tolist(), name=name, marker_color=colour))
    for i, p in enumerate(cols):
        if not bool(result.counted[text, p]):
            fig.add_vrect(x0=i - 0.5, x1=i + 0.5, fillcolor="lightgray", opacity=0.5, line_width=0, layer="below")
    summary = result.summary().set_index("run")
    fig.update_xaxes(title_text="token (position:token; the bar is the distribution over the next token)",
                     type="category")
    fig.update_yaxes(title_text="KL(run ‖ unsteered) [nats]")
    fig.update_layout(
        template=TEMPLATE, barmode="group",
        title=(f"Per-token KL, layer {result.layer}, coeff {result.coeff:g} (grey: masked); mean over counted "
               "positions: " + ", ".join(f"{run} {summary.loc[run, 'mean_kl']:.3g}" for run in summary.index)
               + " nats"),
    )
    return fig


def fig_propagation(result: PropagationResult, *, text: int | None = None) -> go.Figure:
    """Heatmaps over layer × position of ‖Δresid‖/‖resid‖ and of cos(Δresid, v).

    ``text=None`` averages over texts with positions counted from BOS.

    >>> from actlens.models.tiny import tiny_model
    >>> from actlens.vectors import actadd_vector
    >>> from actlens.analysis.propagation import propagation
    >>> model = tiny_model()
    >>> fig = fig_propagation(propagation(model, actadd_vector(model, "Love", "Hate", 1), 4.0, ["I think so"]))
    >>> fig.layout.xaxis.title.text
    'position (tokens from BOS)'
    """
    if text is None:
        rel, cos = result.mean_over_texts("relative"), result.mean_over_texts("cosine")
        x = [str(p) for p in range(rel.shape[1])]
        which = f"mean over {len(result.texts)} texts"
    else:
        if not 0 <= text < len(result.texts):
            raise ValueError(f"text must be in [0, {len(result.texts)}), got {text}")
        s, n = result.starts[text], result.lengths[text]
        rel, cos = result.relative[text, :, s:s + n], result.cosine[text, :, s:s + n]
        x = [f"{p}:{t!r}" for p, t in enumerate(result.token_strings[text])]
        which = repr(result.texts[text])
    y = [str(layer) for layer in result.layers]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("‖steered − unsteered‖₂ / ‖unsteered‖₂", "cosine(steered − unsteered, v)"))
    fig.add_trace(go.Heatmap(z=rel.tolist(), x=x, y=y, colorscale=SEQUENTIAL, zmin=0,
                             colorbar=dict(title="ratio", x=0.44)), row=1, col=1)
    fig.add_trace(go.Heatmap(z=cos.tolist(), x=x, y=y, colorscale=DIVERGING, zmid=0, zmin=-1, zmax=1,
                             colorbar=dict(title="cosine")), row=1, col=2)
    fig.update_xaxes(title_text="position (tokens from BOS)", type="category")
    fig.update_yaxes(title_text=LAYER_AXIS, type="category", autorange="reversed")
    fig.update_layout(template=TEMPLATE, title=f"Propagation of an injection at layer {result.layer}, "
                      f"coeff {result.coeff:g} ({which})")
    return fig


def fig_transfer(result: TransferResult) -> go.Figure:
    """Heatmap of the effect of a vector extracted at layer i (rows) injected at layer j (columns).

    >>> from actlens.models.tiny import tiny_model
    >>> from actlens.analysis.propagation import transfer_matrix
    >>> fig = fig_transfer(transfer_matrix(tiny_model(), ("Love", "Hate"), [1, 2], 4.0, ["I think so"]))
    >>> fig.layout.xaxis.title.text
    'injected at layer (blocks.L.hook_resid_pre)'
    """
    unit = "mean KL(steered ‖ unsteered) [nats]" if result.metric == "kl" else "top-1 flip rate (share)"
    labels = [str(layer) for layer in result.layers]
    fig = go.Figure(go.Heatmap(z=result.values.tolist(), x=labels, y=labels, colorscale=SEQUENTIAL, zmin=0,
                               colorbar=dict(title=unit)))
    fig.update_xaxes(title_text="injected at layer (blocks.L.hook_resid_pre)", type="category")
    fig.update_yaxes(title_text="extracted at layer (blocks.L.hook_resid_pre)", type="category",
                     autorange="reversed")
    plus, minus = result.pair
    fig.update_layout(template=TEMPLATE, title=f"Layer transfer of {plus!r} − {minus!r}, coeff {result.coeff:g} "
                      f"({result.n_positions} positions)")
    return fig


__all__ = ["fig_cosine", "fig_kl", "fig_logit_lens", "fig_norm_profile", "fig_propagation", "fig_transfer"]
