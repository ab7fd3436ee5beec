"""Plot of :func:`actlens.mediation`: which layers' attention and MLP carry a vector's effect, and the top heads.

Returns a plotly figure; never shows or writes it.
"""

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from actlens.plots import TEMPLATE


def fig_mediation(frame: pd.DataFrame, *, top_heads: int = 8) -> go.Figure:
    """One row of panels per vector (``frame.vector``): necessity (``1 - fraction``: the share of the effect lost
    when the component is restored) and sufficiency (``fraction``: the share recovered by the component alone) as
    layers x {attention, MLP} heat maps, and the ``top_heads`` heads by necessity.

    >>> frame = pd.DataFrame(dict(vector="v", component=["attn.1", "mlp.1", "head.1.0"], kind=["attn", "mlp", "head"],
    ...     layer=[1, 1, 1], head=[None, None, 0], measure="necessity", fraction=[0.5, 0.9, 0.8]))
    >>> len(fig_mediation(pd.concat([frame, frame.assign(measure="sufficiency")])).data)
    3
    """
    vectors = list(dict.fromkeys(frame.vector))
    titles = [t for v in vectors for t in (f"{v}: necessity (1 − remaining)", f"{v}: sufficiency",
                                           f"{v}: top heads by necessity")]
    fig = make_subplots(rows=len(vectors), cols=3, subplot_titles=titles, horizontal_spacing=0.08,
                        vertical_spacing=0.12 if len(vectors) > 1 else 0.1)
    for r, name in enumerate(vectors, start=1):
        part = frame[frame.vector == name]
        layers = sorted({int(x) for x in part[part.kind.isin(["attn", "mlp"])].layer})
        for c, measure in enumerate(("necessity", "sufficiency"), start=1):
            rows = part[(part.measure == measure) & part.kind.isin(["attn", "mlp"])]
            value = rows.fraction if measure == "sufficiency" else 1 - rows.fraction
            grid = rows.assign(value=value).pivot_table(index="kind", columns="layer", values="value")
            grid = grid.reindex(index=["attn", "mlp"], columns=layers)
            fig.add_trace(go.Heatmap(z=grid.values.tolist(), x=layers, y=["attention", "MLP"], zmin=0, zmax=1,
                                     colorscale="Viridis", showscale=(r == 1 and c == 1),
                                     colorbar=dict(title="share of effect"),
                                     hovertemplate="layer %{x} %{y}: %{z:.2f}<extra></extra>"), row=r, col=c)
            fig.update_xaxes(title_text="layer", row=r, col=c)
        heads = part[(part.kind == "head") & (part.measure == "necessity")].assign(
            value=lambda d: 1 - d.fraction).nlargest(top_heads, "value")
        fig.add_trace(go.Bar(x=heads.value.tolist(), y=heads.component.tolist(), orientation="h",
                             marker_color="#444", showlegend=False), row=r, col=3)
        fig.update_xaxes(title_text="necessity", row=r, col=3)
    fig.update_layout(template=TEMPLATE, height=330 * len(vectors) + 80, width=1250,
                      title="Which components carry the steering effect (activation patching, per-token KL)")
    return fig


__all__ = ["fig_mediation"]
