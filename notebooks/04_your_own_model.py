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
# # 04 · Your own model
#
# The quickstart's steps on a model you name: load it, make the Love − Hate vector, compare unsteered and steered
# completions, look at the vector's norms and its per-token KL against a random control, and save it.
#
# **What you need.**
# - **The weights on disk.** actlens never downloads (it loads with `local_files_only=True`). A name such as `"gpt2-xl"` is
#   looked up in the local Hugging Face cache (`~/.cache/huggingface/hub`, or `$HF_HOME`); a path is used as a
#   directory with `config.json`, the tokenizer files and the weights. To fill the cache, on a machine with internet
#   and under the same name you will load:
#   ```python
#   from huggingface_hub import snapshot_download
#   snapshot_download("gpt2-xl", allow_patterns=["*.json", "*.txt", "*.safetensors"])  # skips TF/Flax/ONNX copies
#   ```
#   then copy the cache folder (or `snapshot_download(..., local_dir=...)` and pass that directory).
# - **Memory.** Weights take parameters × 4 bytes in float32: GPT-2-XL has 1.56 B parameters, about **5.8 GiB**
#   (`dtype=torch.bfloat16` halves that), plus activations. Sampling 40 tokens from it on a CPU takes a while.
# - **A supported layout.** Any causal LM that TransformerLens 4 can bridge; actlens's fast path knows Llama-, GPT-2-,
#   OPT- and GPT-NeoX-style decoder layers.
#
# When the model cannot be loaded (`actlens.load_model` raises `ValueError` for an unknown or uncached name), this
# notebook says why and falls back to the embedded SmolLM2-135M, so it always runs to the end.

# %% [markdown]
# ## Parameters
# `ACTLENS_MODEL` overrides the model name. `ACTLENS_SMOKE=1` (set by the test suite) picks tiny settings; note that
# it still loads the named model if its weights are on disk.

# %%
import os

SMOKE = os.environ.get("ACTLENS_SMOKE", "").lower() not in ("", "0", "false", "no")
MODEL_NAME = os.environ.get("ACTLENS_MODEL", "gpt2-xl")  # a hub name in the local cache, or a directory
DTYPE = None  # None: float32; torch.bfloat16 halves the memory
PAIR, LAYER, COEFF = ("Love", "Hate"), 6, 5.0  # a GPT-2-XL setting from the ActAdd write-ups
PROMPTS = ["I hate you because"] if SMOKE else ["I hate you because", "My neighbour is", "The weather today is"]
SEEDS = [0] if SMOKE else [0, 1, 2]
MAX_NEW_TOKENS = 8 if SMOKE else 40
N_TEXTS = 2 if SMOKE else 24  # texts scored for the per-token KL
N_REFERENCE = 8 if SMOKE else None  # neutral texts defining the typical residual norm (None: all)

# %%
import tempfile
from pathlib import Path

import actlens
from actlens.analysis.kl import kl_per_token
from actlens.analysis.norms import default_reference_texts, norm_profile
from actlens.core.corpora import EVAL_PROMPTS
from actlens.plots.analysis import fig_kl, fig_norm_profile

# %% [markdown]
# ## Load, or fall back

# %%
try:
    model = actlens.load_model(MODEL_NAME, dtype=DTYPE)
except ValueError as err:  # not a known name, not a directory, not in the local cache
    print(f"could not load {MODEL_NAME!r}: {err}\n-> falling back to the embedded model")
    model = actlens.load_model()
n_params = sum(p.numel() for p in model.parameters())
size_gib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
print(f"loaded {model.cfg.model_name!r}: {model.cfg.n_layers} layers, d_model {model.cfg.d_model}, "
      f"{n_params / 1e9:.3f} B parameters, {size_gib:.2f} GiB of weights")

# %% [markdown]
# ## The vector and paired completions
# The layer is clipped to the model's depth; coefficients are model-specific (residual norms differ between models and
# grow with depth; `02_anatomy` shows how to express a coefficient in residual-norm units).

# %%
layer = min(LAYER, model.cfg.n_layers - 1)
vector = actlens.actadd_vector(model, *PAIR, layer=layer)
print(vector, "\nnorm per position:", [round(float(n), 1) for n in vector.norms()])
for seed in SEEDS:
    out = actlens.generate(model, PROMPTS, vector=vector, coeff=COEFF, max_new_tokens=MAX_NEW_TOKENS, seed=seed,
                           paired=True)
    print(f"## seed {seed}\n{out}")

# %% [markdown]
# ## Norms against the residual stream

# %%
n = model.cfg.n_layers
layers = sorted({layer, n // 2}) if SMOKE else list(range(n))
profile = norm_profile(model, PAIR, layers=layers, reference_texts=default_reference_texts()[:N_REFERENCE])
fig_norm_profile(profile)

# %% [markdown]
# ## Per-token KL, with a norm-matched random vector

# %%
kl = kl_per_token(model, EVAL_PROMPTS[:N_TEXTS], vector, COEFF)
summary = kl.summary().set_index("run")
summary

# %%
fig_kl(kl, text=0)

# %% [markdown]
# ## Save and reload
# The file records the model's identity; `SteeringVector.check_model` refuses a model of another shape.

# %%
with tempfile.TemporaryDirectory() as tmp:
    reloaded = actlens.SteeringVector.load(vector.save(Path(tmp) / "love_hate.safetensors"))
reloaded.check_model(model)
print(reloaded.model)

# %% [markdown]
# ## Check

# %%
assert summary.loc["steered", "mean_kl"] > 0, summary
assert reloaded == vector
print(f"ok: {model.cfg.model_name}, mean KL steered {summary.loc['steered', 'mean_kl']:.3f} nats")
