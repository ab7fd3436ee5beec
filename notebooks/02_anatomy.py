# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Anatomy of a steering vector
#
# What is inside the Love − Hate vector, and what does it do to the model? Five views, each one function in
# `actlens` returning a result object and one figure function in `actlens.plots.analysis`:
#
# 1. **Norms** (`actlens.analysis.norms`): how large the vector is at each layer and position, against the typical residual
#    norm it joins; coefficients in residual-norm units.
# 2. **Cosine across layers** (`actlens.analysis.cosine`): is it "the same direction" at every layer, and does it agree with a
#    mean-difference vector over many sentiment pairs?
# 3. **Logit lens** (`actlens.analysis.logit_lens`): which tokens the vector promotes and suppresses directly.
# 4. **Per-token KL** (`actlens.analysis.kl`): how much each next-token distribution moves, against a norm-matched random
#    vector of the same size (the paper's control).
# 5. **Propagation and transfer** (`actlens.analysis.propagation`): how the injected difference travels through later layers,
#    and what a vector extracted at layer i does when injected at layer j.
# 6. **Why it steers or not** (`actlens.analysis.sinks`, `actlens.kl_curve`, `actlens.analysis.calibrate`, `actlens.analysis.steerability`):
#    the attention sinks the vector reads, a sink-aware version of it, its KL curve, the coefficient for a KL budget,
#    and a steerability report for the sentiment pairs (`actlens diagnose` prints the same from the command line).

# %% [markdown]
# ## Parameters
# `ACTLENS_SMOKE=1` (set by the test suite) picks two layers and two texts.

# %%
import os

SMOKE = os.environ.get("ACTLENS_SMOKE", "").lower() not in ("", "0", "false", "no")
MODEL = "smollm2-135m"
PAIR = ("Love", "Hate")
LAYER = 6  # where the vector is injected for KL and propagation
UNITS = 1.0  # coefficient in residual-norm units: the vector's largest row is UNITS typical residuals
LAYERS = [6, 12] if SMOKE else None  # None: every layer (norms, cosine, logit lens)
TRANSFER_LAYERS = [6, 12] if SMOKE else list(range(0, 30, 3))
N_TEXTS = 2 if SMOKE else 24  # texts scored for KL and propagation
N_PAIRS = 4 if SMOKE else 12  # sentiment pairs of the mean-difference vector compared in the cosine view
TOP_K = 5 if SMOKE else 10
N_REFERENCE = 8 if SMOKE else None  # neutral texts defining the typical residual norm (None: all ~40)

# %%
import torch

import actlens
from actlens.analysis.cosine import cosine_across_layers
from actlens.analysis.kl import kl_per_token
from actlens.analysis.logit_lens import logit_lens
from actlens.analysis.norms import coeff_from_units, default_reference_texts, norm_profile, units_from_coeff
from actlens.analysis.propagation import propagation, transfer_matrix
from actlens.core.corpora import EVAL_PROMPTS, SENTIMENT_PAIRS
from actlens.plots.analysis import fig_cosine, fig_kl, fig_logit_lens, fig_norm_profile, fig_propagation, fig_transfer

model = actlens.load_model(MODEL)
TEXTS = EVAL_PROMPTS[:N_TEXTS]
REFERENCE = default_reference_texts()[:N_REFERENCE]
print(f"{MODEL}: {model.cfg.n_layers} layers; {len(TEXTS)} texts, e.g. {TEXTS[0]!r}")

# %% [markdown]
# ## 1. Norms
# `norm_profile` extracts the pair at every requested layer from one forward and reports ‖Δ‖₂ per position, and the
# ratio to the median per-token residual norm over neutral reference sentences (BOS excluded; the smoke settings use 8
# of the ~40 shipped ones). On SmolLM2 the
# first real positions carry residual norms several times the typical one, so the ratio is far above 1 in the early
# and middle layers: a coefficient that is modest for GPT-2-XL replaces the prompt's first positions here.

# %%
profile = norm_profile(model, PAIR, layers=LAYERS, reference_texts=REFERENCE)
fig_norm_profile(profile)

# %%
vector = actlens.actadd_vector(model, *PAIR, layer=LAYER)
coeff = coeff_from_units(model, vector, UNITS, reference_texts=REFERENCE)
five = units_from_coeff(model, vector, 5.0, reference_texts=REFERENCE)
print(f"coefficient 5 at layer {LAYER} = {five:.1f} typical residual norms")
print(f"{UNITS:g} residual-norm unit at layer {LAYER} = coefficient {coeff:.3f}; used below")

# %% [markdown]
# ## 2. Cosine across layers
# Each contrast is extracted at every layer (one forward per prompt) and compared with every other (layer, contrast)
# item. The ActAdd vector is reduced to one row by summing its positions (`reduce="sum"`); the mean-difference vector
# (CAA-style: last token, positives minus negatives, averaged over the sentiment pairs) already has one row.

# %%
contrasts = [PAIR, SENTIMENT_PAIRS[:N_PAIRS]]
cos = cosine_across_layers(model, contrasts, layers=LAYERS, method=["actadd", "mean_diff"])
fig_cosine(cos, a=0)

