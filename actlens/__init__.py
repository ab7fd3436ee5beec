"""actlens: activation engineering (ActAdd, arXiv 2308.10248) on TransformerLens 4.

The data flow: prompts (raw or chat-templated) -> activations -> vectors -> intervene / generation -> analysis.
"""

from actlens.activations import resid_pre
from actlens.calibrate import calibrate
from actlens.chat_vectors import chat_actadd_vector, chat_mean_diff_vector
from actlens.cosine import cosine_across_layers
from actlens.distributed import RayWorkers
from actlens.generation import Generation, PairedGeneration, generate, steered_logits
from actlens.intervene import steer
from actlens.kl import kl_per_token
from actlens.klcurve import kl_curve
from actlens.logit_lens import logit_lens
from actlens.model import ModelIdentity, forward, hook_name, load_model
from actlens.norms import coeff_from_units, norm_profile
from actlens.propagation import propagation, transfer_matrix
from actlens.sampling import Sampling
from actlens.grid import Grid, mean_diff_spec, pair_spec
from actlens.sinks import sink_aware_actadd, sinks
from actlens.steerability import steerability
from actlens.sweeps import sweep
from actlens.vectors import SteeringVector, actadd_vector, mean_diff_vector, random_like

__version__ = "0.1.0"

__all__ = [
    "Grid",
    "Sampling",
    "Generation",
    "ModelIdentity",
    "PairedGeneration",
    "RayWorkers",
    "SteeringVector",
    "__version__",
    "actadd_vector",
    "calibrate",
    "chat_actadd_vector",
    "chat_mean_diff_vector",
    "coeff_from_units",
    "cosine_across_layers",
    "forward",
    "generate",
    "hook_name",
    "kl_curve",
    "kl_per_token",
    "logit_lens",
    "load_model",
    "mean_diff_spec",
    "mean_diff_vector",
    "norm_profile",
    "pair_spec",
    "propagation",
    "random_like",
    "resid_pre",
    "steer",
    "steered_logits",
    "sink_aware_actadd",
    "sinks",
    "steerability",
    "sweep",
    "transfer_matrix",
]
