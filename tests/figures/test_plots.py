"""Figures for the analysis results: pure functions returning plotly figures."""

import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from actlens.analysis.cosine import cosine_across_layers
from actlens.analysis.kl import kl_per_token
from actlens.analysis.logit_lens import logit_lens
from actlens.analysis.norms import norm_profile
from actlens.analysis.propagation import propagation, transfer_matrix
from actlens.plots import DIVERGING, SEQUENTIAL
from actlens.plots import analysis as plots
from actlens.vectors import actadd_vector

TEXTS = ["I think that you are", "The weather is nice"]


@pytest.fixture(scope="module")
def results(tiny_models):
    model = tiny_models["llama"]
    vec = actadd_vector(model, "Love", "Hate", 1)
    return {
        "norm": norm_profile(model, ("Love", "Hate")),
        "cosine": cosine_across_layers(model, ("Love", "Hate")),
        "cosine_many": cosine_across_layers(model, [("Love", "Hate"), ("Joy", "Sadness")], layers=[1, 2]),
        "lens": logit_lens(model, ("Love", "Hate"), top_k=3),
        "kl": kl_per_token(model, TEXTS, vec, 4.0),
        "propagation": propagation(model, vec, 4.0, TEXTS),
        "transfer": transfer_matrix(model, ("Love", "Hate"), [1, 2], 4.0, TEXTS),
    }


@pytest.fixture(scope="module")
def figures(results):
    return {
        "norm": plots.fig_norm_profile(results["norm"]),
        "cosine": plots.fig_cosine(results["cosine"]),
        "cosine_many": plots.fig_cosine(results["cosine_many"]),
        "cosine_block": plots.fig_cosine(results["cosine_many"], a=0, b=1),
        "lens": plots.fig_logit_lens(results["lens"]),
        "lens_table": plots.fig_logit_lens(results["lens"], kind="table"),
        "kl": plots.fig_kl(results["kl"], text=1),
        "propagation": plots.fig_propagation(results["propagation"]),
        "propagation_one": plots.fig_propagation(results["propagation"], text=0),
        "transfer": plots.fig_transfer(results["transfer"]),
    }


def test_results_hold_ordinary_tensors_and_tidy_frames(results):
    for name, result in results.items():
        for field, value in vars(result).items():
            if isinstance(value, torch.Tensor):
                assert not value.is_inference(), f"{name}.{field} is an inference-mode tensor"
        frame = result.to_frame()
        assert isinstance(frame, pd.DataFrame) and len(frame) > 0, name


def test_every_figure_has_a_title_and_titled_axes(figures):
    for name, fig in figures.items():
        assert isinstance(fig, go.Figure), name
        assert fig.layout.title.text, name
        if name == "lens_table":
            continue
        axes = [k for k in fig.layout.to_plotly_json() if k.startswith(("xaxis", "yaxis"))]
        assert axes, name
        for axis in axes:
            assert fig.layout[axis].title.text, f"{name}: {axis} has no title"


def test_colour_conventions(figures):
    signed = [figures["cosine"].data[0], figures["cosine_many"].data[0], figures["lens"].data[0],
              figures["propagation"].data[1]]
    for trace in signed:
        assert trace.zmid == 0
        assert trace.colorscale == go.Heatmap(colorscale=DIVERGING).colorscale
    for trace in (figures["transfer"].data[0], figures["propagation"].data[0]):
        assert trace.colorscale == go.Heatmap(colorscale=SEQUENTIAL).colorscale


@pytest.mark.unchecked
def test_bad_selections_raise(tiny_models):
    model = tiny_models["llama"]
    result = kl_per_token(model, TEXTS, actadd_vector(model, "Love", "Hate", 1), 1.0)
    with pytest.raises(ValueError, match=r"text must be in \[0, 2\)"):
        plots.fig_kl(result, text=2)
    with pytest.raises(ValueError, match="kind must be one of"):
        plots.fig_logit_lens(logit_lens(model, ("Love", "Hate"), layers=[1], top_k=2), kind="bars")
