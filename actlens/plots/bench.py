"""The figure of ``actlens bench``: throughput relative to raw Hugging Face, per case."""

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from actlens.plots import TEMPLATE

_TITLES = {"generate": "generation: throughput / raw HF generate", "forward": "forward: throughput / raw HF forward",
           "sweep": "sweep: throughput / one setting at a time"}


def fig_bench(result: dict) -> go.Figure:
    """Horizontal bars of each row's paired throughput ratio to its baseline, one panel per group.

    Error bars span the interquartile range of the per-repeat ratios; tokens/s and the row's full label
    are in the hover text. ``result`` is what ``actlens bench`` writes to ``bench.json``.

    >>> row = {"group": "forward", "case": "forward b=2 p=16", "name": "actlens", "label": "actlens.forward",
    ...        "ratio_median": 0.98, "ratio_q1": 0.95, "ratio_q3": 1.01, "tok_s_median": 1000.0}
    >>> fig = fig_bench({"rows": [row], "model": {"name": "tiny"}, "machine": {"cpu": "x", "cuda_device": None}})
    >>> fig.data[0].x
    (0.98,)
    """
    rows = [r for r in result["rows"] if "ratio_median" in r]
    groups = [g for g in ("generate", "forward", "sweep") if any(r["group"] == g for r in rows)] or ["forward"]
    counts = [len({r["name"] for r in rows if r["group"] == g}) for g in groups]
    n_cases = [len({r["case"] for r in rows if r["group"] == g}) for g in groups]
    fig = make_subplots(rows=len(groups), cols=1, subplot_titles=[_TITLES.get(g, g) for g in groups],
                        row_heights=[max(c * k, 1) for c, k in zip(counts, n_cases, strict=True)],
                        vertical_spacing=0.12)
    for i, group in enumerate(groups, start=1):
        for case in dict.fromkeys(r["case"] for r in rows if r["group"] == group):
            sel = [r for r in rows if r["group"] == group and r["case"] == case]
            fig.add_trace(go.Bar(
                y=[r["name"] for r in sel], x=[r["ratio_median"] for r in sel], name=case, orientation="h",
                error_x=dict(type="data", symmetric=False,
                             array=[r.get("ratio_q3", r["ratio_median"]) - r["ratio_median"] for r in sel],
                             arrayminus=[r["ratio_median"] - r.get("ratio_q1", r["ratio_median"]) for r in sel]),
                hovertext=[f"{r['label']}: {r['tok_s_median']:,.1f} tok/s" for r in sel],
            ), row=i, col=1)
        fig.add_vline(x=1.0, line_dash="dash", line_color="grey", row=i, col=1)
        fig.update_yaxes(autorange="reversed", row=i, col=1)
        fig.update_xaxes(title_text="throughput / baseline (paired per repeat; median, IQR)", row=i, col=1)
    where = result["machine"].get("cuda_device") or result["machine"].get("cpu")
    bars = sum(c * k for c, k in zip(counts, n_cases, strict=True))
    fig.update_layout(template=TEMPLATE, barmode="group", legend_title_text="case", width=900,
                      height=220 + 22 * bars + 80 * len(groups),
                      title=f"actlens bench: {result['model']['name']} on {where}")
    return fig
