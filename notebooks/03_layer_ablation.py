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
# # 03 · Which layer? A layer × coefficient sweep and a layer ablation
#
# The paper's layer sweep (Turner et al. 2023, §2.3): add the " weddings" − "" vector at each layer in turn, sample
# completions of "I went up to my friend and said", and count the completions that mention a wedding word. On
# GPT-2-XL it works from layer 0, peaks near layer 6 of 48 and reaches "> 90 %" against a ~2 % baseline.
#
# 1. **Sweep** (`actlens.experiments.sweeps`): a layer × coefficient grid for two vectors, the paper's ActAdd pair (front-aligned)
#    and a mean-difference vector over eight wedding/other-event sentence pairs (added at every position), with a
#    norm-matched random vector at every setting and the unsteered model as controls. Metric: share of completions
#    with a wedding word (`actlens.core.metrics.topic_rate`), with bootstrap CIs.
# 2. **Ablation** (`actlens.analysis.ablation`), without sampling: inject at each layer and measure the mean KL and the shift of
#    log-probability mass onto wedding tokens (vs the random vector); then inject at one layer and remove the
#    vector's direction at each later layer, to see how much of the effect survives.
#
# The full-size figures are `figures/topic_by_layer.html` and `figures/layer_ablation.html`
# (`actlens figures --only topic_by_layer,layer_ablation`).

# %% [markdown]
# ## Parameters
# `ACTLENS_SMOKE=1` (set by the test suite) picks two layers, one coefficient, one seed and short completions.

# %%
import os

SMOKE = os.environ.get("ACTLENS_SMOKE", "").lower() not in ("", "0", "false", "no")
MODEL = "smollm2-135m"
PROMPT = "I went up to my friend and said"  # the paper's layer-sweep prompt
LAYERS = [3, 12] if SMOKE else list(range(0, 30, 3))
COEFFS = [1.0] if SMOKE else [1.0, 4.0]
SEEDS = [0] if SMOKE else list(range(8))  # completions per setting
MAX_NEW_TOKENS = 8 if SMOKE else 40
N_TEXTS = 2 if SMOKE else 3  # texts for the ablation's KL and topic-token shift
ABLATE_AT = 6  # inject here, ablate at later layers
ABLATE_LAYERS = [7, 12] if SMOKE else None  # None: every later layer

# %%
import actlens
from actlens.analysis import ablation
from actlens.core.corpora import KL_TEXTS, WEDDING_PAIRS
from actlens.experiments import sweeps
from actlens.plots.sweeps import fig_ablation, fig_topic_by_layer

model = actlens.load_model(MODEL)
actadd = sweeps.pair_spec(" weddings", "", name="ActAdd ' weddings'", prefix=None)
mean_diff = sweeps.mean_diff_spec(WEDDING_PAIRS, name="mean-diff weddings")
TEXTS = list(KL_TEXTS[:N_TEXTS])

# %% [markdown]
# ## 1. The sweep
# Settings share batches: each row of a generate call may carry its own vector, layer and coefficient, and a row's
# random numbers depend only on (seed, prompt), so the unsteered and steered completions of one seed are paired.

# %%
grid = sweeps.Grid([actadd, mean_diff], layers=LAYERS, coeffs=COEFFS, prompts=[PROMPT], seeds=SEEDS,
                   controls=("unsteered", "random"))
result = sweeps.sweep(model, grid, sampling=sweeps.Sampling(max_new_tokens=MAX_NEW_TOKENS), progress=not SMOKE)
rate, count = result.summary("topic_hit"), result.summary("topic_count")
print(f"{len(result.records)} completions in {result.elapsed_s:.1f} s")
rate

# %%
fig_topic_by_layer(rate, count, title=f"Weddings: topic rate by injection layer ({len(SEEDS)} samples per setting)")

# %%
result.completions()[["condition", "vector", "layer", "coeff", "seed", "completion"]].head(12)

# %% [markdown]
# ## 2. Inject at each layer, ablate downstream
# Left panel: mean KL(steered ‖ unsteered) over the texts' next-token predictions (injected positions excluded) and the
# change of log-probability mass on wedding tokens, for the ActAdd vector and a random vector of the same norm. Right
# panel: inject at `ABLATE_AT` and, at each later layer, zero (or mean-replace) the component along the injected
# direction or along the measured steered − unsteered difference, in both runs; 1 means the effect is untouched.

# %%
by_layer = ablation.inject_each_layer(model, actadd, TEXTS, COEFFS[0], layers=LAYERS)
vector = actlens.actadd_vector(model, " weddings", "", layer=ABLATE_AT)
ablated = ablation.ablate_downstream(model, vector, COEFFS[0], TEXTS, layers=ABLATE_LAYERS)
by_layer

# %%
fig_ablation(by_layer, ablated)

# %% [markdown]
# ## 3. Down to components: which attention layers, MLPs and heads carry the effect
# `actlens.mediation` restores one component's output to its unsteered value in the steered run (necessity: the
# share of the effect that remains) or gives only that component its steered output (sufficiency: the share it
# recovers alone), for every attention and MLP after the injection and the vector's direct path.

# %%
from actlens.plots.mediation import fig_mediation

med_texts = TEXTS[:2] if SMOKE else TEXTS
med = actlens.mediation(model, vector, COEFFS[0], med_texts, n_boot=50 if SMOKE else 1000)
med.sort_values("fraction").head(6 if SMOKE else 10)

# %%
fig_mediation(med.assign(vector="weddings ActAdd"))

# %% [markdown]
# ## Check
# At the layer where the weddings vector moves the most probability onto wedding tokens, it moves more than a random
# vector of the same norm.

# %%
shift = by_layer.pivot(index="layer", columns="condition", values="topic_shift")
best = shift.steered.idxmax()
assert shift.steered[best] > shift.random[best], shift
assert len(result.records) == len(grid.settings()) * len(SEEDS)
print(f"ok: best layer {best}, wedding-token shift {shift.steered[best]:+.2f} nats (random {shift.random[best]:+.2f})")
