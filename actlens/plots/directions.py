"""Figure for the directions comparison: concept effect and fluency of each direction at equal KL budgets.

Returns a ``plotly.graph_objects.Figure``; shows or writes nothing. Error bars are bootstrap 95 % intervals.
"""

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from actlens.plots import TEMPLATE

COLOURS = {"ActAdd": "#1f77b4", "mean difference": "#d62728", "PCA (pca_diff)": "#2ca02c",
           "PCA (pca_center)": "#9467bd", "probe": "#ff7f0e", "random": "#7f7f7f", "prompting": "#000000"}


def fig_directions(frame: pd.DataFrame, *, title: str = "") -> go.Figure:
    """Per task (rows): the concept shift vs unsteered and the perplexity ratio (columns) against the KL budget.

    ``frame`` columns: task, method, measured_kl, shift, shift_low, shift_high, ppl_ratio, ppl_low, ppl_high.
    One line per method (x: the mean per-token KL measured on neutral text; prompting is one point).

    >>> f = pd.DataFrame(dict(task=["t"] * 2, method=["probe", "probe"], measured_kl=[0.05, 0.1], shift=[.1, .2],
    ...                       shift_low=[0, .1], shift_high=[.2, .3], ppl_ratio=[1.1, 1.2], ppl_low=[1, 1.1],
    ...                       ppl_high=[1.2, 1.3]))
    >>> len(fig_directions(f).data)
    2
    """
    missing = [c for c in ("task", "method", "measured_kl", "shift", "shift_low", "shift_high", "ppl_ratio",
                           "ppl_low", "ppl_high") if c not in frame.columns]
    if missing:
        raise ValueError(f"fig_directions needs columns {missing}; pass the directions_at_equal_kl table")
    tasks = list(dict.fromkeys(frame.task))
    titles = [t for task in tasks for t in (f"{task}: shift vs unsteered", f"{task}: perplexity ratio")]
    fig = make_subplots(rows=len(tasks), cols=2, subplot_titles=titles, horizontal_spacing=0.12)
    shown: set[str] = set()
    for row, task in enumerate(tasks, start=1):
        sub = frame[frame.task == task]
        for method, group in sub.groupby("method", sort=False):
            group = group.dropna(subset=["measured_kl"]).sort_values("measured_kl")
            colour = COLOURS.get(str(method), "#17becf")
            for col, (y, lo, hi) in enumerate((("shift", "shift_low", "shift_high"),
                                               ("ppl_ratio", "ppl_low", "ppl_high")), start=1):
                fig.add_trace(go.Scatter(
                    x=group.measured_kl, y=group[y], mode="lines+markers", name=str(method), legendgroup=str(method),
                    showlegend=method not in shown, line=dict(color=colour),
                    error_y=dict(type="data", symmetric=False, array=(group[hi] - group[y]).tolist(),
                                 arrayminus=(group[y] - group[lo]).tolist())), row=row, col=col)
                shown.add(method)
            fig.update_xaxes(title_text="mean KL on neutral text (nats/token)", type="log", row=row, col=1)
            fig.update_xaxes(title_text="mean KL on neutral text (nats/token)", type="log", row=row, col=2)
    fig.update_layout(template=TEMPLATE, title=title, height=380 * len(tasks))
    return fig


__all__ = ["fig_directions"]
