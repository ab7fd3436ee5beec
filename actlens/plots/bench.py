"""The figure of ``actlens bench``: throughput relative to raw Hugging Face, per case."""

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from actlens.plots import TEMPLATE

_TITLES = {"generate": "generation: ratio to raw HF generate", "forward": "forward: ratio to raw HF forward"}


def fig_bench(result: dict) -> go.Figure:
    """Bars of each row's paired throughput ratio to its baseline (error bars: min-max over repeats).

    ``result`` is what ``actlens bench`` writes to ``bench.json``; tokens/s are in the hover text.

    >>> row = {"group": "forward", "case": "forward b=2 p=16", "label": "actlens.forward",
    ...        "ratio_median": 0.98, "ratio_min": 0.95, "ratio_max": 1.01, "tok_s_median": 1000.0}
    >>> fig = fig_bench({"rows": [row], "model": {"name": "tiny"}, "machine": {"cpu": "x", "cuda_device": None}})
    >>> fig.data[0].y
    (0.98,)
    """
    rows = [r for r in result["rows"] if "ratio_median" in r]
    groups = [g for g in ("generate", "forward") if any(r["group"] == g for r in rows)] or ["forward"]
    fig = make_subplots(rows=1, cols=len(groups), subplot_titles=[_TITLES.get(g, g) for g in groups],
                        horizontal_spacing=0.12)
    for col, group in enumerate(groups, start=1):
        cases = list(dict.fromkeys(r["case"] for r in rows if r["group"] == group))
        for case in cases:
            sel = [r for r in rows if r["group"] == group and r["case"] == case]
            fig.add_trace(go.Bar(
                x=[r["label"] for r in sel], y=[r["ratio_median"] for r in sel], name=case,
                error_y=dict(type="data", symmetric=False,
                             array=[r["ratio_max"] - r["ratio_median"] for r in sel],
                             arrayminus=[r["ratio_median"] - r["ratio_min"] for r in sel]),
                hovertext=[f"{r['tok_s_median']:,.1f} tok/s" for r in sel],
            ), row=1, col=col)
        fig.add_hline(y=1.0, line_dash="dash", line_color="grey", row=1, col=col)
        fig.update_yaxes(title_text="throughput / baseline (paired, median)", row=1, col=col)
    where = result["machine"].get("cuda_device") or result["machine"].get("cpu")
    fig.update_layout(template=TEMPLATE, barmode="group", legend_title_text="case",
                      title=f"actlens bench: {result['model']['name']} on {where}")
    return fig