# %%
fig_cosine(cos, a=0, b=1)

# %% [markdown]
# ## 3. Logit lens
# Each row of the vector is put through the final norm (as if it were a residual, `norm="residual"`) and the
# unembedding. Position 1 holds "Love" against "H"; position 2 the pad (space) against "ate". A vector can steer
# without decoding to sensible tokens (later layers read it in other ways), so an empty-looking lens is not evidence
# that steering fails.

# %%
lens = logit_lens(model, PAIR, layers=LAYERS, top_k=TOP_K)
print("promoted at layer", LAYER, "position 1:", [t for t, _ in lens.top(LAYER, 1)])
print("suppressed at layer", LAYER, "position 1:", [t for t, _ in lens.top(LAYER, 1, direction="suppressed")])
fig_logit_lens(lens, position=1)

# %% [markdown]
# ## 4. Per-token KL, with the random control
# KL(steered ‖ unsteered) of every next-token distribution, in nats. The positions the vector is added to are masked
# (grey), as in the authors' code; the control is a Gaussian vector with the same per-position norms and the same
# coefficient.

# %%
kl = kl_per_token(model, TEXTS, vector, coeff)
kl.summary()

# %%
fig_kl(kl, text=0)

# %%
kl  # token-coloured HTML: hover a token for its numbers

# %% [markdown]
# ## 5. Propagation and layer transfer
# Left: ‖steered − unsteered‖ / ‖unsteered‖ of the residual stream at every layer and position (zero above the
# injection layer); right: its cosine with the injected direction. Then the transfer matrix: the vector extracted at
# layer i (rows) injected at layer j (columns), with the same coefficient, scored by the masked mean KL; the diagonal
# is ordinary ActAdd.

# %%
prop = propagation(model, vector, coeff, TEXTS)
fig_propagation(prop)

# %%
transfer = transfer_matrix(model, PAIR, TRANSFER_LAYERS, coeff, TEXTS)
fig_transfer(transfer)

# %% [markdown]
# ## 6. Why it steers or not: sinks, KL budget, steerability
# `sinks` flags positions whose residual norm is at least 4× the layer's median (BOS, and in SmolLM2 the first real
# token and tokens such as " the" or " "); `touched` lists the rows of the vector that were read at one. The
# sink-aware vector reads the pair behind a shared "\n" prefix (those rows are exactly zero, so the user prompt's BOS
# and first token get nothing) and zeroes any row still read at a sink.

# %%
from actlens.analysis.calibrate import calibrate
from actlens.analysis.klcurve import kl_curve
from actlens.analysis.sinks import sink_aware_actadd, sinks, touched
from actlens.analysis.steerability import steerability
from actlens.plots.diagnostics import fig_kl_curves, fig_sinks

print("rows read at a sink:", touched(model, vector))
aware = sink_aware_actadd(model, *PAIR, layer=LAYER)
print(aware.notes)
fig_sinks(sinks(model, REFERENCE, layers=LAYERS))

# %% [markdown]
# `kl_curve` scores many coefficients from one unsteered run, starting each steered run at the vector's layer with
# the coefficients on the batch dimension (the same numbers as separate `kl_per_token(control=False)` calls);
# `calibrate` searches it for the coefficient that moves neutral text by a KL budget.

# %%
import pandas as pd

COEFFS = [0.25, 1.0, 4.0] if SMOKE else [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
curves = pd.concat([kl_curve(model, TEXTS, v, COEFFS).to_frame().assign(label=name)
                    for name, v in (("faithful", vector), ("sink-aware", aware))])
calibrated = {name: calibrate(model, v, target_kl=0.1) for name, v in (("faithful", vector), ("sink-aware", aware))}
for name, cal in calibrated.items():
    print(f"{name}: coeff {cal.coeff:.3g} ({cal.units:.2f} residual-norm units) for KL {cal.mean_kl:.3f} nats/token")
fig_kl_curves(curves, title="Mean KL against the coefficient")

# %%
report = steerability(model, SENTIMENT_PAIRS[:N_PAIRS], LAYER, prompts=TEXTS)
print(report.verdict)
report.to_frame()

# %% [markdown]
# ## Check
# Every vector has cosine 1 with itself; the steered run moves the next-token distributions; layers before the
# injection are untouched.

# %%
block = cos.block(0)
assert torch.allclose(block.diagonal(), torch.ones(len(cos.layers))), block
steered_kl = kl.summary().set_index("run").loc["steered", "mean_kl"]
assert steered_kl > 0, kl.summary()
assert bool((prop.diff_norm[:, :LAYER] == 0).all()) and bool((prop.diff_norm[:, LAYER] > 0).any())
assert touched(model, aware) == [] and bool((aware.values[:2] == 0).all())
assert all(abs(c.mean_kl - 0.1) < 0.02 for c in calibrated.values()) and 0 <= report.separation <= 1
print(f"ok: mean KL steered {steered_kl:.3f} nats")
